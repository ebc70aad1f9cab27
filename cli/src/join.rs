//! Joining a cluster as a short-lived, client-only member.

use std::net::{SocketAddr, ToSocketAddrs, UdpSocket};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use colony::introspect::{HealthQuery, SelectorQuery, SelectorView, NODE_SERVICE};
use colony::{ClusterCa, Node, NodeHealth, Role, ServiceInstance};

/// Quiet period after which the membership view is taken as complete: chitchat declares a peer
/// live after its second heartbeat, so members trickle in over a few gossip rounds.
const SETTLE: Duration = Duration::from_millis(700);

fn load_ca(dir: Option<&Path>) -> Result<ClusterCa, String> {
    let dir = match dir {
        Some(dir) => dir.to_path_buf(),
        None => ClusterCa::default_dir().map_err(|e| e.to_string())?,
    };
    ClusterCa::load(&dir).map_err(|e| {
        format!(
            "no usable cluster credentials in {}: {e}. Start a node as this user first (it \
             creates the CA), or point --ca-dir / COLONY_HOME at the cluster's CA",
            dir.display()
        )
    })
}

/// Where to listen so that the seeds can gossip back: loopback for loopback seeds, otherwise
/// the local address the OS would use to reach the first seed.
fn listen_for(seeds: &[SocketAddr]) -> String {
    let Some(first) = seeds.first() else {
        return "127.0.0.1:0".into();
    };
    if first.ip().is_loopback() {
        return "127.0.0.1:0".into();
    }
    // Connecting a UDP socket sends nothing; it only asks the OS for a route.
    let local = UdpSocket::bind("0.0.0.0:0")
        .and_then(|s| s.connect(first).map(|()| s))
        .and_then(|s| s.local_addr());
    match local {
        Ok(local) => format!("{}:0", local.ip()),
        // No route: let the start-up fail with a clear "set an advertise address" error.
        Err(_) => "0.0.0.0:0".into(),
    }
}

/// Starts a client-only node and waits until it sees the cluster.
pub(crate) async fn join(
    seeds: &[String],
    cluster: &str,
    ca_dir: Option<&Path>,
    wait: Duration,
    call_timeout: Duration,
) -> Result<Node, String> {
    if seeds.is_empty() {
        return Err("no seed: pass --seed host:port or set COLONY_SEEDS".into());
    }
    let resolved: Vec<SocketAddr> = seeds
        .iter()
        .filter_map(|s| s.to_socket_addrs().ok())
        .flatten()
        .collect();
    if resolved.is_empty() {
        return Err(format!("none of the seeds resolves: {}", seeds.join(", ")));
    }
    let ca = load_ca(ca_dir)?;
    let node = Node::builder()
        .name(format!("colony-cli-{}", std::process::id()))
        .listen(listen_for(&resolved))
        .ca(Arc::new(ca))
        .cluster(cluster)
        .seeds(resolved.iter().map(|a| a.to_string()))
        .client_only()
        // The replicas enforce the cluster's longest lease; the CLI does not guess it.
        .lock_max_ttl(Duration::from_secs(24 * 3600))
        .call_timeout(call_timeout)
        .start()
        .await
        .map_err(|e| e.to_string())?;
    let started = Instant::now();
    let joined = node
        .registry()
        .wait_until(wait, |r| r.members().len() > 1)
        .await;
    if !joined {
        node.shutdown().await;
        return Err(format!(
            "no seed answered within {wait:?} (tried {}): is a node running there, with the same \
             CA and cluster id ({cluster:?})?",
            seeds.join(", ")
        ));
    }
    // Members become live one by one: wait for a quiet period, within the overall wait.
    loop {
        let seen = node.members().len();
        let left = wait.saturating_sub(started.elapsed());
        if left.is_zero() {
            break;
        }
        let changed = node
            .registry()
            .wait_until(SETTLE.min(left), |r| r.members().len() != seen)
            .await;
        if !changed {
            break;
        }
    }
    Ok(node)
}

/// Instances of `service`, waiting (at most `wait`) for one to be known.
pub(crate) async fn instances_of(
    node: &Node,
    service: &str,
    wait: Duration,
) -> Vec<ServiceInstance> {
    node.registry()
        .wait_until(wait, |r| !r.instances(service).is_empty())
        .await;
    node.registry().instances(service)
}

/// How every serving node's selector sees the instances of `service`: asked of each member's
/// `colony.node` service in parallel; nodes that have not called the service, or do not answer
/// within a second, are left out.
pub(crate) async fn selector_views(node: &Node, service: &str) -> Vec<SelectorView> {
    let asks: Vec<_> = node
        .members()
        .into_iter()
        .filter(|m| m.role == Role::Server && !m.leaving)
        .map(|member| {
            let client = node.client();
            let query = SelectorQuery {
                service: service.to_string(),
            };
            tokio::spawn(async move {
                client
                    .request(NODE_SERVICE, query)
                    .at(member.addr)
                    .timeout(Duration::from_secs(1))
                    .await
            })
        })
        .collect();
    let mut views = Vec::new();
    for ask in asks {
        if let Ok(Ok(view)) = ask.await {
            if !view.instances.is_empty() {
                views.push(view);
            }
        }
    }
    views.sort_by(|a, b| a.node.cmp(&b.node));
    views
}

/// One node's answer to a health query: its health, or why it could not be had.
#[derive(Debug, serde::Serialize)]
pub(crate) struct HealthAnswer {
    /// The address asked.
    pub(crate) addr: SocketAddr,
    /// The node's health when it answered.
    #[serde(flatten)]
    pub(crate) health: Option<NodeHealth>,
    /// Why it did not (unreachable, timed out...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) error: Option<String>,
}

/// Asks each of `targets` (every live server member when empty) for its health, in parallel,
/// within `wait`.
pub(crate) async fn health(
    node: &Node,
    targets: &[SocketAddr],
    wait: Duration,
) -> Vec<HealthAnswer> {
    let targets: Vec<SocketAddr> = if targets.is_empty() {
        node.members()
            .into_iter()
            .filter(|m| m.role == Role::Server)
            .map(|m| m.addr)
            .collect()
    } else {
        targets.to_vec()
    };
    let asks: Vec<_> = targets
        .into_iter()
        .map(|addr| {
            let client = node.client();
            let ask = tokio::spawn(async move {
                client
                    .request(NODE_SERVICE, HealthQuery::default())
                    .at(addr)
                    .timeout(wait)
                    .await
            });
            (addr, ask)
        })
        .collect();
    let mut answers = Vec::new();
    for (addr, ask) in asks {
        let (health, error) = match ask.await {
            Ok(Ok(health)) => (Some(health), None),
            Ok(Err(e)) => (
                None,
                Some(format!("{} {}", u16::from(e.code()), e.detail())),
            ),
            Err(e) => (None, Some(e.to_string())),
        };
        answers.push(HealthAnswer {
            addr,
            health,
            error,
        });
    }
    answers.sort_by_key(|a| a.addr);
    answers
}
