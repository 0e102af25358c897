//! The committed example apps (apps/*/*.wasm) on the node's runtime: deployed (which
//! checks them against docs/ABI.md) and every method called, with each mutation's write
//! set applied to an ordered map between calls the way the executor applies it to redb.

use std::path::Path;

use cmesh_common::hash::keccak256;
use cmesh_runtime::{Call, CallError, MapState, Outcome, Runtime, RuntimeConfig, StorageError};
use serde_json::{json, Value};

struct App {
    runtime: Runtime,
    id: [u8; 32],
    state: MapState,
    next_tx: u8,
}

const CALLER: [u8; 20] = [0xab; 20];

impl App {
    fn deploy(name: &str) -> App {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../../apps/{name}/{name}.wasm"));
        let wasm = std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        let runtime = Runtime::new(RuntimeConfig::default()).expect("runtime");
        let id = keccak256(&wasm);
        runtime
            .prepare(&id, &wasm)
            .unwrap_or_else(|e| panic!("{name} must deploy: {e}"));
        App {
            runtime,
            id,
            state: MapState::default(),
            next_tx: 1,
        }
    }

    fn run(&mut self, method: &str, args: Value, write: bool) -> Result<Outcome, CallError> {
        let input = serde_json::to_vec(&args).expect("args");
        let tx_id = write.then(|| {
            self.next_tx += 1;
            [self.next_tx; 32]
        });
        let call = Call {
            method,
            input: &input,
            caller: CALLER,
            context: [7; 32],
            tx_id,
            time_ms: 1_700_000_000_000 + u64::from(self.next_tx),
            gas_limit: None,
        };
        let load = || Err(StorageError("modules are prepared up front".into()));
        let outcome = self.runtime.call(&self.id, &load, call, &self.state)?;
        if write {
            self.state.apply(&outcome);
        } else {
            assert!(
                outcome.writes.is_empty() && outcome.events.is_empty(),
                "a view changed something"
            );
        }
        Ok(outcome)
    }

    fn ok(&mut self, method: &str, args: Value, write: bool) -> (Value, Outcome) {
        let outcome = self
            .run(method, args.clone(), write)
            .unwrap_or_else(|e| panic!("{method}({args}) failed: {e}"));
        let value = serde_json::from_slice(&outcome.output).expect("the SDK answers JSON");
        (value, outcome)
    }

    fn view(&mut self, method: &str, args: Value) -> Value {
        self.ok(method, args, false).0
    }

    fn call(&mut self, method: &str, args: Value) -> Value {
        self.ok(method, args, true).0
    }

    fn error(&mut self, method: &str, args: Value, write: bool) -> String {
        match self.run(method, args.clone(), write) {
            Ok(outcome) => panic!(
                "{method}({args}) succeeded: {}",
                String::from_utf8_lossy(&outcome.output)
            ),
            Err(err) => err.to_string(),
        }
    }
}

#[test]
fn kv_sets_gets_lists_deletes_and_copies() {
    let mut kv = App::deploy("kv");
    let (result, outcome) = kv.ok("set", json!(["user:alice", {"age": 30}]), true);
    assert_eq!(result, Value::Null);
    assert_eq!(outcome.events.len(), 1);
    assert_eq!(outcome.events[0].name, "set");
    kv.call("set", json!({"key": "user:bob", "value": 2}));
    kv.call("set", json!(["other", "x"]));
    assert_eq!(kv.view("get", json!(["user:alice"])), json!({"age": 30}));
    assert_eq!(kv.view("get", json!(["nobody"])), Value::Null);
    let listed = kv.view("list", json!(["user:"]));
    assert_eq!(
        listed,
        json!([{"key": "user:alice", "value": {"age": 30}}, {"key": "user:bob", "value": 2}])
    );
    assert_eq!(kv.view("list", json!([])).as_array().map(Vec::len), Some(3));
    assert_eq!(kv.call("delete", json!(["user:bob"])), json!(true));
    assert_eq!(kv.call("delete", json!(["user:bob"])), json!(false));
    assert_eq!(kv.view("list", json!(["user:"])).as_array().map(Vec::len), Some(1));
    assert_eq!(kv.call("copy", json!(["user:alice", "user:carol"])), json!(true));
    assert_eq!(kv.view("get", json!(["user:carol"])), json!({"age": 30}));
    assert_eq!(kv.call("copy", json!(["user:bob", "user:dave"])), json!(false));
    assert_eq!(kv.view("get", json!(["user:dave"])), Value::Null);

    // Bad args fail with a message that names what is wrong.
    let err = kv.error("set", json!([1]), true);
    assert!(err.contains("key"), "{err}");
    let err = kv.error("set", json!({"nope": 1}), true);
    assert!(err.contains("nope") || err.contains("key"), "{err}");
    let err = kv.error("set", json!(["x".repeat(40), 1]), true);
    assert!(err.contains("invalid key"), "{err}");
    let err = kv.error("set", json!(["a", 1]), false);
    assert!(err.contains("views cannot write"), "{err}");
    let err = kv.error("nope", json!(null), false);
    assert!(err.contains("available methods"), "{err}");
}

#[test]
fn greeter_greets_and_counts_only_in_writes() {
    let mut greeter = App::deploy("greeter");
    assert_eq!(greeter.view("hello_world", json!(["Dexter"])), json!("Hello, Dexter!"));
    assert_eq!(greeter.view("greetings", json!(["Dexter"])), json!(0));
    let (hello, outcome) = greeter.ok("hello_world", json!(["Dexter"]), true);
    assert_eq!(hello, json!("Hello, Dexter!"));
    assert_eq!(outcome.events[0].name, "greeted");
    assert_eq!(outcome.events[0].data, json!({"name": "Dexter", "count": 1}));
    greeter.call("hello_world", json!({"name": "Dexter"}));
    assert_eq!(greeter.view("greetings", json!("Dexter")), json!(2));
    assert!(outcome.gas_used > 0);
}

#[test]
fn board_keeps_messages_in_order() {
    let mut board = App::deploy("board");
    for text in ["first", "second", "third"] {
        let posted = board.call("post", json!([text]));
        assert_eq!(posted["message"], json!(text));
        assert_eq!(posted["author"], json!(format!("0x{}", "ab".repeat(20))));
    }
    let all = board.view("list", json!(null));
    let seqs: Vec<u64> = all
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|m| m["seq"].as_u64())
        .collect();
    assert_eq!(seqs, [1, 2, 3]);
    let times: Vec<u64> = all
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|m| m["time_ms"].as_u64())
        .collect();
    assert!(
        times.windows(2).all(|w| w[0] < w[1]),
        "time comes from each transaction: {times:?}"
    );
    assert_eq!(
        board.view("list", json!({"from": 2, "limit": 1}))[0]["message"],
        json!("second")
    );
    assert_eq!(board.view("count", json!(null)), json!(3));
    let err = board.error("list", json!({"limit": 1000}), false);
    assert!(err.contains("limit"), "{err}");
    let err = board.error("post", json!(["  "]), true);
    assert!(err.contains("empty"), "{err}");
}
