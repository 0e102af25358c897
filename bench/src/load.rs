//! `cmesh bench fqmn` and `cmesh bench tx`: requests per second and latency through a real
//! node — an authenticated `I:whoami`, or a durable, signed `kv.set` transaction — measured
//! against a raw async-nats echo service on the same NATS in the same run. A bare req/s
//! figure says little on a shared, noisy machine; the ratio to what NATS itself does at
//! that moment is what tells the node's cost. The raw baseline runs before and after the
//! node, and their mean is the reference.

use std::future::Future;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use clap::Args;
use cmesh_common::{Address, SigningKey};
use cmesh_testkit::{apps, Client, Node, NodeOptions, To};
use futures::StreamExt;
use serde_json::{json, Value};

use crate::machine::{cpu_seconds, load_average, rss_kib};
use crate::report::Report;
use crate::{connect, interrupted, percentile, random_hex, start_node};

/// What the node's FQMN endpoint is asked, every time, in `bench fqmn`.
pub(crate) const FQMN: &str = "I:whoami";
/// Pause between "ready" and the RSS reading, so start-up work has settled.
const SETTLE: Duration = Duration::from_millis(500);

/// What the load asks the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workload {
    /// `I:whoami` with a bearer token.
    Whoami,
    /// `SW:<kv context>:set:["k<n>", n]`: a signed transaction, acknowledged once durable.
    KvSet,
}

impl Workload {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Workload::Whoami => "fqmn",
            Workload::KvSet => "tx",
        }
    }
}

/// `cmesh bench fqmn|tx` flags; the NATS server is `cmesh --nats` (the bench starts its
/// own node on it).
#[derive(Debug, Args)]
pub struct LoadArgs {
    /// Requests in flight at once: this many loops, each sending a request and awaiting its reply
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub concurrency: u32,
    /// Seconds measured per run (three runs: raw, cmesh, raw)
    #[arg(long, default_value_t = 5.0, value_parser = positive_seconds)]
    pub duration: f64,
    /// Seconds of load before each measured run, not counted
    #[arg(long, default_value_t = 1.0, value_parser = non_negative_seconds)]
    pub warmup: f64,
    /// Print exactly one JSON object on stdout instead of readable lines
    #[arg(long)]
    pub json: bool,
}

fn positive_seconds(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(s) if s.is_finite() && s > 0.0 && s <= 86_400.0 => Ok(s),
        _ => Err(format!("`{text}` is not a number of seconds above 0 (at most 86400)")),
    }
}

fn non_negative_seconds(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(s) if s.is_finite() && (0.0..=86_400.0).contains(&s) => Ok(s),
        _ => Err(format!("`{text}` is not a number of seconds from 0 to 86400")),
    }
}

pub async fn load(args: LoadArgs, nats_url: &str, workload: Workload) -> anyhow::Result<ExitCode> {
    let dir = std::env::temp_dir().join(format!("cmesh-bench-{}", random_hex(8)?));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut node = NodeProcess {
        node: None,
        dir,
        keep_dir: false,
    };
    // Ctrl-C or SIGTERM ends the bench through the same path as an error, so the node stops.
    let result = tokio::select! {
        result = bench(&args, nats_url, workload, &mut node) => result,
        signal = interrupted() => Err(signal),
    };
    if result.is_err() && node.node.is_some() {
        // Keep the node's log for whoever reads the error.
        node.keep_dir = true;
        eprintln!("the node's data and log are kept in {}", node.dir.display());
    }
    drop(node);
    let report = result?;
    report.print(args.json);
    if report.errors > 0 {
        eprintln!(
            "error: {} of the cmesh requests failed{}",
            report.errors,
            report
                .first_error
                .as_deref()
                .map(|e| format!(" (first: {e})"))
                .unwrap_or_default()
        );
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

async fn bench(args: &LoadArgs, nats_url: &str, workload: Workload, node: &mut NodeProcess) -> anyhow::Result<Report> {
    let plan = Plan {
        concurrency: args.concurrency as usize,
        warmup: Duration::from_secs_f64(args.warmup),
        duration: Duration::from_secs_f64(args.duration),
    };

    // Connect first: a NATS that is not there fails here, not after the node's retries.
    let echo = connect(nats_url, "cmesh-bench-echo").await?;
    let raw_client = connect(nats_url, "cmesh-bench-raw").await?;
    let cmesh_client = connect(nats_url, "cmesh-bench-cmesh").await?;

    // Other work on the machine skews every figure: say how busy it was.
    let load_avg_1m = load_average();
    let address = node.start(nats_url).await?;
    tracing::info!(%address, "node ready");
    tokio::time::sleep(SETTLE).await;
    let pid = node
        .node
        .as_ref()
        .and_then(Node::pid)
        .context("the node is not running")?;
    let idle_rss_kib = rss_kib(pid)?;

    let echo_subject = format!("bench.echo.{}", random_hex(8)?);
    let subscriber = echo
        .subscribe(echo_subject.clone())
        .await
        .context("subscribing the echo subject")?;
    let responder = tokio::spawn(echo_responder(echo.clone(), subscriber));
    echo.flush().await.context("flushing the echo subscription")?;

    let (token, payloads) = prepare(nats_url, address, workload).await?;
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Authorization", format!("Bearer {token}").as_str());

    // The same bytes on the wire for both: same headers, a payload of the same size.
    let raw = Arc::new(Target {
        client: raw_client,
        subject: async_nats::Subject::from(echo_subject),
        headers: headers.clone(),
        payloads: Payloads::Fixed(Bytes::from(vec![b'x'; payloads.typical_len()])),
        kind: Kind::Raw,
    });
    let cmesh = Arc::new(Target {
        client: cmesh_client,
        subject: async_nats::Subject::from(format!("cmesh.node.{address}.fqmn")),
        headers,
        payloads,
        kind: Kind::Cmesh,
    });

    let result = async {
        let raw_before = run_load(raw.clone(), plan, pid).await?;
        tracing::info!(rps = raw_before.rps(), "raw echo, before");
        let cmesh_run = run_load(cmesh.clone(), plan, pid).await?;
        tracing::info!(rps = cmesh_run.rps(), errors = cmesh_run.errors, "cmesh");
        let raw_after = run_load(raw.clone(), plan, pid).await?;
        tracing::info!(rps = raw_after.rps(), "raw echo, after");
        anyhow::Ok((raw_before, cmesh_run, raw_after))
    }
    .await;
    responder.abort();
    let (raw_before, cmesh_run, raw_after) = result?;
    if raw_before.errors + raw_after.errors > 0 {
        bail!(
            "the raw echo baseline failed {} requests{}",
            raw_before.errors + raw_after.errors,
            raw_before
                .first_error
                .or(raw_after.first_error)
                .map(|e| format!(" (first: {e})"))
                .unwrap_or_default()
        );
    }
    let loaded_rss_kib = rss_kib(pid).ok();
    let mut report = Report::new(
        &plan,
        address,
        idle_rss_kib,
        loaded_rss_kib,
        &raw_before,
        &cmesh_run,
        &raw_after,
    );
    report.load_avg_1m = load_avg_1m;
    report.workload = workload;
    Ok(report)
}

// ---------------------------------------------------------------------------------------
// The node under test, as a child process.

/// The child node and its temp dir; the dir goes too unless it is kept for a post-mortem.
struct NodeProcess {
    node: Option<Node>,
    dir: PathBuf,
    keep_dir: bool,
}

impl NodeProcess {
    /// Starts `cmesh node run` on a fresh data dir; the node's address once it is ready.
    async fn start(&mut self, nats_url: &str) -> anyhow::Result<Address> {
        let (data, log) = (self.dir.join("data"), self.dir.join("node.log"));
        let node = start_node(nats_url, 0, NodeOptions::default(), data, log).await?;
        let address = node.address();
        self.node = Some(node);
        Ok(address)
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        self.node.take();
        if !self.keep_dir {
            if let Err(e) = std::fs::remove_dir_all(&self.dir) {
                tracing::warn!(dir = %self.dir.display(), error = %e, "could not remove the bench's temp dir");
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Login, like any client.

/// Logs in with a fresh key, like any client, and sets up what the workload needs (for
/// `tx`: the kv app deployed and a context of it): the bench's token and its requests.
async fn prepare(nats_url: &str, address: Address, workload: Workload) -> anyhow::Result<(String, Payloads)> {
    let client = Client::try_connect(nats_url, "cmesh-bench")
        .await?
        .with_timeout(Duration::from_secs(30));
    let to = To::Node(address);
    let token = client.try_login(&SigningKey::generate()?, to).await?.token;
    let payloads = match workload {
        Workload::Whoami => Payloads::Fixed(Bytes::from_static(FQMN.as_bytes())),
        Workload::KvSet => {
            let deploy = apps::deploy_params("kv", "1.0.0", apps::KV);
            client
                .try_call(to, "app.deploy", deploy, Some(&token))
                .await
                .context("deploying the kv app")?;
            let created = client
                .try_call(to, "ctx.create", json!({ "app": "kv" }), Some(&token))
                .await?;
            let context = created
                .get("context")
                .and_then(Value::as_str)
                .context("ctx.create answered without a context")?;
            Payloads::KvSet {
                context: context.to_string(),
                next: std::sync::atomic::AtomicU64::new(0),
            }
        }
    };
    Ok((token, payloads))
}

// ---------------------------------------------------------------------------------------
// The load.

/// The ceiling: answers every request with its own payload, one task per request (as the
/// node's front door does).
async fn echo_responder(client: async_nats::Client, mut subscriber: async_nats::Subscriber) {
    while let Some(message) = subscriber.next().await {
        let Some(reply) = message.reply else { continue };
        let client = client.clone();
        tokio::spawn(async move {
            if let Err(e) = client.publish(reply, message.payload).await {
                tracing::warn!(error = %e, "the echo responder could not reply");
            }
        });
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Raw,
    Cmesh,
}

struct Target {
    client: async_nats::Client,
    subject: async_nats::Subject,
    headers: async_nats::HeaderMap,
    payloads: Payloads,
    kind: Kind,
}

/// The request payloads of a run.
enum Payloads {
    Fixed(Bytes),
    /// Each request sets its own key, so every transaction changes the state.
    KvSet {
        context: String,
        next: std::sync::atomic::AtomicU64,
    },
}

impl Payloads {
    fn next(&self) -> Bytes {
        match self {
            Payloads::Fixed(bytes) => bytes.clone(),
            Payloads::KvSet { context, next } => {
                let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                Bytes::from(format!(r#"SW:{context}:set:["k{n}",{n}]"#))
            }
        }
    }

    /// A payload size like the workload's, for the raw baseline.
    fn typical_len(&self) -> usize {
        match self {
            Payloads::Fixed(bytes) => bytes.len(),
            Payloads::KvSet { context, .. } => format!(r#"SW:{context}:set:["k100000",100000]"#).len(),
        }
    }
}

impl Target {
    /// Whether a reply is the right one.
    fn check(&self, reply: &async_nats::Message) -> Result<(), String> {
        match self.kind {
            Kind::Raw if reply.payload.len() == self.payloads.typical_len() => Ok(()),
            Kind::Raw => Err(format!(
                "an echo of {} bytes for {}",
                reply.payload.len(),
                self.payloads.typical_len()
            )),
            Kind::Cmesh => match reply
                .headers
                .as_ref()
                .and_then(|h| h.get("Cmtp-Status"))
                .map(|v| v.as_str())
            {
                Some("200") => Ok(()),
                Some(status) => Err(format!(
                    "Cmtp-Status {status}: {}",
                    String::from_utf8_lossy(&reply.payload)
                )),
                None => Err("a reply without Cmtp-Status".to_string()),
            },
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct Plan {
    pub(crate) concurrency: usize,
    pub(crate) warmup: Duration,
    pub(crate) duration: Duration,
}

/// One measured run: latencies (µs, sorted) of the requests answered inside the window,
/// and the CPU time the watched processes (the node, or servers) and this process used in
/// that window.
#[derive(Debug, Default)]
pub(crate) struct Run {
    pub(crate) latencies_us: Vec<u32>,
    pub(crate) seconds: f64,
    pub(crate) errors: u64,
    pub(crate) first_error: Option<String>,
    /// `None` when nothing was watched (or /proc could not be read).
    pub(crate) watched_cpu_s: Option<f64>,
    pub(crate) own_cpu_s: Option<f64>,
}

impl Run {
    pub(crate) fn rps(&self) -> f64 {
        if self.seconds > 0.0 {
            self.latencies_us.len() as f64 / self.seconds
        } else {
            0.0
        }
    }

    pub(crate) fn percentile(&self, p: f64) -> u32 {
        percentile(&self.latencies_us, p)
    }

    /// CPU µs per answered request.
    pub(crate) fn per_request_us(&self, cpu_s: Option<f64>) -> Option<f64> {
        let requests = self.latencies_us.len();
        cpu_s.filter(|_| requests > 0).map(|s| s * 1e6 / requests as f64)
    }
}

#[derive(Debug, Clone, Copy)]
struct CpuSample {
    watched: Option<f64>,
    own: Option<f64>,
}

impl CpuSample {
    fn take(watched: &[u32]) -> Self {
        let watched = if watched.is_empty() {
            None
        } else {
            watched.iter().map(|pid| cpu_seconds(&pid.to_string())).sum()
        };
        CpuSample {
            watched,
            own: cpu_seconds("self"),
        }
    }
}

fn cpu_delta(from: Option<f64>, to: Option<f64>) -> Option<f64> {
    Some(to? - from?).filter(|d| *d >= 0.0)
}

/// `concurrency` loops of requests to `target`, each awaiting its reply (see
/// [`closed_loop`]), with the node's CPU.
async fn run_load(target: Arc<Target>, plan: Plan, node_pid: u32) -> anyhow::Result<Run> {
    closed_loop(plan, &[node_pid], move |_, _| {
        let target = target.clone();
        async move {
            target
                .client
                .request_with_headers(target.subject.clone(), target.headers.clone(), target.payloads.next())
                .await
                .map_err(|e| e.to_string())
                .and_then(|reply| target.check(&reply))
        }
    })
    .await
}

/// `plan.concurrency` loops, each calling `call(loop, n)` (`n` unique in the run) and
/// awaiting it, for warm-up plus duration; only calls that end after the warm-up count.
/// Errors count throughout. The CPU of this process and of the `watched` processes is
/// taken over the measured window.
pub(crate) async fn closed_loop<F, Fut>(plan: Plan, watched: &[u32], call: F) -> anyhow::Result<Run>
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), String>> + Send + 'static,
{
    let call = Arc::new(call);
    let counter = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let measure_from = start + plan.warmup;
    let until = measure_from + plan.duration;
    let mut loops = Vec::with_capacity(plan.concurrency);
    for i in 0..plan.concurrency {
        let (call, counter) = (call.clone(), counter.clone());
        loops.push(tokio::spawn(async move {
            let mut run = Run::default();
            loop {
                let sent = Instant::now();
                if sent >= until {
                    break;
                }
                let outcome = call(i, counter.fetch_add(1, Ordering::Relaxed)).await;
                let done = Instant::now();
                match outcome {
                    Ok(()) if done >= measure_from && done <= until => {
                        let micros = done.duration_since(sent).as_micros();
                        run.latencies_us.push(u32::try_from(micros).unwrap_or(u32::MAX));
                    }
                    Ok(()) => {}
                    Err(e) => {
                        run.errors += 1;
                        run.first_error.get_or_insert(e);
                    }
                }
            }
            run
        }));
    }
    tokio::time::sleep_until(measure_from.into()).await;
    let cpu_from = CpuSample::take(watched);
    tokio::time::sleep_until(until.into()).await;
    let cpu_to = CpuSample::take(watched);
    let mut total = Run {
        seconds: plan.duration.as_secs_f64(),
        watched_cpu_s: cpu_delta(cpu_from.watched, cpu_to.watched),
        own_cpu_s: cpu_delta(cpu_from.own, cpu_to.own),
        ..Run::default()
    };
    for handle in loops {
        let run = handle.await.context("a load loop panicked")?;
        total.latencies_us.extend(run.latencies_us);
        total.errors += run.errors;
        if total.first_error.is_none() {
            total.first_error = run.first_error;
        }
    }
    total.latencies_us.sort_unstable();
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_must_be_sensible() {
        assert_eq!(positive_seconds("2.5"), Ok(2.5));
        assert!(positive_seconds("0").is_err());
        assert!(positive_seconds("nan").is_err());
        assert_eq!(non_negative_seconds("0"), Ok(0.0));
        assert!(non_negative_seconds("-1").is_err());
    }
}
