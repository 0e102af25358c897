//! The WASM runtime against real wasmer, with WAT fixtures from `tests/wat/`.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use cmesh_common::Status;
use cmesh_runtime::{
    AppEvent, Call, CallError, DeployError, Entry, MapState, Outcome, Runtime, RuntimeConfig, StateReader, StorageError,
};

const APP: [u8; 32] = [7; 32];
const CALLER: [u8; 20] = [0xca; 20];
const CONTEXT: [u8; 32] = [0xc0; 32];
const TX: [u8; 32] = [0x77; 32];

fn wasm(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/wat")
        .join(format!("{name}.wat"));
    wat::parse_file(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

struct FailingState;

impl StateReader for FailingState {
    fn get(&self, _: &[u8; 32]) -> Result<Option<Vec<u8>>, StorageError> {
        Err(StorageError("disk on fire".into()))
    }
    fn range(&self, _: &[u8; 32], _: Option<&[u8; 32]>, _: usize) -> Result<Vec<Entry>, StorageError> {
        Err(StorageError("disk on fire".into()))
    }
}

fn key(n: u8) -> [u8; 32] {
    let mut key = [0u8; 32];
    key[31] = n;
    key
}

fn runtime() -> Runtime {
    Runtime::new(RuntimeConfig::default()).expect("runtime")
}

/// A runtime with `module` prepared under [`APP`].
fn with(module: &str) -> Runtime {
    let rt = runtime();
    rt.prepare(&APP, &wasm(module)).expect("prepare");
    rt
}

fn no_wasm() -> Result<Vec<u8>, StorageError> {
    panic!("the module should be cached")
}

fn mutation<'a>(method: &'a str, input: &'a [u8]) -> Call<'a> {
    Call {
        method,
        input,
        caller: CALLER,
        context: CONTEXT,
        tx_id: Some(TX),
        time_ms: 1_700_000_000_123,
        gas_limit: None,
    }
}

fn view<'a>(method: &'a str, input: &'a [u8]) -> Call<'a> {
    Call {
        tx_id: None,
        ..mutation(method, input)
    }
}

fn run(rt: &Runtime, call: Call<'_>, state: &dyn StateReader) -> Result<Outcome, CallError> {
    rt.call(&APP, &no_wasm, call, state)
}

fn ok(rt: &Runtime, call: Call<'_>, state: &dyn StateReader) -> Outcome {
    run(rt, call, state).unwrap_or_else(|e| panic!("{}: {e}", call.method))
}

fn fail(rt: &Runtime, call: Call<'_>, state: &dyn StateReader) -> CallError {
    match run(rt, call, state) {
        Ok(outcome) => panic!("{} should fail, got {outcome:?}", call.method),
        Err(e) => e,
    }
}

/// Parses a `storage_range` register.
fn entries(register: &[u8]) -> Vec<Entry> {
    let count = u32::from_le_bytes(register[..4].try_into().unwrap()) as usize;
    let mut rest = &register[4..];
    let mut out = Vec::new();
    for _ in 0..count {
        let key: [u8; 32] = rest[..32].try_into().unwrap();
        let len = u32::from_le_bytes(rest[32..36].try_into().unwrap()) as usize;
        out.push((key, rest[36..36 + len].to_vec()));
        rest = &rest[36 + len..];
    }
    assert!(rest.is_empty(), "trailing bytes in the register");
    out
}

fn range_input(limit: i32, start: &[u8; 32], end: Option<&[u8; 32]>) -> Vec<u8> {
    let mut input = limit.to_le_bytes().to_vec();
    input.extend_from_slice(start);
    if let Some(end) = end {
        input.extend_from_slice(end);
    }
    input
}

// ---------------------------------------------------------------------------------------
// A well-behaved app

#[test]
fn prepare_lists_callable_methods_sorted() {
    let info = runtime().prepare(&APP, &wasm("good")).expect("prepare");
    let mut sorted = info.methods.clone();
    sorted.sort();
    assert_eq!(info.methods, sorted);
    assert!(info.methods.contains(&"echo".to_string()));
    assert!(info.methods.contains(&"noop".to_string()));
    assert!(!info.methods.iter().any(|m| m.starts_with('_')));
    // Exported globals/tables are not methods.
    assert!(!info.methods.iter().any(|m| m.contains("data_end")));
    assert!(!info.methods.iter().any(|m| m.contains("metering")));
}

/// A module cached under its app id (its keccak256) is reused by a later deploy of the
/// same bytes, in this runtime or another sharing the disk cache; under any other id the
/// bytes given are compiled and replace what was cached, so an id never runs other code.
#[test]
fn prepare_reuses_only_a_module_of_the_same_bytes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = || RuntimeConfig {
        cache_dir: Some(dir.path().to_path_buf()),
        ..RuntimeConfig::default()
    };
    let good = wasm("good");
    let app = cmesh_common::hash::keccak256(&good);
    let first = Runtime::new(config()).expect("runtime");
    let methods = first.prepare(&app, &good).expect("prepare").methods;
    let second = Runtime::new(config()).expect("runtime");
    assert_eq!(second.prepare(&app, &good).expect("from the cache").methods, methods);
    // Bad bytes are refused whatever is cached under their id.
    assert!(second.prepare(&app, b"not wasm").is_err());
    // Under an id that is no hash of them, other bytes replace the cached module.
    let tiny = wasm("tiny");
    let replaced = second.prepare(&app, &tiny).expect("prepare tiny").methods;
    assert_ne!(replaced, methods);
    let gone = methods
        .iter()
        .find(|m| !replaced.contains(m))
        .expect("good has a method tiny lacks");
    let state = MapState::default();
    let call = second.call(&app, &no_wasm, view(gone, b"{}"), &state);
    assert!(matches!(call, Err(CallError::MethodNotFound { .. })), "{call:?}");
}

#[test]
fn echo_returns_the_input_and_reports_gas() {
    let rt = with("good");
    let state = MapState::default();
    let input = br#"{"hello":"world"}"#;
    let outcome = ok(&rt, view("echo", input), &state);
    assert_eq!(outcome.output, input);
    assert!(outcome.writes.is_empty() && outcome.events.is_empty() && outcome.logs.is_empty());
    // Two host calls of at least the base price each, plus some operators.
    assert!(outcome.gas_used > 300, "gas {}", outcome.gas_used);
    // Deterministic.
    assert_eq!(ok(&rt, view("echo", input), &state).gas_used, outcome.gas_used);
    // No output: empty result.
    assert_eq!(ok(&rt, view("noop", b""), &state).output, b"");
}

#[test]
fn writes_reads_and_removes_go_through_the_write_set() {
    let rt = with("good");
    let mut state = MapState::default();

    let mut put = key(1).to_vec();
    put.extend_from_slice(b"value one");
    let outcome = ok(&rt, mutation("put", &put), &state);
    assert_eq!(outcome.writes, BTreeMap::from([(key(1), Some(b"value one".to_vec()))]));
    // Nothing is applied by the runtime itself.
    assert!(state.0.is_empty());
    state.apply(&outcome);

    let got = ok(&rt, view("get", &key(1)), &state);
    assert_eq!(got.output, b"\x01value one");
    assert_eq!(ok(&rt, view("get", &key(2)), &state).output, b"\x00");

    // A call reads its own writes.
    let outcome = ok(&rt, mutation("write_then_read", &key(2)), &state);
    assert_eq!(outcome.output, b"v1");

    let removed = ok(&rt, mutation("remove", &key(1)), &state);
    assert_eq!(removed.output, [1]);
    assert_eq!(removed.writes, BTreeMap::from([(key(1), None)]));
    assert_eq!(ok(&rt, mutation("remove", &key(9)), &state).output, [0]);
    state.apply(&removed);
    assert_eq!(ok(&rt, view("get", &key(1)), &state).output, b"\x00");
}

#[test]
fn storage_range_encodes_entries_with_bounds_and_limits() {
    let rt = with("good");
    let mut state = MapState::default();
    for n in [1u8, 2, 3, 5, 8] {
        state.0.insert(key(n), vec![n; n as usize]);
    }

    let all = ok(&rt, view("range", &range_input(100, &key(0), None)), &state);
    let expect: Vec<_> = state.0.iter().map(|(k, v)| (*k, v.clone())).collect();
    assert_eq!(entries(&all.output), expect);

    let bounded = ok(&rt, view("range", &range_input(100, &key(2), Some(&key(5)))), &state);
    assert_eq!(
        entries(&bounded.output),
        vec![(key(2), vec![2; 2]), (key(3), vec![3; 3])]
    );

    let limited = ok(&rt, view("range", &range_input(2, &key(0), None)), &state);
    assert_eq!(entries(&limited.output).len(), 2);
    let none = ok(&rt, view("range", &range_input(0, &key(0), None)), &state);
    assert_eq!(entries(&none.output), vec![]);
    let negative = ok(&rt, view("range", &range_input(-5, &key(0), None)), &state);
    assert_eq!(entries(&negative.output), vec![]);
}

#[test]
fn storage_range_caps_the_limit_at_1000() {
    let rt = with("good");
    let mut state = MapState::default();
    for n in 0..1005u32 {
        let mut k = [0u8; 32];
        k[28..].copy_from_slice(&n.to_be_bytes());
        state.0.insert(k, vec![1]);
    }
    let outcome = ok(&rt, view("range", &range_input(5000, &[0; 32], None)), &state);
    assert_eq!(entries(&outcome.output).len(), 1000);
}

#[test]
fn a_storage_range_over_8_mib_is_refused() {
    let rt = with("good");
    let mut state = MapState::default();
    for n in 0..9u8 {
        state.0.insert(key(n), vec![n; 1 << 20]);
    }
    let e = fail(&rt, view("range", &range_input(100, &key(0), None)), &state);
    assert!(matches!(e, CallError::RangeTooLarge { .. }), "{e}");
    assert_eq!(e.status(), Status::PAYLOAD_TOO_LARGE);
}

#[test]
fn storage_range_merges_the_calls_own_writes() {
    let rt = with("good");
    let mut state = MapState::default();
    for n in [1u8, 2, 3] {
        state.0.insert(key(n), vec![n]);
    }

    let mut input = key(2).to_vec();
    input.extend_from_slice(&10i32.to_le_bytes());
    input.extend_from_slice(&key(0));
    let removed = ok(&rt, mutation("remove_then_range", &input), &state);
    assert_eq!(entries(&removed.output), vec![(key(1), vec![1]), (key(3), vec![3])]);

    let mut input = key(2).to_vec();
    input.extend_from_slice(&10i32.to_le_bytes());
    input.extend_from_slice(&key(0));
    let put = ok(&rt, mutation("put_then_range", &input), &state);
    assert_eq!(
        entries(&put.output),
        vec![(key(1), vec![1]), (key(2), b"v1".to_vec()), (key(3), vec![3])]
    );

    let mut input = key(9).to_vec();
    input.extend_from_slice(&10i32.to_le_bytes());
    input.extend_from_slice(&key(2));
    let added = ok(&rt, mutation("put_then_range", &input), &state);
    assert_eq!(
        entries(&added.output),
        vec![(key(2), vec![2]), (key(3), vec![3]), (key(9), b"v1".to_vec())]
    );
}

#[test]
fn events_are_returned_in_order_with_json_data() {
    let rt = with("good");
    let state = MapState::default();
    let outcome = ok(&rt, mutation("emit", br#"{"n": 1, "s": "x"}"#), &state);
    assert_eq!(
        outcome.events,
        vec![AppEvent {
            name: "greeting".into(),
            data: serde_json::json!({"n": 1, "s": "x"}),
        }]
    );

    let e = fail(&rt, mutation("emit", b"{oops"), &state);
    assert!(matches!(e, CallError::BadEvent(_)), "{e}");
    let e = fail(&rt, mutation("emit_bad_name", b""), &state);
    assert!(matches!(e, CallError::BadEvent(_)), "{e}");
    let e = fail(&rt, mutation("emit_bad_json", b""), &state);
    assert!(matches!(e, CallError::BadEvent(_)), "{e}");
    assert_eq!(e.status(), Status::UNPROCESSABLE);
    let big = format!("\"{}\"", "x".repeat(64 << 10));
    let e = fail(&rt, mutation("emit", big.as_bytes()), &state);
    assert!(matches!(e, CallError::BadEvent(_)), "{e}");
}

#[test]
fn caller_context_tx_id_and_time_reach_the_guest() {
    let rt = with("good");
    let state = MapState::default();
    let out = ok(&rt, mutation("env", b""), &state).output;
    assert_eq!(&out[..20], &CALLER);
    assert_eq!(&out[20..52], &CONTEXT);
    assert_eq!(&out[52..84], &TX);
    assert_eq!(&out[84..92], &1_700_000_000_123u64.to_le_bytes());

    let out = ok(&rt, view("env", b""), &state).output;
    assert_eq!(&out[52..84], &[0u8; 32], "a view's tx_id is zero");
}

#[test]
fn logs_are_returned_cut_and_bounded() {
    let rt = with("good");
    let state = MapState::default();
    assert_eq!(ok(&rt, view("log", b""), &state).logs, vec!["hello, log"]);
    let many = ok(&rt, view("log_many", b""), &state).logs;
    assert_eq!(many.len(), 32);
    let long = ok(&rt, view("log_long", b""), &state).logs;
    assert_eq!(long, vec!["a".repeat(1024)]);
}

#[test]
fn a_panic_reaches_the_error_and_leaves_no_effects() {
    let rt = with("good");
    let state = MapState::default();
    let e = fail(&rt, mutation("panic", b""), &state);
    assert!(matches!(&e, CallError::Panic(m) if m == "boom: something broke"), "{e}");
    assert_eq!(e.to_string(), "app panicked: boom: something broke");
    assert_eq!(e.status(), Status::UNPROCESSABLE);

    // Writes and events before the panic are dropped with the error.
    let e = fail(&rt, mutation("set_then_panic", b""), &state);
    assert!(matches!(&e, CallError::Panic(m) if m == "boom"), "{e}");
}

#[test]
fn a_missing_method_lists_the_available_ones() {
    let rt = with("good");
    let e = fail(&rt, view("nope", b""), &MapState::default());
    let CallError::MethodNotFound { method, available } = &e else {
        panic!("{e}");
    };
    assert_eq!(method, "nope");
    assert!(available.contains(&"echo".to_string()));
    assert!(e.to_string().contains("echo"), "{e}");
    assert_eq!(e.status(), Status::NOT_FOUND);
    // Not callable from outside.
    let e = fail(&rt, view("_hidden", b""), &MapState::default());
    assert!(matches!(e, CallError::MethodNotFound { .. }), "{e}");
    // Nor are the runtime's own exports.
    let e = fail(&rt, view("wasmer_metering_remaining_points", b""), &MapState::default());
    assert!(matches!(e, CallError::MethodNotFound { .. }), "{e}");
}

#[test]
fn views_cannot_write_remove_or_emit() {
    let rt = with("good");
    let state = MapState::default();
    let mut put = key(1).to_vec();
    put.extend_from_slice(b"x");
    for (method, input) in [("put", &put[..]), ("view_remove", &b""[..]), ("emit", &b"{}"[..])] {
        let e = fail(&rt, view(method, input), &state);
        assert!(matches!(e, CallError::ViewCannotWrite), "{method}: {e}");
        assert_eq!(e.to_string(), "views cannot write");
    }
}

#[test]
fn guest_pointers_out_of_bounds_fail_cleanly() {
    let rt = with("good");
    for method in ["output_oob", "key_oob", "write_oob"] {
        let e = fail(&rt, mutation(method, b""), &MapState::default());
        assert!(matches!(e, CallError::OutOfBounds), "{method}: {e}");
        assert_eq!(e.to_string(), "guest pointer out of bounds");
    }
}

#[test]
fn results_and_values_over_1_mib_are_refused() {
    let rt = with("good");
    let state = MapState::default();
    let e = fail(&rt, view("big_result", b""), &state);
    assert!(
        matches!(
            e,
            CallError::ResultTooLarge {
                size: 1_048_577,
                limit: 1_048_576
            }
        ),
        "{e}"
    );
    assert_eq!(e.status(), Status::PAYLOAD_TOO_LARGE);
    assert_eq!(ok(&rt, view("max_result", b""), &state).output.len(), 1 << 20);
    let e = fail(&rt, mutation("big_value", b""), &state);
    assert!(matches!(e, CallError::ValueTooLarge { .. }), "{e}");
}

#[test]
fn storage_failures_are_node_errors() {
    let rt = with("good");
    let e = fail(&rt, view("get", &key(1)), &FailingState);
    assert!(matches!(e, CallError::Storage(_)), "{e}");
    assert_eq!(e.status(), Status::INTERNAL);
}

#[test]
fn nans_are_canonical() {
    let rt = with("good");
    let state = MapState::default();
    // A signalling NaN with a payload, and 1.0 (whose 0/0 gives the CPU's default NaN).
    let mut input = 0x7fa0_0001u32.to_le_bytes().to_vec();
    input.extend_from_slice(&1.0f32.to_bits().to_le_bytes());
    let out = ok(&rt, view("nan32", &input), &state).output;
    let a = u32::from_le_bytes(out[..4].try_into().unwrap());
    let b = u32::from_le_bytes(out[4..8].try_into().unwrap());
    assert_eq!((a, b), (0x7fc0_0000, 0x7fc0_0000), "{a:#x} {b:#x}");

    let mut input = 0x7ff0_0000_0000_0001u64.to_le_bytes().to_vec();
    input.extend_from_slice(&1.0f64.to_bits().to_le_bytes());
    let out = ok(&rt, view("nan64", &input), &state).output;
    let a = u64::from_le_bytes(out[..8].try_into().unwrap());
    let b = u64::from_le_bytes(out[8..16].try_into().unwrap());
    assert_eq!((a, b), (0x7ff8_0000_0000_0000, 0x7ff8_0000_0000_0000), "{a:#x} {b:#x}");
}

#[test]
fn calls_start_from_a_fresh_instance() {
    // `grow_report` grows memory to the limit; a second call starts from 1 page again,
    // so it sees the same result.
    let rt = with("hostile");
    let state = MapState::default();
    let first = ok(&rt, view("grow_report", b""), &state);
    let second = ok(&rt, view("grow_report", b""), &state);
    assert_eq!(first.output, second.output);
    assert_eq!(first.gas_used, second.gas_used);
}

#[test]
fn memory_and_globals_do_not_leak_between_calls() {
    let rt = with("hostile");
    let state = MapState::default();
    let fresh = ok(&rt, view("peek", b""), &state).output;
    assert_eq!(fresh, [1, 0, 0, 0, 0, 0, 0, 0]);
    for method in ["scribble", "scribble", "scribble_big", "scribble", "scribble_big"] {
        ok(&rt, view(method, b""), &state);
        assert_eq!(ok(&rt, view("peek", b""), &state).output, fresh, "after {method}");
    }
    // Also across threads, with memories handed back and forth.
    std::thread::scope(|scope| {
        for _ in 0..3 {
            scope.spawn(|| {
                for _ in 0..20 {
                    ok(&rt, view("scribble", b""), &state);
                    assert_eq!(ok(&rt, view("peek", b""), &state).output, fresh);
                }
            });
        }
    });
}

// ---------------------------------------------------------------------------------------
// Hostile apps

#[test]
fn an_infinite_loop_runs_out_of_gas() {
    let rt = with("hostile");
    let call = Call {
        gas_limit: Some(1_000_000),
        ..view("loop_forever", b"")
    };
    let e = fail(&rt, call, &MapState::default());
    assert!(matches!(e, CallError::OutOfGas { limit: 1_000_000 }), "{e}");
    assert_eq!(e.status(), Status::UNPROCESSABLE);
    // The default limit ends it too.
    let e = fail(&rt, view("loop_forever", b""), &MapState::default());
    assert!(matches!(e, CallError::OutOfGas { limit: 100_000_000 }), "{e}");
}

#[test]
fn host_functions_charge_gas() {
    let rt = with("good");
    let state = MapState::default();
    // echo: input_read + input_len + output.
    let call = Call {
        gas_limit: Some(250),
        ..view("echo", b"x")
    };
    let e = fail(&rt, call, &state);
    assert!(matches!(e, CallError::OutOfGas { limit: 250 }), "{e}");
    // Bigger input, more gas.
    let small = ok(&rt, view("echo", b"x"), &state).gas_used;
    let large = ok(&rt, view("echo", &[b'x'; 10_000]), &state).gas_used;
    assert!(large >= small + 2 * 9_999, "{small} {large}");
}

#[test]
fn bulk_memory_operators_pay_per_byte() {
    let rt = with("hostile");
    let state = MapState::default();
    let fill = ok(&rt, view("fill_page", b""), &state);
    assert!(fill.gas_used >= 65536 / 16, "gas {}", fill.gas_used);
    for method in ["fill_loop", "copy_loop"] {
        let call = Call {
            gas_limit: Some(1_000_000),
            ..view(method, b"")
        };
        let e = fail(&rt, call, &state);
        assert!(matches!(e, CallError::OutOfGas { .. }), "{method}: {e}");
    }
}

#[test]
fn memory_grow_stops_at_the_limit() {
    let rt = with("hostile");
    let state = MapState::default();
    let out = ok(&rt, view("grow_report", b""), &state).output;
    let pages = i32::from_le_bytes(out[..4].try_into().unwrap());
    let last = i32::from_le_bytes(out[4..8].try_into().unwrap());
    assert_eq!((pages, last), (1024, -1), "64 MiB = 1024 pages, then -1");

    let e = fail(&rt, view("grow_bomb", b""), &state);
    assert!(matches!(e, CallError::MemoryLimit { limit_mib: 64 }), "{e}");
    assert_eq!(e.to_string(), "memory limit of 64 MiB reached");

    // A smaller limit is honoured too.
    let small = Runtime::new(RuntimeConfig {
        memory_limit_bytes: 2 << 20,
        ..RuntimeConfig::default()
    })
    .expect("runtime");
    small.prepare(&APP, &wasm("hostile")).expect("prepare");
    let out = ok(&small, view("grow_report", b""), &state).output;
    assert_eq!(i32::from_le_bytes(out[..4].try_into().unwrap()), 32);
}

#[test]
fn tables_stop_growing_at_their_limit() {
    let rt = with("hostile");
    let out = ok(&rt, view("table_grow", b""), &MapState::default()).output;
    let first = i32::from_le_bytes(out[..4].try_into().unwrap());
    let second = i32::from_le_bytes(out[4..8].try_into().unwrap());
    assert_eq!((first, second), (1, -1));
}

#[test]
fn deep_recursion_exhausts_the_stack_cleanly() {
    let rt = with("hostile");
    let state = MapState::default();
    let e = fail(&rt, view("recurse", b""), &state);
    assert!(matches!(e, CallError::StackExhausted), "{e}");
    assert_eq!(e.to_string(), "call stack exhausted");

    // The limit is a call depth, the same on every machine: the method calls `down`,
    // which nests `n` more calls.
    let depth = |n: i32| run(&rt, view("depth", &n.to_le_bytes()), &state);
    depth(10_000 - 1).expect("10,000 nested calls fit");
    let e = depth(10_000).expect_err("10,001 do not");
    assert!(matches!(e, CallError::StackExhausted), "{e}");

    // Returns through branches to the function's own label unwind the depth too.
    ok(&rt, view("many_branch_exits", b""), &state);

    // The runtime is still fine afterwards.
    ok(&rt, view("depth", &5i32.to_le_bytes()), &state);
}

/// Frames so large that the native stack overflows before the depth limit: wasmer's guard
/// page catches it, and it is still a clean error.
#[test]
fn huge_frames_overflow_the_native_stack_cleanly() {
    let locals = 400;
    let mut wat = String::from("(module (memory (export \"memory\") 1)\n(func $fat (param $x i64) (result i64)\n");
    for i in 0..locals {
        wat.push_str(&format!("(local $l{i} i64)\n"));
    }
    for i in 0..locals {
        // Loads, which the compiler cannot move past the call, so all stay live.
        wat.push_str(&format!(
            "(local.set $l{i} (i64.load offset={} (i32.wrap_i64 (local.get $x))))\n",
            i * 8
        ));
    }
    wat.push_str("(call $fat (i64.and (i64.add (local.get $x) (i64.const 1)) (i64.const 1023)))\n");
    for i in 0..locals {
        wat.push_str(&format!("(local.get $l{i}) i64.add\n"));
    }
    wat.push_str(")\n(func (export \"run\") (drop (call $fat (i64.const 1)))))");
    let module = wat::parse_str(&wat).expect("wat");
    let rt = runtime();
    rt.prepare(&APP, &module).expect("prepare");
    let e = fail(&rt, view("run", b""), &MapState::default());
    assert!(matches!(e, CallError::StackExhausted), "{e}");
}

#[test]
fn other_traps_are_reported() {
    let rt = with("hostile");
    let state = MapState::default();
    let e = fail(&rt, view("divide_by_zero", b""), &state);
    assert!(matches!(&e, CallError::Trap(m) if m.contains("divi")), "{e}");
    let e = fail(&rt, view("load_oob", b""), &state);
    assert!(matches!(&e, CallError::Trap(m) if m.contains("out of bounds")), "{e}");
    assert_eq!(e.status(), Status::UNPROCESSABLE);
}

// ---------------------------------------------------------------------------------------
// Deploy refusals

fn refused(wasm: &[u8]) -> DeployError {
    match runtime().prepare(&APP, wasm) {
        Ok(info) => panic!("should be refused, got {info:?}"),
        Err(e) => e,
    }
}

#[test]
fn deploy_refuses_what_is_not_wasm() {
    assert_eq!(refused(b"hello, world"), DeployError::NotWasm);
    let e = refused(b"\0asm\x01\0\0\0garbage");
    assert!(matches!(e, DeployError::Invalid(_)), "{e}");
    assert_eq!(e.status(), Status::UNPROCESSABLE);
}

#[test]
fn deploy_refuses_a_module_over_the_size_limit() {
    let rt = Runtime::new(RuntimeConfig {
        max_module_bytes: 100,
        ..RuntimeConfig::default()
    })
    .expect("runtime");
    let module = wasm("good");
    let e = rt.prepare(&APP, &module).expect_err("too large");
    assert_eq!(
        e,
        DeployError::TooLarge {
            size: module.len(),
            limit: 100
        }
    );
    assert_eq!(e.status(), Status::PAYLOAD_TOO_LARGE);
}

#[test]
fn deploy_refuses_unknown_imports() {
    assert_eq!(
        refused(&wasm("unknown_import")),
        DeployError::UnknownImport {
            module: "env".into(),
            name: "abort".into()
        }
    );
    assert_eq!(
        refused(&wasm("memory_import")),
        DeployError::UnknownImport {
            module: "cmesh".into(),
            name: "memory".into()
        }
    );
}

#[test]
fn deploy_refuses_imports_of_the_wrong_type() {
    let e = refused(&wasm("wrong_import_type"));
    assert_eq!(
        e,
        DeployError::ImportType {
            name: "input_len".into(),
            expected: "() -> i32".into(),
            found: "() -> i64".into()
        }
    );
}

#[test]
fn deploy_refuses_exports_that_are_not_methods() {
    let e = refused(&wasm("bad_export"));
    assert_eq!(
        e,
        DeployError::BadExport {
            name: "add".into(),
            ty: "(i32, i32) -> i32".into()
        }
    );
    let e = refused(&wasm("reserved_export"));
    assert!(matches!(e, DeployError::Invalid(_)), "{e}");
}

#[test]
fn deploy_refuses_a_module_without_exported_memory() {
    assert_eq!(refused(&wasm("no_memory")), DeployError::NoMemory);
}

#[test]
fn deploy_refuses_a_start_function() {
    assert_eq!(refused(&wasm("start")), DeployError::StartFunction);
}

#[test]
fn deploy_refuses_memory_over_the_limit() {
    let e = refused(&wasm("big_memory"));
    assert!(matches!(e, DeployError::MemoryTooLarge { .. }), "{e}");
    assert_eq!(e.status(), Status::UNPROCESSABLE);
}

#[test]
fn deploy_refuses_disabled_features() {
    for module in ["simd", "shared_memory"] {
        let e = refused(&wasm(module));
        assert!(matches!(e, DeployError::Invalid(_)), "{module}: {e}");
    }
}

#[test]
fn deploy_refuses_modules_costly_to_instantiate() {
    let module = |body: String| wat::parse_str(format!("(module (memory (export \"memory\") 1) {body})")).expect("wat");
    let exports: String = (0..1001).map(|i| format!("(export \"m{i}\" (func $f))")).collect();
    let globals: String = (0..1025).map(|_| "(global i32 (i32.const 0))".to_string()).collect();
    let tables: String = (0..9).map(|_| "(table 1 funcref)".to_string()).collect();
    for body in [
        format!("(func $f) {exports}"),
        globals,
        "(table 100001 funcref)".to_string(),
        tables,
    ] {
        let e = refused(&module(body));
        assert!(matches!(e, DeployError::Invalid(_)), "{e}");
        assert!(e.to_string().contains("over the limit"), "{e}");
    }
    // At the limits is fine (999 methods and `memory`).
    let exports: String = (0..999).map(|i| format!("(export \"m{i}\" (func $f))")).collect();
    runtime()
        .prepare(&APP, &module(format!("(func $f) {exports} (table 100000 funcref)")))
        .expect("prepare");
}

// ---------------------------------------------------------------------------------------
// Caches

fn counting_loader(module: Vec<u8>, count: &Cell<u32>) -> impl Fn() -> Result<Vec<u8>, StorageError> + '_ {
    move || {
        count.set(count.get() + 1);
        Ok(module.clone())
    }
}

fn disk_runtime(dir: &Path) -> Runtime {
    Runtime::new(RuntimeConfig {
        cache_dir: Some(dir.to_path_buf()),
        ..RuntimeConfig::default()
    })
    .expect("runtime")
}

fn cached_files(dir: &Path, extension: &str) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for sub in std::fs::read_dir(dir).expect("cache dir") {
        let sub = sub.expect("entry").path();
        if sub.is_dir() {
            for file in std::fs::read_dir(&sub).expect("settings dir") {
                let file = file.expect("entry").path();
                if file.extension().is_some_and(|e| e == extension) {
                    files.push(file);
                }
            }
        }
    }
    files
}

#[test]
fn a_module_is_compiled_once_and_found_on_disk_after_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let count = Cell::new(0);
    let load = counting_loader(wasm("good"), &count);
    let state = MapState::default();

    let rt = disk_runtime(dir.path());
    rt.prepare(&APP, &wasm("good")).expect("prepare");
    rt.call(&APP, &load, view("noop", b""), &state).expect("call");
    assert_eq!(count.get(), 0, "in memory");
    assert_eq!(cached_files(dir.path(), "wasmer").len(), 1);
    assert_eq!(cached_files(dir.path(), "keccak").len(), 1);

    let restarted = disk_runtime(dir.path());
    let out = restarted.call(&APP, &load, view("echo", b"hi"), &state).expect("call");
    assert_eq!(out.output, b"hi");
    assert_eq!(count.get(), 0, "loaded from disk, not recompiled");

    // Without any cache the wasm is loaded, validated and compiled.
    let cold = runtime();
    cold.call(&APP, &load, view("noop", b""), &state).expect("call");
    assert_eq!(count.get(), 1);
    cold.call(&APP, &load, view("noop", b""), &state).expect("call");
    assert_eq!(count.get(), 1);
}

#[test]
fn a_corrupt_disk_cache_entry_is_detected_and_rebuilt() {
    let dir = tempfile::tempdir().expect("tempdir");
    let count = Cell::new(0);
    let load = counting_loader(wasm("good"), &count);
    let state = MapState::default();

    disk_runtime(dir.path()).prepare(&APP, &wasm("good")).expect("prepare");
    let [file] = cached_files(dir.path(), "wasmer").try_into().expect("one file");
    let good = std::fs::read(&file).expect("read");

    for position in [good.len() / 2, 0, good.len() - 1] {
        let mut bad = good.clone();
        bad[position] ^= 0x40;
        std::fs::write(&file, &bad).expect("write");

        let before = count.get();
        let rt = disk_runtime(dir.path());
        let out = rt
            .call(&APP, &load, view("echo", b"still works"), &state)
            .expect("call");
        assert_eq!(out.output, b"still works");
        assert_eq!(count.get(), before + 1, "rebuilt from the wasm");
        let rewritten = std::fs::read(&file).expect("read");
        assert_ne!(rewritten, bad, "the corrupt file was replaced");

        // The rewritten entry is trusted again by the next start.
        let again = disk_runtime(dir.path());
        again.call(&APP, &load, view("noop", b""), &state).expect("call");
        assert_eq!(count.get(), before + 1);
    }

    // A missing hash file is not trusted either.
    let [hash] = cached_files(dir.path(), "keccak").try_into().expect("one file");
    std::fs::remove_file(&hash).expect("remove");
    let before = count.get();
    disk_runtime(dir.path())
        .call(&APP, &load, view("noop", b""), &state)
        .expect("call");
    assert_eq!(count.get(), before + 1);
    assert!(hash.exists());
}

#[test]
fn the_memory_cache_is_bounded() {
    let rt = Runtime::new(RuntimeConfig {
        max_cached_modules: 1,
        ..RuntimeConfig::default()
    })
    .expect("runtime");
    let other = [8u8; 32];
    rt.prepare(&APP, &wasm("good")).expect("prepare");
    rt.prepare(&other, &wasm("hostile")).expect("prepare");
    let count = Cell::new(0);
    let load = counting_loader(wasm("good"), &count);
    rt.call(&APP, &load, view("noop", b""), &MapState::default())
        .expect("call");
    assert_eq!(count.get(), 1, "evicted by the second module");
}

#[test]
fn a_stored_module_that_no_longer_loads_is_a_node_error() {
    let count = Cell::new(0);
    let load = counting_loader(b"not wasm".to_vec(), &count);
    let e = runtime()
        .call(&APP, &load, view("noop", b""), &MapState::default())
        .expect_err("bad module");
    assert!(matches!(e, CallError::Deploy(DeployError::NotWasm)), "{e}");
    assert_eq!(e.status(), Status::INTERNAL);

    let failing = || Err(StorageError("gone".into()));
    let e = runtime()
        .call(&APP, &failing, view("noop", b""), &MapState::default())
        .expect_err("no module");
    assert!(matches!(e, CallError::Storage(_)), "{e}");
}

#[test]
fn the_runtime_is_shared_across_threads() {
    let rt = with("good");
    std::thread::scope(|scope| {
        for t in 0..4u8 {
            let rt = rt.clone();
            scope.spawn(move || {
                let state = MapState::default();
                for i in 0..50u8 {
                    let input = [t, i];
                    let out = ok(&rt, view("echo", &input), &state);
                    assert_eq!(out.output, input);
                }
            });
        }
    });
}

#[test]
fn bad_configs_are_refused() {
    for config in [
        RuntimeConfig {
            memory_limit_bytes: 1000,
            ..RuntimeConfig::default()
        },
        RuntimeConfig {
            max_cached_modules: 0,
            ..RuntimeConfig::default()
        },
    ] {
        assert!(Runtime::new(config).is_err());
    }
}

/// Per-call cost of a trivial view with a cached module. Run with
/// `cargo test --release -p cmesh-state --test runtime -- --ignored --nocapture trivial_view_cost`.
#[test]
#[ignore]
fn trivial_view_cost() {
    let state = MapState::default();
    // `tiny` is shaped like a small Rust contract (17 pages of memory, data at 1 MiB, a few
    // exports); `good` exports 40 methods and imports every host function; `greeter` is
    // the SDK example app (apps/greeter), when it is there.
    let greeter = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../apps/greeter/greeter.wasm");
    let mut cases = vec![
        ("tiny", wasm("tiny"), "noop", b"".to_vec()),
        ("tiny", wasm("tiny"), "echo", br#"{"a":1}"#.to_vec()),
        ("good", wasm("good"), "noop", b"".to_vec()),
        ("good", wasm("good"), "echo", br#"{"a":1}"#.to_vec()),
    ];
    if let Ok(module) = std::fs::read(&greeter) {
        cases.push(("greeter", module, "greetings", br#"["Dexter"]"#.to_vec()));
    }
    for (name, module, method, input) in cases {
        let rt = runtime();
        rt.prepare(&APP, &module).expect("prepare");
        for _ in 0..1_000 {
            ok(&rt, view(method, &input), &state);
        }
        let rounds = 100_000;
        let faults = minor_faults();
        let cpu = thread_cpu_ticks();
        let started = std::time::Instant::now();
        for _ in 0..rounds {
            ok(&rt, view(method, &input), &state);
        }
        let per_call = started.elapsed() / rounds;
        // Clock ticks are 10 ms: 1e4 µs per tick over `rounds` calls.
        let cpu_per_call = (thread_cpu_ticks() - cpu) as f64 * 1e4 / f64::from(rounds);
        let faults = (minor_faults() - faults) / u64::from(rounds);
        println!(
            "{name}.{method}: {per_call:?} per call (CPU {cpu_per_call:.1}µs), {faults} page faults per call, \
             resident {} MiB",
            resident_mib()
        );
    }
}

/// The process's resident memory (Linux), to see that calls leave nothing behind.
fn resident_mib() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|statm| statm.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| (pages * 4096) >> 20)
}

/// Minor page faults of this process so far (Linux), from `/proc/self/stat`.
fn minor_faults() -> u64 {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|stat| {
            let after_name = stat.rsplit_once(')')?.1;
            after_name.split_whitespace().nth(7)?.parse().ok()
        })
        .unwrap_or(0)
}

/// User + system CPU time of this thread so far, in clock ticks (Linux).
fn thread_cpu_ticks() -> u64 {
    std::fs::read_to_string("/proc/thread-self/stat")
        .ok()
        .and_then(|stat| {
            let mut fields = stat.rsplit_once(')')?.1.split_whitespace().skip(11);
            let user: u64 = fields.next()?.parse().ok()?;
            let system: u64 = fields.next()?.parse().ok()?;
            Some(user + system)
        })
        .unwrap_or(0)
}
