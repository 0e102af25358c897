//! `cmesh node run` as a child process, for the tests, `cmesh mesh up` and the benches.
//!
//! One implementation for all three, on tokio: a node is ready when it prints its ready
//! line (whose format lives here, next to its parser, and which `cmesh node run` prints
//! with [`ready_line`]). The two ways to start one differ only where their users do:
//!
//! - [`Node::spawn`] (tests): a temp data dir, stderr kept in memory (to wait for a log
//!   line, and printed when the test panics), killed when dropped; failures panic.
//! - [`Node::launch`] (`mesh up`, benches): a given data dir, stderr in a log file (the
//!   developer reads it; nothing grows in memory), SIGTERM when dropped so the node stops
//!   cleanly whatever happened; failures are errors.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cmesh_common::genesis::Genesis;
use cmesh_common::{Address, SigningKey};
use nix::sys::signal::Signal;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::{oneshot, watch};

use crate::error_chain;

/// Longest wait for a node's ready line.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest wait for a node to exit after a signal.
pub const EXIT_TIMEOUT: Duration = Duration::from_secs(15);

/// What `cmesh node run` prints on stdout once it serves.
pub fn ready_line(address: &Address) -> String {
    format!("cmesh node {address} ready")
}

/// The address in a [`ready_line`].
pub fn parse_ready_line(line: &str) -> Option<Address> {
    line.trim()
        .strip_prefix("cmesh node ")?
        .strip_suffix(" ready")?
        .parse()
        .ok()
}

/// The `cmesh` binary of this build, for tests of the cmesh package: nextest names it in
/// `NEXTEST_BIN_EXE_cmesh`; under `cargo test` it lies next to the test executable's
/// `deps/` directory (cargo builds it before running the integration tests).
pub fn cmesh_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("NEXTEST_BIN_EXE_cmesh") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("the test executable's path");
    let mut dir = exe.parent().expect("the test executable's directory").to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let bin = dir.join("cmesh");
    assert!(
        bin.exists(),
        "no cmesh binary at {} (cargo builds it for the cmesh package's tests)",
        bin.display()
    );
    bin
}

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("creating {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("starting node {index} ({bin})")]
    Spawn {
        index: usize,
        bin: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("node {index} {what}; {log}")]
    NotReady { index: usize, what: String, log: String },
    #[error("node {index} came back with address {now}, not {before}")]
    AddressChanged {
        index: usize,
        before: Address,
        now: Address,
    },
    #[error("node {index} is not running")]
    NotRunning { index: usize },
    #[error("sending {signal} to node {index}")]
    Signal {
        index: usize,
        signal: Signal,
        #[source]
        source: nix::Error,
    },
    #[error("node {index} did not exit within {EXIT_TIMEOUT:?} after {signal} (killed); {log}")]
    Lingered { index: usize, signal: Signal, log: String },
    #[error("waiting for node {index} to exit")]
    Wait {
        index: usize,
        #[source]
        source: std::io::Error,
    },
}

// ------------------------------------------------------------------------------ logs

/// Lines a node printed, shared with the tasks that read its pipes.
#[derive(Clone)]
pub struct Logs {
    stderr: Arc<Mutex<Vec<String>>>,
    stdout: Arc<Mutex<Vec<String>>>,
    changed: Arc<watch::Sender<u64>>,
}

impl Logs {
    fn new() -> Self {
        let (tx, _) = watch::channel(0);
        Logs {
            stderr: Arc::default(),
            stdout: Arc::default(),
            changed: Arc::new(tx),
        }
    }

    fn push(&self, stdout: bool, line: String) {
        if std::env::var_os("CMESH_TEST_LOG").is_some() {
            eprintln!("[node {}] {line}", if stdout { "out" } else { "err" });
        }
        let target = if stdout { &self.stdout } else { &self.stderr };
        target.lock().unwrap_or_else(|e| e.into_inner()).push(line);
        self.changed.send_modify(|n| *n += 1);
    }

    /// Stderr lines of every process of this node so far, when the harness keeps them
    /// (nodes of [`Node::spawn`]).
    pub fn stderr(&self) -> Vec<String> {
        self.stderr.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn stdout(&self) -> Vec<String> {
        self.stdout.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn tail(&self, n: usize) -> String {
        let lines = self.stderr();
        let start = lines.len().saturating_sub(n);
        lines[start..].join("\n")
    }
}

// ------------------------------------------------------------------------------ options

/// Command-line options of `cmesh node run` beyond `--nats` and `--data`.
#[derive(Debug, Clone, Default)]
pub struct NodeOptions {
    /// The mesh's genesis file. Without one, the node gets a genesis of its own, written
    /// into its data dir: a mesh named [`NodeOptions::mesh`] (default `cmesh`) with this
    /// node as its one voter and [`NodeOptions::admins`] (or a stranger) as admins.
    pub genesis: Option<PathBuf>,
    /// The name of the mesh in a genesis the harness writes.
    pub mesh: Option<String>,
    pub admins: Vec<Address>,
    pub max_payload: Option<usize>,
    pub token_ttl: Option<u64>,
    pub challenge_ttl: Option<u64>,
    pub gas_limit: Option<u64>,
    pub memory_limit_mib: Option<u64>,
    pub max_module_bytes: Option<usize>,
}

impl NodeOptions {
    fn args(&self) -> Vec<String> {
        let mut args = Vec::new();
        let mut flag = |name: &str, value: String| args.extend([name.to_string(), value]);
        if let Some(genesis) = &self.genesis {
            flag("--genesis", genesis.display().to_string());
        }
        for admin in &self.admins {
            flag("--admin", admin.to_string());
        }
        if let Some(bytes) = self.max_payload {
            flag("--max-payload", bytes.to_string());
        }
        if let Some(secs) = self.token_ttl {
            flag("--token-ttl", secs.to_string());
        }
        if let Some(secs) = self.challenge_ttl {
            flag("--challenge-ttl", secs.to_string());
        }
        if let Some(gas) = self.gas_limit {
            flag("--gas-limit", gas.to_string());
        }
        if let Some(mib) = self.memory_limit_mib {
            flag("--memory-limit-mib", mib.to_string());
        }
        if let Some(bytes) = self.max_module_bytes {
            flag("--max-module-bytes", bytes.to_string());
        }
        args
    }
}

/// The key in a node's data dir, created there if it has none yet: a genesis names its
/// voters before they first start.
pub fn node_key(data: &Path) -> Result<SigningKey, NodeError> {
    std::fs::create_dir_all(data).map_err(|source| NodeError::Io {
        path: data.to_path_buf(),
        source,
    })?;
    let path = data.join("node.key");
    SigningKey::load_or_create(&path)
        .map(|(key, _)| key)
        .map_err(|e| NodeError::Io {
            path,
            source: std::io::Error::other(e.to_string()),
        })
}

/// Writes to `path` the genesis of a mesh `name` whose voters are the nodes with these
/// data dirs (their keys made now if need be), with `admins` as its admins.
pub fn write_genesis(path: &Path, name: &str, admins: Vec<Address>, voters: &[&Path]) -> Result<Genesis, NodeError> {
    let voters = voters
        .iter()
        .map(|data| node_key(data).map(|key| key.address()))
        .collect::<Result<Vec<_>, _>>()?;
    let genesis = Genesis::new(name, admins, voters).map_err(|e| NodeError::Io {
        path: path.to_path_buf(),
        source: std::io::Error::other(e.to_string()),
    })?;
    std::fs::write(path, genesis.to_file_text()).map_err(|source| NodeError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(genesis)
}

/// A node for `cmesh mesh up` or a bench: where its data and log go.
#[derive(Debug, Clone)]
pub struct NodeSetup {
    /// Named in errors (`node 1 …`).
    pub index: usize,
    /// The `cmesh` binary (`std::env::current_exe()` for the CLI itself).
    pub bin: PathBuf,
    pub nats_url: String,
    pub options: NodeOptions,
    pub data: PathBuf,
    /// The node's stderr.
    pub log: PathBuf,
}

/// Where a node's data and stderr go, and so how it is run and stopped.
enum Home {
    /// [`Node::spawn`]: a temp dir; stderr in [`Logs`]; killed when dropped.
    Test(tempfile::TempDir),
    /// [`Node::launch`]: given paths; stderr in `log`; SIGTERM when dropped.
    Given { data: PathBuf, log: PathBuf },
}

// ------------------------------------------------------------------------------ nodes

/// One `cmesh node run` process and its data directory (kept across restarts).
pub struct Node {
    pub index: usize,
    pub options: NodeOptions,
    bin: PathBuf,
    nats_url: String,
    home: Home,
    child: Option<Child>,
    ready: Option<oneshot::Receiver<Address>>,
    address: Option<Address>,
    logs: Logs,
    /// Number of stderr lines before the current process started.
    log_start: usize,
}

impl Node {
    /// Starts a test node (the binary under test, a temp data dir) without waiting for it
    /// to be ready.
    pub fn spawn(index: usize, nats_url: &str, options: NodeOptions) -> Node {
        let mut node = Node::prepare(index, nats_url, options);
        node.respawn();
        node
    }

    /// A test node with its temp data dir, not started: its [`Node::key`] can go into a
    /// genesis first.
    pub fn prepare(index: usize, nats_url: &str, options: NodeOptions) -> Node {
        let dir = tempfile::tempdir().expect("temp dir for a node");
        Node::new(index, cmesh_bin(), nats_url, options, Home::Test(dir))
    }

    /// Starts a test node and waits for its ready line.
    pub async fn start(index: usize, nats_url: &str, options: NodeOptions) -> Node {
        let mut node = Node::spawn(index, nats_url, options);
        node.wait_ready(READY_TIMEOUT).await;
        node
    }

    /// Starts a node as `setup` says and waits for its ready line.
    pub async fn launch(setup: NodeSetup) -> Result<Node, NodeError> {
        if let Some(parent) = setup.log.parent() {
            std::fs::create_dir_all(parent).map_err(|source| NodeError::Io {
                path: parent.to_path_buf(),
                source,
            })?;
        }
        let home = Home::Given {
            data: setup.data,
            log: setup.log,
        };
        let mut node = Node::new(setup.index, setup.bin, &setup.nats_url, setup.options, home);
        node.try_spawn()?;
        node.try_wait_ready(READY_TIMEOUT).await?;
        Ok(node)
    }

    fn new(index: usize, bin: PathBuf, nats_url: &str, options: NodeOptions, home: Home) -> Node {
        Node {
            index,
            options,
            bin,
            nats_url: nats_url.to_string(),
            home,
            child: None,
            ready: None,
            address: None,
            logs: Logs::new(),
            log_start: 0,
        }
    }

    /// The genesis a node started without one gets: its own mesh, with it as voter.
    fn solo_genesis(&self) -> Result<PathBuf, NodeError> {
        let path = self.data_dir().join("genesis.json");
        if !path.exists() {
            let admins = if self.options.admins.is_empty() {
                vec![crate::new_key().address()]
            } else {
                self.options.admins.clone()
            };
            let name = self.options.mesh.as_deref().unwrap_or("cmesh");
            write_genesis(&path, name, admins, &[self.data_dir()])?;
        }
        Ok(path)
    }

    fn try_spawn(&mut self) -> Result<(), NodeError> {
        assert!(self.child.is_none(), "node {} is already running", self.index);
        if self.options.genesis.is_none() {
            self.options.genesis = Some(self.solo_genesis()?);
        }
        let mut command = Command::new(&self.bin);
        command
            .args(["node", "run", "--nats", &self.nats_url, "--data"])
            .arg(self.data_dir())
            .args(self.options.args())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .kill_on_drop(true);
        match &self.home {
            Home::Test(_) => {
                let level = std::env::var("CMESH_TEST_RUST_LOG").unwrap_or_else(|_| "info".into());
                command
                    .env("RUST_LOG", level)
                    .env("NO_COLOR", "1")
                    .stderr(Stdio::piped());
            }
            Home::Given { log, .. } => {
                let file = File::create(log).map_err(|source| NodeError::Io {
                    path: log.clone(),
                    source,
                })?;
                command.stderr(file);
            }
        }
        let mut child = command.spawn().map_err(|source| NodeError::Spawn {
            index: self.index,
            bin: self.bin.clone(),
            source,
        })?;
        self.log_start = self.logs.stderr().len();
        let (ready_tx, ready_rx) = oneshot::channel();
        if let Some(stdout) = child.stdout.take() {
            let logs = self.logs.clone();
            // Reads the ready line, then keeps draining stdout so the node never blocks.
            tokio::spawn(async move {
                let mut lines = BufReader::new(stdout).lines();
                let mut ready_tx = Some(ready_tx);
                while let Ok(Some(line)) = lines.next_line().await {
                    let ready = parse_ready_line(&line);
                    logs.push(true, line);
                    if let (Some(address), Some(tx)) = (ready, ready_tx.take()) {
                        let _ = tx.send(address);
                    }
                }
            });
        }
        if let Some(stderr) = child.stderr.take() {
            let logs = self.logs.clone();
            tokio::spawn(async move {
                let mut lines = BufReader::new(stderr).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    logs.push(false, line);
                }
            });
        }
        self.child = Some(child);
        self.ready = Some(ready_rx);
        Ok(())
    }

    /// Where to look for why the node failed: the tail of its stderr, or its log file.
    fn log_hint(&self) -> String {
        match &self.home {
            Home::Test(_) => format!("stderr:\n{}", self.logs.tail(40)),
            Home::Given { log, .. } => format!("see {}", log.display()),
        }
    }

    /// Waits for the ready line of the current process; checks the address is stable.
    pub async fn try_wait_ready(&mut self, limit: Duration) -> Result<Address, NodeError> {
        let ready = self.ready.take().expect("node was not spawned (or already waited for)");
        let not_ready = |node: &Node, what: String| NodeError::NotReady {
            index: node.index,
            what,
            log: node.log_hint(),
        };
        let address = match tokio::time::timeout(limit, ready).await {
            Ok(Ok(address)) => address,
            Ok(Err(_)) => return Err(not_ready(self, "closed stdout without a ready line".into())),
            Err(_) => {
                let what = format!("did not print `cmesh node 0x.. ready` within {limit:?}");
                return Err(not_ready(self, what));
            }
        };
        if let Some(before) = self.address {
            if address != before {
                return Err(NodeError::AddressChanged {
                    index: self.index,
                    before,
                    now: address,
                });
            }
        }
        self.address = Some(address);
        Ok(address)
    }

    /// [`Node::try_wait_ready`] for tests: a node that is not ready fails the test.
    pub async fn wait_ready(&mut self, limit: Duration) -> Address {
        self.try_wait_ready(limit)
            .await
            .unwrap_or_else(|e| panic!("{}", error_chain(&e)))
    }

    pub fn address(&self) -> Address {
        self.address
            .expect("node address is known once it printed its ready line")
    }

    pub fn data_dir(&self) -> &Path {
        match &self.home {
            Home::Test(dir) => dir.path(),
            Home::Given { data, .. } => data,
        }
    }

    pub fn key_path(&self) -> PathBuf {
        self.data_dir().join("node.key")
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// The process id of the running node.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    pub fn logs(&self) -> &Logs {
        &self.logs
    }

    /// Stderr lines of the current (or last) process.
    fn current_stderr(&self) -> Vec<String> {
        let all = self.logs.stderr();
        all[self.log_start.min(all.len())..].to_vec()
    }

    /// Waits until the current process writes a stderr line matching `pred` (nodes of
    /// [`Node::spawn`], whose stderr the harness reads).
    pub async fn wait_log(&self, what: &str, limit: Duration, pred: impl Fn(&str) -> bool) -> String {
        let mut changes = self.logs.changed.subscribe();
        let wait = async {
            loop {
                changes.mark_unchanged();
                if let Some(line) = self.current_stderr().into_iter().find(|l| pred(l)) {
                    return line;
                }
                if changes.changed().await.is_err() {
                    panic!("log channel closed");
                }
            }
        };
        match tokio::time::timeout(limit, wait).await {
            Ok(line) => line,
            Err(_) => panic!(
                "timed out after {limit:?} waiting for node {} to log {what}; {}",
                self.index,
                self.log_hint()
            ),
        }
    }

    /// Sends `signal` and waits for the process to exit; kills it if it lingers.
    pub async fn try_stop_with(&mut self, signal: Signal) -> Result<ExitStatus, NodeError> {
        let index = self.index;
        let mut child = self.child.take().ok_or(NodeError::NotRunning { index })?;
        if let Some(pid) = child.id() {
            let pid = nix::unistd::Pid::from_raw(pid as i32);
            if let Err(source) = nix::sys::signal::kill(pid, signal) {
                let _ = child.start_kill();
                return Err(NodeError::Signal { index, signal, source });
            }
        }
        match tokio::time::timeout(EXIT_TIMEOUT, child.wait()).await {
            Ok(status) => status.map_err(|source| NodeError::Wait { index, source }),
            Err(_) => {
                let _ = child.start_kill();
                let _ = child.wait().await;
                Err(NodeError::Lingered {
                    index,
                    signal,
                    log: self.log_hint(),
                })
            }
        }
    }

    /// [`Node::try_stop_with`] for tests.
    pub async fn stop_with(&mut self, signal: Signal) -> ExitStatus {
        self.try_stop_with(signal)
            .await
            .unwrap_or_else(|e| panic!("{}", error_chain(&e)))
    }

    /// SIGTERM, then waits for the exit.
    pub async fn stop_sigterm(&mut self) -> ExitStatus {
        self.stop_with(Signal::SIGTERM).await
    }

    /// SIGKILL, then waits for the exit.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.start_kill();
            let _ = crate::within("a killed node to exit", EXIT_TIMEOUT, child.wait()).await;
        }
    }

    /// Starts the node again on the same data directory (stopping it with SIGTERM first
    /// if it runs) and waits until it is ready with the same address.
    pub async fn restart(&mut self) {
        if self.child.is_some() {
            let status = self.stop_sigterm().await;
            assert!(
                status.success(),
                "node {} exited with {status} on SIGTERM before a restart",
                self.index
            );
        }
        self.respawn();
        self.wait_ready(READY_TIMEOUT).await;
    }

    /// Spawns the process again without waiting (the node must not be running).
    pub fn respawn(&mut self) {
        self.try_spawn().unwrap_or_else(|e| panic!("{}", error_chain(&e)));
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        match &self.home {
            Home::Test(_) => {
                if std::thread::panicking() {
                    let state = match self.child.as_mut().map(|c| c.try_wait()) {
                        None => "stopped by the test".to_string(),
                        Some(Ok(None)) => "running".to_string(),
                        Some(Ok(Some(status))) => format!("EXITED UNEXPECTEDLY with {status}"),
                        Some(Err(e)) => format!("unknown ({e})"),
                    };
                    eprintln!(
                        "---- node {} ({:?}, {state}) stderr tail ----\n{}",
                        self.index,
                        self.address,
                        self.logs.tail(30)
                    );
                }
                if let Some(child) = self.child.as_mut() {
                    let _ = child.start_kill();
                }
            }
            Home::Given { .. } => {
                if let Some(child) = self.child.as_mut() {
                    terminate_blocking(child);
                }
            }
        }
    }
}

/// SIGTERM, then a clean stop awaited (blocking: this runs in `drop`); SIGKILL if the
/// node takes longer than [`EXIT_TIMEOUT`].
fn terminate_blocking(child: &mut Child) {
    if let Some(pid) = child.id() {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), Signal::SIGTERM);
    }
    let deadline = Instant::now() + EXIT_TIMEOUT;
    loop {
        match child.try_wait() {
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Ok(None) | Err(_) => {
                let _ = child.start_kill();
                return;
            }
            Ok(Some(_)) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_line_round_trip() {
        let address: Address = "0x5aaeb6053f3e94c9b9a09f33669435e7ef1beaed".parse().expect("address");
        let line = ready_line(&address);
        assert_eq!(line, "cmesh node 0x5aaeb6053f3e94c9b9a09f33669435e7ef1beaed ready");
        assert_eq!(parse_ready_line(&line), Some(address));
        assert_eq!(parse_ready_line("something else"), None);
    }
}
