//! The `cmesh` CLI as a user runs it: its own home (key and token), the settings a test
//! gives it in the environment, and nothing inherited that would point it elsewhere.

use std::path::{Path, PathBuf};
use std::process::Output;

use serde_json::Value;

use crate::cmesh_bin;

/// Variables of the user's environment that would change where the CLI sends, or what
/// `mesh up` makes admin; a test sets the ones it means.
const CLEARED: [&str; 5] = [
    "CMESH_NATS_URL",
    "CMESH_NODE",
    "CMESH_ADMIN",
    "CMESH_LOG_FORMAT",
    "RUST_LOG",
];

/// `cmesh` with `CMESH_HOME` set to `home`.
#[derive(Debug, Clone)]
pub struct Cli {
    home: PathBuf,
    env: Vec<(String, String)>,
}

impl Cli {
    pub fn new(home: &Path) -> Cli {
        Cli {
            home: home.to_path_buf(),
            env: Vec::new(),
        }
    }

    /// Sets an environment variable for every command (`CMESH_NATS_URL`, `CMESH_NODE`, …).
    pub fn env(mut self, name: &str, value: &str) -> Cli {
        self.env.push((name.to_string(), value.to_string()));
        self
    }

    /// The command, ready to run or to spawn.
    pub fn command(&self, args: &[&str]) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(cmesh_bin());
        command.args(args).env("CMESH_HOME", &self.home);
        for name in CLEARED {
            command.env_remove(name);
        }
        command.envs(self.env.iter().map(|(k, v)| (k, v)));
        command
    }

    pub async fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().await.expect("run cmesh")
    }

    /// Runs a command that must succeed; its stdout as JSON.
    pub async fn ok(&self, args: &[&str]) -> Value {
        cli_json(args, &self.run(args).await)
    }
}

/// The stdout of a `cmesh` command that must have succeeded, as JSON.
pub fn cli_json(args: &[&str], out: &Output) -> Value {
    assert!(
        out.status.success(),
        "cmesh {args:?} failed: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "cmesh {args:?} printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}
