//! The `CreateContext` job: a new context, whose genesis transaction this node authors
//! and whose first admin is the caller. The genesis fixes what every member runs calls
//! with (the gas and memory limits of this node), and a random salt makes two contexts of
//! the same app distinct.

use std::collections::HashMap;

use cmesh_common::time::unix_millis;
use cmesh_events::Emit;
use serde_json::json;

use super::{fatal, start_context, Effects, Executor, Step};
use crate::dag::{self, OrderKey};
use crate::error::StateError;
use crate::ids::Id;
use crate::messages::{ContextInfo, CreateContext};
use crate::replay;
use crate::roles::Role;
use crate::store::{self, ContextRecord};
use crate::tables::Tables;
use crate::tx::{Limits, Op, TxBody, TX_FORMAT};

impl Executor {
    pub(super) fn create(
        &mut self,
        tables: &mut Tables,
        staged: &mut HashMap<Id, ContextRecord>,
        effects: &mut Effects,
        msg: CreateContext,
    ) -> Step<ContextInfo> {
        let app = match store::find_app(&tables.versions, &msg.app, msg.version.as_deref()) {
            Ok(app) => app,
            Err(err) => return Ok(Err(err)),
        };
        let salt = Id::random().map_err(|e| fatal(StateError::NoRandomness(e)))?;
        let config = self.runtime.config();
        let body = TxBody {
            format: TX_FORMAT,
            context: Id::ZERO,
            author: self.node,
            seq: 1,
            parents: Vec::new(),
            time_ms: unix_millis(),
            caller: msg.by.address,
            caller_proof: msg.by.proof.clone(),
            op: Op::Create {
                app: app.app,
                name: app.name,
                version: app.version,
                salt,
                limits: Limits {
                    gas: config.gas_limit,
                    memory_bytes: config.memory_limit_bytes,
                },
            },
        };
        let id = body.id().map_err(|e| fatal(e.into()))?;
        let mut record = dag::add_genesis(tables, &body, id, None)
            .map_err(fatal)?
            .ok_or_else(|| fatal(StateError::Record(format!("context {id} exists already"))))?;
        let (effect, undo) = replay::apply(&self.runtime, tables, &mut record, &body, id).map_err(fatal)?;
        effect.map_err(fatal)?;
        replay::mark_applied(tables, &mut record, OrderKey { height: 1, id }, &undo).map_err(fatal)?;
        self.signer.request(id).map_err(fatal)?;
        effects.unsigned.insert(id, body);
        start_context(tables, staged, record.clone()).map_err(fatal)?;
        effects.events.push(Emit::new(
            "state",
            "created",
            Vec::new(),
            json!({ "context": id, "app": record.app, "name": record.name, "version": record.version,
                    "tx": id, "caller": msg.by.address }),
        ));
        Ok(Ok(ContextInfo {
            context: id,
            app: record.app,
            name: record.name,
            version: record.version,
            role: Role::Admin,
            applied: record.applied,
            root: record.root,
            tx: Some(id),
        }))
    }
}
