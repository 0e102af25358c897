//! `cmesh mesh up`: a local development mesh — one nats-server and N nodes (node 1 is the
//! registrar) as child processes, until Ctrl-C.
//!
//! The developer's own client key (`$CMESH_HOME/key`) is made a node admin of every node,
//! with any `--admin` addresses: node-level methods such as `ctx.join` need `role=admin`,
//! and a dev mesh its user cannot administer is no use.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::Args;
use cmesh_common::{Address, SigningKey};
use cmesh_testkit::{NatsServer, NatsSetup, Node, NodeOptions, NodeSetup};

use crate::session;

#[derive(Debug, Args)]
pub struct UpArgs {
    /// How many nodes
    #[arg(long, default_value_t = 3)]
    pub nodes: usize,
    /// Directory for the nodes' data, logs and `mesh.env`
    #[arg(long, default_value = ".mesh")]
    pub dir: PathBuf,
    /// NATS client port (0: any free port; mesh.env says which)
    #[arg(long, default_value_t = 4222)]
    pub port: u16,
    /// The nats-server binary
    #[arg(long, env = "NATS_SERVER", default_value = "nats-server")]
    pub nats_server: PathBuf,
    /// Another identity that gets role=admin on every node, besides this client's key
    /// (repeat for several; comma-separated in the env)
    #[arg(long = "admin", env = "CMESH_ADMIN", value_delimiter = ',')]
    pub admins: Vec<Address>,
}

pub fn up(args: UpArgs) -> anyhow::Result<ExitCode> {
    if args.nodes == 0 {
        bail!("a mesh needs at least one node");
    }
    std::fs::create_dir_all(&args.dir).with_context(|| format!("creating {}", args.dir.display()))?;
    let dir = args.dir.canonicalize()?;
    let admins = admins(args.admins)?;
    let nats = NatsServer::launch(NatsSetup {
        bin: args.nats_server,
        port: (args.port != 0).then_some(args.port),
        log: Some(dir.join("nats.log")),
    })?;
    let url = nats.url();
    eprintln!("nats-server on {url}");

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        // Listening from the start: a stop asked for while the nodes start is not lost.
        let mut stop = StopSignals::new()?;
        let bin = std::env::current_exe().context("finding the cmesh binary")?;
        let mut env = format!("CMESH_NATS_URL={url}\n");
        let mut nodes = Vec::with_capacity(args.nodes);
        for n in 1..=args.nodes {
            let setup = NodeSetup {
                index: n,
                bin: bin.clone(),
                nats_url: url.clone(),
                options: NodeOptions {
                    registrar: n == 1,
                    admins: admins.clone(),
                    ..NodeOptions::default()
                },
                data: dir.join(format!("node{n}")),
                log: dir.join(format!("node{n}.log")),
            };
            let node = Node::launch(setup)
                .await
                .with_context(|| format!("node {n} of the mesh"))?;
            let address = node.address();
            nodes.push(node);
            let role = if n == 1 { " (registrar)" } else { "" };
            eprintln!("node {n}: {address}{role}");
            env.push_str(&format!("NODE{n}={address}\n"));
        }
        std::fs::write(dir.join("mesh.env"), env)?;
        eprintln!(
            "mesh is up; settings in {}; Ctrl-C stops it",
            dir.join("mesh.env").display()
        );

        stop.wait().await;
        eprintln!("stopping the mesh");
        // Nodes first (newest first), then nats-server (dropped after this block).
        while let Some(mut node) = nodes.pop() {
            if let Err(e) = node.try_stop_with(nix::sys::signal::Signal::SIGTERM).await {
                eprintln!("{:#}", anyhow::Error::from(e));
            }
        }
        let _ = std::fs::remove_file(dir.join("mesh.env"));
        anyhow::Ok(())
    })?;
    drop(nats);
    Ok(ExitCode::SUCCESS)
}

/// This client's key (if it has one) and the `--admin` addresses, once each.
fn admins(extra: Vec<Address>) -> anyhow::Result<Vec<Address>> {
    let path = session::key_path();
    let mut admins = Vec::new();
    if path.exists() {
        let key = SigningKey::load(&path).with_context(|| format!("reading the client key {}", path.display()))?;
        eprintln!(
            "node admin: {} (the client key in {})",
            key.address().to_eip55(),
            path.display()
        );
        admins.push(key.address());
    } else {
        eprintln!(
            "no client key at {}, so it is no node admin: `cmesh key new` makes one (then restart the mesh)",
            path.display()
        );
    }
    for address in extra {
        if !admins.contains(&address) {
            eprintln!("node admin: {} (--admin)", address.to_eip55());
            admins.push(address);
        }
    }
    Ok(admins)
}

/// SIGINT (Ctrl-C) and SIGTERM (`scripts/down`, a test).
struct StopSignals {
    terminate: tokio::signal::unix::Signal,
    interrupt: tokio::signal::unix::Signal,
}

impl StopSignals {
    fn new() -> std::io::Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(StopSignals {
            terminate: signal(SignalKind::terminate())?,
            interrupt: signal(SignalKind::interrupt())?,
        })
    }

    async fn wait(&mut self) {
        tokio::select! {
            _ = self.terminate.recv() => {},
            _ = self.interrupt.recv() => {},
        }
    }
}
