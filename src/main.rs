//! `cmesh`: run a node of the mesh, or talk to one.

mod apps;
mod config;
mod logging;
mod mesh;
mod migrate;
mod node;
mod session;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use cmesh_common::{Address, Method, SigningKey};
use futures::StreamExt;
use serde_json::{json, Value};

use crate::config::{NodeArgs, NodeConfig};
use crate::session::{Session, Target};

/// mimalloc rather than the system allocator: a node allocates and frees many small,
/// short-lived buffers per request on several threads, where glibc's malloc spends a
/// tenth of the node's time (consolidating free lists); see docs/BENCHMARKS.md.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A node of an authenticated-by-default, decentralized mesh on NATS, and its client.
///
/// Clients address functions by FQMN (e.g. `I:whoami`, `R:hello.mcom:["Dexter"]`) or
/// JSON-RPC over NATS; every request but login needs a token (`cmesh login`).
#[derive(Parser)]
#[command(name = "cmesh", version, propagate_version = true)]
struct Cli {
    /// Log format on stderr (level with RUST_LOG, e.g. RUST_LOG=debug)
    #[arg(long, env = "CMESH_LOG_FORMAT", value_enum, default_value_t = logging::Format::Plain, global = true)]
    log_format: logging::Format,
    #[command(flatten)]
    target: Target,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a node (on the NATS server of --nats)
    #[command(subcommand)]
    Node(NodeCommand),
    /// Manage this client's key (in $CMESH_HOME, default ~/.cmesh)
    #[command(subcommand)]
    Key(KeyCommand),
    /// Log in to the mesh with this client's key; later commands use the token
    Login,
    /// Send an FQMN request and print the answer
    Fqmn {
        /// e.g. `I:whoami`, `R:hello.mcom`, `EW:chat:{"m":1}`, `0Rx:hello.mcom:["Dexter"]`
        fqmn: String,
        /// Ask for a MessagePack reply (printed as JSON)
        #[arg(long)]
        msgpack: bool,
    },
    /// Call a JSON-RPC method and print its result (`--help` lists the methods)
    #[command(after_long_help = methods_help())]
    Rpc {
        /// e.g. `iam.whoami`, `registrar.list`
        method: String,
        /// Params as JSON, e.g. '{"name":"hello.mcom"}'
        params: Option<String>,
    },
    /// Register, resolve, transfer, release and list names
    #[command(subcommand)]
    Name(NameCommand),
    /// Deploy and list WASM apps
    #[command(subcommand)]
    App(apps::AppCommand),
    /// Create, list, call and administer contexts (instances of apps)
    #[command(subcommand)]
    Ctx(apps::CtxCommand),
    /// Watch events
    #[command(subcommand)]
    Events(EventsCommand),
    /// Check a node's audit trail
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Make a mesh (genesis), run a local one, and admit or remove its nodes
    #[command(subcommand)]
    Mesh(MeshCommand),
    /// Measure the node against a raw NATS baseline
    #[command(subcommand)]
    Bench(cmesh_bench::BenchCommand),
}

#[derive(Subcommand)]
enum NodeCommand {
    /// Run a node until SIGINT/SIGTERM; prints `cmesh node <address> ready` when serving
    Run(NodeArgs),
}

#[derive(Subcommand)]
enum KeyCommand {
    /// Create a new secp256k1 key (refuses to overwrite one without --force)
    New {
        #[arg(long)]
        force: bool,
    },
    /// Print this client's address
    Show,
}

#[derive(Subcommand)]
enum NameCommand {
    /// Register a name (label.tld) pointing at a target FQMN
    Register {
        name: String,
        /// e.g. `I:whoami` or `S:0x…:hello_world`
        target: String,
    },
    /// Show a name's owner and target
    Resolve { name: String },
    /// Give a name to another address (owner only)
    Transfer { name: String, to: Address },
    /// Release a name (owner only)
    Release { name: String },
    /// List names, all or one owner's
    Ls {
        #[arg(long)]
        owner: Option<Address>,
    },
}

#[derive(Subcommand)]
enum EventsCommand {
    /// Print events as they happen (one JSON line each)
    Tail {
        /// NATS subject pattern
        #[arg(default_value = "cmesh.events.>")]
        pattern: String,
        /// Stop after this many events
        #[arg(long)]
        count: Option<usize>,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Verify the hash chain of a (stopped) node's audit trail; exits 1 on any break
    Verify {
        /// The node's data directory
        #[arg(long, env = "CMESH_DATA")]
        data: PathBuf,
    },
}

#[derive(Subcommand)]
enum MeshCommand {
    /// Write the genesis of a new mesh and the keys of its first voters
    Init(mesh::InitArgs),
    /// Start a local nats-server and N nodes (the voters of one genesis) until Ctrl-C
    Up(mesh::UpArgs),
    #[command(flatten)]
    Admission(mesh::AdmissionCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_level = match cli.command {
        Command::Node(_) | Command::Mesh(MeshCommand::Init(_) | MeshCommand::Up(_)) => "info",
        _ => "warn",
    };
    logging::init(cli.log_format, default_level);
    match run(cli.command, &cli.target) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

fn print(value: &Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
    );
}

fn run(command: Command, target: &Target) -> anyhow::Result<ExitCode> {
    match command {
        Command::Node(NodeCommand::Run(args)) => {
            node::run(NodeConfig::resolve(args, target.nats_url.clone())?)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Key(KeyCommand::New { force }) => {
            let path = session::key_path();
            if path.exists() && !force {
                anyhow::bail!("a key exists at {}; use --force to replace it", path.display());
            }
            let key = SigningKey::generate()?;
            key.save(&path)?;
            println!("{}", key.address().to_eip55());
            Ok(ExitCode::SUCCESS)
        }
        Command::Key(KeyCommand::Show) => {
            println!("{}", session::load_key()?.address().to_eip55());
            Ok(ExitCode::SUCCESS)
        }
        Command::Login => runtime()?.block_on(async {
            let key = session::load_key()?;
            let saved = Session::open(target).await?.login(&key).await?;
            println!(
                "logged in as {} until {}",
                saved.address.to_eip55(),
                format_time(saved.expires_at)
            );
            Ok(ExitCode::SUCCESS)
        }),
        Command::Fqmn { fqmn, msgpack } => runtime()?.block_on(async {
            let reply = Session::open(target).await?.fqmn(&fqmn, msgpack).await?;
            let ok = (200..300).contains(&reply.status);
            print(&reply.body);
            Ok(if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }),
        Command::Rpc { method, params } => runtime()?.block_on(async {
            let params = match params {
                Some(text) => serde_json::from_str(&text).context("params must be JSON")?,
                None => Value::Null,
            };
            print(&Session::open(target).await?.rpc(&method, params).await?);
            Ok(ExitCode::SUCCESS)
        }),
        Command::Name(command) => runtime()?.block_on(name(command, target)),
        Command::App(command) => runtime()?.block_on(apps::app(command, target)),
        Command::Ctx(command) => runtime()?.block_on(apps::ctx(command, target)),
        Command::Events(EventsCommand::Tail { pattern, count }) => runtime()?.block_on(async {
            let session = Session::open(target).await?;
            let mut subscriber = session.nats().subscribe(pattern).await?;
            let mut seen = 0;
            while let Some(message) = subscriber.next().await {
                let payload = String::from_utf8_lossy(&message.payload);
                println!("{} {}", message.subject, payload);
                seen += 1;
                if count.is_some_and(|c| seen >= c) {
                    break;
                }
            }
            Ok(ExitCode::SUCCESS)
        }),
        Command::Audit(AuditCommand::Verify { data }) => {
            let path = data.join(cmesh_events::AUDIT_FILE);
            match cmesh_events::verify_chain(&path) {
                Ok(report) => {
                    println!(
                        "audit chain of {} is intact: {} entries, head {}",
                        path.display(),
                        report.entries,
                        cmesh_common::hash::to_hex0x(&report.head_hash)
                    );
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    eprintln!("audit chain of {} is BROKEN: {e}", path.display());
                    Ok(ExitCode::FAILURE)
                }
            }
        }
        Command::Mesh(MeshCommand::Init(args)) => mesh::init(args),
        Command::Mesh(MeshCommand::Up(args)) => mesh::up(args),
        Command::Mesh(MeshCommand::Admission(command)) => runtime()?.block_on(async {
            let (method, params) = command.request();
            print(&Session::open(target).await?.rpc(method, params).await?);
            Ok(ExitCode::SUCCESS)
        }),
        Command::Bench(command) => cmesh_bench::run(command, target.nats_url()),
    }
}

async fn name(command: NameCommand, target: &Target) -> anyhow::Result<ExitCode> {
    let (method, params) = match command {
        NameCommand::Register { name, target } => ("registrar.register", json!({ "name": name, "target": target })),
        NameCommand::Resolve { name } => ("registrar.resolve", json!({ "name": name })),
        NameCommand::Transfer { name, to } => ("registrar.transfer", json!({ "name": name, "to": to })),
        NameCommand::Release { name } => ("registrar.release", json!({ "name": name })),
        NameCommand::Ls { owner } => ("registrar.list", json!({ "owner": owner })),
    };
    print(&Session::open(target).await?.rpc(method, params).await?);
    Ok(ExitCode::SUCCESS)
}

/// The node's methods with their params and default permission, from the method table.
fn methods_help() -> String {
    let width = Method::ALL.iter().map(|m| m.name().len()).max().unwrap_or(0);
    let mut help = String::from("Methods (params; who may call them unless the node's config says otherwise):\n");
    for method in Method::ALL {
        help.push_str(&format!(
            "  {:width$}  {}; {}\n",
            method.name(),
            method.params(),
            method.default_permission()
        ));
    }
    help
}

fn format_time(unix: u64) -> String {
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_secs(unix)).to_string()
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn every_command_line_is_well_formed() {
        // clap checks names, flags and conflicts of every subcommand only when it is
        // parsed; this checks them all at once.
        super::Cli::command().debug_assert();
    }

    #[test]
    fn rpc_help_lists_every_method_of_the_table() {
        let help = super::Cli::command()
            .find_subcommand_mut("rpc")
            .expect("rpc")
            .render_long_help()
            .to_string();
        for method in cmesh_common::Method::ALL {
            assert!(help.contains(method.name()), "{} missing from:\n{help}", method.name());
        }
    }
}
