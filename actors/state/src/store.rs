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

/// Finds the context that `text` names: hex digits, with or without `0x`, that exactly one
/// context held here starts with (its whole id is 64 of them). No context held here, or
/// more than 64 digits: 404, and a context is held by its members, whom the client may
/// ask instead. Several: 409. Anything but hex digits: 400.
pub fn resolve_context(table: &impl ReadableTable<&'static [u8], &'static [u8]>, text: &str) -> Result<Id, StateError> {
    let digits = text
        .strip_prefix("0x")
        .or_else(|| text.strip_prefix("0X"))
        .unwrap_or(text);
    let nibbles: Vec<u8> = digits
        .chars()
        .map(|c| c.to_digit(16).and_then(|d| u8::try_from(d).ok()))
        .collect::<Option<_>>()
        .filter(|nibbles: &Vec<u8>| !nibbles.is_empty())
        .ok_or_else(|| {
            StateError::BadRequest(format!(
                "`{}` is not a context: expected hex digits, with or without 0x (its id, or the first digits of it)",
                excerpt(text)
            ))
        })?;
    let not_held = || {
        StateError::NotFound(format!(
            "no context 0x{} is held on this node; a context is held by its members: ask one of them \
             (cmesh --node <member>, or cmesh.node.<member>.rpc|fqmn)",
            digits.to_ascii_lowercase()
        ))
    };
    if nibbles.len() > 64 {
        return Err(StateError::NotFound(format!(
            "`{}` names no context: a context id has 64 hex digits, not {}",
            excerpt(text),
            nibbles.len()
        )));
    }
    let mut start = [0u8; 32];
    for (i, nibble) in nibbles.iter().enumerate() {
        start[i / 2] |= if i % 2 == 0 { nibble << 4 } else { *nibble };
    }
    if nibbles.len() == 64 {
        return match table.get(start.as_slice())? {
            Some(_) => Ok(Id(start)),
            None => Err(not_held()),
        };
    }
    let whole_bytes = nibbles.len() / 2;
    let odd_nibble = (nibbles.len() % 2 == 1).then(|| start[whole_bytes] >> 4);
    let mut found = Vec::with_capacity(2);
    for entry in table.range(start.as_slice()..)? {
        let (key, _) = entry?;
        let key = key.value();
        let matches = key.get(..whole_bytes) == Some(&start[..whole_bytes])
            && odd_nibble.is_none_or(|n| key.get(whole_bytes).is_some_and(|byte| byte >> 4 == n));
        if !matches {
            break;
        }
        let id: [u8; 32] = key
            .try_into()
            .map_err(|_| StateError::Record(format!("a context key of {} bytes", key.len())))?;
        found.push(Id(id));
        if found.len() == 2 {
            break;
        }
    }
    match found.as_slice() {
        [] => Err(not_held()),
        [id] => Ok(*id),
        _ => Err(StateError::Conflict(format!(
            "several contexts held here start with 0x{}: give more digits",
            digits.to_ascii_lowercase()
        ))),
    }
}

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
    use cmesh_common::Status;
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
        assert_eq!(err.status(), Status::INTERNAL);
        assert!(
            err.to_string().starts_with("state store record: ContextRecord: "),
            "{err}"
        );
        assert!(std::error::Error::source(&err).is_some_and(|s| s.is::<rmp_serde::decode::Error>()));
    }

    /// An id of `first` followed by `fill`.
    fn id(first: &[u8], fill: u8) -> Id {
        let mut id = [fill; 32];
        id[..first.len()].copy_from_slice(first);
        Id(id)
    }

    #[test]
    fn any_hex_prefix_names_the_one_context_that_starts_with_it() {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = Database::create(dir.path().join("state.redb")).expect("create");
        let txn = db.begin_write().expect("write");
        let mut contexts = txn.open_table(tables::CONTEXTS).expect("table");
        let (a, b, c) = (
            id(&[0x00, 0x11], 0x22),
            id(&[0x00, 0x1f], 0x33),
            id(&[0xab, 0xcd], 0x44),
        );
        for context in [a, b, c] {
            contexts
                .insert(context.0.as_slice(), b"record".as_slice())
                .expect("insert");
        }
        let resolve = |text: &str| resolve_context(&contexts, text);
        let status = |text: &str| resolve(text).err().map(|e| e.status());

        // One digit, with or without 0x, in either case.
        for text in ["0xa", "a", "0XA", "A"] {
            assert_eq!(resolve(text).ok(), Some(c), "{text}");
        }
        // Odd and even lengths, across the byte boundary.
        assert_eq!(resolve("0xabc").ok(), Some(c));
        assert_eq!(resolve("0x0011").ok(), Some(a));
        assert_eq!(resolve("0x00112").ok(), Some(a));
        assert_eq!(resolve("001f").ok(), Some(b));
        assert_eq!(resolve("0x001f3").ok(), Some(b));
        // The whole id, and 64 digits that are not a context held here.
        assert_eq!(resolve(&a.to_string()).ok(), Some(a));
        assert_eq!(resolve(&a.to_string()[2..]).ok(), Some(a));
        assert_eq!(status(&id(&[0x00, 0x11], 0x23).to_string()), Some(Status::NOT_FOUND));

        // Several contexts start with it: 409, and the message says to give more digits.
        for text in ["0x0", "0x00", "0x001"] {
            let err = resolve(text).expect_err("ambiguous");
            assert_eq!(err.status(), Status::CONFLICT, "{text}");
            assert!(err.to_string().contains("give more digits"), "{err}");
        }
        // None does: 404, naming the reference and who holds a context.
        for text in ["f", "0xac", "0x002", "0x0010", "0xabcd45"] {
            let err = resolve(text).expect_err("not held");
            assert_eq!(err.status(), Status::NOT_FOUND, "{text}");
            let message = err.to_string();
            assert!(
                message.contains(&format!(
                    "no context 0x{} is held on this node",
                    text.trim_start_matches("0x")
                )),
                "{message}"
            );
            assert!(message.contains("ask one of them"), "{message}");
        }
        // More than 64 digits name nothing, even when they start with a whole id.
        assert_eq!(status(&format!("{a}0")), Some(Status::NOT_FOUND));
        assert_eq!(status(&"f".repeat(65)), Some(Status::NOT_FOUND));
        // Anything but hex digits is not a reference.
        for text in ["", "0x", "0xzz", "context", "0x00 11", "-1"] {
            assert_eq!(status(text), Some(Status::BAD_REQUEST), "{text:?}");
        }
    }
}
