//! What `cmesh bench fqmn|tx` prints: the figures of the three runs, next to the goals.

use cmesh_common::Address;
use serde_json::{json, Value};

use crate::load::{Plan, Run, Workload, FQMN};
use crate::round;

/// Goal of `bench tx` on the reference machine (2 cores).
const GOAL_TX_PER_S: f64 = 5_000.0;
/// Goals of `bench fqmn`, printed with the figures.
const GOAL_RATIO: f64 = 0.6;
const GOAL_RATIO_CONCURRENCY: usize = 32;
const GOAL_IDLE_RSS_MB: f64 = 30.0;

#[derive(Debug)]
pub(crate) struct Report {
    pub(crate) workload: Workload,
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
    pub(crate) errors: u64,
    pub(crate) first_error: Option<String>,
    /// CPU µs per request: the node's, and this process's (load loops; plus the echo
    /// responder in the raw runs, mean of both).
    node_cpu_us_per_req: Option<f64>,
    node_cpu_cores: Option<f64>,
    bench_cpu_us_per_req: Option<f64>,
    raw_bench_cpu_us_per_req: Option<f64>,
    cpus: usize,
    pub(crate) load_avg_1m: Option<f64>,
}

fn mean(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    Some((a? + b?) / 2.0)
}

fn mb(kib: u64) -> f64 {
    round(kib as f64 / 1024.0, 1)
}

impl Report {
    pub(crate) fn new(
        plan: &Plan,
        node: Address,
        idle: u64,
        loaded: Option<u64>,
        before: &Run,
        cmesh: &Run,
        after: &Run,
    ) -> Self {
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
            node_cpu_us_per_req: cmesh.per_request_us(cmesh.watched_cpu_s),
            node_cpu_cores: cmesh.watched_cpu_s.map(|s| s / cmesh.seconds),
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

    pub(crate) fn print(&self, as_json: bool) {
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
    fn megabytes_of_kib() {
        assert_eq!(mb(30 * 1024), 30.0);
        assert_eq!(mb(1536), 1.5);
    }
}
