//! IRMA-style attributes (`role=admin`) of identities. Mesh-wide ones are the mesh
//! registry's (granted through any node, replicated with Raft); IAM reads them through
//! [`MeshAttributes`] on every admitted request, so a grant counts on a node as soon as
//! its replica applied it, and on the node that took it before the caller hears back.
//!
//! Why a trait: the registry lives in the consensus crate, which IAM does not know; the
//! node wires the two (`src/node.rs`).
//!
//! Before the registry, `iam.grant` wrote a per-node table in `<data>/iam.redb`;
//! [`per_node_grants`] reads what such a file holds so the node can say that those grants
//! no longer count and how to make them mesh-wide.

use std::path::Path;

use cmesh_common::Address;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use crate::error::IamError;

/// Where IAM reads an identity's mesh-wide attributes, sorted.
pub trait MeshAttributes: Send + Sync {
    fn attributes(&self, address: &Address) -> Vec<String>;
}

const PER_NODE_ATTRIBUTES: TableDefinition<&str, &[u8]> = TableDefinition::new("attributes");

/// The grants an earlier version kept in `<data>/iam.redb`, per identity (none if there
/// is no such file).
pub fn per_node_grants(data_dir: &Path) -> Result<Vec<(String, Vec<String>)>, IamError> {
    let path = data_dir.join("iam.redb");
    if !path.exists() {
        return Ok(Vec::new());
    }
    let shown = path.display().to_string();
    let error = |e: redb::Error| IamError::Store {
        path: shown.clone(),
        source: e,
    };
    let db = Database::open(&path).map_err(|e| error(e.into()))?;
    let txn = db.begin_read().map_err(|e| error(e.into()))?;
    let table = match txn.open_table(PER_NODE_ATTRIBUTES) {
        Ok(table) => table,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
        Err(e) => return Err(error(e.into())),
    };
    let mut grants = Vec::new();
    for row in table.iter().map_err(|e| error(e.into()))? {
        let (address, attributes) = row.map_err(|e| error(e.into()))?;
        let attributes: Vec<String> =
            rmp_serde::from_slice(attributes.value()).map_err(|source| IamError::Corrupt {
                path: shown.clone(),
                source,
            })?;
        grants.push((address.value().to_string(), attributes));
    }
    Ok(grants)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_node_grants_of_an_earlier_version_are_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(per_node_grants(dir.path()).expect("no file").is_empty());
        {
            let db = Database::create(dir.path().join("iam.redb")).expect("create");
            let txn = db.begin_write().expect("write");
            {
                let mut table = txn.open_table(PER_NODE_ATTRIBUTES).expect("table");
                let attributes = rmp_serde::to_vec(&vec!["role=admin", "team=blue"]).expect("encode");
                table.insert("0x0707", attributes.as_slice()).expect("insert");
            }
            txn.commit().expect("commit");
        }
        assert_eq!(
            per_node_grants(dir.path()).expect("read"),
            vec![(
                "0x0707".to_string(),
                vec!["role=admin".to_string(), "team=blue".to_string()]
            )]
        );
    }
}
