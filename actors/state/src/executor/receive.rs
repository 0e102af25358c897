//! The `Receive` job: transactions of other members, checked on their own by the
//! replicator, added to the DAG once their parents are held (whatever order they came
//! in), and every context they touched settled at once (`replay::settle`). A genesis
//! starts a context here only when it is the one being joined.

use std::collections::HashMap;

use cmesh_events::Emit;
use redb::ReadableTable;
use serde_json::json;

use super::{fatal, start_context, Effects, Executor, Step};
use crate::dag::{self, Added, OrderKey};
use crate::error::StateError;
use crate::ids::Id;
use crate::messages::{Receive, ReceiveReport};
use crate::replay;
use crate::store::ContextRecord;
use crate::tables::Tables;
use crate::tx::{Op, VerifiedTx};

/// Most transaction ids a `state.received` event names.
const MAX_IDS_IN_EVENT: usize = 256;
/// Invalid transaction ids remembered, so that their descendants are refused at once
/// rather than waiting for a parent that will never be added.
const REMEMBERED_INVALID: usize = 65_536;

impl Executor {
    /// Adds received transactions to the DAG (each once its parents are held, whatever
    /// order they came in) and settles every context they touched.
    pub(super) fn receive(
        &mut self,
        tables: &mut Tables,
        staged: &mut HashMap<Id, ContextRecord>,
        effects: &mut Effects,
        msg: Receive,
    ) -> Step<ReceiveReport> {
        let mut report = ReceiveReport::default();
        let mut earliest: HashMap<Id, OrderKey> = HashMap::new();
        let mut added_to: HashMap<Id, Vec<Id>> = HashMap::new();
        let mut added_txs = Vec::new();
        let mut waiting: Vec<(VerifiedTx, Vec<Id>)> = msg.txs.into_iter().map(|tx| (tx, Vec::new())).collect();
        loop {
            let mut progress = false;
            let mut still = Vec::new();
            for (verified, _) in waiting {
                let id = verified.id();
                let body = &verified.tx().body;
                let context = body.context_of(id);
                if self.invalid.contains(&id) {
                    report.invalid.push((id, "it was found invalid before".into()));
                    continue;
                }
                let key = if body.is_genesis() {
                    match self.add_genesis(tables, staged, &verified, msg.joining)? {
                        Ok(Some(key)) => key,
                        Ok(None) => {
                            report.duplicates += 1;
                            continue;
                        }
                        Err(err) => return Ok(Err(err)),
                    }
                } else {
                    let Some(mut record) = self.record(tables, staged, &context).map_err(fatal)? else {
                        if msg.joining == Some(context) {
                            // Its genesis may come later in this batch.
                            still.push((verified, vec![context]));
                        } else {
                            report.unknown_context += 1;
                        }
                        continue;
                    };
                    match dag::add(
                        tables,
                        &mut self.members,
                        &mut record,
                        body,
                        id,
                        Some(verified.encoded()),
                    )
                    .map_err(fatal)?
                    {
                        Added::New(key) => {
                            staged.insert(context, record);
                            key
                        }
                        Added::Duplicate => {
                            report.duplicates += 1;
                            continue;
                        }
                        Added::Missing(parents) => {
                            if let Some(parent) = parents.iter().find(|p| self.invalid.contains(p)) {
                                let why = format!("its parent {parent} is invalid");
                                self.remember_invalid(id);
                                report.invalid.push((id, why));
                            } else {
                                still.push((verified, parents));
                            }
                            continue;
                        }
                        Added::Invalid(why) => {
                            self.remember_invalid(id);
                            report.invalid.push((id, why));
                            continue;
                        }
                    }
                };
                earliest
                    .entry(context)
                    .and_modify(|k| *k = (*k).min(key))
                    .or_insert(key);
                added_to.entry(context).or_default().push(id);
                report.added.push(id);
                added_txs.push(verified);
                progress = true;
            }
            waiting = still;
            if !progress || waiting.is_empty() {
                break;
            }
        }
        report.missing = waiting
            .into_iter()
            .map(|(verified, parents)| (verified.id(), parents))
            .collect();
        let known = replay::Known {
            own: &effects.unsigned,
            received: added_txs.iter().map(|tx| (tx.id(), &tx.tx().body)).collect(),
        };
        for (context, from) in earliest {
            let mut record = self
                .record(tables, staged, &context)
                .map_err(fatal)?
                .ok_or_else(|| fatal(StateError::Record(format!("context {context} vanished in a batch"))))?;
            let mut added = added_to.remove(&context).unwrap_or_default();
            let added_count = added.len();
            // The ids keep the event small enough to publish (a catch-up page adds
            // thousands at once; then only their number is said).
            if added.len() > MAX_IDS_IN_EVENT {
                added.clear();
            }
            let settled = replay::settle(&self.runtime, tables, &mut record, from, &known).map_err(fatal)?;
            let replay::Settled {
                applied,
                undone,
                failed,
            } = settled;
            report.undone += undone;
            report.applied += applied;
            report.failed += failed;
            effects.events.push(Emit::new(
                "state",
                "received",
                Vec::new(),
                json!({ "context": context, "added": added_count, "txs": added,
                        "applied": applied, "undone": undone, "failed": failed,
                        "root": record.root, "heads": record.heads }),
            ));
            staged.insert(context, record);
        }
        effects.written += report.added.len() as u64;
        if !report.invalid.is_empty() {
            effects.events.push(Emit::new(
                "state",
                "invalid",
                Vec::new(),
                json!({ "transactions": report.invalid.iter().map(|(id, why)| json!({ "tx": id, "reason": why }))
                        .collect::<Vec<_>>() }),
            ));
        }
        Ok(Ok(report))
    }

    /// Starts a context from its received genesis, if it is the one being joined and its
    /// app is here. `None`: held already.
    fn add_genesis(
        &mut self,
        tables: &mut Tables,
        staged: &mut HashMap<Id, ContextRecord>,
        verified: &VerifiedTx,
        joining: Option<Id>,
    ) -> Step<Option<OrderKey>> {
        let id = verified.id();
        let body = &verified.tx().body;
        if self.record(tables, staged, &id).map_err(fatal)?.is_some() {
            return Ok(Ok(None));
        }
        if joining != Some(id) {
            return Ok(Err(StateError::Forbidden(format!(
                "context {id} is not held here and is not being joined"
            ))));
        }
        if let Op::Create { app, limits, .. } = &body.op {
            if tables
                .app_code
                .get(app.0.as_slice())
                .map_err(|e| fatal(e.into()))?
                .is_none()
            {
                return Ok(Err(StateError::NotFound(format!(
                    "app {app} of context {id} is not on this node: fetch it before the genesis"
                ))));
            }
            let memory = self.runtime.config().memory_limit_bytes;
            if limits.memory_bytes != memory {
                return Ok(Err(StateError::Conflict(format!(
                    "context {id} runs calls with {} bytes of memory and this node with {memory}: \
                     members must use the same memory limit",
                    limits.memory_bytes
                ))));
            }
        }
        let record = dag::add_genesis(tables, body, id, Some(verified.encoded()))
            .map_err(fatal)?
            .ok_or_else(|| fatal(StateError::Record(format!("context {id} exists already"))))?;
        start_context(tables, staged, record).map_err(fatal)?;
        Ok(Ok(Some(OrderKey { height: 1, id })))
    }

    fn remember_invalid(&mut self, id: Id) {
        if self.invalid.len() >= REMEMBERED_INVALID {
            self.invalid.clear();
        }
        self.invalid.insert(id);
    }
}
