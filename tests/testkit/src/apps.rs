//! The example apps (`apps/`) and the WAT modules of `tests/wat/`, and the calls that
//! deploy and use them. The modules are built into the harness, so the benches in the
//! `cmesh` binary carry the same bytes the tests deploy.

use std::path::Path;

use base64::Engine;
use cmesh_common::{Address, SigningKey};
use serde_json::{json, Value};

use crate::{Client, Reply};

/// `apps/kv`: a key-value store (`set`, `get`, …).
pub const KV: &[u8] = include_bytes!("../../../apps/kv/kv.wasm");
/// `apps/greeter`: `hello_world`, `greetings`.
pub const GREETER: &[u8] = include_bytes!("../../../apps/greeter/greeter.wasm");
/// `apps/board`: a message board.
pub const BOARD: &[u8] = include_bytes!("../../../apps/board/board.wasm");

/// The committed module of an example app (`apps/<name>/<name>.wasm`).
pub fn app_wasm(name: &str) -> Vec<u8> {
    match name {
        "kv" => KV,
        "greeter" => GREETER,
        "board" => BOARD,
        other => panic!("no example app `{other}` (kv, greeter, board)"),
    }
    .to_vec()
}

pub fn wasm_base64(name: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(app_wasm(name))
}

/// The id a node gives an example app: the keccak256 of its module.
pub fn app_id(name: &str) -> String {
    cmesh_common::hash::to_hex0x(&cmesh_common::hash::keccak256(&app_wasm(name)))
}

/// The params of `app.deploy`: the module goes as base64.
pub fn deploy_params(name: &str, version: &str, wasm: &[u8]) -> Value {
    let encoded = base64::engine::general_purpose::STANDARD.encode(wasm);
    json!({ "name": name, "version": version, "wasm": encoded })
}

/// Deploys an example app; returns the `app.deploy` result.
pub async fn deploy(client: &Client, node: Address, token: Option<&str>, name: &str, version: &str) -> Value {
    let params = deploy_params(name, version, &app_wasm(name));
    client.call(node, "app.deploy", params, token).await
}

/// `app.deploy` of any module bytes; the raw reply, for refusals.
pub async fn deploy_bytes(
    client: &Client,
    node: Address,
    token: Option<&str>,
    name: &str,
    version: &str,
    wasm: &[u8],
) -> Reply {
    client
        .rpc(node, "app.deploy", deploy_params(name, version, wasm), token)
        .await
}

/// Creates a context of `app`; returns its id.
pub async fn create(client: &Client, node: Address, token: Option<&str>, app: &str) -> String {
    let created = client.call(node, "ctx.create", json!({"app": app}), token).await;
    created["context"].as_str().expect("context id").to_string()
}

pub async fn grant(client: &Client, node: Address, token: Option<&str>, context: &str, to: &SigningKey, role: &str) {
    let params = json!({"context": context, "address": to.address(), "role": role});
    let granted = client.call(node, "ctx.grant", params, token).await;
    assert_eq!(granted["role"], json!(role), "{granted}");
}

/// The first of `roots` (`ctx.root` answers, one per node) if all hold `applied`
/// transactions and agree on heads and root.
pub fn converged_roots(roots: &[Value], applied: u64) -> Option<Value> {
    let first = roots.first()?;
    roots
        .iter()
        .all(|r| r["root"] == first["root"] && r["heads"] == first["heads"] && r["applied"] == json!(applied))
        .then(|| first.clone())
}

/// A module of `tests/wat/<name>.wat`, compiled from the WebAssembly text format.
pub fn wat_module(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../wat/{name}.wat"));
    wat::parse_file(&path).unwrap_or_else(|e| panic!("compiling {}: {e}", path.display()))
}
