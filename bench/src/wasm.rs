//! `cmesh bench wasm`: what one trivial view call costs inside the node — instantiate the
//! cached greeter module, decode the args, read one key, encode the result — next to the
//! same function written in native Rust, both in this process and in the same run.
//! The storage behind both is the same in-memory map, so the difference is the WASM
//! runtime's own cost (instantiation, metering, host calls, the SDK's JSON).

use std::collections::BTreeMap;
use std::hint::black_box;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{anyhow, Context};
use clap::Args;
use cmesh_common::hash::keccak256;
use cmesh_runtime::{Call, MapState, Runtime, RuntimeConfig, StateReader, StorageError};
use serde_json::json;

/// The module measured: the greeter example app.
const GREETER_WASM: &[u8] = cmesh_testkit::apps::GREETER;
/// The greeter stores counts under tag `g` and the name padded with zeros.
const COUNT_TAG: u8 = b'g';
const NAME: &str = "Dexter";
const GOAL_US_PER_CALL: f64 = 20.0;

/// `cmesh bench wasm` flags.
#[derive(Debug, Args)]
pub struct WasmArgs {
    /// Calls measured (after the warm-up)
    #[arg(long, default_value_t = 20_000, value_parser = clap::value_parser!(u64).range(100..=10_000_000))]
    pub calls: u64,
    /// Calls made first, not counted
    #[arg(long, default_value_t = 1_000)]
    pub warmup: u64,
    /// Print exactly one JSON object on stdout instead of readable lines
    #[arg(long)]
    pub json: bool,
}

fn count_key(name: &str) -> anyhow::Result<[u8; 32]> {
    let bytes = name.as_bytes();
    if bytes.len() > 31 || bytes.contains(&0) {
        return Err(anyhow!("name must be at most 31 bytes without NUL"));
    }
    let mut key = [0u8; 32];
    key[0] = COUNT_TAG;
    key[1..=bytes.len()].copy_from_slice(bytes);
    Ok(key)
}

/// `greetings(name)` in native Rust: the same decoding, read and encoding as the app.
fn native_greetings(input: &[u8], state: &MapState) -> anyhow::Result<Vec<u8>> {
    let (name,): (String,) = serde_json::from_slice(input)?;
    let count: u64 = match state.get(&count_key(&name)?)? {
        Some(bytes) => serde_json::from_slice(&bytes)?,
        None => 0,
    };
    Ok(serde_json::to_vec(&count)?)
}

struct Timings {
    per_call_us: Vec<f64>,
}

impl Timings {
    fn mean(&self) -> f64 {
        self.per_call_us.iter().sum::<f64>() / self.per_call_us.len().max(1) as f64
    }

    fn percentile(&mut self, p: f64) -> f64 {
        self.per_call_us.sort_by(f64::total_cmp);
        crate::percentile(&self.per_call_us, p)
    }
}

fn time_calls(warmup: u64, calls: u64, mut call: impl FnMut() -> anyhow::Result<Vec<u8>>) -> anyhow::Result<Timings> {
    for _ in 0..warmup {
        black_box(call()?);
    }
    let mut per_call_us = Vec::with_capacity(calls as usize);
    for _ in 0..calls {
        let start = Instant::now();
        black_box(call()?);
        per_call_us.push(start.elapsed().as_secs_f64() * 1e6);
    }
    Ok(Timings { per_call_us })
}

pub fn run(args: WasmArgs) -> anyhow::Result<ExitCode> {
    let runtime = Runtime::new(RuntimeConfig::default()).map_err(|e| anyhow!("WASM runtime: {e}"))?;
    let app = keccak256(GREETER_WASM);
    let compile_start = Instant::now();
    runtime
        .prepare(&app, GREETER_WASM)
        .map_err(|e| anyhow!("the greeter module: {e}"))?;
    let compile_ms = compile_start.elapsed().as_secs_f64() * 1e3;

    let mut map = BTreeMap::new();
    map.insert(count_key(NAME)?, b"42".to_vec());
    let state = MapState(map);
    let input = serde_json::to_vec(&json!([NAME]))?;
    let load = || Err(StorageError("the module is cached; nothing to load".into()));
    let mut gas_used = 0;
    let mut wasm_call = || {
        let call = Call {
            method: "greetings",
            input: &input,
            caller: [1; 20],
            context: [2; 32],
            tx_id: None,
            time_ms: 0,
            gas_limit: None,
        };
        let outcome = runtime
            .call(&app, &load, call, &state)
            .map_err(|e| anyhow!("greetings: {e}"))?;
        gas_used = outcome.gas_used;
        Ok(outcome.output)
    };
    let expected = native_greetings(&input, &state)?;
    let got = wasm_call()?;
    if got != expected {
        return Err(anyhow!(
            "the app and the native function disagree: {} vs {}",
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(&expected)
        ));
    }
    let mut wasm = time_calls(args.warmup, args.calls, &mut wasm_call).context("WASM calls")?;
    let mut native =
        time_calls(args.warmup, args.calls, || native_greetings(&input, &state)).context("native calls")?;

    let (wasm_mean, native_mean) = (wasm.mean(), native.mean());
    let report = json!({
        "bench": "wasm",
        "method": "greeter.greetings",
        "calls": args.calls,
        "wasm_us_per_call": round(wasm_mean),
        "wasm_p50_us": round(wasm.percentile(50.0)),
        "wasm_p99_us": round(wasm.percentile(99.0)),
        "native_us_per_call": round(native_mean),
        "native_p50_us": round(native.percentile(50.0)),
        "overhead_us_per_call": round(wasm_mean - native_mean),
        "ratio": round(wasm_mean / native_mean.max(f64::MIN_POSITIVE)),
        "gas_per_call": gas_used,
        "compile_ms": round(compile_ms),
        "module_bytes": GREETER_WASM.len(),
        "goal_us_per_call": GOAL_US_PER_CALL,
        "goal_met": wasm_mean <= GOAL_US_PER_CALL,
    });
    if args.json {
        println!("{report}");
    } else {
        println!("cmesh bench wasm: greeter `greetings([\"{NAME}\"])` as a view with a cached module, in process");
        println!(
            "wasm:    {wasm_mean:.2} µs per call (p50 {:.2}, p99 {:.2}); goal ≤ {GOAL_US_PER_CALL} µs: {}",
            report["wasm_p50_us"],
            report["wasm_p99_us"],
            if wasm_mean <= GOAL_US_PER_CALL { "met" } else { "MISSED" }
        );
        println!("native:  {native_mean:.3} µs per call (the same function in Rust)");
        println!("gas:     {gas_used} per call");
        println!(
            "compile: {compile_ms:.0} ms for {} bytes (once, at deploy)",
            GREETER_WASM.len()
        );
        println!("calls:   {} after {} warm-up calls each", args.calls, args.warmup);
    }
    Ok(ExitCode::SUCCESS)
}

/// Every figure of this bench has three decimals.
fn round(value: f64) -> f64 {
    crate::round(value, 3)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_native_function_reads_the_same_key_as_the_app() {
        let mut map = BTreeMap::new();
        map.insert(count_key("Dexter").expect("key"), b"7".to_vec());
        let state = MapState(map);
        assert_eq!(native_greetings(br#"["Dexter"]"#, &state).expect("call"), b"7");
        assert_eq!(native_greetings(br#"["Bob"]"#, &state).expect("call"), b"0");
        assert!(count_key(&"x".repeat(32)).is_err());
    }
}
