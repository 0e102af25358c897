//! Transactions: every change to a context is one, signed by the node that authored it
//! and linked to the context's previous heads by hash. The format is the one replication
//! carries, so any member can check a transaction on its own: the id is the keccak256 of
//! the body's canonical MessagePack encoding and the signature recovers the author.
//! A context's id is the id of its genesis transaction, so nobody can make a second
//! genesis for it; [`Transaction::checked`] holds the rules a transaction must meet on its
//! own, before its causal past is looked at.

use cmesh_common::hash::keccak256;
use cmesh_common::keys::SignatureError;
use cmesh_common::{Address, Signature65, SigningKey};
use serde::{Deserialize, Serialize};

use crate::ids::{address_bytes, signature_bytes, Id};
use crate::roles::Role;

/// Version of the transaction format in every body.
pub const TX_FORMAT: u8 = 2;
/// Most parents a transaction may name.
pub const MAX_PARENTS: usize = 64;
/// Most seats one member may hold.
pub const MAX_SEATS: u32 = 1_000;
/// Largest encoded transaction accepted from anyone.
pub const MAX_TX_BYTES: usize = 1 << 20;

/// The limits every member runs a context's calls with, fixed at its genesis so that
/// every member gets the same outcome (a call out of gas fails everywhere or nowhere).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Gas per call.
    pub gas: u64,
    /// Most linear memory of an instance, in bytes.
    pub memory_bytes: u64,
}

/// What a transaction does to its context.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// The genesis of a context: runs `app` (deployed as `name` `version`). Its author is
    /// the first member (one seat) and its caller the first admin; `salt` makes the id
    /// (which is the context's id) unique.
    Create {
        app: Id,
        name: String,
        version: String,
        salt: Id,
        limits: Limits,
    },
    /// A mutation: runs `method` with `args` (JSON text).
    Call {
        method: String,
        #[serde(with = "serde_bytes")]
        args: Vec<u8>,
    },
    /// Gives `user` a role in the context (replacing the one it had).
    Grant {
        #[serde(with = "address_bytes")]
        user: Address,
        role: Role,
    },
    /// Takes every role from `user`.
    Revoke {
        #[serde(with = "address_bytes")]
        user: Address,
    },
    /// Makes the node `member` a member with `seats` seats (or changes its seats).
    Invite {
        #[serde(with = "address_bytes")]
        member: Address,
        seats: u32,
    },
    /// Ends the membership of the node `member`.
    Remove {
        #[serde(with = "address_bytes")]
        member: Address,
    },
    /// The author stops being a member.
    Leave,
}

/// The user's own signature of the request that caused a transaction (a Kami-signed
/// JSON-RPC request): anyone can check that `caller` asked for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallerProof {
    /// The signed bytes (the request's canonical JSON without its `signature`).
    #[serde(with = "serde_bytes")]
    pub request: Vec<u8>,
    /// personal_sign of `request` by the caller.
    #[serde(with = "signature_bytes")]
    pub signature: Signature65,
}

/// Everything the id and the signature cover.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxBody {
    pub format: u8,
    /// The context (zero in a genesis, whose own id is the context's).
    pub context: Id,
    /// The node that made and signed the transaction.
    #[serde(with = "address_bytes")]
    pub author: Address,
    /// The author's count of its transactions in this context, from 1: members exchange
    /// the highest they hold per author to find what the other lacks.
    pub seq: u64,
    /// The context's heads when it was made, sorted (none for a genesis).
    pub parents: Vec<Id>,
    /// The author's clock (ms since the Unix epoch), never earlier than a parent's.
    pub time_ms: u64,
    /// The user on whose behalf it was made.
    #[serde(with = "address_bytes")]
    pub caller: Address,
    pub caller_proof: Option<CallerProof>,
    pub op: Op,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transaction {
    pub body: TxBody,
    /// Recoverable signature of the id by the author.
    #[serde(with = "signature_bytes")]
    pub signature: Signature65,
}

/// A transaction whose shape and signatures were checked, with its id: only
/// [`Transaction::checked`] makes one, so nothing unchecked reaches the DAG.
#[derive(Debug, Clone)]
pub struct VerifiedTx {
    id: Id,
    tx: Transaction,
    /// `tx` as [`Transaction::encode`] gives it, made while checking.
    encoded: Vec<u8>,
}

impl VerifiedTx {
    pub fn id(&self) -> Id {
        self.id
    }

    pub fn tx(&self) -> &Transaction {
        &self.tx
    }

    /// The transaction's own encoding (not necessarily the bytes it arrived as).
    pub fn encoded(&self) -> &[u8] {
        &self.encoded
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TxError {
    #[error("transaction encoding: {0}")]
    Encode(#[from] rmp_serde::encode::Error),
    #[error("transaction decoding: {0}")]
    Decode(#[from] rmp_serde::decode::Error),
    #[error("transaction signature: {0}")]
    Signature(#[from] SignatureError),
    #[error("transaction signed by {signer}, not its author {author}")]
    WrongSigner { signer: Address, author: Address },
    #[error("the caller's proof was signed by {signer}, not the caller {caller}")]
    WrongCaller { signer: Address, caller: Address },
    #[error("invalid transaction: {0}")]
    Invalid(String),
}

impl TxBody {
    /// The canonical encoding: MessagePack with fields in declaration order.
    pub fn canonical_bytes(&self) -> Result<Vec<u8>, TxError> {
        Ok(rmp_serde::to_vec(self)?)
    }

    pub fn id(&self) -> Result<Id, TxError> {
        Ok(Id(keccak256(&self.canonical_bytes()?)))
    }

    /// A genesis has no parents; every other transaction has some.
    pub fn is_genesis(&self) -> bool {
        self.parents.is_empty()
    }

    /// The context this transaction belongs to, given its id.
    pub fn context_of(&self, id: Id) -> Id {
        if self.is_genesis() {
            id
        } else {
            self.context
        }
    }

    /// Signs the body as its author; answers the transaction and its id.
    pub fn sign(self, key: &SigningKey) -> Result<(Transaction, Id), TxError> {
        let id = self.id()?;
        let signature = key.sign_digest_recoverable(id.0);
        Ok((Transaction { body: self, signature }, id))
    }
}

impl Transaction {
    pub fn encode(&self) -> Result<Vec<u8>, TxError> {
        Ok(Self::encode_with(&self.body.canonical_bytes()?, &self.signature))
    }

    /// The encoding of a transaction whose body's canonical bytes are `body`, assembled
    /// around them: checking a transaction encodes its body for the id anyway, and the
    /// executor stores the encoding. It is what `rmp_serde` writes for the struct, a
    /// two-element array of the body and the signature's 65 bytes (a unit test holds the
    /// two together).
    fn encode_with(body: &[u8], signature: &Signature65) -> Vec<u8> {
        const ARRAY_OF_TWO: u8 = 0x92;
        const BIN_8: u8 = 0xc4;
        let mut out = Vec::with_capacity(1 + body.len() + 2 + signature.0.len());
        out.push(ARRAY_OF_TWO);
        out.extend_from_slice(body);
        out.extend_from_slice(&[BIN_8, signature.0.len() as u8]);
        out.extend_from_slice(&signature.0);
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Transaction, TxError> {
        Ok(rmp_serde::from_slice(bytes)?)
    }

    /// Checks everything a transaction must meet on its own: the rules of
    /// [`Transaction::check_shape`] and the signatures. Answers it with its id and
    /// encoding, as a value only checking makes.
    pub fn checked(self) -> Result<VerifiedTx, TxError> {
        self.check_shape()?;
        let body = self.body.canonical_bytes()?;
        let id = self.verify_id(Id(keccak256(&body)))?;
        let encoded = Self::encode_with(&body, &self.signature);
        Ok(VerifiedTx { id, tx: self, encoded })
    }

    /// The rules that need neither a signature check nor the causal past: the format, a
    /// genesis is exactly a parentless `Create` with a zero context, parents are sorted
    /// and distinct and at most [`MAX_PARENTS`], `seq` counts from 1, seats are bounded.
    pub fn check_shape(&self) -> Result<(), TxError> {
        let body = &self.body;
        let invalid = |why: String| Err(TxError::Invalid(why));
        if body.format != TX_FORMAT {
            return invalid(format!("format {} (this node reads format {TX_FORMAT})", body.format));
        }
        if body.seq == 0 {
            return invalid("seq must count from 1".into());
        }
        if body.parents.len() > MAX_PARENTS {
            return invalid(format!("{} parents (at most {MAX_PARENTS})", body.parents.len()));
        }
        if body.parents.windows(2).any(|pair| pair[0] >= pair[1]) {
            return invalid("parents must be sorted and distinct".into());
        }
        let create = matches!(body.op, Op::Create { .. });
        match (body.is_genesis(), create) {
            (true, true) if body.context != Id::ZERO => invalid("a genesis names no context".into()),
            (true, false) => invalid("a transaction without parents must be a genesis (create)".into()),
            (false, true) => invalid("a create must be a genesis (no parents)".into()),
            _ => Ok(()),
        }?;
        if let Op::Invite { seats, .. } = body.op {
            if seats == 0 || seats > MAX_SEATS {
                return invalid(format!("{seats} seats (1 to {MAX_SEATS})"));
            }
        }
        Ok(())
    }

    /// Checks the signatures (author's over the id, and the caller's proof if any) and
    /// answers the id.
    pub fn verify(&self) -> Result<Id, TxError> {
        self.verify_id(self.body.id()?)
    }

    /// [`Transaction::verify`] with the id already computed.
    fn verify_id(&self, id: Id) -> Result<Id, TxError> {
        let (_, signer) = self.signature.recover_digest(id.0)?;
        if signer != self.body.author {
            return Err(TxError::WrongSigner {
                signer,
                author: self.body.author,
            });
        }
        if let Some(proof) = &self.body.caller_proof {
            let signer = proof.signature.recover_personal(&proof.request)?;
            if signer != self.body.caller {
                return Err(TxError::WrongCaller {
                    signer,
                    caller: self.body.caller,
                });
            }
        }
        Ok(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(key: &SigningKey) -> TxBody {
        TxBody {
            format: TX_FORMAT,
            context: Id([7; 32]),
            author: key.address(),
            seq: 1,
            parents: vec![Id([1; 32])],
            time_ms: 1_700_000_000_000,
            caller: Address([9; 20]),
            caller_proof: None,
            op: Op::Call {
                method: "set".into(),
                args: br#"["a",1]"#.to_vec(),
            },
        }
    }

    #[test]
    fn signed_transactions_verify_and_round_trip() {
        let key = SigningKey::generate().expect("key");
        let (tx, id) = body(&key).sign(&key).expect("sign");
        let decoded = Transaction::decode(&tx.encode().expect("encode")).expect("decode");
        assert_eq!(decoded, tx);
        assert_eq!(decoded.verify().expect("verify"), id);
    }

    #[test]
    fn the_assembled_encoding_is_what_serde_writes() {
        let key = SigningKey::generate().expect("key");
        let mut genesis = body(&key);
        (genesis.parents, genesis.context) = (Vec::new(), Id::ZERO);
        genesis.op = Op::Create {
            app: Id([3; 32]),
            name: "kv".into(),
            version: "1.0.0".into(),
            salt: Id([4; 32]),
            limits: Limits {
                gas: 1_000_000,
                memory_bytes: 1 << 20,
            },
        };
        let mut many_parents = body(&key);
        many_parents.parents = (0..MAX_PARENTS as u8).map(|i| Id([i; 32])).collect();
        many_parents.op = Op::Call {
            method: "set".into(),
            args: vec![b'x'; 70_000],
        };
        for body in [body(&key), genesis, many_parents] {
            let (tx, id) = body.sign(&key).expect("sign");
            let serde = rmp_serde::to_vec(&tx).expect("serde");
            assert_eq!(tx.encode().expect("encode"), serde);
            let verified = tx.checked().expect("checked");
            assert_eq!((verified.id(), verified.encoded()), (id, serde.as_slice()));
        }
    }

    #[test]
    fn any_change_to_the_body_breaks_the_signature() {
        let key = SigningKey::generate().expect("key");
        let (mut tx, _) = body(&key).sign(&key).expect("sign");
        tx.body.time_ms += 1;
        assert!(matches!(
            tx.verify(),
            Err(TxError::WrongSigner { .. }) | Err(TxError::Signature(_))
        ));
        let other = SigningKey::generate().expect("key");
        let (mut forged, _) = body(&key).sign(&other).expect("sign");
        forged.body.author = key.address();
        assert!(forged.verify().is_err());
    }

    #[test]
    fn a_caller_proof_must_be_the_callers() {
        let key = SigningKey::generate().expect("key");
        let user = SigningKey::generate().expect("user");
        let request = br#"{"method":"ctx.call"}"#.to_vec();
        let mut b = body(&key);
        b.caller = user.address();
        b.caller_proof = Some(CallerProof {
            signature: user.sign_personal(&request),
            request: request.clone(),
        });
        let (tx, _) = b.clone().sign(&key).expect("sign");
        assert!(tx.verify().is_ok());
        b.caller = key.address();
        let (tx, _) = b.sign(&key).expect("sign");
        assert!(matches!(tx.verify(), Err(TxError::WrongCaller { .. })));
    }

    #[test]
    fn the_id_is_stable() {
        // Pinned so that a change to the encoding is a deliberate format change.
        let body = TxBody {
            format: TX_FORMAT,
            context: Id([7; 32]),
            author: Address([1; 20]),
            seq: 1,
            parents: vec![],
            time_ms: 5,
            caller: Address([2; 20]),
            caller_proof: None,
            op: Op::Call {
                method: "m".into(),
                args: b"null".to_vec(),
            },
        };
        let bytes = body.canonical_bytes().expect("encode");
        assert_eq!(bytes[0], 0x99, "an array of the 9 body fields");
        assert_eq!(body.id().expect("id"), Id(keccak256(&bytes)));
    }

    #[test]
    fn the_shape_rules_hold_without_the_causal_past() {
        let key = SigningKey::generate().expect("key");
        let check = |edit: &dyn Fn(&mut TxBody)| {
            let mut b = body(&key);
            edit(&mut b);
            let (tx, _) = b.sign(&key).expect("sign");
            tx.checked().map(drop).map_err(|e| e.to_string())
        };
        assert_eq!(check(&|_| {}), Ok(()));
        let genesis = |b: &mut TxBody| {
            b.parents.clear();
            b.context = Id::ZERO;
            b.op = Op::Create {
                app: Id([3; 32]),
                name: "kv".into(),
                version: "1.0.0".into(),
                salt: Id([4; 32]),
                limits: Limits {
                    gas: 1_000,
                    memory_bytes: 1 << 20,
                },
            };
        };
        assert_eq!(check(&genesis), Ok(()));
        let refused = [
            check(&|b| b.format = 1),
            check(&|b| b.seq = 0),
            check(&|b| b.parents = vec![Id([2; 32]), Id([1; 32])]),
            check(&|b| b.parents = vec![Id([1; 32]), Id([1; 32])]),
            check(&|b| b.parents = (0..=MAX_PARENTS as u8).map(|i| Id([i; 32])).collect()),
            check(&|b| b.parents.clear()),
            check(&|b| {
                genesis(b);
                b.parents = vec![Id([1; 32])];
            }),
            check(&|b| {
                genesis(b);
                b.context = Id([7; 32]);
            }),
            check(&|b| {
                b.op = Op::Invite {
                    member: Address([5; 20]),
                    seats: 0,
                }
            }),
            check(&|b| {
                b.op = Op::Invite {
                    member: Address([5; 20]),
                    seats: MAX_SEATS + 1,
                }
            }),
        ];
        for (i, result) in refused.iter().enumerate() {
            let err = result.as_ref().err().unwrap_or_else(|| panic!("case {i} was accepted"));
            assert!(err.starts_with("invalid transaction"), "case {i}: {err}");
        }
        assert_eq!(
            body(&key).context_of(Id([9; 32])),
            Id([7; 32]),
            "a non-genesis names its context"
        );
    }
}
