//! Transactions: every change to a context is one, signed by the node that authored it
//! and linked to the context's previous heads by hash. The format is the one replication
//! carries, so any member can check a transaction on its own: the id is the keccak256 of
//! the body's canonical MessagePack encoding and the signature recovers the author.

use cmesh_common::hash::keccak256;
use cmesh_common::keys::SignatureError;
use cmesh_common::{Address, Signature65, SigningKey};
use serde::{Deserialize, Serialize};

use crate::ids::{address_bytes, signature_bytes, Id};
use crate::roles::Role;

/// Version of the transaction format in every body.
pub const TX_FORMAT: u8 = 1;

/// What a transaction does to its context.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// The genesis of a context: runs `app` (deployed as `name` `version`).
    Create { app: Id, name: String, version: String },
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
    pub context: Id,
    /// The node that made and signed the transaction.
    #[serde(with = "address_bytes")]
    pub author: Address,
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
}

impl TxBody {
    /// The canonical encoding: MessagePack with fields in declaration order.
    pub fn canonical_bytes(&self) -> Result<Vec<u8>, TxError> {
        Ok(rmp_serde::to_vec(self)?)
    }

    pub fn id(&self) -> Result<Id, TxError> {
        Ok(Id(keccak256(&self.canonical_bytes()?)))
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
        Ok(rmp_serde::to_vec(self)?)
    }

    pub fn decode(bytes: &[u8]) -> Result<Transaction, TxError> {
        Ok(rmp_serde::from_slice(bytes)?)
    }

    /// Checks the signatures (author's over the id, and the caller's proof if any) and
    /// answers the id.
    pub fn verify(&self) -> Result<Id, TxError> {
        let id = self.body.id()?;
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
        assert_eq!(bytes[0], 0x98, "an array of the 8 body fields");
        assert_eq!(body.id().expect("id"), Id(keccak256(&bytes)));
    }
}
