//! The baseline of `bench consensus`: a JetStream KV bucket with 3 replicas on a cluster
//! of 3 nats-servers that the bench starts itself (from `$NATS_SERVER` or `nats-server`
//! on the PATH), on 127.0.0.1 with free ports, each with its own store under the bench's
//! temp dir. JetStream replicates a stream with its own Raft over the servers' routes:
//! the same job (a quorum-acknowledged, replicated, create-if-absent write) done by the
//! NATS project itself, on the same machine in the same minute.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use async_nats::jetstream::{self, kv, stream};

use crate::connect;

/// Servers in the cluster; the bucket has as many replicas.
pub(super) const SERVERS: usize = 3;
/// JetStream needs a meta leader before a bucket can be made.
const BUCKET_LIMIT: Duration = Duration::from_secs(20);
/// How long a server may take to accept clients.
const LISTEN_LIMIT: Duration = Duration::from_secs(10);
pub(super) const BUCKET: &str = "cmesh_bench";

/// The running servers; dropping this kills them (also on an error or Ctrl-C).
pub(super) struct NatsCluster {
    servers: Vec<Server>,
}

struct Server {
    child: Child,
    url: String,
    log: PathBuf,
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for server in &mut self.servers {
            if let Err(error) = server.child.kill() {
                tracing::debug!(%error, "nats-server already gone");
            }
            let _ = server.child.wait();
        }
    }
}

/// Ports that were free a moment ago: all bound at once (so they differ), then released.
fn free_ports(count: usize) -> anyhow::Result<Vec<u16>> {
    let listeners = (0..count)
        .map(|_| TcpListener::bind("127.0.0.1:0").context("finding a free port"))
        .collect::<anyhow::Result<Vec<_>>>()?;
    listeners
        .iter()
        .map(|l| Ok(l.local_addr().context("reading a free port")?.port()))
        .collect()
}

impl NatsCluster {
    /// Starts the servers under `dir` and waits until each takes clients.
    pub(super) async fn start(dir: &Path, name: &str) -> anyhow::Result<NatsCluster> {
        let bin = std::env::var_os("NATS_SERVER").unwrap_or_else(|| "nats-server".into());
        let ports = free_ports(2 * SERVERS)?;
        let (client_ports, cluster_ports) = ports.split_at(SERVERS);
        let mut cluster = NatsCluster { servers: Vec::new() };
        for i in 0..SERVERS {
            let routes: Vec<String> = (0..SERVERS)
                .filter(|&j| j != i)
                .map(|j| format!("nats://127.0.0.1:{}", cluster_ports[j]))
                .collect();
            let store = dir.join(format!("js{i}"));
            let log = dir.join(format!("js{i}.log"));
            let out = std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
            let err = out.try_clone().context("sharing the nats-server log")?;
            let child = Command::new(&bin)
                .args(["-a", "127.0.0.1", "-p", &client_ports[i].to_string()])
                .args(["-n", &format!("{name}-{i}"), "-js", "-sd"])
                .arg(&store)
                .args(["--cluster_name", name])
                .args(["--cluster", &format!("nats://127.0.0.1:{}", cluster_ports[i])])
                .args(["--routes", &routes.join(",")])
                .stdin(Stdio::null())
                .stdout(out)
                .stderr(err)
                .spawn()
                .with_context(|| {
                    format!(
                        "starting {} (set NATS_SERVER to its path if it is not on the PATH)",
                        bin.to_string_lossy()
                    )
                })?;
            cluster.servers.push(Server {
                child,
                url: format!("nats://127.0.0.1:{}", client_ports[i]),
                log,
            });
        }
        for i in 0..SERVERS {
            cluster.wait_listening(i).await?;
        }
        Ok(cluster)
    }

    async fn wait_listening(&mut self, i: usize) -> anyhow::Result<()> {
        let deadline = Instant::now() + LISTEN_LIMIT;
        loop {
            self.check_running(i)?;
            let addr = self.servers[i].url.trim_start_matches("nats://").to_string();
            if tokio::net::TcpStream::connect(&addr).await.is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "nats-server {i} took no connection within {LISTEN_LIMIT:?}; its log: {}",
                    self.servers[i].log.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn check_running(&mut self, i: usize) -> anyhow::Result<()> {
        let server = &mut self.servers[i];
        if let Some(status) = server.child.try_wait().context("watching a nats-server")? {
            bail!("nats-server {i} exited ({status}); its log: {}", server.log.display());
        }
        Ok(())
    }

    pub(super) fn urls(&self) -> Vec<String> {
        self.servers.iter().map(|s| s.url.clone()).collect()
    }

    pub(super) fn pids(&self) -> Vec<u32> {
        self.servers.iter().map(|s| s.child.id()).collect()
    }

    /// One bucket handle per server (each on its own connection). The bucket is made
    /// through the first, retried until JetStream has a meta leader.
    pub(super) async fn buckets(&mut self) -> anyhow::Result<Vec<kv::Store>> {
        let mut contexts = Vec::new();
        for (i, url) in self.urls().iter().enumerate() {
            contexts.push(jetstream::new(connect(url, &format!("cmesh-bench-js-{i}")).await?));
        }
        let deadline = Instant::now() + BUCKET_LIMIT;
        loop {
            match contexts[0].create_stream(bucket_stream()).await {
                Ok(_) => break,
                Err(error) if Instant::now() > deadline => {
                    return Err(anyhow::Error::new(error).context(format!(
                        "creating a {SERVERS}-replica KV bucket within {BUCKET_LIMIT:?}"
                    )))
                }
                Err(error) => {
                    tracing::debug!(%error, "no JetStream bucket yet");
                    for i in 0..SERVERS {
                        self.check_running(i)?;
                    }
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
            }
        }
        let mut stores = Vec::new();
        for context in &contexts {
            stores.push(context.get_key_value(BUCKET).await.context("opening the KV bucket")?);
        }
        Ok(stores)
    }
}

/// The stream of a KV bucket with `history: 1` and 3 replicas: what async-nats's
/// `create_key_value` would make. That call is not used because it first reads the
/// account's JetStream info, and async-nats 0.51 requires fields in it
/// (`reserved_memory`, `reserved_storage`) that nats-server 2.9 does not send.
fn bucket_stream() -> stream::Config {
    stream::Config {
        name: format!("KV_{BUCKET}"),
        subjects: vec![format!("$KV.{BUCKET}.>")],
        max_messages_per_subject: 1,
        storage: stream::StorageType::File,
        num_replicas: SERVERS,
        discard: stream::DiscardPolicy::New,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        ..Default::default()
    }
}
