//! `cmesh app …` and `cmesh ctx …`: deploy WASM apps, create contexts and call them.
//! Each command is one JSON-RPC call (`app.*`, `ctx.*`) whose result is printed as JSON.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use cmesh_common::Address;
use cmesh_state::Id;
use cmesh_testkit::deploy_params;
use serde_json::{json, Value};

use crate::session::{Session, Target};

#[derive(Subcommand)]
pub enum AppCommand {
    /// Deploy a WASM module built with the cmesh SDK (prints its app id)
    #[command(disable_version_flag = true)]
    Deploy {
        /// The module, e.g. apps/greeter/greeter.wasm
        wasm: PathBuf,
        /// App name: lower-case letters, digits, `-`, `_`
        #[arg(long)]
        name: String,
        /// Semver version, e.g. 1.0.0
        #[arg(long)]
        version: String,
    },
    /// List deployed apps and their versions
    Ls,
}

#[derive(Subcommand)]
pub enum CtxCommand {
    /// Create a context of an app; you become its admin
    #[command(disable_version_flag = true)]
    Create {
        /// App name or 0x app id
        app: String,
        /// Exact app version [default: the highest deployed]
        #[arg(long)]
        version: Option<String>,
    },
    /// List the contexts you have a role in
    Ls,
    /// Call a method as a transaction (needs the writer role); prints {result, tx}
    Call(MethodCall),
    /// Call a method as a read-only view (needs the reader role)
    View(MethodCall),
    /// Show a context's state root, heads and number of applied transactions
    Root { context: String },
    /// Give an address a role: reader, writer or admin (admins only)
    Grant {
        context: String,
        address: Address,
        role: String,
    },
    /// Take every role from an address (admins only)
    Revoke { context: String, address: Address },
    /// Make a node a member of a context, or change its seats (admins only)
    Invite {
        context: String,
        /// The node's address, as its startup line `cmesh node <address> ready` prints it
        member: Address,
        /// Seats the member holds [default: 1]
        #[arg(long, default_value_t = 1)]
        seats: u32,
    },
    /// List a context's member nodes and their seats
    Members { context: String },
    /// Make this node fetch a context it was invited to (node admins only); shows progress
    /// until it holds everything a member had. Send it to the invited node (--node).
    Join {
        /// The context's full id (0x + 64 hex digits)
        context: Id,
        /// Return once a member accepted this node, without waiting for the catch-up
        /// (by default the node answers once it is in sync, at most an hour or --timeout)
        #[arg(long)]
        no_wait: bool,
    },
    /// Leave a context: tell the other members, then delete this node's copy of it (node
    /// admins only). The others carry on.
    Leave {
        /// The context's full id
        context: Id,
    },
    /// Show how far a node is with a context: phase, fetched/expected, rate, root
    Status {
        /// The context's full id
        context: Id,
    },
}

#[derive(Args)]
pub struct MethodCall {
    /// Context id, or a unique hex prefix of it (any length)
    context: String,
    /// The app's method, e.g. hello_world
    method: String,
    /// Args as JSON: an array for positional args (e.g. '["Dexter"]') or an object
    args: Option<String>,
    /// Run only if the app version meets this semver requirement (e.g. ~1.2)
    #[arg(long = "requires")]
    version_req: Option<String>,
}

impl MethodCall {
    async fn send(self, method: &str, target: &Target) -> anyhow::Result<ExitCode> {
        let params = json!({
            "context": self.context,
            "method": self.method,
            "args": json_args(self.args)?,
            "version": self.version_req,
        });
        call(target, method, params).await
    }
}

fn json_args(args: Option<String>) -> anyhow::Result<Value> {
    match args {
        Some(text) => serde_json::from_str(&text).with_context(|| format!("args must be JSON, got `{text}`")),
        None => Ok(Value::Null),
    }
}

async fn call(target: &Target, method: &str, params: Value) -> anyhow::Result<ExitCode> {
    crate::print(&Session::open(target).await?.rpc(method, params).await?);
    Ok(ExitCode::SUCCESS)
}

pub async fn app(command: AppCommand, target: &Target) -> anyhow::Result<ExitCode> {
    match command {
        AppCommand::Deploy { wasm, name, version } => {
            let bytes = std::fs::read(&wasm).with_context(|| format!("reading {}", wasm.display()))?;
            call(target, "app.deploy", deploy_params(&name, &version, &bytes)).await
        }
        AppCommand::Ls => call(target, "app.list", Value::Null).await,
    }
}

pub async fn ctx(command: CtxCommand, target: &Target) -> anyhow::Result<ExitCode> {
    match command {
        CtxCommand::Create { app, version } => {
            call(target, "ctx.create", json!({ "app": app, "version": version })).await
        }
        CtxCommand::Ls => call(target, "ctx.list", Value::Null).await,
        CtxCommand::Call(call) => call.send("ctx.call", target).await,
        CtxCommand::View(view) => view.send("ctx.view", target).await,
        CtxCommand::Root { context } => call(target, "ctx.root", json!({ "context": context })).await,
        CtxCommand::Grant { context, address, role } => {
            let params = json!({ "context": context, "address": address, "role": role });
            call(target, "ctx.grant", params).await
        }
        CtxCommand::Revoke { context, address } => {
            call(target, "ctx.revoke", json!({ "context": context, "address": address })).await
        }
        CtxCommand::Invite { context, member, seats } => {
            let params = json!({ "context": context, "member": member, "seats": seats });
            call(target, "ctx.invite", params).await
        }
        CtxCommand::Members { context } => call(target, "ctx.members", json!({ "context": context })).await,
        CtxCommand::Join { context, no_wait } => join(target, context, no_wait).await,
        CtxCommand::Leave { context } => call(target, "ctx.leave", json!({ "context": context })).await,
        CtxCommand::Status { context } => call(target, "ctx.status", json!({ "context": context })).await,
    }
}

/// How often `ctx join` asks for progress.
const PROGRESS_EVERY: Duration = Duration::from_millis(250);
/// How long `ctx join` waits for the node to be in sync, unless `--timeout` is longer.
const JOIN_WAIT: Duration = Duration::from_secs(3600);

/// `ctx.join {wait: true}`: answered once the node is in sync (or the join failed), while
/// `ctx.status` feeds a progress bar (counts and rate) on a terminal. Prints the last
/// status. With `no_wait`, the answer once a member accepted this node.
async fn join(target: &Target, context: Id, no_wait: bool) -> anyhow::Result<ExitCode> {
    let client = Session::open(target).await?;
    let params = json!({ "context": context, "wait": !no_wait });
    if no_wait {
        crate::print(&client.rpc("ctx.join", params).await?);
        return Ok(ExitCode::SUCCESS);
    }
    let patient = Target {
        timeout: target.timeout.max(JOIN_WAIT.as_secs()),
        ..target.clone()
    };
    let waiting = Session::open(&patient).await?;
    let joined = waiting.rpc("ctx.join", params);
    tokio::pin!(joined);
    let bar = indicatif::ProgressBar::new(0).with_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} {msg} [{bar:30}] {pos}/{len} transactions, {per_sec}, {elapsed}",
        )
        .context("progress bar template")?
        .progress_chars("=> "),
    );
    bar.set_message("joining");
    let status_params = json!({ "context": context });
    loop {
        tokio::select! {
            answer = &mut joined => match answer {
                Ok(status) => {
                    bar.finish_with_message("in sync");
                    crate::print(&status);
                    return Ok(ExitCode::SUCCESS);
                }
                Err(e) => {
                    bar.abandon_with_message("failed");
                    return Err(e.context(format!("joining context {context}")));
                }
            },
            _ = tokio::time::sleep(PROGRESS_EVERY) => {
                // Before the node has taken the join, it has no status yet.
                if let Ok(status) = client.rpc("ctx.status", status_params.clone()).await {
                    let count = |field: &str| status[field].as_u64().unwrap_or(0);
                    bar.set_length(count("expected").max(count("fetched")));
                    bar.set_position(count("fetched"));
                    bar.set_message(status["phase"].as_str().unwrap_or("joining").to_string());
                }
            }
        }
    }
}
