//! A TCP forwarder in front of nats-server, for cutting one client (say, a node) off the
//! bus and letting it back, as a network partition would, without stopping the server.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::{within, EVENTUALLY};

/// A TCP forwarder from 127.0.0.1 (a port the OS picks) to a local port, for cutting one
/// client (say, a node) off the nats-server and letting it back: `cut` drops every open
/// connection and refuses new ones (accepted and closed at once) until `restore`.
pub struct Proxy {
    port: u16,
    cut: watch::Sender<bool>,
    /// Connections accepted and not yet closed.
    open: Arc<watch::Sender<usize>>,
    accept: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// Listens on 127.0.0.1 and forwards every connection to `127.0.0.1:upstream`.
    pub async fn start(upstream: u16) -> Proxy {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .expect("bind the proxy");
        let port = listener.local_addr().expect("the proxy's address").port();
        let (cut, _) = watch::channel(false);
        let open = Arc::new(watch::channel(0usize).0);
        let cut_rx = cut.subscribe();
        let accept = tokio::spawn({
            let open = open.clone();
            async move {
                loop {
                    let mut inbound = match listener.accept().await {
                        Ok((stream, _)) => stream,
                        Err(_) => {
                            tokio::time::sleep(Duration::from_millis(10)).await;
                            continue;
                        }
                    };
                    // Counted before the check, so that `cut` also waits for this one.
                    open.send_modify(|n| *n += 1);
                    let mut cut_rx = cut_rx.clone();
                    let open = open.clone();
                    tokio::spawn(async move {
                        let is_cut = *cut_rx.borrow_and_update();
                        if !is_cut {
                            if let Ok(mut outbound) = tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await {
                                tokio::select! {
                                    _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                                    _ = cut_rx.wait_for(|cut| *cut) => {}
                                }
                            }
                        }
                        drop(inbound);
                        open.send_modify(|n| *n -= 1);
                    });
                }
            }
        });
        Proxy {
            port,
            cut,
            open,
            accept,
        }
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Drops every open connection (both sides) and refuses new ones; returns once every
    /// connection is closed.
    pub async fn cut(&self) {
        self.cut.send_replace(true);
        let mut open = self.open.subscribe();
        within(
            "the proxy's connections to close",
            EVENTUALLY,
            open.wait_for(|n| *n == 0),
        )
        .await
        .expect("the proxy's counter is alive");
    }

    /// Forwards new connections again (clients reconnect by themselves).
    pub fn restore(&self) {
        self.cut.send_replace(false);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.cut.send_replace(true);
        self.accept.abort();
    }
}
