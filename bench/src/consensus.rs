//! `cmesh bench consensus`: the mesh registry (`cmesh-consensus`) as its callers see it,
//! next to a JetStream KV bucket doing the same job in the same run.
//!
//! Why these figures: names are registered through Raft, so a registration costs a
//! quorum round and a leader change stops registrations for a while. The bench starts
//! `--voters` `ConsensusNode`s in this process on the NATS of `cmesh --nats` (each with
//! its own connection and redb file, default settings) and measures:
//!
//! 1. **names/s**: closed-loop `Register` proposals of unique names, the loops spread
//!    round robin over the voters (so most go through followers, which forward them to
//!    the leader), p50/p99 of their latency;
//! 2. **the baseline**: the same closed loop of `create` (fails if the key exists, like a
//!    taken name) on a 3-replica JetStream KV bucket on 3 nats-servers the bench starts
//!    (`jetstream.rs`); `ratio` is names/s over creates/s, because a bare rate on a
//!    shared 2-core machine moves by tens of percent from one minute to the next;
//! 3. **resolves/s**: linearizable reads of names registered in 1, same loops;
//! 4. **failover**: `--kills` times, the leader is shut down and the time until a
//!    registration through a surviving voter commits is taken; the killed voter is then
//!    started again from its file and waits until it has caught up.

mod jetstream;
mod voters;

use std::future::Future;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use clap::Args;
use cmesh_common::{Address, SigningKey};
use cmesh_consensus::{Applied, Command, ConsensusError, ConsensusNode, Consistency};
use serde_json::{json, Value};

use crate::load::{self, Plan, Run};
use crate::machine::load_average;
use crate::{interrupted, percentile, random_hex, round};
use jetstream::NatsCluster;
use voters::Voters;

/// Load before each measured window that is not counted.
const WARMUP: Duration = Duration::from_secs(1);
/// One call without an answer by then counts as an error (the node's own limit is 5 s).
const CALL_TIMEOUT: Duration = Duration::from_secs(15);
/// How long the voters may take to agree on a leader (an election is 1.5–3 s).
const LEADER_LIMIT: Duration = Duration::from_secs(30);
/// How long a failover, a restart or a catch-up may take before the bench gives up.
const FAILOVER_LIMIT: Duration = Duration::from_secs(60);
/// Where a registered name points.
const TARGET: &str = "I:whoami";

const GOAL_RATIO: f64 = 0.8;
const GOAL_NAMES_PER_S: f64 = 5_000.0;
/// The names/s goal is for this many voters.
const GOAL_VOTERS: usize = 3;
const GOAL_FAILOVER_MAX_MS: f64 = 3_000.0;

/// `cmesh bench consensus` flags; the NATS server is `cmesh --nats` (the bench starts its
/// voters in process on it, and its own 3 nats-servers for the JetStream baseline).
#[derive(Debug, Args)]
pub struct ConsensusArgs {
    /// Genesis voters of the registry
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=9))]
    pub voters: u32,
    /// Calls in flight at once: this many loops, each awaiting its answer before the next
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub concurrency: u32,
    /// Seconds measured in each of the names, JetStream and resolves runs (after 1 s of warm-up)
    #[arg(long, default_value_t = 5.0, value_parser = positive_seconds)]
    pub duration: f64,
    /// Times the leader is killed to measure failover (needs at least 3 voters; 0: none)
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(0..=100))]
    pub kills: u32,
    /// Print exactly one JSON object on stdout instead of readable lines
    #[arg(long)]
    pub json: bool,
}

fn positive_seconds(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(s) if s.is_finite() && s > 0.0 && s <= 3_600.0 => Ok(s),
        _ => Err(format!("`{text}` is not a number of seconds above 0 (at most 3600)")),
    }
}

pub async fn run(args: ConsensusArgs, nats_url: &str) -> anyhow::Result<ExitCode> {
    if args.kills > 0 && args.voters < 3 {
        bail!("--kills needs at least 3 voters (with fewer, no quorum survives the leader); use --kills 0");
    }
    let dir = std::env::temp_dir().join(format!("cmesh-bench-consensus-{}", random_hex(8)?));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    // Ctrl-C or SIGTERM drops the bench, and with it the voters and the nats-servers.
    let result = tokio::select! {
        result = bench(&args, nats_url, &dir) => result,
        signal = interrupted() => Err(signal),
    };
    match &result {
        Ok(_) => {
            if let Err(e) = std::fs::remove_dir_all(&dir) {
                tracing::warn!(dir = %dir.display(), error = %e, "could not remove the bench's temp dir");
            }
        }
        Err(_) => eprintln!(
            "the voters' files and the nats-servers' logs are kept in {}",
            dir.display()
        ),
    }
    let report = result?;
    if args.json {
        println!("{report}");
    } else {
        print_readable(&report);
    }
    let failed = ["register_errors", "resolve_errors", "failover_unexpected_errors"]
        .iter()
        .map(|key| report[key].as_u64().unwrap_or(0))
        .sum::<u64>();
    if failed > 0 {
        eprintln!(
            "error: {failed} registry calls failed (first register error: {}; first resolve error: {}; \
             first unexpected failover error: {})",
            report["first_register_error"], report["first_resolve_error"], report["first_failover_error"]
        );
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// The closed loop of every run here: `concurrency` loops over `duration` after
/// [`WARMUP`], each call bounded by [`CALL_TIMEOUT`].
async fn closed_loop<F, Fut>(concurrency: usize, duration: Duration, watched: &[u32], call: F) -> anyhow::Result<Run>
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), String>> + Send + 'static,
{
    let plan = Plan {
        concurrency,
        warmup: WARMUP,
        duration,
    };
    load::closed_loop(plan, watched, move |i, n| {
        let call = call(i, n);
        async move {
            match tokio::time::timeout(CALL_TIMEOUT, call).await {
                Ok(outcome) => outcome,
                Err(_) => Err(format!("no answer within {CALL_TIMEOUT:?}")),
            }
        }
    })
    .await
}

/// A run's latency percentile in milliseconds, rounded to 0.01.
fn ms(run: &Run, p: f64) -> f64 {
    round(f64::from(run.percentile(p)) / 1000.0, 2)
}

fn register(name: String) -> Command {
    Command::Register {
        name,
        target: TARGET.to_string(),
    }
}

/// Registers names `n<n>.mcom` through voter `loop % voters`; the numbers of the names
/// that were registered go to `registered`.
async fn names_run(
    nodes: Arc<Vec<ConsensusNode>>,
    caller: Address,
    registered: Arc<Mutex<Vec<u64>>>,
    concurrency: usize,
    duration: Duration,
) -> anyhow::Result<Run> {
    closed_loop(concurrency, duration, &[], move |i, n| {
        let node = nodes[i % nodes.len()].clone();
        let registered = registered.clone();
        async move {
            match node.propose(register(format!("n{n}.mcom")), caller).await {
                Ok(Applied::Done(_)) => {
                    registered.lock().unwrap_or_else(PoisonError::into_inner).push(n);
                    Ok(())
                }
                Ok(other) => Err(format!("a register was not done: {other:?}")),
                Err(error) => Err(error.to_string()),
            }
        }
    })
    .await
}

/// Linearizable reads of the `registered` names through voter `loop % voters`; a name
/// that is not found is an error (the read missed an acknowledged write).
async fn resolves_run(
    nodes: Arc<Vec<ConsensusNode>>,
    registered: Arc<Vec<u64>>,
    concurrency: usize,
    duration: Duration,
) -> anyhow::Result<Run> {
    if registered.is_empty() {
        bail!("no name was registered, so there is nothing to resolve");
    }
    closed_loop(concurrency, duration, &[], move |i, n| {
        let node = nodes[i % nodes.len()].clone();
        let name = format!("n{}.mcom", registered[(n % registered.len() as u64) as usize]);
        async move {
            let found = node
                .read(Consistency::Linearizable, |registry| {
                    registry
                        .resolve(&name)
                        .map(|record| record.target == TARGET)
                        .map_err(|e| e.message)
                })
                .await;
            match found {
                Ok((Ok(true), _)) => Ok(()),
                Ok((Ok(false), _)) => Err(format!("{name} resolved to another target")),
                Ok((Err(error), info)) => Err(format!("{name} was not found ({error}; {info:?})")),
                Err(error) => Err(error.to_string()),
            }
        }
    })
    .await
}

/// `kv.create` of unique keys on the bucket, loop `i` through server `i % 3`.
async fn jetstream_run(
    stores: Arc<Vec<async_nats::jetstream::kv::Store>>,
    servers: &[u32],
    concurrency: usize,
    duration: Duration,
) -> anyhow::Result<Run> {
    let value = Bytes::from_static(TARGET.as_bytes());
    closed_loop(concurrency, duration, servers, move |i, n| {
        let store = stores[i % stores.len()].clone();
        let value = value.clone();
        async move {
            store
                .create(format!("n{n}"), value)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        }
    })
    .await
}

/// Errors a proposal may meet while there is no leader.
fn expected_in_failover(error: &ConsensusError) -> bool {
    matches!(
        error,
        ConsensusError::NoLeader { .. } | ConsensusError::FateUnknown { .. } | ConsensusError::Unavailable(_)
    )
}

/// What the failover runs found.
#[derive(Debug, Default)]
struct Failover {
    /// From each kill to the first registration committed through a survivor.
    failover_ms: Vec<f64>,
    /// From the failover to the killed voter started again and caught up.
    rejoin_ms: Vec<f64>,
    /// Start attempts each restart took (the old node's file is released late).
    start_attempts: Vec<u32>,
    expected_errors: u64,
    first_expected: Option<String>,
    unexpected_errors: u64,
    first_unexpected: Option<String>,
}

#[derive(Default)]
struct ProbeErrors {
    expected: AtomicU64,
    first_expected: Mutex<Option<String>>,
    unexpected: AtomicU64,
    first_unexpected: Mutex<Option<String>>,
}

impl ProbeErrors {
    fn expected(&self, error: String) {
        self.expected.fetch_add(1, Ordering::Relaxed);
        self.first_expected
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_or_insert(error);
    }

    fn unexpected(&self, error: String) {
        self.unexpected.fetch_add(1, Ordering::Relaxed);
        self.first_unexpected
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_or_insert(error);
    }
}

/// Keeps registering names through `node` until one commits; when.
async fn probe(
    node: ConsensusNode,
    caller: Address,
    kill: u32,
    counter: Arc<AtomicU64>,
    errors: Arc<ProbeErrors>,
) -> Instant {
    loop {
        let n = counter.fetch_add(1, Ordering::Relaxed);
        let name = format!("f{kill}-{n}.mcom");
        match tokio::time::timeout(CALL_TIMEOUT, node.propose(register(name), caller)).await {
            Ok(Ok(Applied::Done(_))) => return Instant::now(),
            Ok(Ok(other)) => errors.unexpected(format!("a register was not done: {other:?}")),
            Ok(Err(error)) if expected_in_failover(&error) => errors.expected(error.to_string()),
            Ok(Err(error)) => errors.unexpected(error.to_string()),
            Err(_) => errors.unexpected(format!("no answer within {CALL_TIMEOUT:?}")),
        }
        // Errors that come back at once must not spin.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn failovers(voters: &mut Voters, kills: u32, caller: Address) -> anyhow::Result<Failover> {
    let mut found = Failover::default();
    let errors = Arc::new(ProbeErrors::default());
    let counter = Arc::new(AtomicU64::new(0));
    for kill in 0..kills {
        let leader = voters.leader(LEADER_LIMIT).await?;
        let survivors = voters.others(leader);
        let killed_at = Instant::now();
        voters.kill(leader).await;
        let mut probes = tokio::task::JoinSet::new();
        for node in survivors {
            probes.spawn(probe(node, caller, kill, counter.clone(), errors.clone()));
        }
        let first = tokio::time::timeout(FAILOVER_LIMIT, probes.join_next()).await;
        probes.abort_all();
        while probes.join_next().await.is_some() {}
        let committed_at = match first {
            Ok(Some(Ok(at))) => at,
            Ok(Some(Err(error))) => bail!("a failover probe failed: {error}"),
            Ok(None) => bail!("no voter survived to probe"),
            Err(_) => bail!("no registration committed within {FAILOVER_LIMIT:?} of killing the leader"),
        };
        found
            .failover_ms
            .push(committed_at.duration_since(killed_at).as_secs_f64() * 1000.0);
        let rejoin_from = Instant::now();
        found.start_attempts.push(voters.restart(leader, FAILOVER_LIMIT).await?);
        voters.caught_up(leader, FAILOVER_LIMIT).await?;
        found.rejoin_ms.push(rejoin_from.elapsed().as_secs_f64() * 1000.0);
        tracing::info!(
            kill,
            failover_ms = found.failover_ms.last(),
            rejoin_ms = found.rejoin_ms.last(),
            "leader killed and back"
        );
    }
    found.expected_errors = errors.expected.load(Ordering::Relaxed);
    found.unexpected_errors = errors.unexpected.load(Ordering::Relaxed);
    found.first_expected = errors
        .first_expected
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    found.first_unexpected = errors
        .first_unexpected
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    Ok(found)
}

fn cores(cpu_s: Option<f64>, seconds: f64) -> Option<f64> {
    cpu_s.filter(|_| seconds > 0.0).map(|s| round(s / seconds, 2))
}

async fn bench(args: &ConsensusArgs, nats_url: &str, dir: &std::path::Path) -> anyhow::Result<Value> {
    // Other work on the machine skews every figure: say how busy it was.
    let load_avg_1m = load_average();
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let concurrency = args.concurrency as usize;
    let duration = Duration::from_secs_f64(args.duration);
    let caller = SigningKey::generate()?.address();

    let mut voters = Voters::start(nats_url, dir, args.voters as usize).await?;
    voters.leader(LEADER_LIMIT).await?;
    let nodes = Arc::new(voters.running());

    // 1. Names.
    let registered = Arc::new(Mutex::new(Vec::new()));
    let names = names_run(nodes.clone(), caller, registered.clone(), concurrency, duration).await?;
    tracing::info!(names_per_s = names.rps(), errors = names.errors, "names");

    // 2. The baseline, right after, then its servers go.
    let js = {
        let mut cluster = NatsCluster::start(dir, &format!("cmesh-bench-{}", random_hex(4)?)).await?;
        let stores = Arc::new(cluster.buckets().await?);
        jetstream_run(stores, &cluster.pids(), concurrency, duration).await?
    };
    tracing::info!(creates_per_s = js.rps(), errors = js.errors, "JetStream");

    // 3. Resolves of the names registered in 1.
    let registered = Arc::new(std::mem::take(
        &mut *registered.lock().unwrap_or_else(PoisonError::into_inner),
    ));
    let resolves = resolves_run(nodes.clone(), registered.clone(), concurrency, duration).await?;
    tracing::info!(resolves_per_s = resolves.rps(), errors = resolves.errors, "resolves");

    // 4. Failover. The load's clones of the nodes must be gone, or a killed node's file
    // stays open.
    drop(nodes);
    let failover = failovers(&mut voters, args.kills, caller).await?;
    voters.shutdown().await;

    let names_per_s = names.rps();
    let js_per_s = js.rps();
    let ratio = (js_per_s > 0.0).then(|| round(names_per_s / js_per_s, 3));
    let mut failover_sorted = failover.failover_ms.clone();
    failover_sorted.sort_by(f64::total_cmp);
    let failover_p50 = (!failover_sorted.is_empty()).then(|| round(percentile(&failover_sorted, 50.0), 0));
    let failover_max = failover_sorted.last().map(|ms| round(*ms, 0));
    let whole = |values: &[f64]| values.iter().map(|v| number(round(*v, 0))).collect::<Vec<_>>();
    let voter_count = voters.len();
    // The names/s goal is for 3 voters: with another number it is not judged.
    let mut names_goal = goal(Some(round(names_per_s, 0)), GOAL_NAMES_PER_S, true);
    if voter_count != GOAL_VOTERS {
        names_goal["met"] = Value::Null;
        names_goal["note"] = json!(format!("the goal is for {GOAL_VOTERS} voters"));
    }
    let goals = json!({
        "ratio": goal(ratio, GOAL_RATIO, true),
        "names_per_s": names_goal,
        "failover_max_ms": goal(failover_max, GOAL_FAILOVER_MAX_MS, false),
    });
    Ok(json!({
        "bench": "consensus",
        "voters": voter_count,
        "concurrency": concurrency,
        "duration_s": args.duration,
        "warmup_s": WARMUP.as_secs_f64(),
        "names_per_s": number(round(names_per_s, 0)),
        "names": names.latencies_us.len(),
        "register_errors": names.errors,
        "first_register_error": names.first_error,
        "p50_ms": ms(&names, 50.0),
        "p99_ms": ms(&names, 99.0),
        "names_bench_cpu_cores": cores(names.own_cpu_s, names.seconds),
        "resolves_per_s": number(round(resolves.rps(), 0)),
        "resolves": resolves.latencies_us.len(),
        "resolve_errors": resolves.errors,
        "first_resolve_error": resolves.first_error,
        "resolve_p50_ms": ms(&resolves, 50.0),
        "resolve_p99_ms": ms(&resolves, 99.0),
        "jetstream_creates_per_s": number(round(js_per_s, 0)),
        "jetstream_creates": js.latencies_us.len(),
        "jetstream_errors": js.errors,
        "first_jetstream_error": js.first_error,
        "jetstream_p50_ms": ms(&js, 50.0),
        "jetstream_p99_ms": ms(&js, 99.0),
        "jetstream_servers_cpu_cores": cores(js.watched_cpu_s, js.seconds),
        "jetstream_bench_cpu_cores": cores(js.own_cpu_s, js.seconds),
        "ratio": ratio,
        "kills": args.kills,
        "failover_p50_ms": failover_p50.map(number),
        "failover_max_ms": failover_max.map(number),
        "failover_ms": whole(&failover.failover_ms),
        "rejoin_ms": whole(&failover.rejoin_ms),
        "start_attempts": failover.start_attempts,
        "failover_expected_errors": failover.expected_errors,
        "failover_unexpected_errors": failover.unexpected_errors,
        "first_failover_error": failover.first_unexpected,
        "first_failover_expected_error": failover.first_expected,
        "goals": goals,
        "cpus": cpus,
        "load_avg_1m": load_avg_1m,
    }))
}

/// A goal as `{min|max, value, met}`; `met` is null without a value.
fn goal(value: Option<f64>, bound: f64, at_least: bool) -> Value {
    let met = value.map(|v| if at_least { v >= bound } else { v <= bound });
    let mut goal = json!({ "value": value.map(number), "met": met });
    goal[if at_least { "min" } else { "max" }] = number(bound);
    goal
}

/// A whole number as a JSON integer (`2552`, not `2552.0`), anything else as it is.
fn number(value: f64) -> Value {
    if value.fract() == 0.0 && value.abs() < 1e15 {
        json!(value as i64)
    } else {
        json!(value)
    }
}

fn verdict(goal: &Value) -> &'static str {
    match goal["met"].as_bool() {
        Some(true) => "met",
        Some(false) => "NOT met",
        None => "not measured",
    }
}

fn print_readable(r: &Value) {
    let goals = &r["goals"];
    println!(
        "names: {} registered/s through {} voters (goal ≥ {} with 3 voters: {}), p50 {} ms, p99 {} ms; \
         {} in {} s, {} errors; this process used {} cores",
        r["names_per_s"],
        r["voters"],
        GOAL_NAMES_PER_S,
        verdict(&goals["names_per_s"]),
        r["p50_ms"],
        r["p99_ms"],
        r["names"],
        r["duration_s"],
        r["register_errors"],
        r["names_bench_cpu_cores"]
    );
    println!(
        "baseline: JetStream KV ({} servers, {} replicas, history 1): {} creates/s, p50 {} ms, p99 {} ms; \
         {} in {} s, {} errors; the servers used {} cores, this process {}",
        jetstream::SERVERS,
        jetstream::SERVERS,
        r["jetstream_creates_per_s"],
        r["jetstream_p50_ms"],
        r["jetstream_p99_ms"],
        r["jetstream_creates"],
        r["duration_s"],
        r["jetstream_errors"],
        r["jetstream_servers_cpu_cores"],
        r["jetstream_bench_cpu_cores"]
    );
    println!(
        "ratio: names/s / JetStream creates/s = {} (goal ≥ {GOAL_RATIO}: {})",
        r["ratio"],
        verdict(&goals["ratio"])
    );
    println!(
        "resolves: {} linearizable reads/s, p50 {} ms, p99 {} ms; {} in {} s, {} errors",
        r["resolves_per_s"],
        r["resolve_p50_ms"],
        r["resolve_p99_ms"],
        r["resolves"],
        r["duration_s"],
        r["resolve_errors"]
    );
    println!(
        "failover over {} leader kills: p50 {} ms, max {} ms (goal max ≤ {GOAL_FAILOVER_MAX_MS} ms: {}); \
         each {}; rejoin (restart + catch-up) {} ms; {} expected errors meanwhile, {} unexpected",
        r["kills"],
        r["failover_p50_ms"],
        r["failover_max_ms"],
        verdict(&goals["failover_max_ms"]),
        r["failover_ms"],
        r["rejoin_ms"],
        r["failover_expected_errors"],
        r["failover_unexpected_errors"]
    );
    println!(
        "machine: {} cpus, load average (1 min) at start {}",
        r["cpus"], r["load_avg_1m"]
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_numbers_print_as_integers() {
        assert_eq!(number(2552.0).to_string(), "2552");
        assert_eq!(number(0.243).to_string(), "0.243");
    }

    #[test]
    fn goals_say_their_bound_and_whether_met() {
        assert_eq!(
            goal(Some(0.9), 0.8, true),
            json!({ "min": 0.8, "value": 0.9, "met": true })
        );
        assert_eq!(
            goal(Some(3_500.0), 3_000.0, false),
            json!({ "max": 3000, "value": 3500, "met": false })
        );
        assert_eq!(goal(None, 3_000.0, false)["met"], Value::Null);
        assert_eq!(verdict(&goal(None, 1.0, true)), "not measured");
    }

    #[test]
    fn durations_must_be_positive_seconds() {
        assert_eq!(positive_seconds("2.5"), Ok(2.5));
        assert!(positive_seconds("0").is_err());
        assert!(positive_seconds("NaN").is_err());
        assert!(positive_seconds("x").is_err());
    }

    #[test]
    fn only_leaderless_errors_are_expected_in_a_failover() {
        assert!(expected_in_failover(&ConsensusError::NoLeader {
            reason: String::new()
        }));
        assert!(expected_in_failover(&ConsensusError::FateUnknown {
            reason: String::new()
        }));
        assert!(!expected_in_failover(&ConsensusError::Internal(String::new())));
    }
}
