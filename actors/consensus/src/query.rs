//! Reads of the registry as data: a node that holds no replica (a `member`) has a
//! replica run them for it, and a replica runs the same ones on its own registry, so
//! both give the same answers.

use std::collections::BTreeMap;

use cmesh_common::{Address, CmtpError};
use cmesh_registrar::{NameRecord, LIST_CAP};
use serde::{Deserialize, Serialize};

use crate::command::Role;
use crate::registry::Registry;

/// How a read is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Consistency {
    /// Through the leader's read index: sees every write acknowledged before it began.
    #[default]
    Linearizable,
    /// This node's replica as it is: fast, possibly behind.
    Local,
}

/// How far the replica that answered a read had applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadInfo {
    pub applied: Option<u64>,
    /// True when this node has not heard from a leader within an election timeout, so
    /// the replica may be behind the mesh.
    pub stale: bool,
}

/// A read of the registry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Query {
    /// One name's record.
    Resolve { name: String },
    /// Records sorted by name, of `owner` if given, at most `limit` (and never more than
    /// [`LIST_CAP`], whoever asks: a member's query must fit in one reply).
    List { owner: Option<Address>, limit: usize },
    /// The admitted nodes and their roles.
    Nodes,
    /// What a member needs to know whom to trust.
    Trust,
}

/// What a [`Query`] found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Answer {
    Record(Result<NameRecord, CmtpError>),
    Records(Vec<NameRecord>),
    Nodes(BTreeMap<Address, Role>),
    Trust(Trust),
}

/// The admitted nodes and every identity's mesh-wide attributes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trust {
    pub nodes: BTreeMap<Address, Role>,
    pub attributes: BTreeMap<Address, Vec<String>>,
}

impl Query {
    pub fn run(&self, registry: &Registry) -> Answer {
        match self {
            Query::Resolve { name } => Answer::Record(registry.resolve(name).cloned()),
            Query::List { owner, limit } => Answer::Records(
                registry
                    .names()
                    .filter(|record| owner.is_none_or(|owner| record.owner == owner))
                    .take((*limit).min(LIST_CAP))
                    .cloned()
                    .collect(),
            ),
            Query::Nodes => Answer::Nodes(registry.nodes().clone()),
            Query::Trust => Answer::Trust(Trust {
                nodes: registry.nodes().clone(),
                attributes: registry
                    .attribute_holders()
                    .map(|address| (address, registry.attributes(&address)))
                    .collect(),
            }),
        }
    }
}

/// A replica's answer to a member's query: what it found, how far it had applied, and
/// the leader it knows (so the member learns where to send its writes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Answered {
    pub answer: Answer,
    pub info: ReadInfo,
    pub leader: Option<Address>,
}
