//! The `CallContext {write: true}` job: a method of the context's app run as this node's
//! next transaction. A call the app or the caller got wrong makes no transaction and
//! never aborts the batch: it is counted, published as `state.rejected`, and answered
//! with the rest of its batch.

use std::collections::HashMap;

use cmesh_events::Emit;
use serde_json::json;

use super::{fatal, Effects, Executor, Step};
use crate::checks::check_version;
use crate::error::StateError;
use crate::ids::Id;
use crate::messages::{CallContext, CallReply};
use crate::replay::Effect;
use crate::roles::Role;
use crate::store::ContextRecord;
use crate::tables::Tables;
use crate::tx::Op;

impl Executor {
    pub(super) fn call(
        &mut self,
        tables: &mut Tables,
        staged: &mut HashMap<Id, ContextRecord>,
        effects: &mut Effects,
        msg: CallContext,
    ) -> Step<CallReply> {
        let record = match self.admitted(tables, staged, &msg.context, &msg.by.address, Role::Writer) {
            Ok(record) => record,
            Err(err) => return Ok(Err(err)),
        };
        if let Err(err) = check_version(&record, msg.version_req.as_deref()) {
            return Ok(Err(err));
        }
        let context = record.id;
        let op = Op::Call {
            method: msg.method.clone(),
            args: msg.args,
        };
        let (tx, record, effect) = match self.author(tables, staged, effects, record, &msg.by, op)? {
            Ok(made) => made,
            // A failed call wrote nothing, so it never aborts the batch, even when the
            // node is at fault (a stored module that no longer loads): only this job fails.
            Err(err) => {
                effects.rejected += 1;
                effects.events.push(Emit::new(
                    "state",
                    "rejected",
                    Vec::new(),
                    json!({ "context": context, "method": msg.method, "caller": msg.by.address,
                            "status": err.status().0, "error": err.to_string() }),
                ));
                return Ok(Err(err));
            }
        };
        let Effect::Call {
            result,
            gas_used,
            logs,
            events,
            writes,
        } = effect
        else {
            return Err(fatal(StateError::Record(format!(
                "transaction {tx} was a call and had no call effect"
            ))));
        };
        effects.events.push(Emit::new(
            "state",
            "executed",
            Vec::new(),
            json!({ "context": record.id, "tx": tx, "method": msg.method, "caller": msg.by.address,
                    "gas_used": gas_used, "writes": writes, "root": record.root }),
        ));
        let context = record.id.to_string();
        effects.events.extend(
            events
                .into_iter()
                .map(|event| Emit::context(&context, &event.name, event.data)),
        );
        Ok(Ok(CallReply {
            result,
            tx: Some(tx),
            gas_used,
            logs,
        }))
    }
}
