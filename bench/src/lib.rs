//! `cmesh bench`: the node measured as its clients see it, each figure next to a baseline
//! taken in the same run on the same machine (a raw NATS echo, native Rust, a context on
//! one node), because on a shared, noisy machine a bare figure says little.
//!
//! The `cmesh` binary runs these as `cmesh bench fqmn|tx|wasm|replicate|consensus`; the
//! benches start their own nodes (`cmesh node run` children of that binary, through the
//! testkit's node harness; `consensus` its voters in process) on the NATS server of
//! `cmesh --nats`. docs/BENCHMARKS.md has the figures.

mod consensus;
mod load;
mod machine;
mod replicate;
mod report;
mod wasm;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, Context};
use clap::Subcommand;
use cmesh_testkit::{Node, NodeOptions, NodeSetup};

pub use consensus::ConsensusArgs;
pub use load::{LoadArgs, Workload};
pub use replicate::ReplicateArgs;
pub use wasm::WasmArgs;

/// A request without an answer by then counts as an error.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Authenticated `I:whoami` through a node vs. a raw async-nats echo service
    Fqmn(LoadArgs),
    /// Signed, durable kv.set transactions through a node (goal ≥ 5,000/s) vs. a raw echo
    Tx(LoadArgs),
    /// In-process cost of a trivial view call of a cached WASM module vs. native Rust
    Wasm(WasmArgs),
    /// Replication between member nodes: tx/s applied on all (goal ≥ 3,000), convergence
    /// p50/p99 at half load (goal p99 ≤ 50 ms), a joiner's catch-up rate (goal ≥ 20,000/s)
    Replicate(ReplicateArgs),
    /// The mesh registry's Raft (in-process voters): names/s (goal ≥ 5,000 with 3 voters,
    /// ≥ 0.8 of a 3-replica JetStream KV's creates/s), linearizable resolves/s, and leader
    /// failover (goal ≤ 3 s)
    Consensus(ConsensusArgs),
}

/// Runs one bench against the NATS server at `nats_url` (all but `wasm`, which runs in
/// process).
pub fn run(command: BenchCommand, nats_url: &str) -> anyhow::Result<ExitCode> {
    let runtime = || {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .context("starting the async runtime")
    };
    match command {
        BenchCommand::Fqmn(args) => runtime()?.block_on(load::load(args, nats_url, Workload::Whoami)),
        BenchCommand::Tx(args) => runtime()?.block_on(load::load(args, nats_url, Workload::KvSet)),
        BenchCommand::Wasm(args) => wasm::run(args),
        BenchCommand::Replicate(args) => runtime()?.block_on(replicate::run(args, nats_url)),
        BenchCommand::Consensus(args) => runtime()?.block_on(consensus::run(args, nats_url)),
    }
}

/// Starts `cmesh node run` (a child of this very binary) and waits until it is ready.
async fn start_node(
    nats_url: &str,
    index: usize,
    options: NodeOptions,
    data: PathBuf,
    log: PathBuf,
) -> anyhow::Result<Node> {
    let setup = NodeSetup {
        index,
        bin: std::env::current_exe().context("finding the cmesh binary")?,
        nats_url: nats_url.to_string(),
        options,
        data,
        log,
    };
    Ok(Node::launch(setup).await?)
}

/// Resolves with an error on SIGINT or SIGTERM.
async fn interrupted() -> anyhow::Error {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut terminate), Ok(mut interrupt)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt()))
    else {
        return futures::future::pending().await;
    };
    tokio::select! {
        _ = terminate.recv() => anyhow!("interrupted by SIGTERM"),
        _ = interrupt.recv() => anyhow!("interrupted by SIGINT"),
    }
}

async fn connect(url: &str, name: &str) -> anyhow::Result<async_nats::Client> {
    async_nats::ConnectOptions::new()
        .name(name)
        .connection_timeout(Duration::from_secs(5))
        .request_timeout(Some(REQUEST_TIMEOUT))
        .connect(url)
        .await
        .with_context(|| format!("connecting to NATS at {url}"))
}

fn random_hex(bytes: usize) -> anyhow::Result<String> {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).map_err(|e| anyhow!("no entropy: {e}"))?;
    Ok(hex::encode(buf))
}

/// Nearest-rank percentile of sorted values (`p` in 0..=100); the default (0) for none.
fn percentile<T: Copy + Default>(sorted: &[T], p: f64) -> T {
    if sorted.is_empty() {
        return T::default();
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn round(value: f64, decimals: i32) -> f64 {
    let scale = 10f64.powi(decimals);
    (value * scale).round() / scale
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let values: Vec<u32> = (1..=100).collect();
        assert_eq!(percentile(&values, 50.0), 50);
        assert_eq!(percentile(&values, 99.0), 99);
        assert_eq!(percentile(&values, 100.0), 100);
        assert_eq!(percentile(&values, 0.0), 1);
        assert_eq!(percentile(&[7], 99.0), 7);
        assert_eq!(percentile::<u32>(&[], 50.0), 0);
        let values = [10, 20, 30, 40];
        assert_eq!(percentile(&values, 50.0), 20);
        assert_eq!(percentile(&values, 51.0), 30);
        assert_eq!(percentile(&values, 99.0), 40);
        assert_eq!(percentile(&[0.5, 1.5], 99.0), 1.5);
    }

    #[test]
    fn rounding_to_decimals() {
        assert_eq!(round(1.23456, 3), 1.235);
        assert_eq!(round(1.25, 1), 1.3);
    }
}
