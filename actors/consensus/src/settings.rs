//! The knobs of a node's Raft, with defaults for a bus that adds a hop to every message.
//!
//! Why these defaults: a heartbeat crosses NATS twice (request and reply); at 150 ms, an
//! election timeout of 0.6–1.2 s still waits for four missed heartbeats before it calls
//! an election. It is not longer because openraft 0.9 makes a follower that saw a leader
//! also wait out the leader lease (the maximum election timeout) before it campaigns:
//! failover takes about lease + timeout, 1.8–2.4 s here (`cmesh bench consensus`
//! measured 2.0 s p50, 2.3 s max), where 1.5–3 s gave 5–7 s. Snapshots go in chunks well under NATS's default
//! 1 MiB `max_payload`.

use std::time::Duration;

use openraft::{Config, SnapshotPolicy};

#[derive(Debug, Clone)]
pub struct ConsensusSettings {
    pub heartbeat: Duration,
    pub election_min: Duration,
    pub election_max: Duration,
    /// A snapshot is taken after this many log entries since the last one.
    pub snapshot_after_entries: u64,
    /// Log entries kept behind a snapshot, for followers that are only a little behind.
    pub keep_after_snapshot: u64,
    /// Snapshot bytes per message.
    pub snapshot_chunk_bytes: u64,
    /// How long one snapshot chunk may take to install.
    pub snapshot_chunk_timeout: Duration,
    /// Signed registry entries per Raft entry, at most.
    pub batch_entries: usize,
    /// Bytes of signed registry entries per Raft entry, at most.
    pub batch_bytes: usize,
    /// Raft entries a leader commits concurrently.
    pub batches_in_flight: usize,
    /// How long a write or a linearizable read may wait for a leader and its answer.
    pub request_timeout: Duration,
    /// How often a member (a node without a replica) asks a replica whom to trust: a
    /// node removed from the mesh stops counting on a member within about this long.
    pub member_refresh: Duration,
}

impl Default for ConsensusSettings {
    fn default() -> Self {
        ConsensusSettings {
            heartbeat: Duration::from_millis(150),
            election_min: Duration::from_millis(600),
            election_max: Duration::from_millis(1200),
            snapshot_after_entries: 5_000,
            keep_after_snapshot: 1_000,
            snapshot_chunk_bytes: 256 * 1024,
            snapshot_chunk_timeout: Duration::from_secs(5),
            batch_entries: 512,
            batch_bytes: 256 * 1024,
            batches_in_flight: 4,
            request_timeout: Duration::from_secs(5),
            member_refresh: Duration::from_secs(1),
        }
    }
}

impl ConsensusSettings {
    /// openraft's configuration, checked (the error says which setting is wrong).
    pub fn raft_config(&self, cluster: String) -> Result<Config, String> {
        let millis = |d: Duration| d.as_millis().min(u128::from(u64::MAX)) as u64;
        Config {
            cluster_name: cluster,
            heartbeat_interval: millis(self.heartbeat),
            election_timeout_min: millis(self.election_min),
            election_timeout_max: millis(self.election_max),
            install_snapshot_timeout: millis(self.snapshot_chunk_timeout),
            snapshot_policy: SnapshotPolicy::LogsSinceLast(self.snapshot_after_entries),
            max_in_snapshot_log_to_keep: self.keep_after_snapshot,
            snapshot_max_chunk_size: self.snapshot_chunk_bytes,
            // A batch is up to `batch_bytes`; four fit in one message. Larger appends are
            // split on PayloadTooLarge.
            max_payload_entries: 4,
            ..Default::default()
        }
        .validate()
        .map_err(|error| error.to_string())
    }
}
