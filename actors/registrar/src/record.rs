//! What the registrar stores and what it reports.
//!
//! A [`NameRecord`] is the stored truth for one name. A [`NameChange`] describes one
//! accepted write, so the router can publish it as an event without re-reading storage.
//! Both serialise with the field names written here (JSON for clients, MessagePack on disk
//! and between nodes).

use cmesh_common::Address;

use crate::error::RegistrarError;
use serde::{Deserialize, Serialize};

/// One registered name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NameRecord {
    /// Normalised (lower case) `label.tld`.
    pub name: String,
    pub owner: Address,
    /// Where the name points: an FQMN string, e.g. `I:whoami`.
    pub target: String,
    /// Unix time in milliseconds when this registration was made.
    pub registered_at: u64,
    /// Unix time in milliseconds of the last change (equal to `registered_at` until the
    /// name is transferred).
    pub updated_at: u64,
}

impl NameRecord {
    /// A fresh registration of the (normalised) `name` to `owner`, made at `now_ms`.
    pub fn registered(name: String, owner: Address, target: &str, now_ms: u64) -> Self {
        NameRecord {
            name,
            owner,
            target: target.to_owned(),
            registered_at: now_ms,
            updated_at: now_ms,
        }
    }

    /// 403 unless `caller` owns the name; `action` says what they tried.
    pub fn check_owner(&self, caller: Address, action: &'static str) -> Result<(), RegistrarError> {
        if self.owner == caller {
            Ok(())
        } else {
            Err(RegistrarError::NotOwner {
                name: self.name.clone(),
                owner: self.owner,
                action,
            })
        }
    }
}

/// What kind of write a [`NameChange`] describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChangeKind {
    Registered,
    Transferred,
    Released,
}

/// One accepted write: who owned the name before and after.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NameChange {
    pub kind: ChangeKind,
    pub name: String,
    /// `None` for [`ChangeKind::Registered`].
    pub owner_before: Option<Address>,
    /// `None` for [`ChangeKind::Released`].
    pub owner_after: Option<Address>,
    pub target: String,
}

impl NameChange {
    /// True when nothing changed: a transfer from the owner to the owner. Such a change
    /// was not written, and publishing an event for it is pointless.
    pub fn is_noop(&self) -> bool {
        self.kind == ChangeKind::Transferred && self.owner_before == self.owner_after
    }

    pub fn registered(record: &NameRecord) -> Self {
        NameChange {
            kind: ChangeKind::Registered,
            name: record.name.clone(),
            owner_before: None,
            owner_after: Some(record.owner),
            target: record.target.clone(),
        }
    }

    pub fn transferred(record: &NameRecord, from: Address) -> Self {
        NameChange {
            kind: ChangeKind::Transferred,
            name: record.name.clone(),
            owner_before: Some(from),
            owner_after: Some(record.owner),
            target: record.target.clone(),
        }
    }

    pub fn released(record: &NameRecord) -> Self {
        NameChange {
            kind: ChangeKind::Released,
            name: record.name.clone(),
            owner_before: Some(record.owner),
            owner_after: None,
            target: record.target.clone(),
        }
    }
}
