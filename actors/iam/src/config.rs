//! IAM settings, with the defaults the issue and seed 004 set.

use std::collections::BTreeMap;
use std::time::Duration;

use cmesh_common::Address;

#[derive(Debug, Clone)]
pub struct IamConfig {
    /// The mesh id (0x-hex): in challenge messages, token audience and announcements.
    pub mesh: String,
    /// The mesh's name, for people: in challenge messages next to the id.
    pub mesh_name: String,
    /// How long a challenge may wait for its answer (Kami: 25 seconds).
    pub challenge_ttl: Duration,
    /// How long a token, or a session bound by a signed request, lives.
    pub token_ttl: Duration,
    /// Identities that hold `role=admin` from start.
    pub admins: Vec<Address>,
    /// When not empty, only these nodes' announcements (and tokens) are accepted.
    pub allowed_peers: Vec<Address>,
    /// Per-method permission overrides: method → "public" | "authenticated" | "key=value".
    pub permissions: BTreeMap<String, String>,
    /// Cap on pending challenges and bound sessions, against memory exhaustion.
    pub max_sessions: usize,
    /// Cap on cached verified tokens.
    pub token_cache: usize,
}

impl Default for IamConfig {
    fn default() -> Self {
        IamConfig {
            mesh: "cmesh".into(),
            mesh_name: "cmesh".into(),
            challenge_ttl: Duration::from_secs(25),
            token_ttl: Duration::from_secs(3600),
            admins: Vec::new(),
            allowed_peers: Vec::new(),
            permissions: BTreeMap::new(),
            max_sessions: 100_000,
            token_cache: 100_000,
        }
    }
}
