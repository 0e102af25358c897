//! Node configuration: command-line flags win over environment variables (clap reads
//! both), which win over the TOML config file, which wins over the defaults.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;
use cmesh_common::genesis::Genesis;
use cmesh_common::Address;
use cmesh_consensus::ConsensusSettings;
use serde::Deserialize;

pub const DEFAULT_NATS_URL: &str = "nats://127.0.0.1:4222";
pub const DEFAULT_GAS_LIMIT: u64 = 100_000_000;
pub const DEFAULT_MEMORY_LIMIT_MIB: u64 = 64;
/// Base64 makes a module a third bigger, and a request must fit in the payload limit.
pub const DEFAULT_MAX_MODULE_BYTES: usize = 768 * 1024;

/// `cmesh node run` flags. Each may also come from the environment or the config file.
/// The NATS server URL is the global `cmesh --nats` (`CMESH_NATS_URL`), which every
/// command shares.
#[derive(Debug, Args, Clone, Default)]
pub struct NodeArgs {
    /// Data directory: node key, IAM, consensus and audit stores [default: ./cmesh-data]
    #[arg(long, env = "CMESH_DATA")]
    pub data: Option<PathBuf>,
    /// The mesh's genesis file (its name, admins, first voters and TLDs; `cmesh mesh init`
    /// writes one). Its hash, the mesh id, is in every token and node signature
    #[arg(long, env = "CMESH_GENESIS")]
    pub genesis: Option<PathBuf>,
    /// TOML config file with any of these settings (flag names with `_`, e.g. `nats_url`)
    #[arg(long, env = "CMESH_CONFIG")]
    pub config: Option<PathBuf>,
    /// An identity that holds role=admin from start (repeat for several; comma-separated in the env)
    #[arg(long = "admin", env = "CMESH_ADMIN", value_delimiter = ',')]
    pub admins: Vec<Address>,
    /// Accept only these nodes' announcements and tokens (repeatable; default: any node on the bus)
    #[arg(long = "peer", env = "CMESH_PEERS", value_delimiter = ',')]
    pub peers: Vec<Address>,
    /// Largest request payload in bytes; larger ones get 413 [default: 1048576]
    #[arg(long, env = "CMESH_MAX_PAYLOAD")]
    pub max_payload: Option<usize>,
    /// Lifetime of tokens and signed sessions, in seconds [default: 3600]
    #[arg(long, env = "CMESH_TOKEN_TTL")]
    pub token_ttl: Option<u64>,
    /// Time allowed to answer a login challenge, in seconds [default: 25]
    #[arg(long, env = "CMESH_CHALLENGE_TTL")]
    pub challenge_ttl: Option<u64>,
    /// Raft heartbeat, in milliseconds [default: 150]
    #[arg(long, env = "CMESH_RAFT_HEARTBEAT_MS")]
    pub raft_heartbeat_ms: Option<u64>,
    /// Raft election timeout, in milliseconds, as MIN-MAX [default: 600-1200]
    #[arg(long, env = "CMESH_RAFT_ELECTION_MS")]
    pub raft_election_ms: Option<String>,
    /// Gas each app call may use (1 per WASM operator, more for host calls) [default: 100000000]
    #[arg(long, env = "CMESH_GAS_LIMIT")]
    pub gas_limit: Option<u64>,
    /// Memory each app instance may use, in MiB [default: 64]
    #[arg(long, env = "CMESH_MEMORY_LIMIT_MIB")]
    pub memory_limit_mib: Option<u64>,
    /// Largest app module accepted by app.deploy, in bytes [default: 786432]
    #[arg(long, env = "CMESH_MAX_MODULE_BYTES")]
    pub max_module_bytes: Option<usize>,
}

/// The config file's shape: the same settings, plus per-method permission rules.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    nats_url: Option<String>,
    data: Option<PathBuf>,
    genesis: Option<PathBuf>,
    #[serde(default)]
    admins: Vec<Address>,
    #[serde(default)]
    peers: Vec<Address>,
    max_payload: Option<usize>,
    token_ttl: Option<u64>,
    challenge_ttl: Option<u64>,
    raft_heartbeat_ms: Option<u64>,
    raft_election_ms: Option<String>,
    /// method → "public" | "authenticated" | "key=value"
    #[serde(default)]
    permissions: BTreeMap<String, String>,
    gas_limit: Option<u64>,
    memory_limit_mib: Option<u64>,
    max_module_bytes: Option<usize>,
}

/// Everything a node needs, resolved.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub nats_url: String,
    pub data: PathBuf,
    pub genesis: Genesis,
    pub admins: Vec<Address>,
    pub peers: Vec<Address>,
    pub max_payload: usize,
    pub token_ttl: u64,
    pub challenge_ttl: u64,
    pub consensus: ConsensusSettings,
    pub permissions: BTreeMap<String, String>,
    pub gas_limit: u64,
    pub memory_limit_mib: u64,
    pub max_module_bytes: usize,
}

fn or_file<T>(flag: Vec<T>, file: Vec<T>) -> Vec<T> {
    if flag.is_empty() {
        file
    } else {
        flag
    }
}

impl NodeConfig {
    /// `nats_url`: the global `--nats` flag (or `CMESH_NATS_URL`), if given.
    pub fn resolve(args: NodeArgs, nats_url: Option<String>) -> anyhow::Result<Self> {
        let file = match &args.config {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        let genesis_path = args.genesis.or(file.genesis).ok_or_else(|| {
            anyhow::anyhow!(
                "no genesis: a node needs the genesis file of its mesh (--genesis <file>, CMESH_GENESIS, \
                 or `genesis` in the config file); `cmesh mesh init` writes one for a new mesh"
            )
        })?;
        let genesis = Genesis::load(&genesis_path)?;
        let mut consensus = ConsensusSettings::default();
        if let Some(ms) = args.raft_heartbeat_ms.or(file.raft_heartbeat_ms) {
            consensus.heartbeat = Duration::from_millis(ms);
        }
        if let Some(range) = args.raft_election_ms.or(file.raft_election_ms) {
            let (min, max) = parse_range(&range)
                .with_context(|| format!("raft_election_ms `{range}` is not MIN-MAX in milliseconds, e.g. 600-1200"))?;
            consensus.election_min = Duration::from_millis(min);
            consensus.election_max = Duration::from_millis(max);
        }
        consensus
            .raft_config(genesis.mesh.clone())
            .map_err(|e| anyhow::anyhow!("Raft settings: {e}"))?;
        let config = NodeConfig {
            nats_url: nats_url
                .or(file.nats_url)
                .unwrap_or_else(|| DEFAULT_NATS_URL.to_string()),
            data: args.data.or(file.data).unwrap_or_else(|| PathBuf::from("cmesh-data")),
            genesis,
            admins: or_file(args.admins, file.admins),
            peers: or_file(args.peers, file.peers),
            max_payload: args
                .max_payload
                .or(file.max_payload)
                .unwrap_or(cmesh_router::gateway::DEFAULT_MAX_PAYLOAD),
            token_ttl: args.token_ttl.or(file.token_ttl).unwrap_or(3600),
            challenge_ttl: args.challenge_ttl.or(file.challenge_ttl).unwrap_or(25),
            consensus,
            permissions: file.permissions,
            gas_limit: args.gas_limit.or(file.gas_limit).unwrap_or(DEFAULT_GAS_LIMIT),
            memory_limit_mib: args
                .memory_limit_mib
                .or(file.memory_limit_mib)
                .unwrap_or(DEFAULT_MEMORY_LIMIT_MIB),
            max_module_bytes: args
                .max_module_bytes
                .or(file.max_module_bytes)
                .unwrap_or(DEFAULT_MAX_MODULE_BYTES),
        };
        if config.token_ttl == 0 || config.challenge_ttl == 0 {
            bail!("token_ttl and challenge_ttl must be at least 1 second");
        }
        if config.max_payload == 0 {
            bail!("max_payload must be at least 1 byte");
        }
        if config.gas_limit == 0 || config.max_module_bytes == 0 {
            bail!("gas_limit and max_module_bytes must be at least 1");
        }
        if !(1..=4096).contains(&config.memory_limit_mib) {
            bail!("memory_limit_mib must be 1 to 4096 (WebAssembly memories are at most 4 GiB)");
        }
        Ok(config)
    }
}

fn parse_range(text: &str) -> Option<(u64, u64)> {
    let (min, max) = text.split_once('-')?;
    Some((min.trim().parse().ok()?, max.trim().parse().ok()?))
}

fn read_file(path: &Path) -> anyhow::Result<FileConfig> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading config file {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("config file {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use cmesh_common::SigningKey;

    fn genesis_file(dir: &Path) -> PathBuf {
        let key = SigningKey::generate().expect("a key");
        let genesis = Genesis::new("filemesh", vec![key.address()], vec![key.address()]).expect("a genesis");
        let path = dir.join("genesis.json");
        std::fs::write(&path, genesis.to_file_text()).expect("write");
        path
    }

    #[test]
    fn flags_win_over_the_file_and_the_file_over_defaults() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("cmesh.toml");
        let genesis = genesis_file(dir.path());
        std::fs::write(&path, format!("nats_url = \"nats://file:4222\"\ngenesis = {:?}\ntoken_ttl = 60\nraft_heartbeat_ms = 100\n[permissions]\n\"registrar.register\" = \"role=registrant\"\n", genesis.display().to_string()))
            .expect("write");
        let args = NodeArgs {
            config: Some(path),
            raft_election_ms: Some("800-1600".into()),
            ..Default::default()
        };
        let config = NodeConfig::resolve(args.clone(), None).expect("valid");
        assert_eq!(config.nats_url, "nats://file:4222");
        let flagged = NodeConfig::resolve(args, Some("nats://flag:4222".into())).expect("valid");
        assert_eq!(flagged.nats_url, "nats://flag:4222");
        assert_eq!(config.genesis.mesh, "filemesh");
        assert_eq!(config.token_ttl, 60);
        assert_eq!(config.challenge_ttl, 25);
        assert_eq!(config.consensus.heartbeat, Duration::from_millis(100));
        assert_eq!(config.consensus.election_min, Duration::from_millis(800));
        assert_eq!(config.consensus.election_max, Duration::from_millis(1600));
        assert_eq!(
            config.permissions.get("registrar.register").map(String::as_str),
            Some("role=registrant")
        );
    }

    #[test]
    fn unknown_keys_zero_ttls_bad_raft_timeouts_and_no_genesis_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let genesis = Some(genesis_file(dir.path()));
        let path = dir.path().join("cmesh.toml");
        std::fs::write(&path, "nats = \"x\"\n").expect("write");
        let refused = |args: NodeArgs| NodeConfig::resolve(args, None).expect_err("refused").to_string();
        refused(NodeArgs {
            config: Some(path),
            genesis: genesis.clone(),
            ..Default::default()
        });
        refused(NodeArgs {
            token_ttl: Some(0),
            genesis: genesis.clone(),
            ..Default::default()
        });
        let election = refused(NodeArgs {
            raft_election_ms: Some("3000".into()),
            genesis: genesis.clone(),
            ..Default::default()
        });
        assert!(election.contains("MIN-MAX"), "{election}");
        let inverted = refused(NodeArgs {
            raft_heartbeat_ms: Some(5000),
            genesis,
            ..Default::default()
        });
        assert!(inverted.contains("Raft settings"), "{inverted}");
        let missing = refused(NodeArgs::default());
        assert!(
            missing.contains("no genesis") && missing.contains("cmesh mesh init"),
            "{missing}"
        );
    }
}
