//! The `SetRole` job (`ctx.grant`, `ctx.revoke`): a `Grant` or `Revoke` transaction by an
//! admin. Whether it may be made (the last admin keeps the role) is checked when it is
//! applied (`replay::check_role_change`), as on every member.

use std::collections::HashMap;

use cmesh_events::Emit;
use serde_json::json;

use super::{Effects, Executor, Step};
use crate::ids::Id;
use crate::messages::{RoleReply, SetRole};
use crate::roles::Role;
use crate::store::ContextRecord;
use crate::tables::Tables;
use crate::tx::Op;

impl Executor {
    pub(super) fn set_role(
        &mut self,
        tables: &mut Tables,
        staged: &mut HashMap<Id, ContextRecord>,
        effects: &mut Effects,
        msg: SetRole,
    ) -> Step<RoleReply> {
        let record = match self.admitted(tables, staged, &msg.context, &msg.by.address, Role::Admin) {
            Ok(record) => record,
            Err(err) => return Ok(Err(err)),
        };
        let op = match msg.role {
            Some(role) => Op::Grant { user: msg.user, role },
            None => Op::Revoke { user: msg.user },
        };
        let (tx, record, _) = match self.author(tables, staged, effects, record, &msg.by, op)? {
            Ok(made) => made,
            Err(err) => return Ok(Err(err)),
        };
        let kind = if msg.role.is_some() { "granted" } else { "revoked" };
        effects.events.push(Emit::new(
            "state",
            kind,
            Vec::new(),
            json!({ "context": record.id, "tx": tx, "user": msg.user, "role": msg.role, "caller": msg.by.address }),
        ));
        Ok(Ok(RoleReply {
            context: record.id,
            user: msg.user,
            role: msg.role,
            tx,
        }))
    }
}
