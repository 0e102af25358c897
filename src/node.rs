//! Wiring one node: key, NATS connection, the actors each on its own arbiter, the mesh
//! registry's Raft on a runtime of its own, the front door, announcements, and a clean
//! stop on SIGINT/SIGTERM.

use std::collections::HashMap;
use std::time::Duration;

use actix::prelude::*;
use anyhow::Context as _;
use bytes::Bytes;
use cmesh_common::{Address, SigningKey};
use cmesh_consensus::ConsensusNode;
use cmesh_events::{EventsActor, Ready, Shutdown};
use cmesh_iam::{IamActor, IamConfig, Verifier};
use cmesh_replication::{Link, NatsBus, Replicator, Settings, Subscriptions, TxVerifier};
use cmesh_router::gateway::{endpoint_specs, Gateway};
use cmesh_router::micro::{Micro, ServiceIdentity};
use cmesh_router::registry::RegistryHandle;
use cmesh_router::router::RouterActor;
use cmesh_router::services::Services;
use cmesh_runtime::RuntimeConfig;
use cmesh_state::{Persist, StateActor, StateConfig};

use crate::config::NodeConfig;

/// How long a stopping node waits for requests in flight.
const DRAIN_LIMIT: Duration = Duration::from_secs(10);

/// Runs a node until SIGINT or SIGTERM.
pub fn run(config: NodeConfig) -> anyhow::Result<()> {
    std::fs::create_dir_all(&config.data).with_context(|| format!("creating data dir {}", config.data.display()))?;
    let key_path = config.data.join("node.key");
    let (key, created) = SigningKey::load_or_create(&key_path).context("node key")?;
    if created {
        tracing::info!(address = %key.address(), path = %key_path.display(), "created the node key");
    }
    tracing::info!(
        address = %key.address(),
        mesh = %config.genesis.mesh,
        mesh_id = %config.genesis.mesh_id(),
        "starting node"
    );
    let system = actix::System::new();
    system.block_on(serve(config, key))
}

/// Connects to NATS, retrying with backoff while it is unreachable; the client then
/// reconnects by itself after NATS restarts.
pub async fn connect(url: &str, name: &str) -> anyhow::Result<async_nats::Client> {
    let mut delay = Duration::from_millis(250);
    loop {
        let options = async_nats::ConnectOptions::new()
            .name(name)
            .retry_on_initial_connect()
            .max_reconnects(None)
            .event_callback(|event| async move {
                match event {
                    async_nats::Event::Disconnected => tracing::warn!("lost the NATS connection; reconnecting"),
                    async_nats::Event::Connected => tracing::info!("connected to NATS"),
                    other => tracing::debug!(event = %other, "NATS event"),
                }
            });
        let options = options.connection_timeout(Duration::from_secs(2));
        // `retry_on_initial_connect` would return at once; we probe first so that the
        // operator sees what is wrong.
        match tokio::net::TcpStream::connect(host_port(url)).await {
            Ok(_) => {
                return options
                    .connect(url)
                    .await
                    .with_context(|| format!("connecting to NATS at {url}"))
            }
            Err(e) => {
                tracing::warn!(url, error = %e, retry_in_ms = delay.as_millis() as u64, "NATS is not reachable; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// `nats://host:port` (or `host:port`, or a list) → the first `host:port`.
fn host_port(url: &str) -> String {
    let first = url.split(',').next().unwrap_or(url).trim();
    let without_scheme = first.split_once("://").map(|(_, rest)| rest).unwrap_or(first);
    let without_auth = without_scheme
        .rsplit_once('@')
        .map(|(_, rest)| rest)
        .unwrap_or(without_scheme);
    if without_auth.contains(':') {
        without_auth.to_string()
    } else {
        format!("{without_auth}:4222")
    }
}

async fn serve(config: NodeConfig, key: SigningKey) -> anyhow::Result<()> {
    let address = key.address();
    // Signal handlers first: a stop asked for right after the ready line must still be a
    // clean stop. (While NATS is still unreachable a signal ends the process at once:
    // there is nothing to finish yet.)
    let signals = Signals::install()?;
    let client = connect(&config.nats_url, &format!("cmesh-node-{address}")).await?;

    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
    let verifier = SyncArbiter::start(threads, || Verifier);

    let mesh_id = config.genesis.mesh_id();
    let consensus = Consensus::start(&config, &key).await?;
    if let Some((path, records)) = crate::migrate::pending(&config.data, &config.genesis)? {
        consensus
            .runtime
            .spawn(crate::migrate::run(consensus.node.clone(), path, records));
    }
    let iam_config = IamConfig {
        // Login messages, tokens and announcements name the mesh id: two meshes on one
        // NATS, even of the same name, cannot mix.
        mesh: mesh_id.to_string(),
        mesh_name: config.genesis.mesh.clone(),
        challenge_ttl: Duration::from_secs(config.challenge_ttl),
        token_ttl: Duration::from_secs(config.token_ttl),
        admins: config.admins.clone(),
        allowed_peers: config.peers.clone(),
        permissions: config.permissions.clone(),
        ..IamConfig::default()
    };
    crate::migrate::warn_of_per_node_grants(&config.data)?;
    let attributes = std::sync::Arc::new(RegistryAttributes(consensus.node.clone()));
    let iam_actor = IamActor::new(key.clone(), iam_config, attributes, verifier).context("IAM")?;
    // IAM shares the router's arbiter: admitting a cached token is then a same-thread
    // message; its signature checks run on the verifier pool, not here.
    let iam = iam_actor.start();

    consensus.runtime.spawn(tell_iam_the_admitted(
        consensus.node.clone(),
        iam.clone(),
        client.clone(),
    ));
    let events = start_events(&config, address).await?;

    let state_config = StateConfig {
        dir: config.data.clone(),
        runtime: RuntimeConfig {
            gas_limit: config.gas_limit,
            memory_limit_bytes: config.memory_limit_mib * 1024 * 1024,
            max_module_bytes: config.max_module_bytes,
            ..RuntimeConfig::default()
        },
        view_threads: threads,
    };
    // The replicator hears of every committed transaction, and reaches the state actor:
    // its address exists before it runs.
    let replication = actix::Context::<Replicator>::new();
    let key = std::sync::Arc::new(key);
    let state = StateActor::start(
        state_config,
        key.clone(),
        Some(events.clone()),
        Some(replication.address().recipient()),
    )
    .context("state store")?;
    let bus = std::sync::Arc::new(NatsBus::new(client.clone(), &address));
    let subscriptions = Subscriptions::open(bus.as_ref(), &address)
        .await
        .context("replication subjects")?;
    let link = Link {
        mesh: mesh_id,
        bus,
        key: key.clone(),
        state: state.clone(),
        verifier: TxVerifier::start(threads),
        threads,
        events: Some(events.clone()),
        max_payload: client.server_info().max_payload,
        settings: Settings::default(),
    };
    let replicator = replication.run(Replicator::new(link, subscriptions));

    let services = Services {
        node: address,
        mesh: mesh_id.to_string(),
        iam: iam.clone(),
        events: events.clone(),
        registry: RegistryHandle {
            consensus: consensus.node.clone(),
            events: events.clone(),
        },
        state: state.clone(),
        replicator,
        client: client.clone(),
    };
    let persist = state;
    let router = RouterActor::new(services).start();

    let endpoints = endpoint_specs(&address);
    let identity = ServiceIdentity {
        name: "cmesh".into(),
        id: instance_id()?,
        version: env!("CARGO_PKG_VERSION").into(),
        description: "cmesh node: FQMN and JSON-RPC front door".into(),
        metadata: HashMap::from([
            ("address".to_string(), address.to_string()),
            ("mesh".to_string(), mesh_id.to_string()),
        ]),
    };
    let specs = endpoints.iter().map(|(spec, _)| spec.clone()).collect();
    let (micro, micro_task) = Micro::start(client.clone(), identity, specs)
        .await
        .context("micro service")?;
    actix::spawn(micro_task);

    let discovery = cmesh_iam::discovery(client.clone(), iam.clone()).await?;
    let announcer = actix::spawn(discovery);

    let mut gateway = Gateway::start(
        client.clone(),
        router,
        events.clone(),
        micro.clone(),
        endpoints,
        config.max_payload,
    )
    .await?;
    self_check(&client, &address).await?;

    println!("{}", cmesh_testkit::ready_line(&address));
    tracing::info!(%address, "ready");

    signals.wait().await;
    tracing::info!("stopping: no new requests, finishing those in flight");
    gateway.stop().await;
    if !gateway.wait_idle(DRAIN_LIMIT).await {
        tracing::warn!("requests still in flight after the drain limit");
    }
    announcer.abort();
    micro.stop().await;
    consensus.stop().await;
    // Batches of broadcast transactions alone were committed without fsync.
    match persist.send(Persist).await {
        Ok(Ok(())) => tracing::info!("state made durable"),
        Ok(Err(e)) => tracing::error!(error = %e, "making the state durable failed"),
        Err(e) => tracing::error!(error = %e, "state actor gone before it was made durable"),
    }
    match events.send(Shutdown).await {
        Ok(Ok(head)) => tracing::info!(audit_head = head, "audit trail flushed"),
        Ok(Err(e)) => tracing::error!(error = %e, "audit trail flush failed"),
        Err(e) => tracing::error!(error = %e, "events actor gone before the flush"),
    }
    if let Err(e) = client.drain().await {
        tracing::warn!(error = %e, "draining NATS");
    }
    tracing::info!("stopped");
    System::current().stop();
    Ok(())
}

/// Keeps IAM's peers to the nodes the registry admits, and says in this node's log when
/// it is not admitted itself (the others then ignore what it sends).
async fn tell_iam_the_admitted(consensus: ConsensusNode, iam: Addr<IamActor>, client: async_nats::Client) {
    let own = consensus.address();
    let mut nodes = consensus.watch_nodes();
    let mut warned = false;
    loop {
        let admitted: std::collections::BTreeSet<Address> = nodes.borrow_and_update().keys().copied().collect();
        // A node without a replica says so from what the replicas tell it (its own
        // registry is the genesis's until it holds a replica).
        if !admitted.contains(&own) && !warned && consensus.is_replica() {
            tracing::warn!(
                node = %own,
                mesh = %consensus.mesh(),
                "this node is not admitted to the mesh (as its registry stands here): the other nodes ignore its \
                 announcements, tokens and proposals until a mesh admin admits it (mesh.admit or CW:admit)"
            );
            warned = true;
        }
        // Newly admitted nodes learnt from their earlier announcements must learn this one.
        if let Ok(true) = iam.send(cmesh_iam::AdmittedNodes(admitted)).await {
            cmesh_iam::publish_own(&client, &iam).await;
        }
        if nodes.changed().await.is_err() {
            return;
        }
    }
}

/// IAM reads mesh-wide attributes from this node's replica of the registry (a grant
/// counts here as soon as it applied here), or on a member from what a replica told it.
struct RegistryAttributes(ConsensusNode);

impl cmesh_iam::MeshAttributes for RegistryAttributes {
    fn attributes(&self, address: &Address) -> Vec<String> {
        self.0.attributes(address)
    }
}

/// The mesh registry's Raft, on a multi-threaded runtime of its own with its own NATS
/// connection: actix's arbiters are single-threaded, and Raft's heartbeats must not wait
/// behind requests (nor requests behind a snapshot).
struct Consensus {
    node: ConsensusNode,
    runtime: tokio::runtime::Runtime,
}

impl Consensus {
    async fn start(config: &NodeConfig, key: &SigningKey) -> anyhow::Result<Consensus> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("cmesh-raft")
            .enable_all()
            .build()
            .context("starting the consensus runtime")?;
        let (genesis, key, url) = (config.genesis.clone(), key.clone(), config.nats_url.clone());
        let config_settings = config.consensus.clone();
        let path = config.data.join("consensus.redb");
        let started = runtime.spawn(async move {
            let client = connect(&url, &format!("cmesh-node-{}-raft", key.address())).await?;
            ConsensusNode::start(&genesis, key, &path, client, config_settings)
                .await
                .context("the mesh registry")
        });
        let node = match started.await {
            Ok(started) => started?,
            Err(e) => anyhow::bail!("the consensus runtime stopped while starting: {e}"),
        };
        Ok(Consensus { node, runtime })
    }

    async fn stop(self) {
        let node = self.node.clone();
        if let Err(e) = self.runtime.spawn(async move { node.shutdown().await }).await {
            tracing::warn!(error = %e, "stopping Raft");
        }
        self.runtime.shutdown_background();
    }
}

struct Signals {
    terminate: tokio::signal::unix::Signal,
    interrupt: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> anyhow::Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Signals {
            terminate: signal(SignalKind::terminate()).context("SIGTERM handler")?,
            interrupt: signal(SignalKind::interrupt()).context("SIGINT handler")?,
        })
    }

    async fn wait(mut self) {
        tokio::select! {
            _ = self.terminate.recv() => tracing::info!("SIGTERM"),
            _ = self.interrupt.recv() => tracing::info!("SIGINT"),
        }
    }
}

/// Asks this node `P:ping` through NATS: once it answers, the server has our
/// subscriptions and the whole path works, so "ready" is true when printed.
async fn self_check(client: &async_nats::Client, address: &Address) -> anyhow::Result<()> {
    let subject = format!("cmesh.node.{address}.fqmn");
    let request = client.request(subject, Bytes::from_static(b"P:ping"));
    let reply = tokio::time::timeout(Duration::from_secs(10), request)
        .await
        .context("the node did not answer its own ping within 10 s")?
        .context("the node's own ping failed")?;
    let status = reply
        .headers
        .as_ref()
        .and_then(|h| h.get("Cmtp-Status"))
        .map(|v| v.as_str().to_string());
    anyhow::ensure!(
        status.as_deref() == Some("200"),
        "the node's own ping answered {status:?}"
    );
    Ok(())
}

/// Starts the events actor on its own arbiter with its own NATS connection, made on that
/// arbiter: the connection's I/O task then runs on the events thread, so the events and
/// audit records it publishes never wake the thread that serves requests.
async fn start_events(config: &NodeConfig, address: Address) -> anyhow::Result<Addr<EventsActor>> {
    let arbiter = Arbiter::new();
    let (started, result) = tokio::sync::oneshot::channel();
    let url = config.nats_url.clone();
    let data = config.data.clone();
    let spawned = arbiter.spawn(async move {
        let actor = async {
            let client = connect(&url, &format!("cmesh-node-{address}-events")).await?;
            let actor = EventsActor::new(client, address, &data).context("audit store")?;
            Ok::<_, anyhow::Error>(actor.start())
        };
        let _ = started.send(actor.await);
    });
    anyhow::ensure!(spawned, "the events arbiter did not start");
    let events = result.await.context("the events arbiter stopped while starting")??;
    // Other nodes' events published from now on are kept, so `ready` is true of them too.
    tokio::time::timeout(Duration::from_secs(10), events.send(Ready))
        .await
        .context("the events subscriptions were not live within 10 s")?
        .context("the events actor stopped while starting")?
        .context("subscribing to other nodes' events")?;
    Ok(events)
}

/// A random id for this instance of the micro service (like a NATS nuid).
fn instance_id() -> anyhow::Result<String> {
    let mut bytes = [0u8; 11];
    getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("no entropy: {e}"))?;
    Ok(hex::encode_upper(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_of_urls() {
        assert_eq!(host_port("nats://127.0.0.1:4222"), "127.0.0.1:4222");
        assert_eq!(host_port("nats://user:pw@nats:4333,nats://b:1"), "nats:4333");
        assert_eq!(host_port("localhost"), "localhost:4222");
    }
}
