//! What members say to each other over NATS, all MessagePack:
//!
//! - `cmesh.ctx.<context>.txs`: a batch of transactions its author just made durable.
//!   Transactions authenticate themselves (the author's signature of the id), so the
//!   batch is not signed.
//! - `cmesh.ctx.<context>.heads`: a member's heads, every few seconds, so that a member
//!   that lost broadcasts (a NATS disconnect, a restart) sees it lacks something.
//! - `cmesh.ctx.<context>.sync` (any member) and `cmesh.ctx.<context>.sync.<address>`
//!   (that member): requests for transactions, signed by the requesting node and answered
//!   only to members of the context.

use cmesh_common::genesis::MeshId;
use cmesh_common::time::unix_millis;
use cmesh_common::{Address, CmtpError, Signature65, SigningKey, Status};
use cmesh_state::{Id, Member, OrderKey};
use serde::{Deserialize, Serialize};

/// Signed requests older or newer than this are refused (clock skew or replay).
pub const REQUEST_WINDOW_MS: u64 = 60_000;
/// Room a message needs besides its transactions (headers, framing).
pub const MESSAGE_OVERHEAD: usize = 16 * 1024;
/// NATS header naming the node that published a batch or heads notice, so that a node
/// skips its own without decoding them.
pub const NODE_HEADER: &str = "Cmesh-Node";

const SIGNING_DOMAIN: &[u8] = b"cmesh-sync-request-v2";

pub fn txs_subject(context: &Id) -> String {
    format!("cmesh.ctx.{context}.txs")
}

pub fn heads_subject(context: &Id) -> String {
    format!("cmesh.ctx.{context}.heads")
}

/// The subject of sync requests for `context`: any member, or one.
pub fn sync_subject(context: &Id, member: Option<&Address>) -> String {
    match member {
        Some(member) => format!("cmesh.ctx.{context}.sync.{member}"),
        None => format!("cmesh.ctx.{context}.sync"),
    }
}

pub const TXS_WILDCARD: &str = "cmesh.ctx.*.txs";
pub const HEADS_WILDCARD: &str = "cmesh.ctx.*.heads";
pub const SYNC_WILDCARD: &str = "cmesh.ctx.*.sync";

/// The requests addressed to `node`.
pub fn own_sync_wildcard(node: &Address) -> String {
    format!("cmesh.ctx.*.sync.{node}")
}

/// The context named by the third token of a `cmesh.ctx.<context>.…` subject.
pub fn context_of_subject(subject: &str) -> Option<Id> {
    let mut parts = subject.split('.');
    match (parts.next(), parts.next(), parts.next()) {
        (Some("cmesh"), Some("ctx"), Some(context)) => context.parse().ok(),
        _ => None,
    }
}

/// Transactions as encoded by their author.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TxBatch {
    pub txs: Vec<serde_bytes::ByteBuf>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HeadsNotice {
    pub node: Address,
    pub heads: Vec<Id>,
    pub applied: u64,
}

/// What a requester asks a member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Query {
    /// Its heads, per-author seqs, root and members.
    State,
    /// These transactions (those it holds; a reply stops short of the payload limit).
    Fetch { ids: Vec<Id> },
    /// A page of what the requester lacks, given the seqs it holds (see
    /// `cmesh_state::MissingTransactions`).
    Page {
        have: Vec<(Address, u64)>,
        after: Option<OrderKey>,
        limit: u32,
    },
    /// The module of the context's app.
    App { app: Id },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SyncRequest {
    /// The mesh the asking node is of: a node of another mesh on the same NATS is refused.
    pub mesh: MeshId,
    pub context: Id,
    pub from: Address,
    pub ts: u64,
    pub query: Query,
    pub signature: Signature65,
}

impl SyncRequest {
    pub fn new(key: &SigningKey, mesh: MeshId, context: Id, query: Query) -> Result<SyncRequest, WireError> {
        let ts = unix_millis();
        let from = key.address();
        let signature = key.sign_personal(&signing_bytes(&mesh, &context, &from, ts, &query)?);
        Ok(SyncRequest {
            mesh,
            context,
            from,
            ts,
            query,
            signature,
        })
    }

    /// Checks the mesh, the signature and the time window; answers why not.
    pub fn authenticate(&self, mesh: &MeshId, now_ms: u64) -> Result<(), CmtpError> {
        if &self.mesh != mesh {
            return Err(CmtpError::unauthorized(format!(
                "the sync request is of mesh {}, not of this mesh {mesh}",
                self.mesh
            )));
        }
        if self.ts.abs_diff(now_ms) > REQUEST_WINDOW_MS {
            return Err(CmtpError::new(
                Status::UNAUTHORIZED,
                "the sync request is outside the 60 s window (clock skew or replay)",
            ));
        }
        let bytes = signing_bytes(&self.mesh, &self.context, &self.from, self.ts, &self.query)
            .map_err(|e| CmtpError::bad_request(e.to_string()))?;
        let signer = self
            .signature
            .recover_personal(&bytes)
            .map_err(|e| CmtpError::unauthorized(format!("the sync request's signature: {e}")))?;
        if signer != self.from {
            return Err(CmtpError::unauthorized(
                "the sync request is not signed by the node it names",
            ));
        }
        Ok(())
    }
}

fn signing_bytes(mesh: &MeshId, context: &Id, from: &Address, ts: u64, query: &Query) -> Result<Vec<u8>, WireError> {
    let mut bytes = SIGNING_DOMAIN.to_vec();
    bytes.extend(rmp_serde::to_vec(&(mesh, context, from, ts, query))?);
    Ok(bytes)
}

/// A member's answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Reply {
    State {
        node: Address,
        heads: Vec<Id>,
        seqs: Vec<(Address, u64)>,
        applied: u64,
        root: Id,
        members: Vec<Member>,
    },
    Txs {
        txs: Vec<serde_bytes::ByteBuf>,
    },
    Page {
        txs: Vec<serde_bytes::ByteBuf>,
        next: Option<OrderKey>,
    },
    App {
        code: Option<serde_bytes::ByteBuf>,
    },
}

pub type Answer = Result<Reply, CmtpError>;

#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("encoding: {0}")]
    Encode(#[from] rmp_serde::encode::Error),
    #[error("malformed message: {0}")]
    Decode(#[from] rmp_serde::decode::Error),
}

pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, WireError> {
    Ok(rmp_serde::to_vec(value)?)
}

pub fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, WireError> {
    Ok(rmp_serde::from_slice(bytes)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_verify_only_as_signed() {
        let key = SigningKey::generate().expect("key");
        let context = Id([7; 32]);
        let mesh = MeshId([5; 32]);
        let request = SyncRequest::new(&key, mesh, context, Query::State).expect("request");
        assert!(request.authenticate(&mesh, request.ts).is_ok());
        let decoded: SyncRequest = decode(&encode(&request).expect("encode")).expect("decode");
        assert!(decoded.authenticate(&mesh, decoded.ts + 1_000).is_ok());
        let other_mesh = MeshId([6; 32]);
        let refused = request.authenticate(&other_mesh, request.ts).expect_err("another mesh");
        assert!(refused.message.contains("not of this mesh"), "{refused:?}");
        let mut relabelled = request.clone();
        relabelled.mesh = other_mesh;
        assert!(
            relabelled.authenticate(&other_mesh, request.ts).is_err(),
            "the mesh is signed"
        );

        let mut other_query = request.clone();
        other_query.query = Query::Fetch { ids: vec![context] };
        assert_eq!(
            other_query.authenticate(&mesh, request.ts).err().map(|e| e.status),
            Some(Status::UNAUTHORIZED)
        );
        let mut other_context = request.clone();
        other_context.context = Id([8; 32]);
        assert!(other_context.authenticate(&mesh, request.ts).is_err());
        let late = request.ts + REQUEST_WINDOW_MS + 1;
        assert!(request.authenticate(&mesh, late).is_err(), "outside the window");
    }

    #[test]
    fn subjects_name_their_context() {
        let context = Id([0xab; 32]);
        let node = SigningKey::generate().expect("key").address();
        for subject in [
            txs_subject(&context),
            heads_subject(&context),
            sync_subject(&context, None),
            sync_subject(&context, Some(&node)),
        ] {
            assert_eq!(context_of_subject(&subject), Some(context), "{subject}");
        }
        assert_eq!(context_of_subject("cmesh.ctx.nonsense.txs"), None);
        assert_eq!(context_of_subject("cmesh.node.x"), None);
    }
}
