//! The read path, and deploys: a small pool of threads (an actix `SyncArbiter`) that
//! answer on their own redb read transactions, so views never wait for the executor's
//! commits and compiling a module never stalls transactions.

use std::sync::Arc;

use actix::{Actor, Addr, Handler, SyncContext};
use cmesh_common::hash::keccak256;
use cmesh_common::time::unix_millis;
use cmesh_common::Address;
use cmesh_events::{Emit, EventsActor};
use redb::{Database, ReadableDatabase, ReadableTable};
use serde_json::json;

use crate::checks::{check_role, check_version, load_code, not_held, output_value};
use crate::dag::{self, MemberCache, TxRow};
use crate::error::StateError;
use crate::ids::Id;
use crate::messages::{
    AppCode, CallContext, CallReply, ContextInfo, ContextMembers, ContextRoot, Deploy, FetchTransactions, GetSyncState,
    HeldContexts, Lacking, ListApps, ListContexts, Member, MembersReply, MissingTransactions, OrderKey, ResolveContext,
    RootReply, SyncPage, SyncState,
};
use crate::reader::ContextReader;
use crate::roles::Role;
use crate::store::{self, AppRecord, ContextRecord};
use crate::tables;
use cmesh_runtime::{Call, Runtime};

/// Longest app name, in bytes.
pub const MAX_APP_NAME: usize = 64;

pub struct ViewWorker {
    pub db: Arc<Database>,
    pub runtime: Runtime,
    pub events: Option<Addr<EventsActor>>,
}

impl Actor for ViewWorker {
    type Context = SyncContext<Self>;
}

impl ViewWorker {
    /// The record of the context `text` names, if `user` may read it.
    fn readable(
        contexts: &impl ReadableTable<&'static [u8], &'static [u8]>,
        roles: &impl ReadableTable<&'static [u8], u8>,
        text: &str,
        user: &Address,
    ) -> Result<ContextRecord, StateError> {
        let id = store::resolve_context(contexts, text)?;
        check_role(store::role_of(roles, &id, user)?, Role::Reader, user, &id)?;
        Self::held(contexts, &id)
    }

    /// The record of a context this node holds.
    fn held(
        contexts: &impl ReadableTable<&'static [u8], &'static [u8]>,
        context: &Id,
    ) -> Result<ContextRecord, StateError> {
        store::context_record(contexts, context)?.ok_or_else(|| not_held(context))
    }
}

/// App names: lower-case letters, digits, `-` and `_`, starting with a letter or digit.
fn check_app_name(name: &str) -> Result<(), StateError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_APP_NAME
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(StateError::BadRequest(format!(
            "app name `{}` is invalid: use 1 to {MAX_APP_NAME} lower-case letters, digits, `-` or `_`",
            name.chars().take(80).collect::<String>()
        )))
    }
}

impl Handler<Deploy> for ViewWorker {
    type Result = Result<AppRecord, StateError>;

    fn handle(&mut self, msg: Deploy, _: &mut SyncContext<Self>) -> Self::Result {
        check_app_name(&msg.name)?;
        let version = semver::Version::parse(&msg.version)
            .map_err(|source| StateError::NotAVersion {
                version: msg.version.clone(),
                source,
            })?
            .to_string();
        let app = Id(keccak256(&msg.wasm));
        let key = store::version_key(&msg.name, &version);
        {
            let txn = self.db.begin_read()?;
            let versions = txn.open_table(tables::APP_VERSIONS)?;
            if let Some(record) = already_deployed(&versions, &key, &app)? {
                return Ok(record);
            }
        }
        let info = self.runtime.prepare(&app.0, &msg.wasm)?;
        let record = AppRecord {
            app,
            name: msg.name,
            version,
            methods: info.methods,
            size: msg.wasm.len() as u64,
            deployed_by: msg.by,
            deployed_at_ms: unix_millis(),
        };
        let txn = self.db.begin_write()?;
        {
            let mut versions = txn.open_table(tables::APP_VERSIONS)?;
            // Checked again: another deploy of the same version may have won meanwhile.
            if let Some(record) = already_deployed(&versions, &key, &app)? {
                return Ok(record);
            }
            versions.insert(key.as_str(), store::encode(&record)?.as_slice())?;
            let mut code = txn.open_table(tables::APP_CODE)?;
            if code.get(app.0.as_slice())?.is_none() {
                code.insert(app.0.as_slice(), msg.wasm.as_slice())?;
            }
        }
        txn.commit()?;
        if let Some(events) = &self.events {
            events.do_send(Emit::new(
                "state",
                "deployed",
                Vec::new(),
                json!({ "app": record.app, "name": record.name, "version": record.version, "caller": record.deployed_by }),
            ));
        }
        Ok(record)
    }
}

/// The record of `key` if it is deployed with this code; 409 if with other code.
fn already_deployed(
    versions: &impl ReadableTable<&'static str, &'static [u8]>,
    key: &str,
    app: &Id,
) -> Result<Option<AppRecord>, StateError> {
    let Some(bytes) = versions.get(key)? else {
        return Ok(None);
    };
    let record: AppRecord = store::decode(bytes.value())?;
    if record.app == *app {
        Ok(Some(record))
    } else {
        Err(StateError::Conflict(format!(
            "{} {} is already deployed as app {}; deploy changed code under a new version",
            record.name, record.version, record.app
        )))
    }
}

impl Handler<ListApps> for ViewWorker {
    type Result = Result<Vec<AppRecord>, StateError>;

    fn handle(&mut self, _: ListApps, _: &mut SyncContext<Self>) -> Self::Result {
        let txn = self.db.begin_read()?;
        let versions = txn.open_table(tables::APP_VERSIONS)?;
        let mut apps = Vec::new();
        for entry in versions.iter()? {
            let (_, bytes) = entry?;
            apps.push(store::decode::<AppRecord>(bytes.value())?);
        }
        Ok(apps)
    }
}

impl Handler<ListContexts> for ViewWorker {
    type Result = Result<Vec<ContextInfo>, StateError>;

    fn handle(&mut self, msg: ListContexts, _: &mut SyncContext<Self>) -> Self::Result {
        let txn = self.db.begin_read()?;
        let memberships = txn.open_table(tables::MEMBERSHIPS)?;
        let contexts = txn.open_table(tables::CONTEXTS)?;
        let start = store::membership_key(&msg.by, &Id([0; 32]));
        let end = store::membership_key(&msg.by, &Id([0xff; 32]));
        let mut out = Vec::new();
        for entry in memberships.range(start.as_slice()..=end.as_slice())? {
            let (key, role) = entry?;
            let mut id = [0u8; 32];
            id.copy_from_slice(&key.value()[20..]);
            let (Some(record), Some(role)) = (
                store::context_record(&contexts, &Id(id))?,
                Role::from_byte(role.value()),
            ) else {
                continue;
            };
            out.push(ContextInfo {
                context: record.id,
                app: record.app,
                name: record.name,
                version: record.version,
                role,
                applied: record.applied,
                root: record.root,
                tx: None,
            });
        }
        Ok(out)
    }
}

impl Handler<CallContext> for ViewWorker {
    type Result = Result<CallReply, StateError>;

    fn handle(&mut self, msg: CallContext, _: &mut SyncContext<Self>) -> Self::Result {
        let txn = self.db.begin_read()?;
        let contexts = txn.open_table(tables::CONTEXTS)?;
        let roles = txn.open_table(tables::ROLES)?;
        let record = Self::readable(&contexts, &roles, &msg.context, &msg.by.address)?;
        check_version(&record, msg.version_req.as_deref())?;
        let kv = txn.open_table(tables::KV)?;
        let code = txn.open_table(tables::APP_CODE)?;
        let reader = ContextReader::new(&kv, record.id);
        let load = || load_code(&code, &record.app);
        let call = Call {
            method: &msg.method,
            input: &msg.args,
            caller: msg.by.address.0,
            context: record.id.0,
            tx_id: None,
            time_ms: record.last_time_ms,
            gas_limit: Some(record.limits.gas),
        };
        let outcome = self.runtime.call(&record.app.0, &load, call, &reader)?;
        Ok(CallReply {
            result: output_value(&outcome.output)?,
            tx: None,
            gas_used: outcome.gas_used,
            logs: outcome.logs,
        })
    }
}

impl Handler<ContextRoot> for ViewWorker {
    type Result = Result<RootReply, StateError>;

    fn handle(&mut self, msg: ContextRoot, _: &mut SyncContext<Self>) -> Self::Result {
        let txn = self.db.begin_read()?;
        let contexts = txn.open_table(tables::CONTEXTS)?;
        let roles = txn.open_table(tables::ROLES)?;
        let record = Self::readable(&contexts, &roles, &msg.context, &msg.by)?;
        Ok(RootReply {
            context: record.id,
            root: record.root,
            heads: record.heads,
            applied: record.applied,
        })
    }
}

impl Handler<ResolveContext> for ViewWorker {
    type Result = Result<Id, StateError>;

    fn handle(&mut self, msg: ResolveContext, _: &mut SyncContext<Self>) -> Self::Result {
        let txn = self.db.begin_read()?;
        let contexts = txn.open_table(tables::CONTEXTS)?;
        let roles = txn.open_table(tables::ROLES)?;
        let id = store::resolve_context(&contexts, &msg.context)?;
        check_role(store::role_of(&roles, &id, &msg.by)?, msg.role, &msg.by, &id)?;
        Ok(id)
    }
}

impl Handler<ContextMembers> for ViewWorker {
    type Result = Result<MembersReply, StateError>;

    fn handle(&mut self, msg: ContextMembers, _: &mut SyncContext<Self>) -> Self::Result {
        let txn = self.db.begin_read()?;
        let contexts = txn.open_table(tables::CONTEXTS)?;
        let roles = txn.open_table(tables::ROLES)?;
        let record = Self::readable(&contexts, &roles, &msg.context, &msg.by)?;
        let changes = txn.open_table(tables::CHANGES)?;
        let members = dag::current_members(&changes, &mut MemberCache::default(), &record)?;
        Ok(MembersReply {
            context: record.id,
            members: members
                .into_iter()
                .map(|(member, seats)| Member { member, seats })
                .collect(),
        })
    }
}

impl Handler<FetchTransactions> for ViewWorker {
    type Result = Result<Vec<Vec<u8>>, StateError>;

    fn handle(&mut self, msg: FetchTransactions, _: &mut SyncContext<Self>) -> Self::Result {
        let txn = self.db.begin_read()?;
        let txs = txn.open_table(tables::TRANSACTIONS)?;
        let heights = txn.open_table(tables::HEIGHTS)?;
        let mut out = Vec::with_capacity(msg.ids.len());
        for id in &msg.ids {
            let Some(key) = dag::place(&heights, id)? else {
                continue;
            };
            // Not there: it is of another context.
            if let Some(bytes) = txs.get(key.in_context(&msg.context).as_slice())? {
                out.push(TxRow::parse(bytes.value())?.tx().to_vec());
            }
        }
        Ok(out)
    }
}

impl Handler<GetSyncState> for ViewWorker {
    type Result = Result<SyncState, StateError>;

    fn handle(&mut self, msg: GetSyncState, _: &mut SyncContext<Self>) -> Self::Result {
        let txn = self.db.begin_read()?;
        let record = Self::held(&txn.open_table(tables::CONTEXTS)?, &msg.context)?;
        let changes = txn.open_table(tables::CHANGES)?;
        let members = dag::current_members(&changes, &mut MemberCache::default(), &record)?;
        Ok(SyncState {
            members: members
                .into_iter()
                .map(|(member, seats)| Member { member, seats })
                .collect(),
            heads: record.heads,
            seqs: record.seqs,
            applied: record.applied,
            root: record.root,
        })
    }
}

/// Most transactions in one page of [`MissingTransactions`].
pub const MAX_SYNC_PAGE: usize = 4_096;

impl Handler<MissingTransactions> for ViewWorker {
    type Result = Result<SyncPage, StateError>;

    fn handle(&mut self, msg: MissingTransactions, _: &mut SyncContext<Self>) -> Self::Result {
        let txn = self.db.begin_read()?;
        let record = Self::held(&txn.open_table(tables::CONTEXTS)?, &msg.context)?;
        let txs = txn.open_table(tables::TRANSACTIONS)?;
        let have: std::collections::HashMap<Address, u64> = msg.have.into_iter().collect();
        let limit = msg.limit.clamp(1, MAX_SYNC_PAGE);
        // A member that lags a little (the usual case: a lost broadcast, a heads notice)
        // is answered from the author seqs, without walking the whole apply order.
        let behind: u64 = record
            .seqs
            .iter()
            .map(|(author, seq)| seq.saturating_sub(have.get(author).copied().unwrap_or(0)))
            .sum();
        if msg.after.is_none() && behind <= limit as u64 {
            let seqs = txn.open_table(tables::AUTHOR_SEQS)?;
            let heights = txn.open_table(tables::HEIGHTS)?;
            let mut rows = Vec::new();
            for (author, _) in &record.seqs {
                let from = have.get(author).copied().unwrap_or(0).saturating_add(1);
                let start = dag::seq_key(&msg.context, author, from, &Id([0; 32]));
                let end = dag::seq_key(&msg.context, author, u64::MAX, &Id([0xff; 32]));
                for entry in seqs.range(start.as_slice()..=end.as_slice())? {
                    let (key, _) = entry?;
                    let id: [u8; 32] = key
                        .value()
                        .get(60..)
                        .and_then(|id| id.try_into().ok())
                        .ok_or_else(|| StateError::Record("an author seq key is not 92 bytes".into()))?;
                    let missing = || StateError::Record(format!("transaction {} is missing", Id(id)));
                    let key = dag::place(&heights, &Id(id))?.ok_or_else(missing)?;
                    let bytes = txs.get(key.in_context(&msg.context).as_slice())?.ok_or_else(missing)?;
                    rows.push((key, TxRow::parse(bytes.value())?.tx().to_vec()));
                }
            }
            rows.sort_unstable_by_key(|(key, _)| *key);
            let mut page = Vec::new();
            let mut page_bytes = 0;
            for (key, tx) in rows {
                if !page.is_empty() && page_bytes + tx.len() > msg.max_bytes {
                    // The rest comes from the apply order, after the last one sent.
                    let next = page.last().map(|(key, _): &(OrderKey, Vec<u8>)| *key);
                    return Ok(SyncPage {
                        txs: page.into_iter().map(|(_, tx)| tx).collect(),
                        next,
                    });
                }
                page_bytes += tx.len();
                page.push((key, tx));
            }
            return Ok(SyncPage {
                txs: page.into_iter().map(|(_, tx)| tx).collect(),
                next: None,
            });
        }
        // From `after` itself (skipped below), or from the context's first position.
        let start = match msg.after {
            Some(after) => after.in_context(&msg.context),
            None => OrderKey::first_in(&msg.context),
        };
        let end = OrderKey::last_in(&msg.context);
        let mut page = Vec::new();
        let mut page_bytes = 0;
        // The last position this page covers: the next page starts after it.
        let mut covered = None;
        for entry in txs.range(start.as_slice()..=end.as_slice())? {
            let (key, bytes) = entry?;
            let key = OrderKey::from_table_key(key.value())?;
            if Some(key) == msg.after {
                continue;
            }
            let row = TxRow::parse(bytes.value())?;
            let info = row.meta()?;
            if have.get(&info.author).is_some_and(|held| info.seq <= *held) {
                covered = Some(key);
                continue;
            }
            let tx = row.tx();
            if !page.is_empty() && (page.len() == limit || page_bytes + tx.len() > msg.max_bytes) {
                return Ok(SyncPage {
                    txs: page,
                    next: covered,
                });
            }
            page_bytes += tx.len();
            page.push(tx.to_vec());
            covered = Some(key);
        }
        Ok(SyncPage { txs: page, next: None })
    }
}

impl Handler<Lacking> for ViewWorker {
    type Result = Result<Vec<Id>, StateError>;

    fn handle(&mut self, msg: Lacking, _: &mut SyncContext<Self>) -> Self::Result {
        let txn = self.db.begin_read()?;
        let txs = txn.open_table(tables::TRANSACTIONS)?;
        let heights = txn.open_table(tables::HEIGHTS)?;
        let mut lacking = Vec::new();
        for id in msg.ids {
            if dag::locate(&heights, &txs, &msg.context, &id)?.is_none() {
                lacking.push(id);
            }
        }
        Ok(lacking)
    }
}

impl Handler<AppCode> for ViewWorker {
    type Result = Result<Option<Vec<u8>>, StateError>;

    fn handle(&mut self, msg: AppCode, _: &mut SyncContext<Self>) -> Self::Result {
        let txn = self.db.begin_read()?;
        let code = txn.open_table(tables::APP_CODE)?;
        Ok(code.get(msg.app.0.as_slice())?.map(|bytes| bytes.value().to_vec()))
    }
}

impl Handler<HeldContexts> for ViewWorker {
    type Result = Result<Vec<Id>, StateError>;

    fn handle(&mut self, _: HeldContexts, _: &mut SyncContext<Self>) -> Self::Result {
        let txn = self.db.begin_read()?;
        let contexts = txn.open_table(tables::CONTEXTS)?;
        let mut held = Vec::new();
        for entry in contexts.iter()? {
            let (key, _) = entry?;
            let id: [u8; 32] = key
                .value()
                .try_into()
                .map_err(|_| StateError::Record("a context key is not 32 bytes".into()))?;
            held.push(Id(id));
        }
        Ok(held)
    }
}
