//! `cmesh mesh init`: the genesis of a new mesh and its first voters' keys.
//!
//! `cmesh mesh up`: a local development mesh — one nats-server and N nodes of one
//! genesis (kept in the mesh's directory across runs), as child processes, until Ctrl-C.
//! The first three are its voters; more nodes join as learners (replicas that do not
//! vote), which `mesh up` admits itself with the mesh admin's key: a mesh does not get
//! safer with more voters, only slower to commit.
//!
//! The developer's own client key (`$CMESH_HOME/key`) is made a node admin of every node,
//! with any `--admin` addresses: node-level methods such as `ctx.join` need `role=admin`,
//! and a dev mesh its user cannot administer is no use.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::Args;
use cmesh_common::genesis::Genesis;
use cmesh_common::{Address, SigningKey};
use cmesh_testkit::{
    node_key, write_genesis, Client, ClientError, NatsServer, NatsSetup, Node, NodeOptions, NodeSetup,
};

use crate::session;

#[derive(Debug, Args)]
pub struct InitArgs {
    /// Directory for `genesis.json` and the voters' data dirs `node1`, `node2`, …
    #[arg(long, default_value = ".")]
    pub dir: PathBuf,
    /// The mesh's name
    #[arg(long, default_value = "cmesh")]
    pub name: String,
    /// How many voters (each gets a data dir with its node key)
    #[arg(long, default_value_t = 3)]
    pub voters: usize,
    /// A mesh admin (repeat for several). Without any: this client's key, or else a new
    /// key written to `<dir>/admin.key`
    #[arg(long = "admin", env = "CMESH_ADMIN", value_delimiter = ',')]
    pub admins: Vec<Address>,
    /// If `<dir>/genesis.json` exists, leave it as it is and succeed (for scripts and
    /// containers that run this on every start)
    #[arg(long)]
    pub keep: bool,
}

/// Writes `<dir>/genesis.json` with voters `<dir>/node1..N` (keys made where missing).
fn write_mesh(dir: &std::path::Path, name: &str, voters: usize, admins: Vec<Address>) -> anyhow::Result<Genesis> {
    let mut admins = admins;
    if admins.is_empty() {
        // A genesis needs an admin; without a client key, one is made here.
        let path = dir.join("admin.key");
        let (key, _) = SigningKey::load_or_create(&path)
            .with_context(|| format!("creating a mesh admin key {}", path.display()))?;
        eprintln!("mesh admin: {} (key in {})", key.address().to_eip55(), path.display());
        admins.push(key.address());
    }
    let data: Vec<PathBuf> = (1..=voters).map(|n| dir.join(format!("node{n}"))).collect();
    let data: Vec<&std::path::Path> = data.iter().map(PathBuf::as_path).collect();
    Ok(write_genesis(&dir.join("genesis.json"), name, admins, &data)?)
}

pub fn init(args: InitArgs) -> anyhow::Result<ExitCode> {
    if args.voters == 0 {
        bail!("a mesh needs at least one voter");
    }
    let path = args.dir.join("genesis.json");
    if path.exists() {
        if args.keep {
            let genesis = Genesis::load(&path)?;
            eprintln!(
                "{} exists (mesh {}, {}): kept",
                path.display(),
                genesis.mesh,
                genesis.mesh_id()
            );
            return Ok(ExitCode::SUCCESS);
        }
        bail!(
            "{} exists: a mesh is made once; remove it to start another mesh, or pass --keep",
            path.display()
        );
    }
    std::fs::create_dir_all(&args.dir).with_context(|| format!("creating {}", args.dir.display()))?;
    let admins = if args.admins.is_empty() {
        admins(Vec::new())?
    } else {
        args.admins
    };
    let genesis = write_mesh(&args.dir, &args.name, args.voters, admins)?;
    eprintln!("mesh {} ({}): {}", genesis.mesh, genesis.mesh_id(), path.display());
    for (n, voter) in genesis.voters.iter().enumerate() {
        let data = args.dir.join(format!("node{}", n + 1));
        eprintln!(
            "voter {}: {voter}: cmesh node run --data {} --genesis {}",
            n + 1,
            data.display(),
            path.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `cmesh mesh nodes|admit|remove`: the mesh registry's admitted nodes, through a node.
#[derive(Debug, clap::Subcommand)]
pub enum AdmissionCommand {
    /// List the admitted nodes and their roles
    Nodes,
    /// Admit a node, or change its role (mesh admins only)
    Admit {
        /// The node's address (its ready line says it). Named `address` here: `--node`
        /// is cmesh's own flag for the node to send through.
        #[arg(value_name = "NODE")]
        address: Address,
        /// voter (a Raft voter), learner (a replica), member (a peer without a replica)
        #[arg(long, default_value = "learner")]
        role: String,
    },
    /// Remove a node: it stops being a peer as soon as the removal commits (mesh admins only)
    Remove {
        #[arg(value_name = "NODE")]
        address: Address,
    },
}

impl AdmissionCommand {
    /// The JSON-RPC method and params.
    pub fn request(self) -> (&'static str, serde_json::Value) {
        match self {
            AdmissionCommand::Nodes => ("mesh.nodes", serde_json::json!({})),
            AdmissionCommand::Admit { address, role } => {
                ("mesh.admit", serde_json::json!({ "node": address, "role": role }))
            }
            AdmissionCommand::Remove { address } => ("mesh.remove", serde_json::json!({ "node": address })),
        }
    }
}

/// Voters of a genesis `mesh up` writes; further nodes are learners.
const UP_VOTERS: usize = 3;

#[derive(Debug, Args)]
pub struct UpArgs {
    /// How many nodes: the first 3 are the mesh's voters, any more join as learners
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
        let genesis = dir.join("genesis.json");
        let data = |n: usize| dir.join(format!("node{n}"));
        if !genesis.exists() {
            write_mesh(&dir, "dev", args.nodes.min(UP_VOTERS), admins.clone())?;
        }
        let genesis_text = Genesis::load(&genesis)?;
        eprintln!(
            "mesh {} ({}): genesis {}",
            genesis_text.mesh,
            genesis_text.mesh_id(),
            genesis.display()
        );
        env.push_str(&format!("CMESH_GENESIS={}\n", genesis.display()));
        let mut nodes = Vec::with_capacity(args.nodes);
        for n in 1..=args.nodes {
            let setup = NodeSetup {
                index: n,
                bin: bin.clone(),
                nats_url: url.clone(),
                options: NodeOptions {
                    genesis: Some(genesis.clone()),
                    admins: admins.clone(),
                    ..NodeOptions::default()
                },
                data: data(n),
                log: dir.join(format!("node{n}.log")),
            };
            let own = node_key(&data(n))?.address();
            let voter = genesis_text.voters.contains(&own);
            if !voter {
                let first = nodes.first().map(Node::address);
                admit_learner(&dir, &url, first, own).await?;
            }
            let node = Node::launch(setup)
                .await
                .with_context(|| format!("node {n} of the mesh"))?;
            let address = node.address();
            nodes.push(node);
            eprintln!("node {n}: {address} ({})", if voter { "voter" } else { "learner" });
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

/// Has `node` admitted as a learner through the node `through`, with the key of a mesh
/// admin that `mesh up` has: the client key, else the `admin.key` a genesis got.
async fn admit_learner(
    dir: &std::path::Path,
    url: &str,
    through: Option<Address>,
    node: Address,
) -> anyhow::Result<()> {
    let through = through.context("a learner needs a voter started before it")?;
    let genesis = Genesis::load(&dir.join("genesis.json"))?;
    let keys = [session::key_path(), dir.join("admin.key")];
    let Some(admin) = keys
        .iter()
        .filter(|path| path.exists())
        .filter_map(|path| SigningKey::load(path).ok())
        .find(|key| genesis.admins.contains(&key.address()))
    else {
        eprintln!("no mesh admin key here to admit {node}: it starts as no peer until a mesh admin runs `cmesh mesh admit {node}`");
        return Ok(());
    };
    let client = Client::try_connect(url, "cmesh-mesh-up").await?;
    let params = serde_json::json!({ "node": node, "role": "learner" });
    let deadline = std::time::Instant::now() + ADMIT_WITHIN;
    loop {
        let attempt = async {
            let token = client.try_login(&admin, through).await?.token;
            client
                .try_call(through, "mesh.admit", params.clone(), Some(&token))
                .await
        };
        match attempt.await {
            Ok(_) => return Ok(()),
            // The voters are still electing their first leader.
            Err(ClientError::Rpc { status: 503, .. }) if std::time::Instant::now() < deadline => {
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
            Err(e) => return Err(anyhow::Error::from(e).context(format!("admitting {node} as a learner"))),
        }
    }
}

/// How long `mesh up` waits for the voters to elect, to admit its learners.
const ADMIT_WITHIN: std::time::Duration = std::time::Duration::from_secs(30);

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
