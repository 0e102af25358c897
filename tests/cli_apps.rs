//! The `cmesh` CLI for apps and contexts, as a user runs it: `key new`, `login`, then
//! `app deploy|ls` and `ctx create|ls|call|view|root|grant|revoke` against a real node,
//! each printing the JSON result (and exiting non-zero with a message on an error).

use std::path::Path;

use cmesh_testkit::*;
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_create_call_and_administer_with_the_cli() {
    let mesh = Mesh::start(1).await;
    let home = tempfile::tempdir().expect("tempdir");
    let cli = Cli::new(home.path())
        .env("CMESH_NATS_URL", &mesh.nats.url())
        .env("CMESH_NODE", &mesh.node(0).address().to_string());
    assert!(cli.run(&["key", "new"]).await.status.success());
    assert!(cli.run(&["login"]).await.status.success(), "cmesh login");

    let greeter = Path::new(env!("CARGO_MANIFEST_DIR")).join("apps/greeter/greeter.wasm");
    let greeter = greeter.to_str().expect("utf-8 path");
    let deployed = cli
        .ok(&["app", "deploy", greeter, "--name", "greeter", "--version", "4.1.3"])
        .await;
    assert_eq!(deployed["app"], json!(app_id("greeter")));
    let apps = cli.ok(&["app", "ls"]).await;
    assert_eq!(apps[0]["name"], json!("greeter"), "{apps}");

    let created = cli.ok(&["ctx", "create", "greeter"]).await;
    let context = created["context"].as_str().expect("context").to_string();
    let prefix = &context[..10];
    let called = cli.ok(&["ctx", "call", prefix, "hello_world", r#"["Dexter"]"#]).await;
    assert_eq!(called["result"], json!("Hello, Dexter!"));
    assert!(called["tx"].is_string(), "{called}");
    let viewed = cli
        .ok(&["ctx", "view", prefix, "greetings", r#"{"name":"Dexter"}"#])
        .await;
    assert_eq!(viewed["result"], json!(1));
    let pinned = cli
        .ok(&["ctx", "view", prefix, "hello_world", r#"["Ann"]"#, "--requires", "~4.1"])
        .await;
    assert_eq!(pinned["result"], json!("Hello, Ann!"));
    let root = cli.ok(&["ctx", "root", prefix]).await;
    assert_eq!(root["applied"], json!(2));
    assert_eq!(root["heads"], json!([called["tx"]]));
    let listed = cli.ok(&["ctx", "ls"]).await;
    assert_eq!(listed[0]["context"], json!(context));

    let bob = new_key().address().to_string();
    let granted = cli.ok(&["ctx", "grant", prefix, &bob, "writer"]).await;
    assert_eq!(granted["role"], json!("writer"));
    let revoked = cli.ok(&["ctx", "revoke", prefix, &bob]).await;
    assert_eq!(revoked["role"], Value::Null);

    // Errors: a message on stderr and a non-zero exit.
    let wrong = cli
        .run(&["ctx", "view", prefix, "hello_world", r#"["Ann"]"#, "--requires", "^5"])
        .await;
    assert!(!wrong.status.success());
    let stderr = String::from_utf8_lossy(&wrong.stderr);
    assert!(stderr.contains("409") && stderr.contains("4.1.3"), "{stderr}");
    let bad_args = cli.run(&["ctx", "call", prefix, "hello_world", "not json"]).await;
    assert!(!bad_args.status.success());
    assert!(
        String::from_utf8_lossy(&bad_args.stderr).contains("args must be JSON"),
        "{}",
        String::from_utf8_lossy(&bad_args.stderr)
    );
}
