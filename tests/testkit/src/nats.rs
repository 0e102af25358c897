//! A real `nats-server` on 127.0.0.1, for the tests (a port the OS picks) and for
//! `cmesh mesh up` (the port the developer asks for, its log in a file).
//!
//! Readiness is read from the server's own log line, not guessed with a sleep: a server
//! that cannot listen (the port is taken) fails here, not in every node after it.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// How long a server may take to say it is ready.
const READY_TIMEOUT: Duration = Duration::from_secs(20);

#[derive(Debug, thiserror::Error)]
pub enum NatsError {
    #[error("starting {bin} (install it with scripts/up or apt-get install nats-server)")]
    Spawn {
        bin: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("creating the nats-server log {path}")]
    Log {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("a temp dir for nats-server's store")]
    Store(#[source] std::io::Error),
    #[error("nats-server {0}")]
    NotReady(String),
}

/// How to start a server: which binary, which port, where its log goes.
#[derive(Debug, Clone)]
pub struct NatsSetup {
    pub bin: PathBuf,
    /// `None`: a port the OS picks.
    pub port: Option<u16>,
    /// `None`: the log is read for the ready line and otherwise dropped.
    pub log: Option<PathBuf>,
}

impl Default for NatsSetup {
    fn default() -> Self {
        NatsSetup {
            bin: nats_server_bin(),
            port: None,
            log: None,
        }
    }
}

/// A running nats-server; killed when dropped.
pub struct NatsServer {
    child: Option<Child>,
    port: u16,
    setup: NatsSetup,
    store: tempfile::TempDir,
}

/// The nats-server binary: `$NATS_SERVER` or `nats-server` on the PATH.
pub fn nats_server_bin() -> PathBuf {
    std::env::var_os("NATS_SERVER")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("nats-server"))
}

impl NatsServer {
    /// Starts a server on a port the OS picks; panics (failing the test) if it cannot.
    pub fn start() -> Self {
        NatsServer::launch(NatsSetup::default()).unwrap_or_else(|e| panic!("{}", crate::error_chain(&e)))
    }

    /// Starts a server as `setup` says and waits until it listens.
    pub fn launch(setup: NatsSetup) -> Result<Self, NatsError> {
        let store = tempfile::tempdir().map_err(NatsError::Store)?;
        let (child, port) = spawn(&setup, setup.port, &store)?;
        Ok(NatsServer {
            child: Some(child),
            port,
            setup,
            store,
        })
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kills the server (clients see the connection drop).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port, as after an operator's restart.
    pub fn restart(&mut self) {
        self.stop();
        let (child, _) = spawn(&self.setup, Some(self.port), &self.store)
            .unwrap_or_else(|e| panic!("restarting nats-server: {}", crate::error_chain(&e)));
        self.child = Some(child);
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn spawn(setup: &NatsSetup, port: Option<u16>, store: &tempfile::TempDir) -> Result<(Child, u16), NatsError> {
    let mut log = match &setup.log {
        Some(path) => Some(File::create(path).map_err(|source| NatsError::Log {
            path: path.clone(),
            source,
        })?),
        None => None,
    };
    let port_arg = port.map(|p| p.to_string()).unwrap_or_else(|| "-1".to_string());
    let mut child = Command::new(&setup.bin)
        .args(["-a", "127.0.0.1", "-p", &port_arg, "--store_dir"])
        .arg(store.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| NatsError::Spawn {
            bin: setup.bin.clone(),
            source,
        })?;
    let Some(stderr) = child.stderr.take() else {
        let _ = child.kill();
        return Err(NatsError::NotReady("has no stderr to read".into()));
    };
    let (tx, rx) = mpsc::channel();
    // Reads the listening line, copies every line to the log, and keeps draining stderr
    // so the server never blocks on it.
    std::thread::spawn(move || {
        let mut sent = false;
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(file) = log.as_mut() {
                let _ = writeln!(file, "{line}");
            }
            if !sent {
                if let Some(found) = listening_port(&line) {
                    let _ = tx.send(Ok(found));
                    sent = true;
                } else if line.contains("[FTL]") || line.contains("[ERR]") {
                    let _ = tx.send(Err(line));
                    sent = true;
                }
            }
        }
    });
    let outcome = match rx.recv_timeout(READY_TIMEOUT) {
        Ok(Ok(port)) => return Ok((child, port)),
        Ok(Err(line)) => format!("failed: {line}"),
        Err(mpsc::RecvTimeoutError::Timeout) => format!("did not report its client port within {READY_TIMEOUT:?}"),
        Err(mpsc::RecvTimeoutError::Disconnected) => "exited before it listened".to_string(),
    };
    let _ = child.kill();
    let _ = child.wait();
    Err(NatsError::NotReady(outcome))
}

/// Parses "Listening for client connections on 127.0.0.1:4222".
fn listening_port(line: &str) -> Option<u16> {
    let (_, rest) = line.split_once("Listening for client connections on ")?;
    rest.trim().rsplit(':').next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_listening_line() {
        let line = "[1] 2026/01/01 00:00:00.000000 [INF] Listening for client connections on 127.0.0.1:39123";
        assert_eq!(listening_port(line), Some(39123));
        assert_eq!(listening_port("[INF] Server is ready"), None);
    }

    #[test]
    fn starts_and_restarts_on_the_same_port() {
        let mut server = NatsServer::start();
        let port = server.port();
        assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
        server.restart();
        assert_eq!(server.port(), port);
        assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
    }

    #[test]
    fn a_taken_port_is_an_error_and_the_log_is_kept() {
        let first = NatsServer::start();
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("nats.log");
        let second = NatsServer::launch(NatsSetup {
            port: Some(first.port()),
            log: Some(log.clone()),
            ..NatsSetup::default()
        });
        assert!(second.is_err(), "a second server on port {}", first.port());
        let text = std::fs::read_to_string(&log).expect("the log");
        assert!(!text.is_empty(), "the log of the failed server is empty");
    }
}
