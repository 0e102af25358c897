//! `cmesh bench fqmn` and `cmesh bench tx`: requests per second and latency through a real
//! node — an authenticated `I:whoami`, or a durable, signed `kv.set` transaction — measured
//! against a raw async-nats echo service on the same NATS in the same run. A bare req/s
//! figure says little on a shared, noisy machine; the ratio to what NATS itself does at
//! that moment is what tells the node's cost. The raw baseline runs before and after the
//! node, and their mean is the reference.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use bytes::Bytes;
use clap::Args;
use cmesh_common::{Address, SigningKey};
use futures::StreamExt;
use serde_json::{json, Value};

use crate::child::ChildNode;
use crate::client::MeshClient;

/// What the node's FQMN endpoint is asked, every time, in `bench fqmn`.
const FQMN: &str = "I:whoami";
/// The app `bench tx` and `bench replicate` deploy and write to.
pub(crate) const KV_WASM: &[u8] = include_bytes!("../apps/kv/kv.wasm");
/// Goal of `bench tx` on the reference machine (2 cores).
const GOAL_TX_PER_S: f64 = 5_000.0;
/// How long the child node may take to print its ready line.
pub(crate) const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// A request without an answer by then counts as an error.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Pause between "ready" and the RSS reading, so start-up work has settled.
const SETTLE: Duration = Duration::from_millis(500);
/// Goals, printed with the figures.
const GOAL_RATIO: f64 = 0.6;
const GOAL_RATIO_CONCURRENCY: usize = 32;
const GOAL_IDLE_RSS_MB: f64 = 30.0;

/// What the load asks the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workload {
    /// `I:whoami` with a bearer token.
    Whoami,
    /// `SW:<kv context>:set:["k<n>", n]`: a signed transaction, acknowledged once durable.
    KvSet,
}

impl Workload {
    fn name(self) -> &'static str {
        match self {
            Workload::Whoami => "fqmn",
            Workload::KvSet => "tx",
        }
    }
}

#[derive(Debug, Args)]
pub struct LoadArgs {
    /// NATS server URL (the bench starts its own node on it)
    #[arg(long = "nats", env = "CMESH_NATS_URL", default_value = crate::config::DEFAULT_NATS_URL)]
    pub nats_url: String,
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

pub async fn load(args: LoadArgs, workload: Workload) -> anyhow::Result<ExitCode> {
    let dir = std::env::temp_dir().join(format!("cmesh-bench-{}", random_hex(8)?));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut node = NodeProcess {
        node: None,
        dir,
        keep_dir: false,
    };
    // Ctrl-C or SIGTERM ends the bench through the same path as an error, so the node stops.
    let result = tokio::select! {
        result = bench(&args, workload, &mut node) => result,
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

/// Resolves with an error on SIGINT or SIGTERM.
pub(crate) async fn interrupted() -> anyhow::Error {
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

async fn bench(args: &LoadArgs, workload: Workload, node: &mut NodeProcess) -> anyhow::Result<Report> {
    let plan = Plan {
        concurrency: args.concurrency as usize,
        warmup: Duration::from_secs_f64(args.warmup),
        duration: Duration::from_secs_f64(args.duration),
    };

    // Connect first: a NATS that is not there fails here, not after the node's retries.
    let echo = connect(&args.nats_url, "cmesh-bench-echo").await?;
    let raw_client = connect(&args.nats_url, "cmesh-bench-raw").await?;
    let cmesh_client = connect(&args.nats_url, "cmesh-bench-cmesh").await?;

    // Other work on the machine skews every figure: say how busy it was.
    let load_avg_1m = load_average();
    let address = node.start(&args.nats_url).await?;
    tracing::info!(%address, "node ready");
    tokio::time::sleep(SETTLE).await;
    let pid = node
        .node
        .as_ref()
        .map(ChildNode::pid)
        .context("the node is not running")?;
    let idle_rss_kib = rss_kib(pid)?;

    let echo_subject = format!("bench.echo.{}", random_hex(8)?);
    let subscriber = echo
        .subscribe(echo_subject.clone())
        .await
        .context("subscribing the echo subject")?;
    let responder = tokio::spawn(echo_responder(echo.clone(), subscriber));
    echo.flush().await.context("flushing the echo subscription")?;

    let (token, payloads) = prepare(&args.nats_url, address, workload).await?;
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

/// The 1-minute load average (`/proc/loadavg`).
pub(crate) fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

pub(crate) async fn connect(url: &str, name: &str) -> anyhow::Result<async_nats::Client> {
    async_nats::ConnectOptions::new()
        .name(name)
        .connection_timeout(Duration::from_secs(5))
        .request_timeout(Some(REQUEST_TIMEOUT))
        .connect(url)
        .await
        .with_context(|| format!("connecting to NATS at {url}"))
}

pub(crate) fn random_hex(bytes: usize) -> anyhow::Result<String> {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).map_err(|e| anyhow!("no entropy: {e}"))?;
    Ok(hex::encode(buf))
}

// ---------------------------------------------------------------------------------------
// The node under test, as a child process.

/// The child node and its temp dir; the dir goes too unless it is kept for a post-mortem.
struct NodeProcess {
    node: Option<ChildNode>,
    dir: PathBuf,
    keep_dir: bool,
}

impl NodeProcess {
    /// Starts `cmesh node run` on a fresh data dir; the node's address once it is ready.
    async fn start(&mut self, nats_url: &str) -> anyhow::Result<Address> {
        let (url, data, log) = (nats_url.to_string(), self.dir.join("data"), self.dir.join("node.log"));
        let node = tokio::task::spawn_blocking(move || ChildNode::start(&url, &data, false, &[], &log, READY_TIMEOUT))
            .await??;
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

/// Resident set size of a process, in KiB (`VmRSS` of `/proc/<pid>/status`).
fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    parse_vm_rss(&status).with_context(|| format!("no VmRSS in {path}"))
}

fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let mut words = line["VmRSS:".len()..].split_whitespace();
    let value: u64 = words.next()?.parse().ok()?;
    match words.next() {
        Some("kB") | None => Some(value),
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------
// Login, like any client.

/// Logs in with a fresh key, like any client, and sets up what the workload needs (for
/// `tx`: the kv app deployed and a context of it): the bench's token and its requests.
async fn prepare(nats_url: &str, address: Address, workload: Workload) -> anyhow::Result<(String, Payloads)> {
    let target = crate::client::Target {
        nats_url: nats_url.to_string(),
        node: Some(address),
        timeout: 30,
    };
    let mut client = MeshClient::connect(&target).await?;
    let token = client.obtain_token(&SigningKey::generate()?).await?.token;
    let payloads = match workload {
        Workload::Whoami => Payloads::Fixed(Bytes::from_static(FQMN.as_bytes())),
        Workload::KvSet => {
            client
                .rpc("app.deploy", crate::apps::deploy_params("kv", "1.0.0", KV_WASM))
                .await
                .context("deploying the kv app")?;
            let created = client.rpc("ctx.create", json!({ "app": "kv" })).await?;
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
struct Plan {
    concurrency: usize,
    warmup: Duration,
    duration: Duration,
}

/// One measured run: latencies (µs, sorted) of the requests answered inside the window,
/// and the CPU time the node and this process used in that window.
#[derive(Debug, Default)]
struct Run {
    latencies_us: Vec<u32>,
    seconds: f64,
    errors: u64,
    first_error: Option<String>,
    node_cpu_s: Option<f64>,
    own_cpu_s: Option<f64>,
}

impl Run {
    fn rps(&self) -> f64 {
        if self.seconds > 0.0 {
            self.latencies_us.len() as f64 / self.seconds
        } else {
            0.0
        }
    }

    fn percentile(&self, p: f64) -> u32 {
        percentile(&self.latencies_us, p)
    }

    /// CPU µs per answered request.
    fn per_request_us(&self, cpu_s: Option<f64>) -> Option<f64> {
        let requests = self.latencies_us.len();
        cpu_s.filter(|_| requests > 0).map(|s| s * 1e6 / requests as f64)
    }
}

/// Linux reports process CPU times in USER_HZ ticks, which is 100 per second on every
/// architecture we build for (`getconf CLK_TCK`).
const TICKS_PER_SECOND: f64 = 100.0;

/// User plus system CPU seconds of a whole process (all threads), from `/proc/<pid>/stat`.
pub(crate) fn cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat_ticks(&stat).map(|ticks| ticks as f64 / TICKS_PER_SECOND)
}

/// utime + stime: fields 14 and 15 of `/proc/<pid>/stat`, counted after the `(comm)` field,
/// which may itself hold spaces and parentheses.
fn parse_stat_ticks(stat: &str) -> Option<u64> {
    let (_, rest) = stat.rsplit_once(')')?;
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

#[derive(Debug, Clone, Copy)]
struct CpuSample {
    node: Option<f64>,
    own: Option<f64>,
}

impl CpuSample {
    fn take(node_pid: u32) -> Self {
        CpuSample {
            node: cpu_seconds(&node_pid.to_string()),
            own: cpu_seconds("self"),
        }
    }
}

fn cpu_delta(from: Option<f64>, to: Option<f64>) -> Option<f64> {
    Some(to? - from?).filter(|d| *d >= 0.0)
}

/// `concurrency` loops, each sending a request and awaiting the reply, for warm-up plus
/// duration; only replies that arrive after the warm-up count. Errors count throughout.
async fn run_load(target: Arc<Target>, plan: Plan, node_pid: u32) -> anyhow::Result<Run> {
    let start = Instant::now();
    let measure_from = start + plan.warmup;
    let until = measure_from + plan.duration;
    let mut loops = Vec::with_capacity(plan.concurrency);
    for _ in 0..plan.concurrency {
        let target = target.clone();
        loops.push(tokio::spawn(async move {
            let mut run = Run::default();
            loop {
                let sent = Instant::now();
                if sent >= until {
                    break;
                }
                let outcome = target
                    .client
                    .request_with_headers(target.subject.clone(), target.headers.clone(), target.payloads.next())
                    .await
                    .map_err(|e| e.to_string())
                    .and_then(|reply| target.check(&reply));
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
    let cpu_from = CpuSample::take(node_pid);
    tokio::time::sleep_until(until.into()).await;
    let cpu_to = CpuSample::take(node_pid);
    let mut total = Run {
        seconds: plan.duration.as_secs_f64(),
        node_cpu_s: cpu_delta(cpu_from.node, cpu_to.node),
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

/// Nearest-rank percentile of sorted values (`p` in 0..=100); 0 for no values.
pub(crate) fn percentile(sorted: &[u32], p: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

// ---------------------------------------------------------------------------------------
// The report.

#[derive(Debug)]
struct Report {
    workload: Workload,
    node: Address,
    concurrency: usize,
    duration_s: f64,
    warmup_s: f64,
    raw_rps: f64,
    raw_rps_before: f64,
    raw_rps_after: f64,
    raw_p50_us: u32,
    raw_p99_us: u32,
    cmesh_rps: f64,
    p50_us: u32,
    p99_us: u32,
    ratio: f64,
    idle_rss_kib: u64,
    loaded_rss_kib: Option<u64>,
    requests: u64,
    errors: u64,
    first_error: Option<String>,
    /// CPU µs per request: the node's, and this process's (load loops; plus the echo
    /// responder in the raw runs, mean of both).
    node_cpu_us_per_req: Option<f64>,
    node_cpu_cores: Option<f64>,
    bench_cpu_us_per_req: Option<f64>,
    raw_bench_cpu_us_per_req: Option<f64>,
    cpus: usize,
    load_avg_1m: Option<f64>,
}

fn mean(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    Some((a? + b?) / 2.0)
}

fn mb(kib: u64) -> f64 {
    round(kib as f64 / 1024.0, 1)
}

pub(crate) fn round(value: f64, decimals: i32) -> f64 {
    let scale = 10f64.powi(decimals);
    (value * scale).round() / scale
}

impl Report {
    fn new(plan: &Plan, node: Address, idle: u64, loaded: Option<u64>, before: &Run, cmesh: &Run, after: &Run) -> Self {
        let raw_rps = (before.rps() + after.rps()) / 2.0;
        // The raw baseline's percentiles: the mean of both runs' figures.
        let raw_p50 = (before.percentile(50.0) as u64 + after.percentile(50.0) as u64) / 2;
        let raw_p99 = (before.percentile(99.0) as u64 + after.percentile(99.0) as u64) / 2;
        Report {
            workload: Workload::Whoami,
            node,
            concurrency: plan.concurrency,
            duration_s: plan.duration.as_secs_f64(),
            warmup_s: plan.warmup.as_secs_f64(),
            raw_rps,
            raw_rps_before: before.rps(),
            raw_rps_after: after.rps(),
            raw_p50_us: raw_p50 as u32,
            raw_p99_us: raw_p99 as u32,
            cmesh_rps: cmesh.rps(),
            p50_us: cmesh.percentile(50.0),
            p99_us: cmesh.percentile(99.0),
            ratio: if raw_rps > 0.0 { cmesh.rps() / raw_rps } else { 0.0 },
            idle_rss_kib: idle,
            loaded_rss_kib: loaded,
            requests: cmesh.latencies_us.len() as u64,
            errors: cmesh.errors,
            first_error: cmesh.first_error.clone(),
            node_cpu_us_per_req: cmesh.per_request_us(cmesh.node_cpu_s),
            node_cpu_cores: cmesh.node_cpu_s.map(|s| s / cmesh.seconds),
            bench_cpu_us_per_req: cmesh.per_request_us(cmesh.own_cpu_s),
            cpus: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
            load_avg_1m: None,
            raw_bench_cpu_us_per_req: mean(
                before.per_request_us(before.own_cpu_s),
                after.per_request_us(after.own_cpu_s),
            ),
        }
    }

    fn to_json(&self) -> Value {
        json!({
            "bench": self.workload.name(),
            "raw_rps": round(self.raw_rps, 1),
            "cmesh_rps": round(self.cmesh_rps, 1),
            "ratio": round(self.ratio, 3),
            "p50_us": self.p50_us,
            "p99_us": self.p99_us,
            "raw_p50_us": self.raw_p50_us,
            "raw_p99_us": self.raw_p99_us,
            "idle_rss_mb": mb(self.idle_rss_kib),
            "concurrency": self.concurrency,
            "duration_s": self.duration_s,
            "requests": self.requests,
            "errors": self.errors,
            "warmup_s": self.warmup_s,
            "raw_rps_before": round(self.raw_rps_before, 1),
            "raw_rps_after": round(self.raw_rps_after, 1),
            "idle_rss_kib": self.idle_rss_kib,
            "loaded_rss_mb": self.loaded_rss_kib.map(mb),
            "node": self.node,
            "node_cpu_us_per_req": self.node_cpu_us_per_req.map(|v| round(v, 1)),
            "node_cpu_cores": self.node_cpu_cores.map(|v| round(v, 2)),
            "bench_cpu_us_per_req": self.bench_cpu_us_per_req.map(|v| round(v, 1)),
            "raw_bench_cpu_us_per_req": self.raw_bench_cpu_us_per_req.map(|v| round(v, 1)),
            "cpus": self.cpus,
            "load_avg_1m": self.load_avg_1m,
        })
    }

    fn print(&self, as_json: bool) {
        if as_json {
            println!("{}", self.to_json());
            return;
        }
        let verdict = |met: bool| if met { "met" } else { "MISSED" };
        let ratio_goal = if self.workload == Workload::KvSet {
            format!(
                "{:.0} transactions/s; goal ≥ {GOAL_TX_PER_S:.0}/s: {}",
                self.cmesh_rps,
                verdict(self.cmesh_rps >= GOAL_TX_PER_S)
            )
        } else if self.concurrency == GOAL_RATIO_CONCURRENCY {
            format!(
                "goal ≥ {GOAL_RATIO} at concurrency {GOAL_RATIO_CONCURRENCY}: {}",
                verdict(self.ratio >= GOAL_RATIO)
            )
        } else {
            format!(
                "goal ≥ {GOAL_RATIO} is set at concurrency {GOAL_RATIO_CONCURRENCY}; this run used {}",
                self.concurrency
            )
        };
        match self.workload {
            Workload::Whoami => println!(
                "cmesh bench fqmn: `{FQMN}` with a bearer token through node {}",
                self.node
            ),
            Workload::KvSet => println!(
                "cmesh bench tx: signed, durable `SW:<kv>:set:[\"k<n>\",n]` transactions through node {}",
                self.node
            ),
        }
        println!("  vs. a raw async-nats echo service on the same NATS (run before and after)");
        println!(
            "raw_rps:      {:.0} req/s (mean of {:.0} before and {:.0} after)",
            self.raw_rps, self.raw_rps_before, self.raw_rps_after
        );
        println!("cmesh_rps:    {:.0} req/s", self.cmesh_rps);
        println!("ratio:        {:.3} ({ratio_goal})", self.ratio);
        println!("p50_us:       {} (cmesh)", self.p50_us);
        println!("p99_us:       {} (cmesh)", self.p99_us);
        println!("raw_p50_us:   {}", self.raw_p50_us);
        println!("raw_p99_us:   {}", self.raw_p99_us);
        println!(
            "idle_rss_mb:  {:.1} ({} KiB; goal ≤ {GOAL_IDLE_RSS_MB} MB: {})",
            mb(self.idle_rss_kib),
            self.idle_rss_kib,
            verdict(mb(self.idle_rss_kib) <= GOAL_IDLE_RSS_MB)
        );
        if let Some(loaded) = self.loaded_rss_kib {
            println!("loaded_rss_mb: {:.1} (after the load)", mb(loaded));
        }
        if let (Some(per_request), Some(cores)) = (self.node_cpu_us_per_req, self.node_cpu_cores) {
            println!("node CPU:     {per_request:.1} µs per request ({cores:.2} cores busy) in the cmesh run");
        }
        if let (Some(cmesh), Some(raw)) = (self.bench_cpu_us_per_req, self.raw_bench_cpu_us_per_req) {
            println!(
                "bench CPU:    {cmesh:.1} µs per request (cmesh run), {raw:.1} (raw runs, with the echo responder)"
            );
        }
        let load = self
            .load_avg_1m
            .map(|l| format!("{l:.2}"))
            .unwrap_or_else(|| "unknown".into());
        println!(
            "machine:      {} CPUs, load average {load} before the node started",
            self.cpus
        );
        println!("concurrency:  {}", self.concurrency);
        println!(
            "duration_s:   {} per run, after {} s of warm-up",
            self.duration_s, self.warmup_s
        );
        println!("requests:     {} (cmesh, measured)", self.requests);
        println!("errors:       {}", self.errors);
    }
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
        assert_eq!(percentile(&[], 50.0), 0);
        let values = [10, 20, 30, 40];
        assert_eq!(percentile(&values, 50.0), 20);
        assert_eq!(percentile(&values, 51.0), 30);
        assert_eq!(percentile(&values, 99.0), 40);
    }

    #[test]
    fn vm_rss_is_read_in_kib() {
        let status = "Name:\tcmesh\nVmPeak:\t  100 kB\nVmRSS:\t   12345 kB\nThreads:\t5\n";
        assert_eq!(parse_vm_rss(status), Some(12345));
        assert_eq!(parse_vm_rss("Name:\tx\n"), None);
        assert_eq!(mb(30 * 1024), 30.0);
    }

    #[test]
    fn cpu_ticks_from_proc_stat() {
        let stat = "4242 (tokio (rt) x) S 1 4242 4242 0 -1 4194560 900 0 0 0 150 25 0 0 20 0 9 0 123 0 0";
        assert_eq!(parse_stat_ticks(stat), Some(175));
        assert_eq!(parse_stat_ticks("garbage"), None);
        assert!(cpu_seconds("self").is_some());
    }

    #[test]
    fn seconds_must_be_sensible() {
        assert_eq!(positive_seconds("2.5"), Ok(2.5));
        assert!(positive_seconds("0").is_err());
        assert!(positive_seconds("nan").is_err());
        assert_eq!(non_negative_seconds("0"), Ok(0.0));
        assert!(non_negative_seconds("-1").is_err());
    }
}
