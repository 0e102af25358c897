//! IRMA-style attributes (`role=admin`) granted to identities, kept durably in redb and
//! cached in memory: every admitted request needs its caller's attributes.

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::Path;

use cmesh_common::Address;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use crate::error::IamError;

const ATTRIBUTES: TableDefinition<&str, &[u8]> = TableDefinition::new("attributes");

/// Identities whose attributes are kept in memory before the cache starts over.
const CACHE_LIMIT: usize = 100_000;

pub struct AttributeStore {
    db: Database,
    path: String,
    cache: RefCell<HashMap<Address, Vec<String>>>,
}

impl AttributeStore {
    pub fn open(path: &Path) -> Result<Self, IamError> {
        let shown = path.display().to_string();
        let store_error = |e: redb::Error| IamError::Store {
            path: shown.clone(),
            source: e,
        };
        let db = Database::create(path).map_err(|e| store_error(e.into()))?;
        let txn = db.begin_write().map_err(|e| store_error(e.into()))?;
        txn.open_table(ATTRIBUTES).map_err(|e| store_error(e.into()))?;
        txn.commit().map_err(|e| store_error(e.into()))?;
        Ok(AttributeStore {
            db,
            path: shown,
            cache: RefCell::new(HashMap::new()),
        })
    }

    fn error(&self, e: impl Into<redb::Error>) -> IamError {
        IamError::Store {
            path: self.path.clone(),
            source: e.into(),
        }
    }

    fn corrupt(&self, source: rmp_serde::decode::Error) -> IamError {
        IamError::Corrupt {
            path: self.path.clone(),
            source,
        }
    }

    pub fn get(&self, address: &Address) -> Result<Vec<String>, IamError> {
        if let Some(attributes) = self.cache.borrow().get(address) {
            return Ok(attributes.clone());
        }
        let attributes = self.read(address)?;
        self.remember(address, &attributes);
        Ok(attributes)
    }

    fn remember(&self, address: &Address, attributes: &[String]) {
        let mut cache = self.cache.borrow_mut();
        if cache.len() >= CACHE_LIMIT {
            cache.clear();
        }
        cache.insert(*address, attributes.to_vec());
    }

    fn read(&self, address: &Address) -> Result<Vec<String>, IamError> {
        let txn = self.db.begin_read().map_err(|e| self.error(e))?;
        let table = txn.open_table(ATTRIBUTES).map_err(|e| self.error(e))?;
        let key = address.to_string();
        match table.get(key.as_str()).map_err(|e| self.error(e))? {
            Some(bytes) => rmp_serde::from_slice(bytes.value()).map_err(|e| self.corrupt(e)),
            None => Ok(Vec::new()),
        }
    }

    /// Adds or removes one attribute durably; returns the attributes afterwards.
    pub fn update(&self, address: &Address, attribute: &str, grant: bool) -> Result<Vec<String>, IamError> {
        let txn = self.db.begin_write().map_err(|e| self.error(e))?;
        let attributes = {
            let mut table = txn.open_table(ATTRIBUTES).map_err(|e| self.error(e))?;
            let key = address.to_string();
            let mut attributes: Vec<String> = match table.get(key.as_str()).map_err(|e| self.error(e))? {
                Some(bytes) => rmp_serde::from_slice(bytes.value()).map_err(|e| self.corrupt(e))?,
                None => Vec::new(),
            };
            attributes.retain(|a| a != attribute);
            if grant {
                attributes.push(attribute.to_string());
                attributes.sort();
            }
            if attributes.is_empty() {
                table.remove(key.as_str()).map_err(|e| self.error(e))?;
            } else {
                let bytes = rmp_serde::to_vec(&attributes).map_err(|source| IamError::Encode {
                    path: self.path.clone(),
                    source,
                })?;
                table
                    .insert(key.as_str(), bytes.as_slice())
                    .map_err(|e| self.error(e))?;
            }
            attributes
        };
        txn.commit().map_err(|e| self.error(e))?;
        self.remember(address, &attributes);
        Ok(attributes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grants_persist_and_revokes_remove() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("iam.redb");
        let who = Address([7; 20]);
        {
            let store = AttributeStore::open(&path).expect("open");
            assert_eq!(
                store.update(&who, "role=admin", true).expect("grant"),
                vec!["role=admin"]
            );
            store.update(&who, "team=blue", true).expect("grant");
        }
        let store = AttributeStore::open(&path).expect("reopen");
        assert_eq!(store.get(&who).expect("get"), vec!["role=admin", "team=blue"]);
        assert_eq!(
            store.update(&who, "role=admin", false).expect("revoke"),
            vec!["team=blue"]
        );
        assert_eq!(store.get(&Address([8; 20])).expect("get"), Vec::<String>::new());
    }
}
