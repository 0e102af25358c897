//! Node configuration: command-line flags win over environment variables (clap reads
//! both), which win over the TOML config file, which wins over the defaults.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::Args;
use cmesh_common::Address;
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
    /// Data directory: node key, IAM, registrar and audit stores [default: ./cmesh-data]
    #[arg(long, env = "CMESH_DATA")]
    pub data: Option<PathBuf>,
    /// Run this node as the mesh's registrar (exactly one per mesh)
    #[arg(long, env = "CMESH_REGISTRAR")]
    pub registrar: bool,
    /// TOML config file with any of these settings (flag names with `_`, e.g. `nats_url`)
    #[arg(long, env = "CMESH_CONFIG")]
    pub config: Option<PathBuf>,
    /// Mesh name: in login messages, token audience and announcements [default: cmesh]
    #[arg(long, env = "CMESH_MESH")]
    pub mesh: Option<String>,
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
    /// Top-level domains the registrar serves (repeatable) [default: mcom]
    #[arg(long = "tld", env = "CMESH_TLDS", value_delimiter = ',')]
    pub tlds: Vec<String>,
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
    registrar: Option<bool>,
    mesh: Option<String>,
    #[serde(default)]
    admins: Vec<Address>,
    #[serde(default)]
    peers: Vec<Address>,
    max_payload: Option<usize>,
    token_ttl: Option<u64>,
    challenge_ttl: Option<u64>,
    #[serde(default)]
    tlds: Vec<String>,
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
    pub registrar: bool,
    pub mesh: String,
    pub admins: Vec<Address>,
    pub peers: Vec<Address>,
    pub max_payload: usize,
    pub token_ttl: u64,
    pub challenge_ttl: u64,
    pub tlds: Vec<String>,
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
        let config = NodeConfig {
            nats_url: nats_url
                .or(file.nats_url)
                .unwrap_or_else(|| DEFAULT_NATS_URL.to_string()),
            data: args.data.or(file.data).unwrap_or_else(|| PathBuf::from("cmesh-data")),
            registrar: args.registrar || file.registrar.unwrap_or(false),
            mesh: args.mesh.or(file.mesh).unwrap_or_else(|| "cmesh".to_string()),
            admins: or_file(args.admins, file.admins),
            peers: or_file(args.peers, file.peers),
            max_payload: args
                .max_payload
                .or(file.max_payload)
                .unwrap_or(cmesh_router::gateway::DEFAULT_MAX_PAYLOAD),
            token_ttl: args.token_ttl.or(file.token_ttl).unwrap_or(3600),
            challenge_ttl: args.challenge_ttl.or(file.challenge_ttl).unwrap_or(25),
            tlds: or_file(args.tlds, file.tlds),
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
        if config.mesh.is_empty() || config.mesh.len() > 64 {
            bail!("the mesh name must be 1 to 64 characters");
        }
        Ok(config)
    }

    pub fn tlds(&self) -> Vec<String> {
        if self.tlds.is_empty() {
            vec!["mcom".to_string()]
        } else {
            self.tlds.clone()
        }
    }
}

fn read_file(path: &Path) -> anyhow::Result<FileConfig> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading config file {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("config file {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_win_over_the_file_and_the_file_over_defaults() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("cmesh.toml");
        std::fs::write(&path, "nats_url = \"nats://file:4222\"\nmesh = \"filemesh\"\ntoken_ttl = 60\n[permissions]\n\"registrar.register\" = \"role=registrant\"\n")
            .expect("write");
        let args = NodeArgs {
            config: Some(path),
            mesh: Some("flagmesh".into()),
            ..Default::default()
        };
        let config = NodeConfig::resolve(args.clone(), None).expect("valid");
        assert_eq!(config.nats_url, "nats://file:4222");
        let flagged = NodeConfig::resolve(args, Some("nats://flag:4222".into())).expect("valid");
        assert_eq!(flagged.nats_url, "nats://flag:4222");
        assert_eq!(config.mesh, "flagmesh");
        assert_eq!(config.token_ttl, 60);
        assert_eq!(config.challenge_ttl, 25);
        assert_eq!(config.tlds(), vec!["mcom"]);
        assert_eq!(
            config.permissions.get("registrar.register").map(String::as_str),
            Some("role=registrant")
        );
    }

    #[test]
    fn unknown_keys_and_zero_ttls_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("cmesh.toml");
        std::fs::write(&path, "nats = \"x\"\n").expect("write");
        let args = NodeArgs {
            config: Some(path),
            ..Default::default()
        };
        assert!(NodeConfig::resolve(args, None).is_err());
        let args = NodeArgs {
            token_ttl: Some(0),
            ..Default::default()
        };
        assert!(NodeConfig::resolve(args, None).is_err());
    }
}
