//! The commands of the mesh registry: what one Raft log entry asks the registry to do.
//!
//! Why a closed enum: every replica must apply the same entry the same way, so a command
//! is data with one meaning, never a method name interpreted by local configuration.

use cmesh_common::Address;
use serde::{Deserialize, Serialize};

/// What an admitted node is to the registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// A Raft voter.
    Voter,
    /// A replica of the registry that does not vote.
    Learner,
    /// No replica; asks a voter.
    Member,
}

/// One change to the registry. `caller` (the identity on whose behalf it runs) is in the
/// [`EntryBody`](crate::entry::EntryBody), not here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum Command {
    /// `mesh.admit {node, role}`: admit a node, or change its role. Mesh admins only.
    Admit { node: Address, role: Role },
    /// `mesh.remove {node}`: the node stops being a peer. Mesh admins only.
    Remove { node: Address },
    /// `registrar.register {name, target}`.
    Register { name: String, target: String },
    /// `registrar.transfer {name, to}`.
    Transfer { name: String, to: Address },
    /// `registrar.release {name}`.
    Release { name: String },
    /// `iam.grant {address, attribute}` of a mesh-wide attribute. Mesh admins only.
    Grant { address: Address, attribute: String },
    /// `iam.revoke {address, attribute}`. Mesh admins only.
    Revoke { address: Address, attribute: String },
}
