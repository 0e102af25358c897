//! Test harness for the `cmesh` binary: a real nats-server, real `cmesh node run`
//! processes (each with its own data directory), and a NATS client that speaks the
//! node's front door (FQMN, JSON-RPC, Kami-signed requests, micro discovery).
//!
//! Readiness is read from the node itself: the one stdout line `cmesh node 0x.. ready`.
//! The only polled condition is peer discovery (each node's `router.info` must list the
//! other nodes), and event propagation between nodes; both are bounded and fail with a
//! message saying what was awaited.
//!
//! Every node process is killed when its `Node` is dropped; if the test is panicking,
//! the tail of each node's stderr is printed to help find the cause.
#![allow(dead_code)]

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_nats::HeaderMap;
use bytes::Bytes;
use cmesh_common::{Address, SigningKey};
use cmesh_testkit::NatsServer;
use futures::StreamExt;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::{oneshot, watch};

/// Longest wait for one request's reply.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait for a node's ready line.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest wait for the nodes of a mesh to know each other.
pub const PEERS_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait for a node to exit after a signal.
pub const EXIT_TIMEOUT: Duration = Duration::from_secs(15);
/// Longest wait for something that propagates between nodes (events, reconnects).
pub const EVENTUALLY: Duration = Duration::from_secs(10);

pub const JSON: &str = "application/json";
pub const MSGPACK: &str = "application/msgpack";

/// The `cmesh` binary under test.
pub fn cmesh_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_cmesh"))
}

/// Awaits `fut` for at most `limit`; panics naming `what` when it takes longer.
pub async fn within<F: Future>(what: &str, limit: Duration, fut: F) -> F::Output {
    match tokio::time::timeout(limit, fut).await {
        Ok(out) => out,
        Err(_) => panic!("timed out after {limit:?} waiting for {what}"),
    }
}

/// Retries `attempt` every 50 ms until it gives `Some`, for at most `limit`. Only for
/// conditions that propagate asynchronously between processes (peers, remote events,
/// reconnection); everything else waits on the event itself.
pub async fn eventually<T, F, Fut>(what: &str, limit: Duration, mut attempt: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let per_attempt = left.clamp(Duration::from_millis(1), Duration::from_secs(2));
        if let Ok(Some(value)) = tokio::time::timeout(per_attempt, attempt()).await {
            return value;
        }
        if Instant::now() >= deadline {
            panic!("gave up after {limit:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

pub fn unix_secs() -> u64 {
    unix_ms() / 1000
}

/// Sleeps until the wall clock is at least `unix_ms` (for token expiry: bounded by the
/// token's lifetime, which tests set to 1 s).
pub async fn sleep_until_unix_ms(target: u64) {
    let now = unix_ms();
    if target > now {
        let wait = Duration::from_millis(target - now);
        assert!(wait <= Duration::from_secs(5), "refusing to sleep {wait:?} in a test");
        tokio::time::sleep(wait).await;
    }
}

/// The stdout of a `cmesh` command that must have succeeded, as JSON.
pub fn cli_json(args: &[&str], out: &std::process::Output) -> Value {
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

/// The first of `roots` (`ctx.root` answers, one per node) if all hold `applied`
/// transactions and agree on heads and root.
pub fn converged_roots(roots: &[Value], applied: u64) -> Option<Value> {
    let first = roots.first()?;
    roots
        .iter()
        .all(|r| r["root"] == first["root"] && r["heads"] == first["heads"] && r["applied"] == json!(applied))
        .then(|| first.clone())
}

pub fn new_key() -> SigningKey {
    SigningKey::generate().expect("generate a key")
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

// ------------------------------------------------------------------------------ nodes

/// Command-line options of `cmesh node run` beyond `--nats` and `--data`.
#[derive(Debug, Clone, Default)]
pub struct NodeOptions {
    pub registrar: bool,
    pub mesh: Option<String>,
    pub admins: Vec<Address>,
    pub max_payload: Option<usize>,
    pub token_ttl: Option<u64>,
    pub challenge_ttl: Option<u64>,
    pub tlds: Vec<String>,
    pub gas_limit: Option<u64>,
    pub memory_limit_mib: Option<u64>,
    pub max_module_bytes: Option<usize>,
}

impl NodeOptions {
    fn args(&self) -> Vec<String> {
        let mut args = Vec::new();
        if self.registrar {
            args.push("--registrar".to_string());
        }
        if let Some(mesh) = &self.mesh {
            args.extend(["--mesh".to_string(), mesh.clone()]);
        }
        for admin in &self.admins {
            args.extend(["--admin".to_string(), admin.to_string()]);
        }
        if let Some(bytes) = self.max_payload {
            args.extend(["--max-payload".to_string(), bytes.to_string()]);
        }
        if let Some(secs) = self.token_ttl {
            args.extend(["--token-ttl".to_string(), secs.to_string()]);
        }
        if let Some(secs) = self.challenge_ttl {
            args.extend(["--challenge-ttl".to_string(), secs.to_string()]);
        }
        for tld in &self.tlds {
            args.extend(["--tld".to_string(), tld.clone()]);
        }
        if let Some(gas) = self.gas_limit {
            args.extend(["--gas-limit".to_string(), gas.to_string()]);
        }
        if let Some(mib) = self.memory_limit_mib {
            args.extend(["--memory-limit-mib".to_string(), mib.to_string()]);
        }
        if let Some(bytes) = self.max_module_bytes {
            args.extend(["--max-module-bytes".to_string(), bytes.to_string()]);
        }
        args
    }
}

/// One `cmesh node run` process and its data directory (kept across restarts).
pub struct Node {
    pub index: usize,
    pub options: NodeOptions,
    nats_url: String,
    dir: tempfile::TempDir,
    child: Option<Child>,
    ready: Option<oneshot::Receiver<Address>>,
    address: Option<Address>,
    logs: Logs,
    /// Number of stderr lines before the current process started.
    log_start: usize,
}

/// Parses `cmesh node 0x<40 hex> ready`.
pub fn parse_ready_line(line: &str) -> Option<Address> {
    let rest = line.trim().strip_prefix("cmesh node ")?;
    let address = rest.strip_suffix(" ready")?;
    address.parse().ok()
}

impl Node {
    /// Starts a node process without waiting for it to be ready.
    pub fn spawn(index: usize, nats_url: &str, options: NodeOptions) -> Node {
        let dir = tempfile::tempdir().expect("temp dir for a node");
        let mut node = Node {
            index,
            options,
            nats_url: nats_url.to_string(),
            dir,
            child: None,
            ready: None,
            address: None,
            logs: Logs::new(),
            log_start: 0,
        };
        node.spawn_process();
        node
    }

    /// Starts a node and waits for its ready line.
    pub async fn start(index: usize, nats_url: &str, options: NodeOptions) -> Node {
        let mut node = Node::spawn(index, nats_url, options);
        node.wait_ready(READY_TIMEOUT).await;
        node
    }

    fn spawn_process(&mut self) {
        assert!(self.child.is_none(), "node {} is already running", self.index);
        let mut command = Command::new(cmesh_bin());
        command
            .args(["node", "run", "--nats", &self.nats_url, "--data"])
            .arg(self.dir.path())
            .args(self.options.args())
            .env(
                "RUST_LOG",
                std::env::var("CMESH_TEST_RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = command.spawn().expect("spawn `cmesh node run`");
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        self.log_start = self.logs.stderr().len();
        let (ready_tx, ready_rx) = oneshot::channel();
        let logs = self.logs.clone();
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
        let logs = self.logs.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                logs.push(false, line);
            }
        });
        self.child = Some(child);
        self.ready = Some(ready_rx);
    }

    /// Waits for the ready line of the current process; checks the address is stable.
    pub async fn wait_ready(&mut self, limit: Duration) -> Address {
        let ready = self.ready.take().expect("node was not spawned (or already waited for)");
        let what = format!("node {} to print `cmesh node 0x.. ready`", self.index);
        let address = match tokio::time::timeout(limit, ready).await {
            Ok(Ok(address)) => address,
            Ok(Err(_)) => panic!(
                "node {} closed stdout without a ready line; stderr:\n{}",
                self.index,
                self.logs.tail(40)
            ),
            Err(_) => panic!(
                "timed out after {limit:?} waiting for {what}; stderr:\n{}",
                self.logs.tail(40)
            ),
        };
        if let Some(previous) = self.address {
            assert_eq!(address, previous, "node {} came back with another address", self.index);
        }
        self.address = Some(address);
        address
    }

    pub fn address(&self) -> Address {
        self.address
            .expect("node address is known once it printed its ready line")
    }

    /// The lower-case address as used in subjects.
    pub fn subject_address(&self) -> String {
        self.address().to_string()
    }

    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn key_path(&self) -> PathBuf {
        self.dir.path().join("node.key")
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    pub fn logs(&self) -> &Logs {
        &self.logs
    }

    /// Stderr lines of the current (or last) process.
    pub fn current_stderr(&self) -> Vec<String> {
        let all = self.logs.stderr();
        all[self.log_start.min(all.len())..].to_vec()
    }

    /// Waits until the current process writes a stderr line matching `pred`.
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
                "timed out after {limit:?} waiting for node {} to log {what}; stderr:\n{}",
                self.index,
                self.logs.tail(40)
            ),
        }
    }

    /// Sends `signal` and waits for the process to exit.
    pub async fn stop_with(&mut self, signal: nix::sys::signal::Signal) -> ExitStatus {
        let mut child = self.child.take().expect("node is not running");
        let pid = child.id().expect("running child has a pid");
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), signal).expect("send signal");
        match tokio::time::timeout(EXIT_TIMEOUT, child.wait()).await {
            Ok(status) => status.expect("wait for the node"),
            Err(_) => {
                let _ = child.start_kill();
                let _ = child.wait().await;
                panic!(
                    "node {} did not exit within {EXIT_TIMEOUT:?} after {signal}; stderr:\n{}",
                    self.index,
                    self.logs.tail(40)
                );
            }
        }
    }

    /// SIGTERM, then waits for the exit.
    pub async fn stop_sigterm(&mut self) -> ExitStatus {
        self.stop_with(nix::sys::signal::Signal::SIGTERM).await
    }

    /// SIGKILL, then waits for the exit.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.start_kill();
            let _ = within("a killed node to exit", EXIT_TIMEOUT, child.wait()).await;
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
        self.spawn_process();
        self.wait_ready(READY_TIMEOUT).await;
    }

    /// Spawns the process again without waiting (the node must not be running).
    pub fn respawn(&mut self) {
        self.spawn_process();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
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
}

// ------------------------------------------------------------------------------ replies

/// Where a request goes: the shared subjects (any node of the queue group) or one node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum To {
    Shared,
    Node(Address),
}

impl From<&Node> for To {
    fn from(node: &Node) -> To {
        To::Node(node.address())
    }
}

impl From<&mut Node> for To {
    fn from(node: &mut Node) -> To {
        To::Node(node.address())
    }
}

impl From<Address> for To {
    fn from(address: Address) -> To {
        To::Node(address)
    }
}

impl To {
    pub fn fqmn_subject(self) -> String {
        match self {
            To::Shared => "cmesh.fqmn".to_string(),
            To::Node(a) => format!("cmesh.node.{a}.fqmn"),
        }
    }

    pub fn rpc_subject(self) -> String {
        match self {
            To::Shared => "cmesh.rpc".to_string(),
            To::Node(a) => format!("cmesh.node.{a}.rpc"),
        }
    }
}

/// A reply from the front door, decoded.
#[derive(Debug, Clone)]
pub struct Reply {
    /// `Cmtp-Status` (0 when the header is missing).
    pub status: u16,
    pub headers: HeaderMap,
    pub raw: Bytes,
    /// The body decoded by its `Content-Type` (JSON or MessagePack); `Null` when empty.
    pub body: Value,
}

impl Reply {
    fn from_message(message: async_nats::Message) -> Reply {
        let headers = message.headers.clone().unwrap_or_default();
        let header = |name: &str| headers.get(name).map(|v| v.as_str().to_string());
        let status = header("Cmtp-Status").and_then(|s| s.trim().parse().ok()).unwrap_or(0);
        let is_msgpack = header("Content-Type").is_some_and(|c| c.contains("msgpack"));
        let raw = message.payload.clone();
        let body = if raw.is_empty() {
            Value::Null
        } else if is_msgpack {
            rmp_serde::from_slice(&raw).unwrap_or_else(|e| {
                panic!("reply says MessagePack but does not decode ({e}): {raw:?}");
            })
        } else {
            serde_json::from_slice(&raw).unwrap_or_else(|e| {
                panic!("reply is not JSON ({e}): {}", String::from_utf8_lossy(&raw));
            })
        };
        Reply {
            status,
            headers,
            raw,
            body,
        }
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.headers.get(name).map(|v| v.as_str().to_string())
    }

    /// JSON-RPC `result` (panics with the reply if there is none).
    pub fn result(&self) -> &Value {
        match self.body.get("result") {
            Some(result) => result,
            None => panic!("expected a JSON-RPC result, got status {}: {}", self.status, self.body),
        }
    }

    /// JSON-RPC `error.code`.
    pub fn rpc_code(&self) -> Option<i64> {
        self.body.pointer("/error/code").and_then(Value::as_i64)
    }

    /// JSON-RPC `error.data.status`.
    pub fn rpc_status(&self) -> Option<u64> {
        self.body.pointer("/error/data/status").and_then(Value::as_u64)
    }

    /// The error message of either endpoint (`error.message`).
    pub fn error_message(&self) -> Option<&str> {
        self.body.pointer("/error/message").and_then(Value::as_str)
    }

    /// Asserts the common CMTP headers and, for errors, the micro error headers.
    pub fn assert_cmtp(&self) {
        assert_eq!(
            self.header("Cmtp-Version").as_deref(),
            Some("CMTP/0"),
            "Cmtp-Version in {self:?}"
        );
        assert!(self.status != 0, "Cmtp-Status missing in {self:?}");
        assert!(
            self.header("Content-Type").is_some(),
            "Content-Type missing in {self:?}"
        );
        if self.status >= 400 {
            assert_eq!(
                self.header("Nats-Service-Error-Code"),
                Some(self.status.to_string()),
                "Nats-Service-Error-Code must equal Cmtp-Status in {self:?}"
            );
            let message = self.header("Nats-Service-Error").unwrap_or_default();
            assert!(
                !message.trim().is_empty(),
                "Nats-Service-Error must carry a message in {self:?}"
            );
        } else {
            assert!(
                self.header("Nats-Service-Error").is_none(),
                "success with Nats-Service-Error: {self:?}"
            );
            assert!(
                self.header("Nats-Service-Error-Code").is_none(),
                "success with error code: {self:?}"
            );
        }
    }

    /// Asserts an FQMN error reply: `status`, CMTP headers, `{"error":{status,message}}`.
    #[track_caller]
    pub fn assert_fqmn_error(&self, status: u16) {
        assert_eq!(
            self.status, status,
            "expected FQMN status {status}, got {}: {}",
            self.status, self.body
        );
        self.assert_cmtp();
        assert_eq!(
            self.body.pointer("/error/status").and_then(Value::as_u64),
            Some(u64::from(status)),
            "FQMN error body must carry the status: {}",
            self.body
        );
        let message = self.error_message().unwrap_or_default();
        assert!(
            !message.trim().is_empty(),
            "FQMN error body must carry a message: {}",
            self.body
        );
    }

    /// Asserts a JSON-RPC error reply with `code` and `status` (in `data` and headers).
    #[track_caller]
    pub fn assert_rpc_error(&self, code: i64, status: u16) {
        assert_eq!(
            (self.rpc_code(), self.status),
            (Some(code), status),
            "expected JSON-RPC error {code} with status {status}, got: {}",
            self.body
        );
        assert_eq!(
            self.rpc_status(),
            Some(u64::from(status)),
            "error.data.status in {}",
            self.body
        );
        self.assert_cmtp();
        let message = self.error_message().unwrap_or_default();
        assert!(
            !message.trim().is_empty(),
            "JSON-RPC error must carry a message: {}",
            self.body
        );
    }

    /// Asserts a 200 reply and returns the JSON-RPC result.
    #[track_caller]
    pub fn ok(&self) -> Value {
        assert_eq!(self.status, 200, "expected success, got {}: {}", self.status, self.body);
        self.assert_cmtp();
        self.result().clone()
    }
}

// ------------------------------------------------------------------------------ client

/// A session from `iam.challenge`, for login or Kami-signed requests.
#[derive(Debug, Clone)]
pub struct Challenge {
    pub session: String,
    pub message: String,
    pub expires_at: u64,
}

/// A NATS client speaking the node's protocols.
pub struct Client {
    pub nats: async_nats::Client,
    next_id: AtomicU64,
}

pub fn bearer(token: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert("Authorization", format!("Bearer {token}").as_str());
    headers
}

fn auth_headers(token: Option<&str>) -> HeaderMap {
    token.map(bearer).unwrap_or_default()
}

impl Client {
    pub async fn connect(url: &str) -> Client {
        let nats = within(
            "connecting the test client to NATS",
            REQUEST_TIMEOUT,
            async_nats::connect(url),
        )
        .await
        .expect("connect the test client to NATS");
        Client {
            nats,
            next_id: AtomicU64::new(1),
        }
    }

    pub fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// One request/reply; fails the test if there is no reply in time.
    pub async fn request(&self, subject: &str, headers: HeaderMap, payload: impl Into<Bytes>) -> Reply {
        let message = self
            .try_request(subject, headers, payload)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        Reply::from_message(message)
    }

    /// One request/reply, reporting failures instead of panicking.
    pub async fn try_request(
        &self,
        subject: &str,
        headers: HeaderMap,
        payload: impl Into<Bytes>,
    ) -> Result<async_nats::Message, String> {
        let payload = payload.into();
        let request = self
            .nats
            .request_with_headers(subject.to_string(), headers, payload.clone());
        match tokio::time::timeout(REQUEST_TIMEOUT, request).await {
            Ok(Ok(message)) => Ok(message),
            Ok(Err(e)) => Err(format!(
                "request on {subject} ({}) failed: {e}",
                String::from_utf8_lossy(&payload[..payload.len().min(200)])
            )),
            Err(_) => Err(format!("no reply on {subject} within {REQUEST_TIMEOUT:?}")),
        }
    }

    /// Sends an FQMN (text payload), optionally with a bearer token.
    pub async fn fqmn(&self, to: impl Into<To>, fqmn: &str, token: Option<&str>) -> Reply {
        let to = to.into();
        self.request(&to.fqmn_subject(), auth_headers(token), fqmn.to_string())
            .await
    }

    /// Sends an FQMN and returns the result body of a 200 reply.
    pub async fn fqmn_ok(&self, to: impl Into<To>, fqmn: &str, token: Option<&str>) -> Value {
        let reply = self.fqmn(to, fqmn, token).await;
        assert_eq!(
            reply.status, 200,
            "`{fqmn}` failed with {}: {}",
            reply.status, reply.body
        );
        reply.assert_cmtp();
        reply.body
    }

    /// Sends any JSON body on the RPC endpoint.
    pub async fn rpc_value(&self, to: impl Into<To>, body: &Value, token: Option<&str>) -> Reply {
        let to = to.into();
        let payload = serde_json::to_vec(body).expect("encode JSON");
        self.request(&to.rpc_subject(), auth_headers(token), payload).await
    }

    /// One JSON-RPC request with a fresh numeric id.
    pub async fn rpc(&self, to: impl Into<To>, method: &str, params: Value, token: Option<&str>) -> Reply {
        let id = self.next_id();
        let body = json!({"jsonrpc": "2.0", "method": method, "params": params, "id": id});
        let reply = self.rpc_value(to, &body, token).await;
        if reply.status != 0 && reply.status != 413 && reply.body.is_object() {
            assert_eq!(
                reply.body.get("id"),
                Some(&json!(id)),
                "response id must echo the request id: {}",
                reply.body
            );
            assert_eq!(
                reply.body.get("jsonrpc"),
                Some(&json!("2.0")),
                "jsonrpc member: {}",
                reply.body
            );
        }
        reply
    }

    /// A JSON-RPC call that must succeed; returns its result.
    pub async fn call(&self, to: impl Into<To>, method: &str, params: Value, token: Option<&str>) -> Value {
        let reply = self.rpc(to, method, params.clone(), token).await;
        if reply.status != 200 || reply.body.get("result").is_none() {
            panic!("{method} {params} failed with status {}: {}", reply.status, reply.body);
        }
        reply.assert_cmtp();
        reply.body["result"].clone()
    }

    /// `iam.challenge` for `address`.
    pub async fn challenge(&self, to: impl Into<To>, address: Address) -> Challenge {
        let result = self
            .call(to, "iam.challenge", json!({ "address": address }), None)
            .await;
        Challenge {
            session: result["session"].as_str().expect("challenge.session").to_string(),
            message: result["message"].as_str().expect("challenge.message").to_string(),
            expires_at: result["expires_at"].as_u64().expect("challenge.expires_at"),
        }
    }

    /// `iam.login` answering `challenge` with `key`'s signature; the raw reply.
    pub async fn login_with(&self, to: impl Into<To>, key: &SigningKey, challenge: &Challenge) -> Reply {
        let signature = key.sign_personal(challenge.message.as_bytes()).to_string();
        self.rpc(
            to,
            "iam.login",
            json!({"session": challenge.session, "signature": signature}),
            None,
        )
        .await
    }

    /// Challenge + login on one node; returns the whole login result.
    pub async fn login_result(&self, key: &SigningKey, to: impl Into<To>) -> Value {
        let to = to.into();
        let challenge = self.challenge(to, key.address()).await;
        let reply = self.login_with(to, key, &challenge).await;
        let result = reply.ok();
        assert!(result["token"].is_string(), "login result without token: {result}");
        result
    }

    /// Challenge + login on one node; returns the token.
    pub async fn login(&self, key: &SigningKey, to: impl Into<To>) -> String {
        self.login_result(key, to).await["token"]
            .as_str()
            .expect("token")
            .to_string()
    }

    /// A Kami-signed JSON-RPC request object (session as `id`), signed by `key`.
    pub fn signed_body(key: &SigningKey, session: &str, nonce: u64, method: &str, params: Value) -> Value {
        let mut body = json!({
            "jsonrpc": "2.0",
            "method": method,
            "params": params,
            "id": session,
            "nonce": nonce,
        });
        let signature = key.sign_personal(&cmesh_common::jcs::signing_bytes(&body)).to_string();
        body["signature"] = json!(signature);
        body
    }

    /// Sends a Kami-signed request.
    pub async fn signed(
        &self,
        to: impl Into<To>,
        key: &SigningKey,
        session: &str,
        nonce: u64,
        method: &str,
        params: Value,
    ) -> Reply {
        let body = Self::signed_body(key, session, nonce, method, params);
        self.rpc_value(to, &body, None).await
    }

    /// Publishes a request with `reply` inbox and gathers `count` replies (discovery).
    pub async fn gather(&self, subject: &str, count: usize) -> Vec<async_nats::Message> {
        let inbox = self.nats.new_inbox();
        let mut sub = self.nats.subscribe(inbox.clone()).await.expect("subscribe inbox");
        self.nats
            .publish_with_reply(subject.to_string(), inbox, Bytes::new())
            .await
            .expect("publish");
        let mut out = Vec::new();
        while out.len() < count {
            match tokio::time::timeout(REQUEST_TIMEOUT, sub.next()).await {
                Ok(Some(message)) => out.push(message),
                Ok(None) => panic!("inbox subscription closed while gathering {subject}"),
                Err(_) => panic!(
                    "only {} of {count} replies on {subject} within {REQUEST_TIMEOUT:?}",
                    out.len()
                ),
            }
        }
        out
    }

    /// Subscribes and makes sure the server has the subscription before returning.
    pub async fn subscribe(&self, subject: &str) -> async_nats::Subscriber {
        let sub = self.nats.subscribe(subject.to_string()).await.expect("subscribe");
        self.sync().await;
        sub
    }

    /// A round trip through the server on this connection: once it returns, the server
    /// has processed everything this client sent before (subscriptions included).
    /// (`flush` only writes to the socket; it does not wait for the server.)
    pub async fn sync(&self) {
        let inbox = self.nats.new_inbox();
        let mut probe = self.nats.subscribe(inbox.clone()).await.expect("subscribe probe");
        self.nats.publish(inbox, Bytes::new()).await.expect("publish probe");
        next_message(&mut probe, "the sync probe to come back").await;
    }

    /// `P:ping` on a node must answer 200 (the node is alive and serving).
    pub async fn assert_alive(&self, to: impl Into<To>) {
        let to = to.into();
        let reply = self.fqmn(to, "P:ping", None).await;
        assert_eq!(reply.status, 200, "{to:?} does not answer P:ping: {}", reply.body);
        assert_eq!(reply.body["pong"], json!(true), "P:ping body: {}", reply.body);
    }
}

/// Next message of a subscription within the request timeout.
pub async fn next_message(sub: &mut async_nats::Subscriber, what: &str) -> async_nats::Message {
    match tokio::time::timeout(REQUEST_TIMEOUT, sub.next()).await {
        Ok(Some(message)) => message,
        Ok(None) => panic!("subscription closed while waiting for {what}"),
        Err(_) => panic!("timed out after {REQUEST_TIMEOUT:?} waiting for {what}"),
    }
}

// ------------------------------------------------------------------------------ meshes

/// Options of a whole mesh: `nodes` nodes, node 0 the registrar, all sharing `node`.
#[derive(Debug, Clone)]
pub struct MeshOptions {
    pub nodes: usize,
    pub node: NodeOptions,
}

impl MeshOptions {
    pub fn new(nodes: usize) -> Self {
        MeshOptions {
            nodes,
            node: NodeOptions::default(),
        }
    }

    pub fn mesh(mut self, name: &str) -> Self {
        self.node.mesh = Some(name.to_string());
        self
    }

    pub fn admin(mut self, address: Address) -> Self {
        self.node.admins.push(address);
        self
    }

    pub fn max_payload(mut self, bytes: usize) -> Self {
        self.node.max_payload = Some(bytes);
        self
    }

    pub fn token_ttl(mut self, secs: u64) -> Self {
        self.node.token_ttl = Some(secs);
        self
    }

    pub fn challenge_ttl(mut self, secs: u64) -> Self {
        self.node.challenge_ttl = Some(secs);
        self
    }

    pub fn tld(mut self, tld: &str) -> Self {
        self.node.tlds.push(tld.to_string());
        self
    }

    pub fn gas_limit(mut self, gas: u64) -> Self {
        self.node.gas_limit = Some(gas);
        self
    }

    pub fn memory_limit_mib(mut self, mib: u64) -> Self {
        self.node.memory_limit_mib = Some(mib);
        self
    }

    pub fn max_module_bytes(mut self, bytes: usize) -> Self {
        self.node.max_module_bytes = Some(bytes);
        self
    }
}

/// A nats-server and the nodes on it, with a client. Node 0 is the registrar.
pub struct Mesh {
    pub nodes: Vec<Node>,
    pub client: Client,
    /// Identity the harness logs in with to read `router.info`.
    pub probe_key: SigningKey,
    // Dropped last: nodes first, then the server.
    pub nats: NatsServer,
}

impl Mesh {
    pub async fn start(nodes: usize) -> Mesh {
        Mesh::with(MeshOptions::new(nodes)).await
    }

    pub async fn with(options: MeshOptions) -> Mesh {
        let nats = NatsServer::start();
        let url = nats.url();
        let mut nodes: Vec<Node> = (0..options.nodes)
            .map(|i| {
                let mut node_options = options.node.clone();
                node_options.registrar = i == 0;
                Node::spawn(i, &url, node_options)
            })
            .collect();
        for node in &mut nodes {
            node.wait_ready(READY_TIMEOUT).await;
        }
        let client = Client::connect(&url).await;
        let mesh = Mesh {
            nodes,
            client,
            probe_key: new_key(),
            nats,
        };
        mesh.wait_peers().await;
        mesh
    }

    pub fn node(&self, i: usize) -> &Node {
        &self.nodes[i]
    }

    pub fn addresses(&self) -> Vec<Address> {
        self.nodes
            .iter()
            .filter(|n| n.is_running())
            .map(Node::address)
            .collect()
    }

    /// The peers `node`'s `router.info` lists (logging in afresh each time, so short
    /// token lifetimes do not matter).
    pub async fn peers_of(&self, node: Address) -> Result<Vec<Address>, String> {
        let to = To::Node(node);
        let client = &self.client;
        let call = |method: &'static str, params: Value, token: Option<String>| async move {
            let body = json!({"jsonrpc": "2.0", "method": method, "params": params, "id": client.next_id()});
            let headers = token.as_deref().map(bearer).unwrap_or_default();
            let payload = serde_json::to_vec(&body).expect("encode JSON");
            let message = client.try_request(&to.rpc_subject(), headers, payload).await?;
            let value: Value = serde_json::from_slice(&message.payload).map_err(|e| format!("{method}: {e}"))?;
            value.get("result").cloned().ok_or(format!("{method}: {value}"))
        };
        let challenge = call("iam.challenge", json!({"address": self.probe_key.address()}), None).await?;
        let session = challenge["session"].as_str().unwrap_or_default();
        let message = challenge["message"].as_str().unwrap_or_default();
        let signature = self.probe_key.sign_personal(message.as_bytes()).to_string();
        let login = call("iam.login", json!({"session": session, "signature": signature}), None).await?;
        let token = login["token"].as_str().ok_or(format!("login: {login}"))?.to_string();
        let info = call("router.info", json!({}), Some(token)).await?;
        let peers = info["peers"].as_array().ok_or(format!("router.info: {info}"))?;
        Ok(peers
            .iter()
            .filter_map(|p| p.get("address").and_then(Value::as_str).and_then(|a| a.parse().ok()))
            .collect())
    }

    /// Waits until every running node's `router.info` lists every other running node.
    pub async fn wait_peers(&self) {
        let addresses = self.addresses();
        if addresses.len() < 2 {
            return;
        }
        let deadline = Instant::now() + PEERS_TIMEOUT;
        for &node in &addresses {
            loop {
                let last = match self.peers_of(node).await {
                    Ok(peers) if addresses.iter().all(|a| *a == node || peers.contains(a)) => break,
                    Ok(peers) => format!("it lists {peers:?}"),
                    Err(e) => e,
                };
                if Instant::now() >= deadline {
                    panic!(
                        "node {node} did not learn all of {addresses:?} within {PEERS_TIMEOUT:?} \
                         (announcements on cmesh.announce); last answer: {last}"
                    );
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }

    /// Restarts node `i` on its data directory and waits until the mesh knows each
    /// other again.
    pub async fn restart_node(&mut self, i: usize) {
        self.nodes[i].restart().await;
        self.wait_peers().await;
    }
}

// ------------------------------------------------------------------------------ apps

/// The committed module of an example app (`apps/<name>/<name>.wasm`).
pub fn app_wasm(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("apps/{name}/{name}.wasm"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

pub fn wasm_base64(name: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(app_wasm(name))
}

/// The id a node gives an example app: the keccak256 of its module.
pub fn app_id(name: &str) -> String {
    cmesh_common::hash::to_hex0x(&cmesh_common::hash::keccak256(&app_wasm(name)))
}

/// Deploys an example app; returns the `app.deploy` result.
pub async fn deploy(client: &Client, node: Address, token: Option<&str>, name: &str, version: &str) -> Value {
    let params = json!({"name": name, "version": version, "wasm": wasm_base64(name)});
    client.call(node, "app.deploy", params, token).await
}

/// Creates a context of `app`; returns its id.
pub async fn create(client: &Client, node: Address, token: Option<&str>, app: &str) -> String {
    let created = client.call(node, "ctx.create", json!({"app": app}), token).await;
    created["context"].as_str().expect("context id").to_string()
}

pub async fn grant(client: &Client, node: Address, token: Option<&str>, context: &str, to: &SigningKey, role: &str) {
    let params = json!({"context": context, "address": to.address(), "role": role});
    let granted = client.call(node, "ctx.grant", params, token).await;
    assert_eq!(granted["role"], json!(role), "{granted}");
}

/// `app.deploy` of any module bytes (base64-encoded here); the raw reply, for refusals.
pub async fn deploy_bytes(
    client: &Client,
    node: Address,
    token: Option<&str>,
    name: &str,
    version: &str,
    wasm: &[u8],
) -> Reply {
    use base64::Engine;
    let encoded = base64::engine::general_purpose::STANDARD.encode(wasm);
    let params = json!({"name": name, "version": version, "wasm": encoded});
    client.rpc(node, "app.deploy", params, token).await
}

/// A module of `tests/wat/<name>.wat`, compiled from the WebAssembly text format.
pub fn wat_module(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/wat/{name}.wat"));
    wat::parse_file(&path).unwrap_or_else(|e| panic!("compiling {}: {e}", path.display()))
}

// ------------------------------------------------------------------------------ proxy

/// A TCP forwarder from 127.0.0.1 (a port the OS picks) to a local port, for cutting one
/// client (say, a node) off the nats-server and letting it back: `cut` drops every open
/// connection and refuses new ones (accepted and closed at once) until `restore`.
pub struct Proxy {
    port: u16,
    cut: watch::Sender<bool>,
    /// Connections accepted and not yet closed.
    open: Arc<watch::Sender<usize>>,
    accept: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// Listens on 127.0.0.1 and forwards every connection to `127.0.0.1:upstream`.
    pub async fn start(upstream: u16) -> Proxy {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .expect("bind the proxy");
        let port = listener.local_addr().expect("the proxy's address").port();
        let (cut, _) = watch::channel(false);
        let open = Arc::new(watch::channel(0usize).0);
        let cut_rx = cut.subscribe();
        let accept = tokio::spawn({
            let open = open.clone();
            async move {
                loop {
                    let mut inbound = match listener.accept().await {
                        Ok((stream, _)) => stream,
                        Err(_) => {
                            tokio::time::sleep(Duration::from_millis(10)).await;
                            continue;
                        }
                    };
                    // Counted before the check, so that `cut` also waits for this one.
                    open.send_modify(|n| *n += 1);
                    let mut cut_rx = cut_rx.clone();
                    let open = open.clone();
                    tokio::spawn(async move {
                        let is_cut = *cut_rx.borrow_and_update();
                        if !is_cut {
                            if let Ok(mut outbound) = tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await {
                                tokio::select! {
                                    _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                                    _ = cut_rx.wait_for(|cut| *cut) => {}
                                }
                            }
                        }
                        drop(inbound);
                        open.send_modify(|n| *n -= 1);
                    });
                }
            }
        });
        Proxy {
            port,
            cut,
            open,
            accept,
        }
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Connections open through the proxy now.
    pub fn connections(&self) -> usize {
        *self.open.borrow()
    }

    /// Drops every open connection (both sides) and refuses new ones; returns once every
    /// connection is closed.
    pub async fn cut(&self) {
        self.cut.send_replace(true);
        let mut open = self.open.subscribe();
        within(
            "the proxy's connections to close",
            EVENTUALLY,
            open.wait_for(|n| *n == 0),
        )
        .await
        .expect("the proxy's counter is alive");
    }

    /// Forwards new connections again (clients reconnect by themselves).
    pub fn restore(&self) {
        self.cut.send_replace(false);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.cut.send_replace(true);
        self.accept.abort();
    }
}
