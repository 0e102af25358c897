//! IAM: who is calling, and may they?
//!
//! Passwordless login by signature (seed 002's IRMA-style flow, made Ethereum-compatible):
//! a client asks for a challenge, signs it with EIP-191 personal_sign and gets a JWT signed
//! by the node. Alternatively each JSON-RPC request is signed (seed 004, Kami) under a
//! session with strictly increasing nonces. Every node accepts tokens of every other node
//! it knows from signed announcements. Signature checks run on a pool of sync threads,
//! never on the arbiter that drives NATS; verified tokens are cached.

mod actor;
mod attributes;
mod config;
mod discovery;
mod error;
mod messages;
mod peers;
mod permissions;
mod sessions;
mod verifier;

pub use actor::IamActor;
pub use attributes::{per_node_grants, MeshAttributes};
pub use cmesh_common::method::Permission;
pub use config::IamConfig;
pub use discovery::{discovery, publish_own, DiscoveryError, ANNOUNCE_SUBJECT};
pub use error::IamError;
pub use messages::*;
pub use peers::{Announcement, PeerInfo};
pub use permissions::Permissions;
pub use verifier::Verifier;
