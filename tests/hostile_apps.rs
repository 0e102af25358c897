//! Hostile apps and hostile input through NATS: modules written in WebAssembly text
//! (`tests/wat/`) that loop, grow memory, recurse, return too much or write and then trap,
//! the real `kv` app fed arguments of the wrong shape, and modules `app.deploy` must
//! refuse. Every case must get a clear error, change no state, and leave the node serving
//! its other contexts.

use cmesh_common::Address;
use cmesh_testkit::*;
use serde_json::{json, Value};

/// Small enough that a spinning guest runs out within milliseconds, large enough for kv.
const GAS_LIMIT: u64 = 10_000_000;
const MEMORY_LIMIT_MIB: u64 = 32;
/// Over the real apps (about 85 KB), so they deploy; the oversized module is bigger.
const MAX_MODULE_BYTES: usize = 128 * 1024;

/// The contexts of one node: healthy ones (kv with a canary entry, greeter) and the
/// hostile one; the checks each case ends with.
struct World<'a> {
    client: &'a Client,
    node: Address,
    token: String,
    kv: String,
    greeter: String,
    hostile: String,
    /// `cmesh.events.state.rejected`: one event per failed transaction.
    rejected: async_nats::Subscriber,
}

impl World<'_> {
    fn token(&self) -> Option<&str> {
        Some(&self.token)
    }

    async fn fqmn(&self, fqmn: &str) -> Reply {
        self.client.fqmn(self.node, fqmn, self.token()).await
    }

    async fn root(&self, context: &str) -> Value {
        self.client
            .call(self.node, "ctx.root", json!({ "context": context }), self.token())
            .await
    }

    /// The failure `fqmn` must get: `status`, a message containing `fragment`. Returns
    /// the message.
    async fn fails(&self, fqmn: &str, status: u16, fragment: &str) -> String {
        let reply = self.fqmn(fqmn).await;
        reply.assert_fqmn_error(status);
        let message = reply.error_message().unwrap_or_default().to_string();
        assert!(
            message.contains(fragment),
            "`{fqmn}`: expected a message with `{fragment}`, got: {}",
            reply.body
        );
        message
    }

    /// A failed write (`SW:` on `context`): its status and message, the `rejected` event
    /// naming it, and no change to the context's root, heads or applied count.
    async fn write_fails(&mut self, context: &str, method_and_args: &str, status: u16, fragment: &str) -> String {
        let before = self.root(context).await;
        let message = self
            .fails(&format!("SW:{context}:{method_and_args}"), status, fragment)
            .await;
        let event = next_message(&mut self.rejected, "the state.rejected event").await;
        let event: Value = serde_json::from_slice(&event.payload).expect("event JSON");
        assert_eq!(event["data"]["context"], json!(context), "{event}");
        let method = method_and_args.split(':').next().unwrap_or_default();
        assert_eq!(event["data"]["method"], json!(method), "{event}");
        assert_eq!(event["data"]["status"], json!(status), "{event}");
        assert_eq!(event["data"]["error"], json!(message), "{event}");
        let after = self.root(context).await;
        assert_eq!(after, before, "a failed `{method_and_args}` changed the context");
        message
    }

    /// The node still serves: ping, the kv canary, the greeter, the hostile app's one
    /// well-behaved method.
    async fn still_serving(&self, after: &str) {
        self.client.assert_alive(self.node).await;
        let got = self.fqmn(&format!(r#"S:{}:get:["canary"]"#, self.kv)).await;
        assert_eq!(got.status, 200, "kv after {after}: {}", got.body);
        assert_eq!(got.body["result"], json!({"alive": true}), "kv after {after}");
        let hello = self
            .fqmn(&format!(r#"S:{}:hello_world:["Dexter"]"#, self.greeter))
            .await;
        assert_eq!(hello.status, 200, "greeter after {after}: {}", hello.body);
        assert_eq!(hello.body["result"], json!("Hello, Dexter!"), "greeter after {after}");
        let ok = self.fqmn(&format!("S:{}:ok", self.hostile)).await;
        assert_eq!(ok.status, 200, "hostile `ok` after {after}: {}", ok.body);
        assert_eq!(ok.body["result"], json!("ok"), "hostile `ok` after {after}");
    }
}

/// 16 concurrent writes, so that they share group commits: even ones set `k<i>` in the
/// kv context, odd ones send `other`. Answers each write's index and reply.
async fn interleaved_writes(
    client: &Client,
    node: Address,
    token: Option<&str>,
    kv: &str,
    other: &str,
) -> Vec<(usize, Reply)> {
    let writes = (0..16).map(|i| {
        let fqmn = if i % 2 == 0 {
            format!(r#"SW:{kv}:set:["k{i}", {i}]"#)
        } else {
            other.to_string()
        };
        async move { (i, client.fqmn(node, &fqmn, token).await) }
    });
    futures::future::join_all(writes).await
}

async fn hostile_mesh() -> Mesh {
    Mesh::with(
        MeshOptions::new(1)
            .gas_limit(GAS_LIMIT)
            .memory_limit_mib(MEMORY_LIMIT_MIB)
            .max_module_bytes(MAX_MODULE_BYTES),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_methods_fail_cleanly_and_the_node_keeps_serving() {
    let mesh = hostile_mesh().await;
    let node = mesh.node(0).address();
    let client = &mesh.client;
    let token = client.login(&new_key(), node).await;
    let a = Some(token.as_str());

    deploy(client, node, a, "kv", "1.0.0").await;
    deploy(client, node, a, "greeter", "1.0.0").await;
    let deployed = deploy_bytes(client, node, a, "hostile", "1.0.0", &wat_module("hostile")).await;
    let methods = deployed.ok()["methods"].clone();
    assert_eq!(
        methods,
        json!([
            "grow_bomb",
            "huge",
            "ok",
            "peek",
            "recurse",
            "spin",
            "wild_pointer",
            "write_then_trap"
        ]),
        "`_internal` is not a method"
    );
    let kv = create(client, node, a, "kv").await;
    let greeter = create(client, node, a, "greeter").await;
    let hostile = create(client, node, a, "hostile").await;
    client
        .fqmn_ok(node, &format!(r#"SW:{kv}:set:["canary", {{"alive": true}}]"#), a)
        .await;
    let rejected = client.subscribe("cmesh.events.state.rejected").await;
    let mut world = World {
        client,
        node,
        token: token.clone(),
        kv: kv.clone(),
        greeter,
        hostile: hostile.clone(),
        rejected,
    };
    world.still_serving("setup").await;
    let genesis = world.root(&hostile).await;
    assert_eq!(genesis["applied"], json!(1), "only the create: {genesis}");

    // An infinite loop: stopped by gas, as a write and as a view.
    let message = world.write_fails(&hostile, "spin", 422, "out of gas").await;
    assert_eq!(message, format!("out of gas (limit {GAS_LIMIT})"));
    world.fails(&format!("S:{hostile}:spin"), 422, "out of gas").await;
    world.still_serving("an infinite loop").await;

    // memory.grow until refused, then a trap: the memory limit is named.
    let message = world.write_fails(&hostile, "grow_bomb", 422, "memory limit").await;
    assert_eq!(message, format!("memory limit of {MEMORY_LIMIT_MIB} MiB reached"));
    world.still_serving("a memory.grow bomb").await;

    // Unbounded recursion.
    let message = world
        .write_fails(&hostile, "recurse", 422, "call stack exhausted")
        .await;
    assert_eq!(message, "call stack exhausted");
    world
        .fails(&format!("S:{hostile}:recurse"), 422, "call stack exhausted")
        .await;
    world.still_serving("deep recursion").await;

    // A result over 1 MiB.
    let message = world.write_fails(&hostile, "huge", 413, "result too large").await;
    assert_eq!(
        message,
        "result too large: 1048577 bytes, over the limit of 1048576 bytes"
    );
    world.fails(&format!("S:{hostile}:huge"), 413, "result too large").await;
    world.still_serving("a huge result").await;

    // A pointer past the end of memory (wrapping around 4 GiB) never reaches the node.
    let message = world.write_fails(&hostile, "wild_pointer", 422, "out of bounds").await;
    assert_eq!(message, "guest pointer out of bounds");
    world.still_serving("a wild pointer").await;

    // Methods that do not exist, or are not callable: 404 listing the real ones.
    let message = world.write_fails(&hostile, "nope", 404, "`nope` not found").await;
    assert!(message.contains("grow_bomb, huge, ok, peek"), "{message}");
    world
        .fails(&format!("S:{hostile}:_internal"), 404, "`_internal` not found")
        .await;
    world
        .fails(
            &format!("S:{kv}:nope"),
            404,
            "available methods: copy, delete, get, list, set",
        )
        .await;
    assert_eq!(world.root(&hostile).await, genesis, "404s change nothing");
    world.still_serving("missing methods").await;

    // A write followed by a trap leaves no trace; the same write in a view is refused.
    let message = world.write_fails(&hostile, "write_then_trap", 422, "app trapped").await;
    assert_eq!(message, "app trapped: unreachable");
    let peek = client.fqmn_ok(node, &format!("S:{hostile}:peek"), a).await;
    assert_eq!(peek["result"], Value::Null, "the trapped write is not visible: {peek}");
    world
        .fails(&format!("S:{hostile}:write_then_trap"), 422, "views cannot write")
        .await;
    world.still_serving("a write then a trap").await;
    assert_eq!(world.root(&hostile).await, genesis, "nothing the hostile app did stuck");

    // The real kv app with arguments of the wrong shape: the argument is named.
    let kv_before = world.root(&kv).await;
    world
        .write_fails(&kv, "set:[1]", 422, "set: invalid argument `key`")
        .await;
    world
        .write_fails(&kv, r#"set:{"nope":1}"#, 422, "unknown argument `nope`")
        .await;
    world
        .write_fails(&kv, r#"set:["k"]"#, 422, "set: missing argument `value`")
        .await;
    world
        .write_fails(&kv, r#"set:["k", 1, 2]"#, 422, "got 3 arguments")
        .await;
    world
        .write_fails(&kv, &format!(r#"set:["{}", 1]"#, "x".repeat(40)), 422, "invalid key")
        .await;
    let listed = client.fqmn_ok(node, &format!("S:{kv}:list"), a).await;
    assert_eq!(
        listed["result"],
        json!([{"key": "canary", "value": {"alive": true}}]),
        "only the canary is stored"
    );
    assert_eq!(world.root(&kv).await, kv_before);
    world.still_serving("bad kv arguments").await;

    // And the node still takes writes afterwards.
    let written = client.fqmn_ok(node, &format!(r#"SW:{kv}:set:["after", 2]"#), a).await;
    assert!(written["tx"].is_string(), "{written}");
    let kv_after = world.root(&kv).await;
    assert_eq!(kv_after["applied"], json!(kv_before["applied"].as_u64().unwrap() + 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_module_that_traps_at_instantiation_fails_its_calls_only() {
    // Its data segment does not fit its memory: valid wasm, so it deploys, but every
    // instantiation (every call) traps. Other writes in flight must not be affected.
    let mesh = hostile_mesh().await;
    let node = mesh.node(0).address();
    let client = &mesh.client;
    let token = client.login(&new_key(), node).await;
    let a = Some(token.as_str());
    deploy(client, node, a, "kv", "1.0.0").await;
    deploy_bytes(client, node, a, "oob", "1.0.0", &wat_module("oob_segment"))
        .await
        .ok();
    let kv = create(client, node, a, "kv").await;
    let oob = create(client, node, a, "oob").await;
    let before = client.call(node, "ctx.root", json!({ "context": oob }), a).await;

    let reply = client.fqmn(node, &format!("SW:{oob}:run"), a).await;
    reply.assert_fqmn_error(422);
    let message = reply.error_message().unwrap_or_default();
    assert!(
        message.starts_with("app trapped") && message.contains("out of bounds"),
        "{}",
        reply.body
    );
    let reply = client.fqmn(node, &format!("S:{oob}:run"), a).await;
    reply.assert_fqmn_error(422);

    // Concurrent writes: the failing ones are batched with good ones, which must commit.
    for (i, reply) in interleaved_writes(client, node, a, &kv, &format!("SW:{oob}:run")).await {
        if i % 2 == 0 {
            assert_eq!(reply.status, 200, "kv write {i} next to a trapping app: {}", reply.body);
        } else {
            reply.assert_fqmn_error(422);
        }
    }
    let listed = client.fqmn_ok(node, &format!("S:{kv}:list"), a).await;
    assert_eq!(listed["result"].as_array().map(Vec::len), Some(8), "{listed}");
    let after = client.call(node, "ctx.root", json!({ "context": oob }), a).await;
    assert_eq!(after, before);
    client.assert_alive(node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_refuses_bad_modules_and_stores_nothing() {
    let mesh = hostile_mesh().await;
    let node = mesh.node(0).address();
    let client = &mesh.client;
    let token = client.login(&new_key(), node).await;
    let a = Some(token.as_str());
    let kv = deploy(client, node, a, "kv", "1.0.0").await;

    // Each refusal: status in the header and in error.data, a message saying why.
    let refused = |reply: Reply, status: u16, fragment: &str| {
        assert_eq!(reply.status, status, "expected {status}: {}", reply.body);
        assert_eq!(reply.rpc_status(), Some(u64::from(status)), "{}", reply.body);
        reply.assert_cmtp();
        let message = reply.error_message().unwrap_or_default();
        assert!(message.contains(fragment), "expected `{fragment}` in: {}", reply.body);
    };

    let not_wasm = b"#!/bin/sh\nrm -rf /\n".to_vec();
    refused(
        deploy_bytes(client, node, a, "script", "1.0.0", &not_wasm).await,
        422,
        "not a WebAssembly module",
    );
    let mut truncated = app_wasm("kv");
    truncated.truncate(truncated.len() / 2);
    refused(
        deploy_bytes(client, node, a, "truncated", "1.0.0", &truncated).await,
        422,
        "invalid WebAssembly module",
    );
    refused(
        deploy_bytes(client, node, a, "importer", "1.0.0", &wat_module("unknown_import")).await,
        422,
        "import `cmesh.spawn_process` is not offered",
    );
    let reply = client
        .rpc(
            node,
            "app.deploy",
            json!({"name": "b64", "version": "1.0.0", "wasm": "AGFzbQ!!not*base64"}),
            a,
        )
        .await;
    refused(reply, 400, "`wasm` is not base64");
    // A valid module over --max-module-bytes: a data segment of that many bytes.
    let filler = "a".repeat(MAX_MODULE_BYTES + 1);
    let big = wat::parse_str(format!(
        r#"(module (memory (export "memory") 3) (data (i32.const 0) "{filler}"))"#
    ))
    .expect("compile the oversized module");
    refused(
        deploy_bytes(client, node, a, "big", "1.0.0", &big).await,
        413,
        &format!("over the limit of {MAX_MODULE_BYTES} bytes"),
    );
    refused(
        deploy_bytes(client, node, a, "hostile", "1.0", &wat_module("hostile")).await,
        400,
        "version `1.0` is not semver",
    );
    refused(
        deploy_bytes(client, node, a, "hostile", "latest", &wat_module("hostile")).await,
        400,
        "is not semver",
    );
    refused(
        deploy_bytes(client, node, a, "Hostile App", "1.0.0", &wat_module("hostile")).await,
        400,
        "app name `Hostile App` is invalid",
    );
    // The refused modules' names cannot be used for contexts.
    for name in ["script", "importer", "big", "hostile"] {
        let reply = client.rpc(node, "ctx.create", json!({ "app": name }), a).await;
        assert_eq!(
            reply.rpc_status(),
            Some(404),
            "ctx.create of refused `{name}`: {}",
            reply.body
        );
    }

    // A good deploy still works, and the list holds exactly the accepted apps.
    let hostile = deploy_bytes(client, node, a, "hostile", "1.0.0", &wat_module("hostile"))
        .await
        .ok();
    let list = client.call(node, "app.list", json!(null), a).await;
    let mut listed: Vec<(String, String, String)> = list
        .as_array()
        .expect("app.list is an array")
        .iter()
        .map(|app| {
            let field = |f: &str| app[f].as_str().unwrap_or_default().to_string();
            (field("name"), field("version"), field("app"))
        })
        .collect();
    listed.sort();
    let expected = vec![
        (
            "hostile".to_string(),
            "1.0.0".to_string(),
            hostile["app"].as_str().unwrap().to_string(),
        ),
        (
            "kv".to_string(),
            "1.0.0".to_string(),
            kv["app"].as_str().unwrap().to_string(),
        ),
    ];
    assert_eq!(listed, expected, "app.list: {list}");
    client.assert_alive(node).await;
}

/// A context whose stored module no longer loads (here: the node restarted with a memory
/// limit below the module's declared minimum) fails with a 5xx of its own; writes to
/// healthy contexts that share its group commit are not affected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_context_whose_module_no_longer_loads_fails_alone() {
    let mut mesh = hostile_mesh().await;
    let node = mesh.node(0).address();
    let alice = new_key();
    let token = mesh.client.login(&alice, node).await;
    let a = Some(token.as_str());
    deploy_bytes(&mesh.client, node, a, "roomy", "1.0.0", &wat_module("roomy"))
        .await
        .ok();
    deploy_bytes(&mesh.client, node, a, "hostile", "1.0.0", &wat_module("hostile"))
        .await
        .ok();
    let roomy = create(&mesh.client, node, a, "roomy").await;
    let hostile = create(&mesh.client, node, a, "hostile").await;
    // roomy declares 17 pages of memory; the hostile module one.
    mesh.nodes[0].options.memory_limit_mib = Some(1);
    mesh.nodes[0].restart().await;
    let client = &mesh.client;
    let token = client.login(&alice, node).await;
    let a = Some(token.as_str());
    let reply = client.fqmn(node, &format!(r#"S:{roomy}:get:["k"]"#), a).await;
    reply.assert_fqmn_error(500);
    assert!(
        reply
            .error_message()
            .is_some_and(|m| m.contains("stored module does not load")),
        "{}",
        reply.body
    );

    for (i, reply) in interleaved_writes(client, node, a, &roomy, &format!("SW:{hostile}:ok")).await {
        if i % 2 == 0 {
            assert!(reply.status >= 500, "roomy write {i}: {}", reply.body);
        } else {
            assert_eq!(
                reply.status, 200,
                "healthy write {i} next to the broken app: {}",
                reply.body
            );
        }
    }
}
