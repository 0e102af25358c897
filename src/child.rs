//! `cmesh node run` as a child process, for `cmesh mesh up` and `cmesh bench`: its log goes
//! to a file, it is ready when it prints its ready line, and it is stopped (SIGTERM, then
//! SIGKILL if it lingers) when dropped, whatever happened.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};
use cmesh_common::Address;

use crate::node::parse_ready_line;

/// How long a stopping child may take after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

pub struct ChildNode {
    child: Child,
    address: Address,
}

impl ChildNode {
    /// Starts a node on `data` (with `extra` arguments of `cmesh node run`) and waits
    /// (blocking) for its ready line.
    pub fn start(
        nats_url: &str,
        data: &Path,
        registrar: bool,
        extra: &[String],
        log: &Path,
        ready: Duration,
    ) -> anyhow::Result<Self> {
        let exe = std::env::current_exe().context("finding the cmesh binary")?;
        let log_file = std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let mut command = Command::new(exe);
        command.args(["node", "run", "--nats", nats_url, "--data"]).arg(data);
        if registrar {
            command.arg("--registrar");
        }
        command.args(extra);
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log_file)
            .spawn()
            .context("starting a node")?;
        let Some(stdout) = child.stdout.take() else {
            stop_child(&mut child);
            return Err(anyhow!("the node's stdout is not piped"));
        };
        let (tx, rx) = mpsc::channel();
        // Reads the ready line, then keeps draining stdout so the node never blocks on it.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(address) = parse_ready_line(&line) {
                    let _ = tx.send(address);
                }
            }
        });
        match rx.recv_timeout(ready) {
            Ok(address) => Ok(ChildNode { child, address }),
            Err(e) => {
                stop_child(&mut child);
                let why = match e {
                    mpsc::RecvTimeoutError::Timeout => "did not get ready in time",
                    mpsc::RecvTimeoutError::Disconnected => "exited before it was ready",
                };
                Err(anyhow!("the node {why}; see {}", log.display()))
            }
        }
    }

    pub fn address(&self) -> Address {
        self.address
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for ChildNode {
    fn drop(&mut self) {
        stop_child(&mut self.child);
    }
}

/// SIGTERM, then wait for a clean stop; SIGKILL if it takes too long.
pub fn stop_child(child: &mut Child) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    if let Err(e) = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM) {
        tracing::warn!(error = %e, "could not send SIGTERM to a child process");
    }
    let deadline = Instant::now() + STOP_TIMEOUT;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => return,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            _ => {
                tracing::warn!("a child process did not stop after SIGTERM; killing it");
                let _ = child.kill();
                let _ = child.wait();
                return;
            }
        }
    }
}
