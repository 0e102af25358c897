//! The records of `state.redb` (its tables are in `tables.rs`), their keys, opening the
//! store, and finding the app or the context a request names.

use std::path::Path;

use cmesh_common::Address;
use redb::{Database, ReadableTable, TableHandle};
use serde::{Deserialize, Serialize};

use crate::dag::OrderKey;
use crate::error::StateError;
use crate::ids::Id;
use crate::node_cache::NodeCache;
use crate::roles::Role;
use crate::tables::{self, Tables};
use crate::tx::Limits;

/// A deployed version of an app.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppRecord {
    pub app: Id,
    pub name: String,
    pub version: String,
    pub methods: Vec<String>,
    pub size: u64,
    pub deployed_by: Address,
    pub deployed_at_ms: u64,
}

/// A context as this node holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContextRecord {
    /// The id of its genesis transaction.
    pub id: Id,
    pub app: Id,
    pub name: String,
    pub version: String,
    pub created_by: Address,
    pub created_at_ms: u64,
    /// What every member runs its calls with.
    pub limits: Limits,
    /// Transactions held (all of them applied once a batch ends), the genesis included.
    pub applied: u64,
    /// The held transactions that no held transaction names as a parent, sorted.
    pub heads: Vec<Id>,
    pub root: Id,
    /// The latest time of a held transaction.
    pub last_time_ms: u64,
    /// The last applied transaction in the apply order.
    pub top: Option<OrderKey>,
    /// The latest membership changes among the held transactions.
    pub frontier: Vec<Id>,
    /// The highest `seq` held of each author, by author.
    pub seqs: Vec<(Address, u64)>,
}

impl ContextRecord {
    /// The highest `seq` held of `author`'s transactions (0: none).
    pub fn seq_of(&self, author: &Address) -> u64 {
        self.seqs
            .binary_search_by(|(a, _)| a.cmp(author))
            .map_or(0, |i| self.seqs[i].1)
    }
}

pub fn open(path: &Path) -> Result<Database, StateError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let db = Database::create(path)?;
    let txn = db.begin_write()?;
    if let Some(former) = txn
        .list_tables()?
        .map(|table| table.name().to_string())
        .find(|name| tables::FORMER_TABLES.contains(&name.as_str()))
    {
        return Err(StateError::Record(format!(
            "{} holds state written by an earlier cmesh (its table `{former}` is no longer read): \
             move the file away to start this node with empty state",
            path.display()
        )));
    }
    // Opening every table in a write transaction creates the missing ones, so that read
    // transactions find them all.
    drop(Tables::open(&txn, &mut NodeCache::new(0))?);
    txn.commit()?;
    Ok(db)
}

pub fn encode<T: Serialize>(record: &T) -> Result<Vec<u8>, StateError> {
    rmp_serde::to_vec_named(record).map_err(|source| StateError::Encode {
        what: type_name::<T>(),
        source,
    })
}

pub fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, StateError> {
    rmp_serde::from_slice(bytes).map_err(|source| StateError::Decode {
        what: type_name::<T>(),
        source,
    })
}

/// The name of a record's type without its path, for errors (`ContextRecord`).
fn type_name<T>() -> &'static str {
    let path = std::any::type_name::<T>();
    path.rsplit("::").next().unwrap_or(path)
}

pub fn version_key(name: &str, version: &str) -> String {
    format!("{name}\0{version}")
}

pub fn role_key(context: &Id, user: &Address) -> [u8; 52] {
    let mut key = [0u8; 52];
    key[..32].copy_from_slice(&context.0);
    key[32..].copy_from_slice(&user.0);
    key
}

pub fn membership_key(user: &Address, context: &Id) -> [u8; 52] {
    let mut key = [0u8; 52];
    key[..20].copy_from_slice(&user.0);
    key[20..].copy_from_slice(&context.0);
    key
}

pub fn kv_key(context: &Id, key: &[u8; 32]) -> [u8; 64] {
    let mut full = [0u8; 64];
    full[..32].copy_from_slice(&context.0);
    full[32..].copy_from_slice(key);
    full
}

pub fn context_record(
    table: &impl ReadableTable<&'static [u8], &'static [u8]>,
    id: &Id,
) -> Result<Option<ContextRecord>, StateError> {
    match table.get(id.0.as_slice())? {
        Some(bytes) => Ok(Some(decode(bytes.value())?)),
        None => Ok(None),
    }
}

pub fn role_of(
    table: &impl ReadableTable<&'static [u8], u8>,
    context: &Id,
    user: &Address,
) -> Result<Option<Role>, StateError> {
    Ok(table
        .get(role_key(context, user).as_slice())?
        .and_then(|role| Role::from_byte(role.value())))
}

/// Finds the context that `text` names: `0x` and 64 hex digits, or a prefix of at least
/// [`MIN_PREFIX_DIGITS`] digits that only one context starts with.
pub fn resolve_context(table: &impl ReadableTable<&'static [u8], &'static [u8]>, text: &str) -> Result<Id, StateError> {
    let digits = text
        .strip_prefix("0x")
        .filter(|d| d.len() <= 64 && d.bytes().all(|b| b.is_ascii_hexdigit()))
        .ok_or_else(|| {
            StateError::BadRequest(format!(
                "`{}` is not a context id: expected 0x and 64 hex digits, or a unique prefix of at least {MIN_PREFIX_DIGITS}",
                excerpt(text)
            ))
        })?
        .to_ascii_lowercase();
    if digits.len() < MIN_PREFIX_DIGITS {
        return Err(StateError::BadRequest(format!(
            "context prefix `0x{digits}` is too short: give at least {MIN_PREFIX_DIGITS} hex digits"
        )));
    }
    let not_found = || {
        StateError::NotFound(format!(
            "no context `0x{digits}` on this node; a context lives on the node that created it: \
             send to cmesh.node.<that node>.* (cmesh --node)"
        ))
    };
    if digits.len() == 64 {
        let id: Id = format!("0x{digits}").parse().map_err(|_| not_found())?;
        return match table.get(id.0.as_slice())? {
            Some(_) => Ok(id),
            None => Err(not_found()),
        };
    }
    let whole_bytes = digits.len() / 2;
    let mut start = [0u8; 32];
    for (i, byte) in start.iter_mut().enumerate().take(whole_bytes) {
        *byte = u8::from_str_radix(&digits[2 * i..2 * i + 2], 16).map_err(|_| not_found())?;
    }
    let odd_nibble = if digits.len() % 2 == 1 {
        let nibble = u8::from_str_radix(&digits[digits.len() - 1..], 16).map_err(|_| not_found())?;
        start[whole_bytes] = nibble << 4;
        Some(nibble)
    } else {
        None
    };
    let mut found = Vec::with_capacity(2);
    for entry in table.range(start.as_slice()..)? {
        let (key, _) = entry?;
        let key = key.value();
        let matches =
            key[..whole_bytes] == start[..whole_bytes] && odd_nibble.is_none_or(|n| key[whole_bytes] >> 4 == n);
        if !matches || found.len() == 2 {
            break;
        }
        let mut id = [0u8; 32];
        id.copy_from_slice(key);
        found.push(Id(id));
    }
    match found.as_slice() {
        [] => Err(not_found()),
        [id] => Ok(*id),
        _ => Err(StateError::Conflict(format!(
            "context prefix `0x{digits}` is ambiguous: give more digits"
        ))),
    }
}

/// Shortest context prefix accepted, in hex digits.
pub const MIN_PREFIX_DIGITS: usize = 8;

fn excerpt(text: &str) -> String {
    text.chars().take(80).collect()
}

/// The app `app` names: a 0x id, or an app name (with `version`, else its highest).
pub fn find_app(
    versions: &impl ReadableTable<&'static str, &'static [u8]>,
    app: &str,
    version: Option<&str>,
) -> Result<AppRecord, StateError> {
    let mut best: Option<(semver::Version, AppRecord)> = None;
    let by_id: Option<Id> = app.parse().ok();
    let wanted = version
        .map(|v| {
            v.parse::<semver::Version>().map_err(|source| StateError::NotAVersion {
                version: v.to_string(),
                source,
            })
        })
        .transpose()?;
    let entries: Box<dyn Iterator<Item = _>> = if by_id.is_some() {
        Box::new(versions.iter()?)
    } else {
        let start = format!("{app}\0");
        let end = format!("{app}\u{1}");
        Box::new(versions.range(start.as_str()..end.as_str())?)
    };
    for entry in entries {
        let (_, bytes) = entry?;
        let record: AppRecord = decode(bytes.value())?;
        if by_id.is_some_and(|id| id != record.app) {
            continue;
        }
        let Ok(v) = record.version.parse::<semver::Version>() else {
            continue;
        };
        if wanted.as_ref().is_some_and(|w| *w != v) {
            continue;
        }
        if best.as_ref().is_none_or(|(b, _)| v > *b) {
            best = Some((v, record));
        }
    }
    best.map(|(_, record)| record).ok_or_else(|| {
        StateError::NotFound(match version {
            Some(v) => format!(
                "no app `{app}` version {v} on this node (see app.list; apps live on the node they were deployed to)"
            ),
            None => format!("no app `{app}` on this node (see app.list; apps live on the node they were deployed to)"),
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use redb::TableDefinition;

    #[test]
    fn a_store_with_a_former_table_is_refused() {
        let dir = tempfile::tempdir().expect("temp dir");
        for name in tables::FORMER_TABLES {
            let path = dir.path().join(format!("{name}.redb"));
            {
                let db = Database::create(&path).expect("create");
                let txn = db.begin_write().expect("write");
                let former: TableDefinition<&[u8], &[u8]> = TableDefinition::new(name);
                txn.open_table(former).expect("table");
                txn.commit().expect("commit");
            }
            let err = open(&path).err().map(|e| e.to_string()).unwrap_or_default();
            assert!(
                err.contains("written by an earlier cmesh") && err.contains(name),
                "{err}"
            );
        }
        // A current store opens, and opens again.
        let fresh = dir.path().join("fresh.redb");
        drop(open(&fresh).expect("new store"));
        open(&fresh).expect("reopened store");
    }

    #[test]
    fn a_record_that_does_not_decode_says_which_it_is_and_keeps_the_cause() {
        let err = decode::<ContextRecord>(&[0xc1]).expect_err("0xc1 is never MessagePack");
        assert_eq!(err.status(), cmesh_common::Status::INTERNAL);
        assert!(
            err.to_string().starts_with("state store record: ContextRecord: "),
            "{err}"
        );
        assert!(std::error::Error::source(&err).is_some_and(|s| s.is::<rmp_serde::decode::Error>()));
    }
}
