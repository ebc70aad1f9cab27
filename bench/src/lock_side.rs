//! colony's side of the locks scenario: a cluster of three server node processes (every
//! server node runs colony's lock replica service) and the bench's own client-only node,
//! which joins through them and takes the locks.
//!
//! Every node, the children and the client, is started with the same `lock_max_ttl` (colony
//! requires one value per cluster): the scenario's `--lock-max-ttl`, short (2 s by default)
//! because a freshly started node refuses to create lock state for that long (its
//! quarantine). [`LockCluster::ready`] takes every key once with a generous wait before any
//! measurement, which waits the quarantine out.
//!
//! colony's lock API is called in one place only, the private `api` module below.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use colony::{ClusterCa, Node, NodeBuilder};
use tokio::time::Instant;

use crate::certs::BoxError;
use crate::child::{ChildServer, ServeOptions, ServerKind, WorkDir};
use crate::colony_side;
use crate::locker::Locker;

/// `builder` with colony's `lock_max_ttl` set to `ttl` (every node of a cluster shares it).
pub(crate) fn with_max_ttl(builder: NodeBuilder, ttl: Duration) -> NodeBuilder {
    builder.lock_max_ttl(ttl)
}

/// Server nodes of the lock cluster.
pub(crate) const SERVERS: usize = 3;

/// Where the bench's own node, which takes the locks, sits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Placement {
    /// A client-only node beside [`SERVERS`] server processes: every replica is remote.
    ClientOnly,
    /// One of the [`SERVERS`] server nodes (with two server processes): a service locking from
    /// inside the cluster, its own replica one of the key's three.
    Member,
}

/// A lock cluster: server child processes and the bench's own node.
pub(crate) struct LockCluster {
    /// Holds the cluster CA the children read; removed when dropped.
    _dir: WorkDir,
    servers: Vec<ChildServer>,
    node: Arc<Node>,
}

impl LockCluster {
    /// Starts the server children with `lock_max_ttl = max_ttl` and joins them with a
    /// client-only node configured alike; returns once that node sees every server. Fails
    /// at once when this build cannot measure colony's locks.
    pub(crate) async fn start(max_ttl: Duration, placement: Placement) -> Result<Self, BoxError> {
        let dir = WorkDir::create()?;
        let ca = Arc::new(ClusterCa::generate()?);
        std::fs::write(dir.path().join(colony_quic::CA_FILE), ca.to_pem())?;
        // On any error below, the servers started so far are dropped, which kills them.
        let children = match placement {
            Placement::ClientOnly => SERVERS,
            Placement::Member => SERVERS - 1,
        };
        let mut servers = Vec::with_capacity(children);
        let mut seed: Option<SocketAddr> = None;
        for i in 0..children {
            let options = ServeOptions {
                name: format!("lock-{i}"),
                seed,
                lock_max_ttl: Some(max_ttl),
                // The echo service is not called: one instance, which the client waits to
                // see, says the server has joined.
                ..ServeOptions::instances(1)
            };
            let server = ChildServer::start(ServerKind::Colony, dir.path(), &options).await?;
            seed = seed.or(Some(server.addr()));
            servers.push(server);
        }
        let node = match placement {
            Placement::ClientOnly => {
                colony_side::join_client_with(
                    "bench-locks",
                    &ca,
                    servers[0].addr(),
                    children,
                    |builder| with_max_ttl(builder, max_ttl),
                )
                .await?
            }
            Placement::Member => {
                let node = Node::builder()
                    .name("bench-locks-member")
                    .listen("127.0.0.1:0")
                    .ca(ca.clone())
                    .seeds([servers[0].addr().to_string()])
                    .lock_max_ttl(max_ttl)
                    .start()
                    .await?;
                let joined = node
                    .registry()
                    .wait_until(Duration::from_secs(30), |r| r.members().len() == SERVERS)
                    .await;
                if !joined {
                    node.shutdown().await;
                    return Err("the bench's member node did not see the cluster".into());
                }
                node
            }
        };
        Ok(Self {
            _dir: dir,
            servers,
            node: Arc::new(node),
        })
    }

    /// Takes and releases every key once, each acquisition waiting up to `wait` (the nodes'
    /// quarantine included). Returns how long the first acquisition took.
    pub(crate) async fn ready(
        &self,
        keys: &[String],
        ttl: Duration,
        wait: Duration,
    ) -> Result<Duration, BoxError> {
        let mut first = None;
        for key in keys {
            let t0 = Instant::now();
            let guard = self
                .node
                .lock(key)
                .ttl(ttl)
                .wait(wait)
                .await
                .map_err(|e| format!("first acquisition of {key:?}: {e}"))?;
            first.get_or_insert(t0.elapsed());
            guard
                .release()
                .await
                .map_err(|e| format!("first release of {key:?}: {e}"))?;
        }
        Ok(first.unwrap_or_default())
    }

    /// A client locking `key` for `ttl`, each acquisition waiting at most `wait`.
    pub(crate) fn locker(&self, key: &str, ttl: Duration, wait: Duration) -> ColonyLocker {
        ColonyLocker {
            node: self.node.clone(),
            key: key.to_string(),
            ttl,
            wait,
        }
    }

    /// Shuts the client node down and stops the servers.
    pub(crate) async fn stop(self) {
        match Arc::into_inner(self.node) {
            Some(node) => node.shutdown().await,
            None => eprintln!("  colony locks: a locker outlived the run; node dropped"),
        }
        for server in self.servers {
            server.stop().await;
        }
    }
}

/// One client of colony's locks: `node.lock(key).ttl(..).wait(..).acquire()`, then
/// `guard.release()`.
pub(crate) struct ColonyLocker {
    node: Arc<Node>,
    key: String,
    ttl: Duration,
    wait: Duration,
}

impl Locker for ColonyLocker {
    type Held = colony::LockGuard;

    async fn acquire(&mut self) -> Result<colony::LockGuard, String> {
        self.node
            .lock(self.key.as_str())
            .ttl(self.ttl)
            .wait(self.wait)
            .await
            .map_err(|e| e.to_string())
    }

    async fn release(&mut self, held: colony::LockGuard) -> Result<(), String> {
        held.release().await.map_err(|e| e.to_string())
    }

    fn token(held: &colony::LockGuard) -> Option<u64> {
        Some(held.token())
    }
}
