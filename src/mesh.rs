//! `cmesh mesh up`: a local development mesh — one nats-server and N nodes (node 1 is the
//! registrar) as child processes, until Ctrl-C.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;

use crate::node::parse_ready_line;

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

/// Children are killed when this is dropped, whatever happens.
struct Children(Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for child in self.0.iter_mut().rev() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        for child in self.0.iter_mut().rev() {
            let _ = child.wait();
        }
    }
}

const READY_TIMEOUT: Duration = Duration::from_secs(30);

pub fn up(args: UpArgs) -> anyhow::Result<ExitCode> {
    if args.nodes == 0 {
        bail!("a mesh needs at least one node");
    }
    std::fs::create_dir_all(&args.dir).with_context(|| format!("creating {}", args.dir.display()))?;
    let dir = args.dir.canonicalize()?;
    let mut children = Children(Vec::new());
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
    children.0.push(nats);
    let url = format!("nats://127.0.0.1:{}", args.port);
    eprintln!("nats-server on {url}");

    let exe = std::env::current_exe().context("finding the cmesh binary")?;
    let mut env = format!("CMESH_NATS_URL={url}\n");
    for n in 1..=args.nodes {
        let data = dir.join(format!("node{n}"));
        let log = std::fs::File::create(dir.join(format!("node{n}.log")))?;
        let mut command = Command::new(&exe);
        command.args(["node", "run", "--nats", &url, "--data"]).arg(&data);
        if n == 1 {
            command.arg("--registrar");
        }
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .context("starting a node")?;
        let stdout = child.stdout.take().context("node stdout")?;
        children.0.push(child);
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(address) = parse_ready_line(&line) {
                    let _ = tx.send(address);
                }
            }
        });
        let address = rx.recv_timeout(READY_TIMEOUT).with_context(|| {
            format!(
                "node {n} did not get ready; see {}",
                dir.join(format!("node{n}.log")).display()
            )
        })?;
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
    drop(children);
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
