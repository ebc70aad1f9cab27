//! `colony describe <service>`: where a service runs, how it is doing on each node, what it
//! subscribes to, and how each calling node's selector sees it.
//!
//! Three sources, because none has it all: gossip has the instances (server nodes only) and
//! their subscriptions; each node's health has the service's state and per-subscription
//! counters, and covers what gossip leaves out (failed services, withdrawn from it; services of
//! client nodes, such as a `colony subscribe`); the selectors of calling nodes have the calls.

use std::time::Duration;

use colony::{Node, Role, ServiceHealth, ServiceInstance, SubscriptionStats};
use serde::Serialize;

use crate::{join, print_json, table};

/// One subscription of the service on one node.
#[derive(Debug, Serialize)]
pub(crate) struct SubscriptionRow {
    pub(crate) node: String,
    pub(crate) pattern: String,
    pub(crate) queue: Option<String>,
    pub(crate) at_least_once: bool,
    /// Its counters, from the node's health; `None` when the node did not answer.
    pub(crate) stats: Option<SubscriptionStats>,
}

/// Rows from each node's health where it answered, else from gossip (no counters).
fn subscriptions(
    instances: &[ServiceInstance],
    health: &[(String, ServiceHealth)],
) -> Vec<SubscriptionRow> {
    let mut rows: Vec<SubscriptionRow> = health
        .iter()
        .flat_map(|(node, h)| {
            h.subscriptions.iter().map(|s| SubscriptionRow {
                node: node.clone(),
                pattern: s.pattern.clone(),
                queue: s.queue.clone(),
                at_least_once: s.at_least_once,
                stats: Some(s.clone()),
            })
        })
        .collect();
    for i in instances {
        if health.iter().any(|(node, _)| node == &i.node) {
            continue;
        }
        rows.extend(i.subscriptions.iter().map(|s| SubscriptionRow {
            node: i.node.clone(),
            pattern: s.pattern.clone(),
            queue: s.queue.clone(),
            at_least_once: s.at_least_once,
            stats: None,
        }));
    }
    rows.sort_by(|a, b| (&a.node, &a.pattern).cmp(&(&b.node, &b.pattern)));
    rows
}

/// Runs `describe`: exit code 0, or a message (exit code 1) when nothing in the cluster runs
/// the service.
pub(crate) async fn run(
    node: &Node,
    service: &str,
    wait: Duration,
    json: bool,
) -> Result<u8, String> {
    let lists = |m: &colony::Member| m.services.iter().any(|s| s == service);
    node.registry()
        .wait_until(wait, |r| {
            !r.instances(service).is_empty() || r.members().iter().any(lists)
        })
        .await;
    let instances = node.registry().instances(service);
    // Every server (a failed service is not in gossip, but its node still reports it), and the
    // client nodes that run the service.
    let targets: Vec<_> = node
        .members()
        .into_iter()
        .filter(|m| m.role == Role::Server || lists(m))
        .map(|m| m.addr)
        .collect();
    let health: Vec<(String, ServiceHealth)> = if targets.is_empty() {
        Vec::new()
    } else {
        join::health(node, &targets, wait)
            .await
            .into_iter()
            .filter_map(|a| {
                let h = a.health?;
                let row = h.services.into_iter().find(|s| s.name == service)?;
                Some((h.node, row))
            })
            .collect()
    };
    if instances.is_empty() && health.is_empty() {
        return Err(format!("no instance of service {service} in the cluster"));
    }
    let subscriptions = subscriptions(&instances, &health);
    let callers = join::selector_views(node, service).await;
    if json {
        let health: Vec<_> = health
            .iter()
            .map(|(node, h)| serde_json::json!({"node": node, "health": h}))
            .collect();
        print_json(&serde_json::json!({
            "instances": instances,
            "health": health,
            "subscriptions": subscriptions,
            "callers": callers,
        }));
        return Ok(0);
    }
    // Sections, each printed when it has rows, separated by blank lines.
    let mut first = true;
    let mut section = |print: &dyn Fn()| {
        if !first {
            println!();
        }
        first = false;
        print();
    };
    if !instances.is_empty() {
        section(&|| table::instances(&instances));
    }
    if !health.is_empty() {
        section(&|| table::service_health(&health));
    }
    if !subscriptions.is_empty() {
        section(&|| table::subscriptions(&subscriptions));
    }
    if !callers.is_empty() {
        section(&|| table::selectors(&callers));
    }
    Ok(0)
}
