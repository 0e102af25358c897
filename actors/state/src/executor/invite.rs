//! The `Invite` job (`ctx.invite`): an admin makes a node a member of the context, or
//! changes its seats, with an `Invite` transaction. The invited node joins on its own
//! (the replicator's `ctx.join`).

use std::collections::HashMap;

use cmesh_events::Emit;
use serde_json::json;

use super::{Effects, Executor, Step};
use crate::error::StateError;
use crate::ids::Id;
use crate::messages::{Invite, MemberReply};
use crate::roles::Role;
use crate::store::ContextRecord;
use crate::tables::Tables;
use crate::tx::{Op, MAX_SEATS};

impl Executor {
    pub(super) fn invite(
        &mut self,
        tables: &mut Tables,
        staged: &mut HashMap<Id, ContextRecord>,
        effects: &mut Effects,
        msg: Invite,
    ) -> Step<MemberReply> {
        if msg.seats == 0 || msg.seats > MAX_SEATS {
            return Ok(Err(StateError::BadRequest(format!(
                "seats must be 1 to {MAX_SEATS}, not {}",
                msg.seats
            ))));
        }
        let record = match self.admitted(tables, staged, &msg.context, &msg.by.address, Role::Admin) {
            Ok(record) => record,
            Err(err) => return Ok(Err(err)),
        };
        let op = Op::Invite {
            member: msg.member,
            seats: msg.seats,
        };
        let (tx, record, _) = match self.author(tables, staged, effects, record, &msg.by, op)? {
            Ok(made) => made,
            Err(err) => return Ok(Err(err)),
        };
        effects.events.push(Emit::new(
            "state",
            "invited",
            Vec::new(),
            json!({ "context": record.id, "tx": tx, "member": msg.member, "seats": msg.seats,
                    "caller": msg.by.address }),
        ));
        Ok(Ok(MemberReply {
            context: record.id,
            member: msg.member,
            seats: msg.seats,
            tx,
        }))
    }
}
