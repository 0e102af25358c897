//! The typed messages IAM answers. Request errors are `CmtpError`s with the status (and
//! Kami JSON-RPC code) the caller should see.

use actix::Message;
use cmesh_common::rpc::RequestProof;
use cmesh_common::{Address, CmtpError, Method};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::peers::{Announcement, PeerInfo};

/// What a request brought to prove who sent it.
#[derive(Debug, Clone)]
pub enum Credentials {
    None,
    /// `Authorization: Bearer <token>`.
    Bearer(String),
    /// A Kami-signed JSON-RPC request.
    Signed(SignedRequest),
}

#[derive(Debug, Clone)]
pub struct SignedRequest {
    /// The request object exactly as received (with its `signature` member).
    pub raw: Value,
    /// The session from `iam.challenge`, 0x-hex (the request's `id`).
    pub session: String,
    pub nonce: u64,
    pub signature: String,
}

/// Who is calling, as far as the node is concerned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Caller {
    /// `None` for an anonymous caller of a public method.
    pub address: Option<Address>,
    pub attributes: Vec<String>,
    /// When the caller's token or session ends (unix seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<u64>,
    /// The caller's own signature of this request, when it was Kami-signed: what a
    /// transaction carries so that anyone can check the user asked for it.
    #[serde(skip)]
    pub signed: Option<RequestProof>,
}

impl Caller {
    pub fn anonymous() -> Self {
        Caller {
            address: None,
            attributes: Vec::new(),
            expires_at: None,
            signed: None,
        }
    }
}

/// Authenticates the credentials and checks the caller may call `method`:
/// 401 for missing or bad credentials, 403 for a missing permission. `None`: a method the
/// node does not serve, which needs an authenticated caller (who then gets 404).
#[derive(Message)]
#[rtype(result = "Result<Caller, CmtpError>")]
pub struct Admit {
    pub credentials: Credentials,
    pub method: Option<Method>,
}

/// Checks an already admitted caller may also call `method` (a name's target, say).
#[derive(Message)]
#[rtype(result = "Result<(), CmtpError>")]
pub struct Authorize {
    pub caller: Caller,
    pub method: Method,
}

/// Which other node issued `session` (from the tag its id starts with); `None` when this
/// node did, or no known node did.
#[derive(Message)]
#[rtype(result = "Option<Address>")]
pub struct SessionIssuer {
    pub session: String,
}

/// `iam.challenge {address, client_nonce?}`.
#[derive(Message, Debug, Clone, Deserialize)]
#[rtype(result = "Result<ChallengeReply, CmtpError>")]
pub struct Challenge {
    pub address: Address,
    /// 16 bytes of the client's choosing, 0x-hex; random when absent.
    #[serde(default)]
    pub client_nonce: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChallengeReply {
    pub session: String,
    pub message: String,
    pub expires_at: u64,
}

/// `iam.login {session, signature}`.
#[derive(Message, Debug, Clone, Deserialize)]
#[rtype(result = "Result<LoginReply, CmtpError>")]
pub struct Login {
    pub session: String,
    pub signature: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoginReply {
    pub token: String,
    pub address: Address,
    pub expires_at: u64,
}

/// A signed announcement of a node received from the bus. Answers the node's address
/// when it is new to us (so we announce ourselves back), `None` when already known.
#[derive(Message)]
#[rtype(result = "Result<Option<Address>, CmtpError>")]
pub struct PeerAnnounced(pub Announcement);

/// This node's own announcement, freshly signed.
#[derive(Message)]
#[rtype(result = "Announcement")]
pub struct OwnAnnouncement;

/// The nodes the mesh registry admits, whenever they change: only they are peers. Nodes
/// no longer admitted are forgotten at once, with the tokens they issued; nodes newly
/// admitted whose announcements were ignored are learnt from those. True when some were:
/// this node should then announce itself, so that they learn it too.
#[derive(Message)]
#[rtype(result = "bool")]
pub struct AdmittedNodes(pub std::collections::BTreeSet<Address>);

/// The nodes this node knows, itself included.
#[derive(Message)]
#[rtype(result = "Vec<PeerInfo>")]
pub struct Peers;

/// Checks that `signature` over `message` is by a known node of this mesh; answers it.
#[derive(Message)]
#[rtype(result = "Result<Address, CmtpError>")]
pub struct VerifyNodeSignature {
    pub message: Vec<u8>,
    pub signature: String,
}
