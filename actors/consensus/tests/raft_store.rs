//! openraft's own storage suite against the redb log store and the registry machine:
//! logs, votes, purges, truncation, membership and snapshots behave as Raft expects.

use cmesh_common::genesis::Genesis;
use cmesh_common::SigningKey;
use cmesh_consensus::raft_types::{MeshRaft, StorageError};
use cmesh_consensus::registry::Registry;
use cmesh_consensus::store::{self, LogStore, RegistryMachine};
use openraft::testing::{StoreBuilder, Suite};

struct RedbStores;

impl StoreBuilder<MeshRaft, LogStore, RegistryMachine, tempfile::TempDir> for RedbStores {
    async fn build(&self) -> Result<(tempfile::TempDir, LogStore, RegistryMachine), StorageError> {
        let dir = tempfile::tempdir().expect("a temp dir");
        // One genesis for every store: the suite moves snapshots between them.
        let admin = SigningKey::from_bytes([1; 32]).expect("a key").address();
        let voter = SigningKey::from_bytes([2; 32]).expect("a key").address();
        let genesis = Genesis::new("suite", vec![admin], vec![voter]).expect("a genesis");
        let registry = Registry::from_genesis(&genesis).expect("a registry");
        let (log, machine) = store::open(&dir.path().join("consensus.redb"), registry).expect("the store opens");
        Ok((dir, log, machine))
    }
}

#[test]
fn redb_store_passes_the_openraft_storage_suite() {
    Suite::test_all(RedbStores).expect("every storage test passes");
}
