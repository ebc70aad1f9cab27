//! Several server processes of one system, called as one service: colony nodes joined in a
//! cluster with this process's client node, or tonic servers behind one balanced channel.
//!
//! A fleet is started for one run of the resilience scenario and stopped after it. Every
//! server is a child process ([`ChildServer`]): one can be told to fail every call, one can be
//! killed with SIGKILL, and the others are stopped (or killed when dropped) however the run
//! ends.

use std::net::SocketAddr;
use std::sync::Arc;

use colony::{ClusterCa, Node, Strategy};
use tonic::transport::Channel;

use crate::certs::{BoxError, Pki};
use crate::child::{ChildServer, ServeOptions, ServerKind, WorkDir};
use crate::colony_side;
use crate::tonic_side;

/// The certificates every fleet of a scenario shares, in a private directory.
pub(crate) struct FleetEnv {
    dir: WorkDir,
    ca: Arc<ClusterCa>,
    pki: Pki,
}

impl FleetEnv {
    /// Writes colony's cluster CA and tonic's certificates into a new private directory.
    pub(crate) fn create() -> Result<Self, BoxError> {
        let dir = WorkDir::create()?;
        let ca = Arc::new(ClusterCa::generate()?);
        std::fs::write(dir.path().join(colony_quic::CA_FILE), ca.to_pem())?;
        let pki = Pki::generate()?;
        pki.write(dir.path())?;
        Ok(Self { dir, ca, pki })
    }
}

/// Which system a fleet runs, and how its client chooses a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum System {
    /// colony nodes; the client calls by name with this strategy.
    Colony(Strategy),
    /// tonic+TLS servers behind `Channel::balance_list`.
    Tonic,
}

/// How the bench process calls a fleet.
pub(crate) enum FleetClient {
    /// A client-only colony node in the servers' cluster.
    Colony {
        /// The node.
        node: Node,
        /// The strategy of every call.
        strategy: Strategy,
    },
    /// One channel balancing over every server.
    Tonic(Channel),
}

/// The server processes of a fleet.
pub(crate) struct Servers(Vec<ChildServer>);

impl Servers {
    /// Kills the last server with SIGKILL (never the first, colony's seed) and reaps it;
    /// returns its pid.
    pub(crate) async fn kill_last(&mut self) -> Option<u32> {
        if self.0.len() < 2 {
            return None;
        }
        let victim = self.0.pop()?;
        let pid = victim.pid();
        victim.kill().await;
        pid
    }

    async fn stop(self) {
        for server in self.0 {
            server.stop().await;
        }
    }
}

/// A running fleet and its client.
pub(crate) struct Fleet {
    /// The server processes.
    pub(crate) servers: Servers,
    /// The client in this process.
    pub(crate) client: FleetClient,
}

impl Fleet {
    /// Starts `size` servers of `system` (colony's with `instances` instances of the echo
    /// service each); server `failing`, if any, fails every call. Returns once the client can
    /// reach every server: colony's has seen all of them in the registry; tonic's connects
    /// lazily, on the first calls (the warm-up).
    pub(crate) async fn start(
        env: &FleetEnv,
        system: System,
        size: usize,
        instances: usize,
        failing: Option<usize>,
    ) -> Result<Self, BoxError> {
        let kind = match system {
            System::Colony(_) => ServerKind::Colony,
            System::Tonic => ServerKind::TonicTls,
        };
        // On any error below, the servers started so far are dropped, which kills them.
        let mut servers = Vec::with_capacity(size);
        let mut seed: Option<SocketAddr> = None;
        for i in 0..size {
            let options = ServeOptions {
                name: format!("echo-{i}"),
                seed,
                fail: failing == Some(i),
                ..ServeOptions::instances(instances)
            };
            let server = ChildServer::start(kind, env.dir.path(), &options).await?;
            seed = seed.or(Some(server.addr()));
            servers.push(server);
        }
        let addrs: Vec<SocketAddr> = servers.iter().map(ChildServer::addr).collect();
        let client = match system {
            System::Colony(strategy) => {
                let node =
                    colony_side::join_client("bench-client", &env.ca, addrs[0], size).await?;
                FleetClient::Colony { node, strategy }
            }
            System::Tonic => {
                FleetClient::Tonic(tonic_side::connect_balanced(&addrs, Some(&env.pki))?)
            }
        };
        Ok(Self {
            servers: Servers(servers),
            client,
        })
    }

    /// Closes the client and stops the servers still running.
    pub(crate) async fn stop(self) {
        match self.client {
            FleetClient::Colony { node, .. } => node.shutdown().await,
            FleetClient::Tonic(channel) => drop(channel),
        }
        self.servers.stop().await;
    }
}
