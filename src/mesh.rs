//! `cmesh mesh up`: a local development mesh — one nats-server and N nodes (node 1 is the
//! registrar) as child processes, until Ctrl-C.

use std::path::PathBuf;
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;

use crate::child::{stop_child, ChildNode};

#[derive(Debug, Args)]
pub struct UpArgs {
    /// How many nodes
    #[arg(long, default_value_t = 3)]
    pub nodes: usize,
    /// Directory for the nodes' data, logs and `mesh.env`
    #[arg(long, default_value = ".mesh")]
    pub dir: PathBuf,
    /// NATS client port [default: 4222]
    #[arg(long, default_value_t = 4222)]
    pub port: u16,
    /// The nats-server binary
    #[arg(long, env = "NATS_SERVER", default_value = "nats-server")]
    pub nats_server: PathBuf,
}

/// nats-server, stopped when dropped: after the nodes, which are declared later and so
/// dropped first.
struct NatsServer(Child);

impl Drop for NatsServer {
    fn drop(&mut self) {
        stop_child(&mut self.0);
    }
}

const READY_TIMEOUT: Duration = Duration::from_secs(30);

pub fn up(args: UpArgs) -> anyhow::Result<ExitCode> {
    if args.nodes == 0 {
        bail!("a mesh needs at least one node");
    }
    std::fs::create_dir_all(&args.dir).with_context(|| format!("creating {}", args.dir.display()))?;
    let dir = args.dir.canonicalize()?;
    let nats_log = std::fs::File::create(dir.join("nats.log"))?;
    let nats = Command::new(&args.nats_server)
        .args(["-a", "127.0.0.1", "-p", &args.port.to_string()])
        .stdout(Stdio::null())
        .stderr(nats_log)
        .spawn()
        .with_context(|| {
            format!(
                "starting {} (install it with scripts/up or apt-get install nats-server)",
                args.nats_server.display()
            )
        })?;
    let _nats = NatsServer(nats);
    let url = format!("nats://127.0.0.1:{}", args.port);
    eprintln!("nats-server on {url}");

    let mut env = format!("CMESH_NATS_URL={url}\n");
    let mut nodes = Vec::with_capacity(args.nodes);
    for n in 1..=args.nodes {
        let (data, log) = (dir.join(format!("node{n}")), dir.join(format!("node{n}.log")));
        let node = ChildNode::start(&url, &data, n == 1, &[], &log, READY_TIMEOUT)
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

    wait_for_ctrl_c()?;
    eprintln!("stopping the mesh");
    // Nodes first (newest first), then nats-server.
    while let Some(node) = nodes.pop() {
        drop(node);
    }
    let _ = std::fs::remove_file(dir.join("mesh.env"));
    Ok(ExitCode::SUCCESS)
}

fn wait_for_ctrl_c() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        use tokio::signal::unix::{signal, SignalKind};
        let mut terminate = signal(SignalKind::terminate())?;
        let mut interrupt = signal(SignalKind::interrupt())?;
        tokio::select! {
            _ = terminate.recv() => {},
            _ = interrupt.recv() => {},
        }
        Ok::<_, std::io::Error>(())
    })?;
    Ok(())
}
