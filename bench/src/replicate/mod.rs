//! `cmesh bench replicate`: replication between real member nodes on one NATS.
//!
//! 0. **Baseline**: the same closed-loop writes through member 0 to a context only it
//!    holds, for as long: this machine's speed varies from day to day, the ratio less.
//! 1. **Throughput**: closed-loop `kv.set` writes through every member at once; the rate
//!    is transactions applied on *all* members per second, from the first write to the
//!    moment the last one is applied everywhere.
//! 2. **Convergence latency** at half that rate (open loop, spread over the members):
//!    from sending a write to the moment every member has applied it.
//! 3. **Catch-up**: the context is filled up to `--catch-up` transactions, then a new
//!    node joins it; the rate is transactions fetched, checked and applied per second.
//!
//! "Applied at a member" is observed through the `state.received` events each member
//! publishes (they name the transactions they added); the author applied its own when it
//! answered the write.

use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use clap::Args;
use cmesh_common::{Address, SigningKey};
use serde_json::{json, Value};

use cmesh_testkit::{apps, Client, Node, NodeOptions, To};

mod ledger;

use ledger::{acknowledged, follow_events, settle, settling_of, Ledger, SETTLE_LIMIT};

use crate::machine::{cpu_seconds, load_average};
use crate::{connect, interrupted, percentile, random_hex, round};

const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a join may take.
const JOIN_LIMIT: Duration = Duration::from_secs(600);
const GOAL_TX_PER_S: f64 = 3_000.0;
const GOAL_P99_MS: f64 = 50.0;
const GOAL_CATCH_UP_PER_S: f64 = 20_000.0;

/// `cmesh bench replicate` flags; the NATS server is `cmesh --nats` (the bench starts its
/// own nodes on it).
#[derive(Debug, Args)]
pub struct ReplicateArgs {
    /// Members of the context
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(2..=16))]
    pub members: u32,
    /// Writes in flight at once in the throughput run, spread over the members
    #[arg(long, default_value_t = 48, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub concurrency: u32,
    /// Seconds of load in the throughput run and in the latency run
    #[arg(long, default_value_t = 5.0)]
    pub duration: f64,
    /// Transactions the context holds when a new node joins it (0: no catch-up run)
    #[arg(long, default_value_t = 100_000)]
    pub catch_up: u64,
    /// Print exactly one JSON object on stdout instead of readable lines
    #[arg(long)]
    pub json: bool,
}

pub async fn run(args: ReplicateArgs, nats_url: &str) -> anyhow::Result<ExitCode> {
    if !(args.duration.is_finite() && args.duration > 0.0 && args.duration <= 3_600.0) {
        bail!("--duration must be a number of seconds above 0 (at most 3600)");
    }
    let dir = std::env::temp_dir().join(format!("cmesh-bench-replicate-{}", random_hex(8)?));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut nodes = Vec::new();
    let result = tokio::select! {
        result = bench(&args, nats_url, &dir, &mut nodes) => result,
        signal = interrupted() => Err(signal),
    };
    drop(nodes);
    match &result {
        Ok(_) => {
            if let Err(e) = std::fs::remove_dir_all(&dir) {
                tracing::warn!(dir = %dir.display(), error = %e, "could not remove the bench's temp dir");
            }
        }
        Err(_) => eprintln!("the nodes' data and logs are kept in {}", dir.display()),
    }
    let report = result?;
    if args.json {
        println!("{report}");
    } else {
        print_readable(&report);
    }
    Ok(ExitCode::SUCCESS)
}

/// One member as the bench drives it.
struct Member {
    address: Address,
    fqmn: async_nats::Subject,
    headers: async_nats::HeaderMap,
    client: Client,
    token: String,
    pid: u32,
}

fn node_dir(dir: &std::path::Path, n: usize) -> std::path::PathBuf {
    dir.join(format!("node{n}"))
}

/// Member `n` of the bench's mesh, with the bench's key as its node admin.
async fn start_node(dir: &std::path::Path, url: &str, n: usize, admin: Address) -> anyhow::Result<Node> {
    let options = NodeOptions {
        genesis: Some(dir.join("genesis.json")),
        admins: vec![admin],
        ..NodeOptions::default()
    };
    let log = dir.join(format!("node{n}.log"));
    crate::start_node(url, n, options, node_dir(dir, n), log).await
}

async fn member(url: &str, node: &Node, key: &SigningKey) -> anyhow::Result<Member> {
    let address = node.address();
    let client = Client::try_connect(url, "cmesh-bench")
        .await?
        .with_timeout(REQUEST_TIMEOUT);
    let token = client.try_login(key, address).await?.token;
    let headers = cmesh_testkit::bearer(&token);
    Ok(Member {
        address,
        fqmn: To::Node(address).fqmn_subject().into(),
        headers,
        client,
        token,
        pid: node.pid().context("the node is not running")?,
    })
}

impl Member {
    /// A JSON-RPC call through this member, as the bench's key.
    async fn rpc(&self, method: &str, params: Value) -> anyhow::Result<Value> {
        Ok(self
            .client
            .try_call(self.address, method, params, Some(&self.token))
            .await?)
    }
}

/// Joins `member` to `context` and waits until it is in sync; the last status.
async fn join(member: &Member, context: &str) -> anyhow::Result<Value> {
    let params = json!({ "context": context });
    member.rpc("ctx.join", params.clone()).await?;
    let deadline = Instant::now() + JOIN_LIMIT;
    loop {
        let status = member.rpc("ctx.status", params.clone()).await?;
        match status["phase"].as_str() {
            Some("in-sync") => return Ok(status),
            Some("failed") => bail!("joining failed: {status}"),
            _ if Instant::now() > deadline => bail!("not in sync after {JOIN_LIMIT:?}: {status}"),
            _ => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

/// Sends one write; answers its transaction id.
async fn write(client: &async_nats::Client, member: &Member, context: &str, n: u64) -> anyhow::Result<String> {
    let payload = Bytes::from(format!(r#"SW:{context}:set:["k{n}",{n}]"#));
    let request = client.request_with_headers(member.fqmn.clone(), member.headers.clone(), payload);
    let reply = tokio::time::timeout(REQUEST_TIMEOUT, request)
        .await
        .context("a write timed out")??;
    let status = reply.headers.as_ref().and_then(|h| h.get("Cmtp-Status"));
    if status.map(|s| s.as_str()) != Some("200") {
        bail!(
            "a write answered {status:?}: {}",
            String::from_utf8_lossy(&reply.payload)
        );
    }
    let body: Value = serde_json::from_slice(&reply.payload)?;
    body["tx"]
        .as_str()
        .map(str::to_string)
        .with_context(|| format!("a write answered without tx: {body}"))
}

/// A new kv context made through `member`; its id.
async fn create_kv_context(member: &Member) -> anyhow::Result<String> {
    let created = member.rpc("ctx.create", json!({ "app": "kv" })).await?;
    Ok(created["context"]
        .as_str()
        .context("ctx.create answered without a context")?
        .to_string())
}

/// Closed-loop writes to `context` for `duration`, `concurrency` at once: loop `i` writes
/// through member `through(i)` on client `i` (modulo their number), each write noted in
/// `ledger` if there is one. Answers the transactions made.
#[allow(clippy::too_many_arguments)]
async fn closed_loop(
    clients: &[async_nats::Client],
    members: &Arc<Vec<Member>>,
    ledger: Option<&Arc<Mutex<Ledger>>>,
    counter: &Arc<AtomicU64>,
    context: &str,
    concurrency: u32,
    duration: Duration,
    through: impl Fn(usize) -> usize,
) -> anyhow::Result<Vec<String>> {
    let until = Instant::now() + duration;
    let mut loops = Vec::new();
    for i in 0..concurrency as usize {
        let (members, ledger, counter) = (members.clone(), ledger.cloned(), counter.clone());
        let (client, member, context) = (clients[i % clients.len()].clone(), through(i), context.to_string());
        loops.push(tokio::spawn(async move {
            let member = &members[member];
            let mut txs = Vec::new();
            while Instant::now() < until {
                let n = counter.fetch_add(1, Ordering::Relaxed);
                let sent = Instant::now();
                let tx = write(&client, member, &context, n).await?;
                if let Some(ledger) = &ledger {
                    acknowledged(ledger, tx.clone(), member.address, sent, Instant::now());
                }
                txs.push(tx);
            }
            anyhow::Ok(txs)
        }));
    }
    let mut written = Vec::new();
    for handle in loops {
        written.extend(handle.await??);
    }
    Ok(written)
}

/// Over every member: broadcast transactions that came before their parents, and the
/// catch-ups run (`ctx.status`).
async fn repairs(members: &[Member], context: &str) -> anyhow::Result<(u64, u64)> {
    let (mut parked, mut catch_ups) = (0, 0);
    for member in members {
        let status = member.rpc("ctx.status", json!({ "context": context })).await?;
        parked += status["parked"].as_u64().unwrap_or(0);
        catch_ups += status["catch_ups"].as_u64().unwrap_or(0);
    }
    Ok((parked, catch_ups))
}

fn cpu_of(members: &[Member]) -> Vec<Option<f64>> {
    members.iter().map(|m| cpu_seconds(&m.pid.to_string())).collect()
}

fn cpu_used(from: &[Option<f64>], to: &[Option<f64>]) -> Value {
    json!(from
        .iter()
        .zip(to)
        .map(|(a, b)| match (a, b) {
            (Some(a), Some(b)) => Some(round(b - a, 2)),
            _ => None,
        })
        .collect::<Vec<_>>())
}

async fn bench(args: &ReplicateArgs, url: &str, dir: &std::path::Path, nodes: &mut Vec<Node>) -> anyhow::Result<Value> {
    let load_avg_1m = load_average();
    let key = SigningKey::generate()?;
    let size = args.members as usize;
    // The first members are the mesh's voters; the joiner comes later.
    let voters: Vec<std::path::PathBuf> = (0..size).map(|n| node_dir(dir, n)).collect();
    let voters: Vec<&std::path::Path> = voters.iter().map(|p| p.as_path()).collect();
    cmesh_testkit::write_genesis(&dir.join("genesis.json"), "bench", vec![key.address()], &voters)?;
    for n in 0..size {
        nodes.push(start_node(dir, url, n, key.address()).await?);
    }
    let mut members = Vec::new();
    for node in nodes.iter() {
        members.push(member(url, node, &key).await?);
    }
    let events_client = connect(url, "cmesh-bench-events").await?;
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let events = events_client
        .subscribe("cmesh.events.state.received")
        .await
        .context("subscribing to state.received events")?;
    events_client.flush().await?;
    let follower = tokio::spawn(follow_events(events, ledger.clone()));

    let first = &members[0];
    first
        .rpc("app.deploy", apps::deploy_params("kv", "1.0.0", apps::KV))
        .await
        .context("deploying kv")?;
    let context = create_kv_context(first).await?;
    for other in &members[1..] {
        first
            .rpc("ctx.invite", json!({ "context": context, "member": other.address }))
            .await?;
        join(other, &context).await?;
    }
    tracing::info!(%context, members = size, "members in sync");

    let clients: Vec<async_nats::Client> = {
        let mut clients = Vec::new();
        for i in 0..size {
            clients.push(connect(url, &format!("cmesh-bench-writer-{i}")).await?);
        }
        clients
    };
    let members = Arc::new(members);
    let counter = Arc::new(AtomicU64::new(0));
    let duration = Duration::from_secs_f64(args.duration);

    // 0. The baseline of this run (the machine's speed varies from day to day): the same
    // writes through member 0 to a context that only it holds.
    let solo = create_kv_context(&members[0]).await?;
    let solo_started = Instant::now();
    let solo_written = closed_loop(
        &clients,
        &members,
        None,
        &counter,
        &solo,
        args.concurrency,
        duration,
        |_| 0,
    )
    .await?;
    let solo_rate = solo_written.len() as f64 / solo_started.elapsed().as_secs_f64();
    tracing::info!(tx_per_s = solo_rate, "one member alone");

    // 1. Throughput, closed loop through every member.
    let cpu_from = cpu_of(&members);
    let settling_from = settling_of(&ledger)?;
    let repairs_from = repairs(&members, &context).await?;
    let started = Instant::now();
    let written = closed_loop(
        &clients,
        &members,
        Some(&ledger),
        &counter,
        &context,
        args.concurrency,
        duration,
        |i| i % size,
    )
    .await?;
    let (last, missing) = settle(&ledger, &written, size).await;
    let cpu_to = cpu_of(&members);
    let mut settling = settling_of(&ledger)?.since(settling_from);
    let repairs_to = repairs(&members, &context).await?;
    settling["parked"] = json!(repairs_to.0 - repairs_from.0);
    settling["catch_ups"] = json!(repairs_to.1 - repairs_from.1);
    let Some(last) = last else {
        bail!("no write reached every member");
    };
    if missing > 0 {
        bail!(
            "{missing} of {} writes did not reach every member within {SETTLE_LIMIT:?}",
            written.len()
        );
    }
    let elapsed = last.duration_since(started).as_secs_f64();
    let throughput = written.len() as f64 / elapsed;
    tracing::info!(tx_per_s = throughput, txs = written.len(), "throughput");

    // 2. Latency at half that rate, open loop, round robin over the members.
    let rate = (throughput / 2.0).max(1.0);
    let interval = Duration::from_secs_f64(1.0 / rate);
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let started = Instant::now();
    let mut pending = Vec::new();
    let mut k = 0usize;
    while started.elapsed() < duration {
        ticker.tick().await;
        let (members, ledger, context) = (members.clone(), ledger.clone(), context.clone());
        let client = clients[k % size].clone();
        let n = counter.fetch_add(1, Ordering::Relaxed);
        let i = k % size;
        k += 1;
        pending.push(tokio::spawn(async move {
            let member = &members[i];
            let sent = Instant::now();
            let tx = write(&client, member, &context, n).await?;
            acknowledged(&ledger, tx.clone(), member.address, sent, Instant::now());
            anyhow::Ok(tx)
        }));
    }
    let mut probed = Vec::new();
    for handle in pending {
        probed.push(handle.await??);
    }
    let (_, missing) = settle(&ledger, &probed, size).await;
    // From sending to every member having applied it, and to the author's answer.
    let (mut latencies_us, mut acks_us): (Vec<u32>, Vec<u32>) = {
        let ledger = ledger.lock().map_err(|_| anyhow::anyhow!("ledger poisoned"))?;
        let micros =
            |from: Instant, to: Instant| u32::try_from(to.duration_since(from).as_micros()).unwrap_or(u32::MAX);
        probed
            .iter()
            .filter_map(|tx| {
                let seen = ledger.txs.get(tx)?;
                let sent = seen.sent?;
                let everywhere = ledger.everywhere(tx, size)?;
                Some((micros(sent, everywhere), micros(sent, seen.answered?)))
            })
            .unzip()
    };
    latencies_us.sort_unstable();
    acks_us.sort_unstable();
    let ms = |of: &[u32], p: f64| round(f64::from(percentile(of, p)) / 1000.0, 2);
    let (p50, p99) = (ms(&latencies_us, 50.0), ms(&latencies_us, 99.0));
    let (ack_p50, ack_p99) = (ms(&acks_us, 50.0), ms(&acks_us, 99.0));
    tracing::info!(rate, p50, p99, missing, "latency");

    // 3. Catch-up of a new node.
    let mut catch_up = Value::Null;
    if args.catch_up > 0 {
        let held = members[0].rpc("ctx.root", json!({ "context": context })).await?["applied"]
            .as_u64()
            .unwrap_or(0);
        let fill = args.catch_up.saturating_sub(held);
        let fill_started = Instant::now();
        let remaining = Arc::new(AtomicU64::new(fill));
        let mut loops = Vec::new();
        for i in 0..args.concurrency as usize {
            let (members, remaining, counter, context) =
                (members.clone(), remaining.clone(), counter.clone(), context.clone());
            let client = clients[i % size].clone();
            loops.push(tokio::spawn(async move {
                let member = &members[i % members.len()];
                while remaining
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |r| r.checked_sub(1))
                    .is_ok()
                {
                    let n = counter.fetch_add(1, Ordering::Relaxed);
                    write(&client, member, &context, n).await?;
                }
                anyhow::Ok(())
            }));
        }
        for handle in loops {
            handle.await??;
        }
        let fill_s = fill_started.elapsed().as_secs_f64();
        nodes.push(start_node(dir, url, size, key.address()).await?);
        let joiner = member(url, &nodes[size], &key).await?;
        members[0]
            .rpc("ctx.invite", json!({ "context": context, "member": joiner.address }))
            .await?;
        let cpu_join_from = cpu_seconds(&joiner.pid.to_string());
        let join_started = Instant::now();
        let status = join(&joiner, &context).await?;
        let join_s = join_started.elapsed().as_secs_f64();
        let cpu_join = cpu_seconds(&joiner.pid.to_string())
            .zip(cpu_join_from)
            .map(|(b, a)| round(b - a, 2));
        let fetched = status["fetched"].as_u64().unwrap_or(0);
        let root = members[0].rpc("ctx.root", json!({ "context": context })).await?;
        let same_root = root["root"] == status["root"];
        catch_up = json!({
            "transactions": status["applied"],
            "fetched": fetched,
            "seconds": round(join_s, 2),
            "tx_per_s": round(fetched as f64 / join_s, 0),
            "goal_tx_per_s": GOAL_CATCH_UP_PER_S,
            "joiner_cpu_s": cpu_join,
            "same_root": same_root,
            "fill_seconds": round(fill_s, 2),
        });
        if !same_root {
            bail!("the joiner's root differs from member 0's: {status} vs {root}");
        }
    }
    follower.abort();
    Ok(json!({
        "bench": "replicate",
        "members": size,
        "concurrency": args.concurrency,
        "duration_s": args.duration,
        "load_avg_1m": load_avg_1m,
        "throughput": {
            "transactions": written.len(),
            "tx_per_s": round(throughput, 0),
            "goal_tx_per_s": GOAL_TX_PER_S,
            "members_cpu_s": cpu_used(&cpu_from, &cpu_to),
            "seconds": round(elapsed, 2),
            "settling": settling,
            "one_member_tx_per_s": round(solo_rate, 0),
            "ratio_to_one_member": round(throughput / solo_rate.max(1.0), 3),
        },
        "latency": {
            "rate_per_s": round(rate, 0),
            "transactions": probed.len(),
            "not_everywhere": missing,
            "p50_ms": p50,
            "p99_ms": p99,
            "goal_p99_ms": GOAL_P99_MS,
            "author_answer_p50_ms": ack_p50,
            "author_answer_p99_ms": ack_p99,
        },
        "catch_up": catch_up,
    }))
}

fn print_readable(report: &Value) {
    let t = &report["throughput"];
    let l = &report["latency"];
    println!(
        "replicated: {} tx/s applied on all {} members (goal ≥ {}), {} transactions in {} s; members' CPU s {}",
        t["tx_per_s"], report["members"], t["goal_tx_per_s"], t["transactions"], t["seconds"], t["members_cpu_s"]
    );
    println!(
        "baseline: {} tx/s through one member alone, same run (replicated / alone = {})",
        t["one_member_tx_per_s"], t["ratio_to_one_member"]
    );
    let s = &t["settling"];
    println!(
        "settling: {} received in {} settles; per received transaction {} undone and {} applied; \
         {} came before their parents; {} catch-ups",
        s["received"], s["settles"], s["undone_per_received"], s["applied_per_received"], s["parked"], s["catch_ups"]
    );
    println!(
        "convergence at {} tx/s: p50 {} ms, p99 {} ms (goal p99 ≤ {} ms); {} of {} not everywhere; \
         the author answered at p50 {} ms, p99 {} ms",
        l["rate_per_s"],
        l["p50_ms"],
        l["p99_ms"],
        l["goal_p99_ms"],
        l["not_everywhere"],
        l["transactions"],
        l["author_answer_p50_ms"],
        l["author_answer_p99_ms"]
    );
    let c = &report["catch_up"];
    if !c.is_null() {
        println!(
            "catch-up: {} transactions fetched in {} s = {} tx/s (goal ≥ {}); joiner CPU {} s; same root: {}",
            c["fetched"], c["seconds"], c["tx_per_s"], c["goal_tx_per_s"], c["joiner_cpu_s"], c["same_root"]
        );
    }
    println!("load average (1 min) at start: {}", report["load_avg_1m"]);
}
