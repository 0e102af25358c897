//! Moving the names of a single-registrar store (`registrar.redb`, written by the
//! `--registrar` node of earlier releases) into the mesh registry, once.
//!
//! Why on start and in the background: the names must not be lost when a mesh upgrades,
//! and the node that held them is the one that can vouch for them (it signs the entries).
//! But a registry write needs a Raft leader, which a voter that starts first does not
//! have until the others start; so the node serves at once and the migration retries
//! until every name is in. Each name is registered for its old owner with its old
//! target (its times become the migration's); a name the registry already holds for the
//! same owner counts as migrated, so a migration cut short resumes. When every name is
//! in, the file is renamed `registrar.redb.migrated`.
//!
//! Per-node grants (`iam.redb` of earlier releases) are not moved: a mesh-wide grant
//! needs a mesh admin's say, which a node cannot give for one. The node lists them in
//! its log with the call that makes each mesh-wide, and leaves the file as it is.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use cmesh_common::genesis::Genesis;
use cmesh_common::Status;
use cmesh_consensus::{Applied, Command, ConsensusNode};
use cmesh_registrar::{NamePolicy, NameRecord, RegistrarStore};

pub const STORE_FILE: &str = "registrar.redb";
const MIGRATED_SUFFIX: &str = ".migrated";
/// Commands in flight at once while migrating.
const IN_FLIGHT: usize = 256;

/// The names of `data`'s single-registrar store, if it has one not yet migrated.
pub fn pending(data: &Path, genesis: &Genesis) -> anyhow::Result<Option<(PathBuf, Vec<NameRecord>)>> {
    let path = data.join(STORE_FILE);
    if !path.exists() {
        return Ok(None);
    }
    let policy = NamePolicy::new(genesis.tlds.clone()).context("the genesis's TLDs")?;
    let store = RegistrarStore::open(&path, policy).with_context(|| {
        format!(
            "{} cannot be read for its migration into the mesh registry",
            path.display()
        )
    })?;
    let records = store.all().context("reading the single-registrar store")?;
    Ok(Some((path, records)))
}

/// Logs the per-node grants an earlier release left in `data`, which no longer count.
pub fn warn_of_per_node_grants(data: &Path) -> anyhow::Result<()> {
    let grants = cmesh_iam::per_node_grants(data).context("reading the per-node grants of an earlier release")?;
    for (address, attributes) in &grants {
        for attribute in attributes {
            tracing::warn!(
                %address,
                %attribute,
                "a per-node grant of an earlier release no longer counts: grants are mesh-wide now; a mesh admin \
                 makes it so with iam.grant {{\"address\": \"{address}\", \"attribute\": \"{attribute}\"}}"
            );
        }
    }
    if !grants.is_empty() {
        tracing::warn!(file = %data.join("iam.redb").display(), "remove this file once its grants are made mesh-wide, and these warnings stop");
    }
    Ok(())
}

/// Registers `records` in the registry, retrying until all are in, then renames `path`.
pub async fn run(consensus: ConsensusNode, path: PathBuf, records: Vec<NameRecord>) {
    tracing::info!(names = records.len(), store = %path.display(), "migrating the single registrar's names into the mesh registry");
    let mut left = records;
    let mut delay = Duration::from_millis(500);
    while !left.is_empty() {
        let mut failed = Vec::new();
        for chunk in left.chunks(IN_FLIGHT) {
            let proposals = chunk.iter().map(|record| {
                let command = Command::Register {
                    name: record.name.clone(),
                    target: record.target.clone(),
                };
                consensus.propose(command, record.owner)
            });
            for (record, result) in chunk.iter().zip(futures::future::join_all(proposals).await) {
                match result {
                    Ok(Applied::Done(_)) => {}
                    Ok(Applied::Refused(error)) if error.status == Status::CONFLICT => {
                        let same_owner = consensus
                            .replica()
                            .registry
                            .resolve(&record.name)
                            .is_ok_and(|held| held.owner == record.owner);
                        if !same_owner {
                            tracing::warn!(name = %record.name, owner = %record.owner, %error, "not migrated: the registry holds the name for someone else");
                        }
                    }
                    Ok(other) => tracing::warn!(name = %record.name, result = ?other, "not migrated"),
                    Err(error) => {
                        tracing::debug!(name = %record.name, %error, "migration: will retry");
                        failed.push(record.clone());
                    }
                }
            }
        }
        if !failed.is_empty() {
            tracing::info!(
                left = failed.len(),
                retry_in_ms = delay.as_millis() as u64,
                "migration waits for the mesh registry"
            );
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(10));
        }
        left = failed;
    }
    let mut done = path.clone().into_os_string();
    done.push(MIGRATED_SUFFIX);
    match std::fs::rename(&path, &done) {
        Ok(()) => {
            tracing::info!(store = %PathBuf::from(&done).display(), "the single registrar's names are in the mesh registry")
        }
        Err(error) => tracing::error!(%error, store = %path.display(), "migrated, but the store could not be renamed"),
    }
}
