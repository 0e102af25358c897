//! Names on disk, in one redb file.
//!
//! Why this shape: every write is a single redb write transaction that reads the current
//! record, checks the rules against it and either commits (durably, before we answer) or
//! aborts. Checking inside the transaction means a rejected request never writes, and
//! nothing can slip in between the ownership check and the write. Records are MessagePack
//! maps (named fields), so adding a field later does not break old files.

use std::path::{Path, PathBuf};

use cmesh_common::Address;
use redb::{Database, ReadableDatabase, ReadableTable, Table, TableDefinition, WriteTransaction};
use tracing::{debug, info, warn};

use super::error::{RegistrarError, StorageContext};
use super::names::{check_target, NamePolicy};
use super::record::{NameChange, NameRecord};

/// name (normalised) -> MessagePack [`NameRecord`].
const NAMES: TableDefinition<&str, &[u8]> = TableDefinition::new("names");
/// Bookkeeping: the schema version of this file.
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const SCHEMA_KEY: &str = "schema_version";

/// The layout version this code reads and writes.
pub const SCHEMA_VERSION: u64 = 1;

/// Most records one `list` returns. Lists are sorted by name, so a capped list is the
/// first `LIST_CAP` names (of that owner); there is no paging yet.
pub const LIST_CAP: usize = 1_000;

type NamesTable<'txn> = Table<'txn, &'static str, &'static [u8]>;

/// What a write closure decided.
enum Outcome<T> {
    /// It changed the table: commit.
    Commit(T),
    /// It changed nothing: abort instead of paying for a durable commit.
    Unchanged(T),
}

/// The registrar's storage. All methods take `&self`; redb serialises writers.
#[derive(Debug)]
pub struct RegistrarStore {
    db: Database,
    policy: NamePolicy,
    path: PathBuf,
}

impl RegistrarStore {
    /// Opens (or creates) the database at `path`. The parent directory must exist.
    pub fn open(path: &Path, policy: NamePolicy) -> Result<Self, RegistrarError> {
        let db = Database::create(path).map_err(|source| RegistrarError::Open {
            path: path.to_owned(),
            source: source.into(),
        })?;
        let txn = db.begin_write().during("opening the database")?;
        {
            txn.open_table(NAMES).during("creating the names table")?;
            let mut meta = txn.open_table(META).during("creating the meta table")?;
            let found = meta
                .get(SCHEMA_KEY)
                .during("reading the schema version")?
                .map(|v| v.value());
            match found {
                None => {
                    meta.insert(SCHEMA_KEY, SCHEMA_VERSION)
                        .during("writing the schema version")?;
                }
                Some(SCHEMA_VERSION) => {}
                Some(found) => {
                    return Err(RegistrarError::Schema {
                        found,
                        expected: SCHEMA_VERSION,
                    });
                }
            }
        }
        txn.commit().during("committing the schema version")?;
        info!(path = %path.display(), tlds = ?policy.tlds(), "registrar database open");
        Ok(RegistrarStore {
            db,
            policy,
            path: path.to_owned(),
        })
    }

    pub fn policy(&self) -> &NamePolicy {
        &self.policy
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Registers a free name to `caller`. 409 if anyone holds it.
    pub fn register(
        &self,
        caller: Address,
        name: &str,
        target: &str,
        now_ms: u64,
    ) -> Result<(NameRecord, NameChange), RegistrarError> {
        let name = self.policy.normalize(name)?;
        check_target(target)?;
        let record = NameRecord::registered(name.clone(), caller, target, now_ms);
        let bytes = encode(&record)?;
        let done = self.write("registering", |table| {
            if let Some(existing) = get(table, &name)? {
                return Err(RegistrarError::Taken {
                    name: name.clone(),
                    owner: existing.owner,
                });
            }
            table
                .insert(name.as_str(), bytes.as_slice())
                .during("inserting the record")?;
            Ok(Outcome::Commit(()))
        });
        match done {
            Ok(()) => {
                info!(name = %record.name, owner = %record.owner, "name registered");
                let change = NameChange::registered(&record);
                Ok((record, change))
            }
            Err(error) => Err(rejected("register", &name, error)),
        }
    }

    /// The record for `name`. 404 if it is not registered.
    pub fn resolve(&self, name: &str) -> Result<NameRecord, RegistrarError> {
        let name = self.policy.normalize(name)?;
        let txn = self.db.begin_read().during("starting a read")?;
        let table = txn.open_table(NAMES).during("opening the names table")?;
        let guard = table.get(name.as_str()).during("reading the record")?;
        match guard {
            Some(bytes) => decode(&name, bytes.value()),
            None => Err(RegistrarError::NotFound { name }),
        }
    }

    /// Gives `name` to `to`. Only the owner may. Transferring to the current owner
    /// succeeds without writing anything; the change then reports `is_noop()`.
    pub fn transfer(
        &self,
        caller: Address,
        name: &str,
        to: Address,
        now_ms: u64,
    ) -> Result<(NameRecord, NameChange), RegistrarError> {
        let name = self.policy.normalize(name)?;
        let done = self.write("transferring", |table| {
            let mut record = owned_by(table, &name, caller, "transfer")?;
            if record.owner == to {
                return Ok(Outcome::Unchanged(record));
            }
            record.owner = to;
            record.updated_at = now_ms.max(record.registered_at);
            let bytes = encode(&record)?;
            table
                .insert(name.as_str(), bytes.as_slice())
                .during("updating the record")?;
            Ok(Outcome::Commit(record))
        });
        match done {
            Ok(record) => {
                if record.owner == caller {
                    debug!(name = %record.name, owner = %caller, "self-transfer: nothing to do");
                } else {
                    let to = record.owner;
                    info!(name = %record.name, from = %caller, %to, "name transferred");
                }
                let change = NameChange::transferred(&record, caller);
                Ok((record, change))
            }
            Err(error) => Err(rejected("transfer", &name, error)),
        }
    }

    /// Deletes `name`; it can be registered again afterwards. Only the owner may.
    /// Returns the record as it was.
    pub fn release(&self, caller: Address, name: &str) -> Result<(NameRecord, NameChange), RegistrarError> {
        let name = self.policy.normalize(name)?;
        let done = self.write("releasing", |table| {
            let record = owned_by(table, &name, caller, "release")?;
            table.remove(name.as_str()).during("removing the record")?;
            Ok(Outcome::Commit(record))
        });
        match done {
            Ok(record) => {
                info!(name = %record.name, owner = %record.owner, "name released");
                let change = NameChange::released(&record);
                Ok((record, change))
            }
            Err(error) => Err(rejected("release", &name, error)),
        }
    }

    /// Records sorted by name, all or only `owner`'s, at most [`LIST_CAP`]. Filtering by
    /// owner scans the table (there is no owner index).
    pub fn list(&self, owner: Option<Address>) -> Result<Vec<NameRecord>, RegistrarError> {
        self.scan(owner, Some(LIST_CAP))
    }

    /// Every record, sorted by name: what a migration to the mesh registry moves.
    pub fn all(&self) -> Result<Vec<NameRecord>, RegistrarError> {
        self.scan(None, None)
    }

    fn scan(&self, owner: Option<Address>, cap: Option<usize>) -> Result<Vec<NameRecord>, RegistrarError> {
        let txn = self.db.begin_read().during("starting a read")?;
        let table = txn.open_table(NAMES).during("opening the names table")?;
        let mut out = Vec::new();
        for entry in table.iter().during("listing names")? {
            let (key, value) = entry.during("listing names")?;
            let record = decode(key.value(), value.value())?;
            if owner.is_some_and(|owner| owner != record.owner) {
                continue;
            }
            if cap == Some(out.len()) {
                debug!(cap = ?cap, owner = ?owner, "list truncated");
                break;
            }
            out.push(record);
        }
        Ok(out)
    }

    /// The stored bytes of one record, for tests that check nothing was rewritten.
    #[cfg(test)]
    pub(crate) fn raw(&self, name: &str) -> Result<Option<Vec<u8>>, RegistrarError> {
        let txn = self.db.begin_read().during("starting a read")?;
        let table = txn.open_table(NAMES).during("opening the names table")?;
        let guard = table.get(name).during("reading the record")?;
        Ok(guard.map(|bytes| bytes.value().to_vec()))
    }

    /// Runs `op` in one write transaction: commit if it changed something, abort if it
    /// changed nothing or failed. Returns only after a durable commit.
    fn write<T>(
        &self,
        during: &'static str,
        op: impl FnOnce(&mut NamesTable<'_>) -> Result<Outcome<T>, RegistrarError>,
    ) -> Result<T, RegistrarError> {
        let txn = self.db.begin_write().during("starting a write")?;
        let outcome = match txn.open_table(NAMES) {
            Ok(mut table) => op(&mut table),
            Err(source) => Err(RegistrarError::Storage {
                during,
                source: source.into(),
            }),
        };
        match outcome {
            Ok(Outcome::Commit(value)) => {
                txn.commit().during("committing")?;
                Ok(value)
            }
            Ok(Outcome::Unchanged(value)) => {
                abort(txn, during);
                Ok(value)
            }
            Err(error) => {
                abort(txn, during);
                Err(error)
            }
        }
    }
}

/// Rolls back a write that must not land. A failed rollback is logged; redb also rolls
/// back on drop, and nothing was committed either way.
fn abort(txn: WriteTransaction, during: &'static str) {
    if let Err(error) = txn.abort() {
        warn!(%error, during, "registrar: aborting a write transaction failed");
    }
}

/// Logs a refused write at a level that matches whose fault it was.
fn rejected(action: &'static str, name: &str, error: RegistrarError) -> RegistrarError {
    if error.status().0 >= 500 {
        tracing::error!(action, name, %error, "registrar storage failure");
    } else {
        debug!(action, name, %error, "registrar request refused");
    }
    error
}

/// The record for `name` if `caller` owns it: 404 if missing, 403 if someone else's.
fn owned_by(
    table: &NamesTable<'_>,
    name: &str,
    caller: Address,
    action: &'static str,
) -> Result<NameRecord, RegistrarError> {
    let record = get(table, name)?.ok_or_else(|| RegistrarError::NotFound { name: name.to_owned() })?;
    record.check_owner(caller, action)?;
    Ok(record)
}

fn get(table: &NamesTable<'_>, name: &str) -> Result<Option<NameRecord>, RegistrarError> {
    let guard = table.get(name).during("reading the record")?;
    guard.map(|bytes| decode(name, bytes.value())).transpose()
}

fn encode(record: &NameRecord) -> Result<Vec<u8>, RegistrarError> {
    rmp_serde::to_vec_named(record).map_err(|error| RegistrarError::Encode {
        name: record.name.clone(),
        reason: error.to_string(),
    })
}

/// Decodes the record stored under `key`, and checks it is filed under its own name.
fn decode(key: &str, bytes: &[u8]) -> Result<NameRecord, RegistrarError> {
    let record: NameRecord = rmp_serde::from_slice(bytes).map_err(|error| RegistrarError::Corrupt {
        name: key.to_owned(),
        reason: error.to_string(),
    })?;
    if record.name != key {
        return Err(RegistrarError::Corrupt {
            name: key.to_owned(),
            reason: format!("it names `{}`", record.name),
        });
    }
    Ok(record)
}
