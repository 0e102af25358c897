//! The `Leave` job (the first half of `ctx.leave`): this node says it leaves with a
//! `Leave` transaction. Its rows stay until the others hold the `Leave` (the replicator
//! checks), and then go with the `Forget` job.

use std::collections::HashMap;

use cmesh_events::Emit;
use serde_json::json;

use super::{fatal, Effects, Executor, Step};
use crate::checks::not_held;
use crate::dag;
use crate::ids::Id;
use crate::messages::{Leave, LeaveReply, Requester};
use crate::store::ContextRecord;
use crate::tables::Tables;
use crate::tx::Op;

impl Executor {
    /// Authors this node's `Leave` of a context it is still a member of (`tx: None`: it
    /// is not). Nothing is deleted: the others must get the `Leave` first (the `Forget` job).
    pub(super) fn leave(
        &mut self,
        tables: &mut Tables,
        staged: &mut HashMap<Id, ContextRecord>,
        effects: &mut Effects,
        msg: Leave,
    ) -> Step<LeaveReply> {
        let Some(record) = self.record(tables, staged, &msg.context).map_err(fatal)? else {
            return Ok(Err(not_held(&msg.context)));
        };
        let members = dag::current_members(&tables.changes, &mut self.members, &record).map_err(fatal)?;
        if !members.contains_key(&self.node) {
            return Ok(Ok(LeaveReply {
                context: record.id,
                tx: None,
            }));
        }
        let by = Requester::new(self.node);
        let (tx, record, _) = match self.author(tables, staged, effects, record, &by, Op::Leave)? {
            Ok(made) => made,
            Err(err) => return Ok(Err(err)),
        };
        effects.events.push(Emit::new(
            "state",
            "left",
            Vec::new(),
            json!({ "context": record.id, "tx": tx, "member": self.node }),
        ));
        Ok(Ok(LeaveReply {
            context: record.id,
            tx: Some(tx),
        }))
    }
}
