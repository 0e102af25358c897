//! The mesh registry as the router's services see it: names, admitted nodes and Raft's
//! status, all through this node's consensus node, whichever role it has.
//!
//! Why here and not in the consensus crate: this is where registry results become the
//! answers and events clients have always had from the registrar (`registrar.*`, `R:`,
//! `RW:`), so that moving the names onto Raft changed none of them.

use actix::Addr;
use cmesh_common::{Address, CmtpError};
use cmesh_consensus::{Answer, Applied, Command, ConsensusError, ConsensusNode, Consistency, Outcome, Query, ReadInfo};
use cmesh_events::{Emit, EventsActor};
use cmesh_iam::Caller;
use cmesh_registrar::NameChange;
use serde_json::{json, Value};

use crate::services::caller_address;

/// Most records one `registrar.list` returns, sorted by name (no paging yet).
pub const LIST_CAP: usize = cmesh_registrar::LIST_CAP;

#[derive(Clone)]
pub struct RegistryHandle {
    pub consensus: ConsensusNode,
    pub events: Addr<EventsActor>,
}

/// `consistency` of a read: `linearizable` (the default) or `local`.
pub fn consistency(value: Option<&str>) -> Result<Consistency, CmtpError> {
    match value {
        None | Some("linearizable") => Ok(Consistency::Linearizable),
        Some("local") => Ok(Consistency::Local),
        Some(other) => Err(CmtpError::bad_request(format!(
            "consistency `{other}` is not `linearizable` (the default) or `local`"
        ))),
    }
}

fn failed(error: ConsensusError) -> CmtpError {
    error.into()
}

/// A replica answered another kind of query than was asked: its fault.
fn unexpected(answer: &Answer) -> CmtpError {
    let kind = match answer {
        Answer::Record(_) => "a record",
        Answer::Records(_) => "records",
        Answer::Nodes(_) => "nodes",
        Answer::Trust(_) => "trust",
    };
    CmtpError::internal(format!("the registry answered another query (with {kind})"))
}

/// What a local read adds to its answer: how far this replica had applied.
fn replica(info: ReadInfo) -> Value {
    json!({ "applied": info.applied, "stale": info.stale })
}

impl RegistryHandle {
    /// Has `command` committed as run by `caller` (with its signed request, if it signed
    /// one); the answer is what it did.
    pub async fn write(&self, caller: &Caller, command: Command) -> Result<Value, CmtpError> {
        let address = caller_address(caller)?;
        let applied = self
            .consensus
            .propose_with_proof(command, address, caller.signed.clone())
            .await
            .map_err(failed)?;
        match applied {
            Applied::Done(Outcome::Name { record, change }) => {
                self.emit_change(&change);
                Ok(json!(record))
            }
            Applied::Done(Outcome::Attributes { address, attributes }) => {
                Ok(json!({ "address": address, "attributes": attributes }))
            }
            Applied::Done(outcome) => Ok(json!(outcome)),
            Applied::Refused(error) => Err(error),
            Applied::Ignored(fault) => Err(CmtpError::new(fault.status(), fault.to_string())),
        }
    }

    pub async fn resolve(&self, name: &str, consistency: Consistency) -> Result<Value, CmtpError> {
        let query = Query::Resolve { name: name.to_string() };
        let (answer, info) = self.consensus.query(consistency, query).await.map_err(failed)?;
        let Answer::Record(record) = answer else {
            return Err(unexpected(&answer));
        };
        let mut answer = json!(record?);
        if consistency == Consistency::Local {
            answer["replica"] = replica(info);
        }
        Ok(answer)
    }

    /// Records sorted by name, of `owner` if given, at most [`LIST_CAP`].
    pub async fn list(&self, owner: Option<Address>, consistency: Consistency) -> Result<Value, CmtpError> {
        let query = Query::List { owner, limit: LIST_CAP };
        let (answer, info) = self.consensus.query(consistency, query).await.map_err(failed)?;
        let Answer::Records(records) = answer else {
            return Err(unexpected(&answer));
        };
        Ok(match consistency {
            Consistency::Linearizable => json!(records),
            Consistency::Local => json!({ "records": records, "replica": replica(info) }),
        })
    }

    /// The admitted nodes and their roles.
    pub async fn nodes(&self, consistency: Consistency) -> Result<Value, CmtpError> {
        let (answer, info) = self.consensus.query(consistency, Query::Nodes).await.map_err(failed)?;
        let Answer::Nodes(nodes) = answer else {
            return Err(unexpected(&answer));
        };
        let nodes: Vec<Value> = nodes
            .iter()
            .map(|(node, role)| json!({ "node": node, "role": role }))
            .collect();
        Ok(json!({ "nodes": nodes, "replica": replica(info) }))
    }

    /// Raft as this node sees it.
    pub async fn status(&self) -> Value {
        json!(self.consensus.status().await)
    }

    fn emit_change(&self, change: &NameChange) {
        if change.is_noop() {
            return;
        }
        let kind = serde_json::to_value(change.kind)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        self.events.do_send(Emit::registrar(kind, &change.name, json!(change)));
    }
}
