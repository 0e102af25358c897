//! The harness of cmesh, in one place: whatever starts a nats-server or `cmesh node run`
//! processes, or talks to a node over NATS, does it with this crate.
//!
//! - [`nats`]: a real nats-server on 127.0.0.1.
//! - [`node`]: `cmesh node run` as a child process, ready when it prints its ready line.
//! - [`client`] and [`reply`]: the front door's wire (FQMN, JSON-RPC, login, Kami-signed
//!   requests), answering errors (`try_*`) or failing the test.
//! - [`mesh`]: a test mesh of nodes that know each other.
//! - [`proxy`]: a TCP forwarder that can cut a client off the bus.
//! - [`cli`]: the `cmesh` CLI run as a user runs it, with its own home.
//! - [`apps`]: the example apps and WAT modules, and the calls that deploy them.
//!
//! The `cmesh` binary depends on this crate too, so that there is one client and one way
//! to run a node: the CLI's commands send through [`Client`], and `cmesh mesh up` and
//! `cmesh bench` (crate `cmesh-bench`) start their nodes and nats-server with [`Node`] and
//! [`NatsServer`]; `cmesh node run` prints its [`ready_line`]. The tests (`tests/*.rs`)
//! use all of it, with `use cmesh_testkit::*`.

pub mod apps;
pub mod cli;
pub mod client;
pub mod mesh;
pub mod nats;
pub mod node;
pub mod proxy;
pub mod reply;

use std::future::Future;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cmesh_common::SigningKey;

pub use apps::{
    app_id, app_wasm, converged_roots, create, deploy, deploy_bytes, deploy_params, grant, wasm_base64, wat_module,
};
pub use cli::{cli_json, Cli};
pub use client::{
    auth_headers, bearer, next_message, Challenge, Client, ClientError, Login, To, JSON, MSGPACK, REQUEST_TIMEOUT,
};
pub use mesh::{Mesh, MeshOptions};
pub use nats::{NatsServer, NatsSetup};
pub use node::{
    cmesh_bin, node_key, parse_ready_line, ready_line, write_genesis, Node, NodeOptions, NodeSetup, READY_TIMEOUT,
};
pub use proxy::Proxy;
pub use reply::Reply;

/// Longest wait for something that propagates between nodes (events, reconnects).
pub const EVENTUALLY: Duration = Duration::from_secs(10);

/// An error and its causes on one line (`a: b: c`), for the messages of failed tests.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
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

pub fn new_key() -> SigningKey {
    SigningKey::generate().expect("generate a key")
}
