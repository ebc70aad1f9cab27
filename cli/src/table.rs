//! Human-readable tables: columns padded to their widest cell.

use colony::introspect::SelectorView;
use colony::{Member, Role, ServiceHealth, ServiceInstance};

use crate::describe::SubscriptionRow;
use crate::join::HealthAnswer;

fn print(header: &[&str], rows: Vec<Vec<String>>) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let line = |cells: Vec<String>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", padded.join("  ").trim_end());
    };
    line(header.iter().map(|h| h.to_string()).collect());
    for row in rows {
        line(row);
    }
}

pub(crate) fn members(members: &[Member]) {
    let rows = members
        .iter()
        .map(|m| {
            let role = match m.role {
                Role::Server => "server",
                Role::Client => "client",
            };
            let state = if m.leaving { "leaving" } else { "live" };
            vec![
                m.name.clone(),
                m.addr.to_string(),
                role.to_string(),
                state.to_string(),
                m.generation.to_string(),
                m.services.join(","),
            ]
        })
        .collect();
    print(
        &["NAME", "ADDRESS", "ROLE", "STATE", "GENERATION", "SERVICES"],
        rows,
    );
}

pub(crate) fn services(services: &[(String, Vec<ServiceInstance>)]) {
    let rows = services
        .iter()
        .map(|(name, instances)| {
            let mut versions: Vec<&str> = instances.iter().map(|i| i.version.as_str()).collect();
            versions.sort_unstable();
            versions.dedup();
            let nodes: Vec<&str> = instances.iter().map(|i| i.node.as_str()).collect();
            vec![
                name.clone(),
                instances.len().to_string(),
                versions.join(","),
                nodes.join(","),
            ]
        })
        .collect();
    print(&["SERVICE", "INSTANCES", "VERSIONS", "NODES"], rows);
}

pub(crate) fn instances(instances: &[ServiceInstance]) {
    let rows = instances
        .iter()
        .map(|i| {
            let metadata: Vec<String> =
                i.metadata.iter().map(|(k, v)| format!("{k}={v}")).collect();
            vec![
                i.id.clone(),
                i.version.clone(),
                i.addr.to_string(),
                i.actors.to_string(),
                i.endpoints.join(","),
                metadata.join(","),
            ]
        })
        .collect();
    print(
        &[
            "INSTANCE",
            "VERSION",
            "ADDRESS",
            "ACTORS",
            "ENDPOINTS",
            "METADATA",
        ],
        rows,
    );
}

pub(crate) fn selectors(views: &[SelectorView]) {
    let rows = views
        .iter()
        .flat_map(|view| {
            view.instances.iter().map(|i| {
                vec![
                    view.node.clone(),
                    i.id.clone(),
                    i.health.clone(),
                    i.outstanding.to_string(),
                    i.latency_us.map_or("-".into(), |us| format!("{us}us")),
                    i.consecutive_failures.to_string(),
                    i.ejected_for_ms.map_or("-".into(), |ms| format!("{ms}ms")),
                    i.ejections.to_string(),
                    i.calls.to_string(),
                    i.failures.to_string(),
                ]
            })
        })
        .collect();
    print(
        &[
            "CALLER",
            "INSTANCE",
            "HEALTH",
            "IN FLIGHT",
            "LATENCY",
            "FAILS IN A ROW",
            "EJECTED FOR",
            "EJECTIONS",
            "CALLS",
            "FAILED",
        ],
        rows,
    );
}

/// The cells of one service's health: status, live/asked, restarts, escalations, last failure.
fn health_cells(h: &ServiceHealth) -> Vec<String> {
    let failure = match (&h.last_failure, h.last_failure_ms_ago) {
        (Some(why), Some(ms)) => format!("{}s ago: {why}", ms / 1000),
        (Some(why), None) => why.clone(),
        _ => "-".into(),
    };
    let status = match h.restart_in_ms {
        Some(ms) => format!("{} (restart in {}s)", h.status.as_str(), ms.div_ceil(1000)),
        None => h.status.as_str().to_string(),
    };
    vec![
        status,
        format!("{}/{}", h.live, h.instances),
        h.restarts.to_string(),
        h.escalations.to_string(),
        failure,
    ]
}

const HEALTH_HEADER: [&str; 5] = ["STATUS", "LIVE", "RESTARTS", "ESCALATIONS", "LAST FAILURE"];

/// One row per node and service; a node with no service, or that did not answer, gets one row.
pub(crate) fn health(answers: &[HealthAnswer]) {
    let mut rows = Vec::new();
    for a in answers {
        let Some(h) = &a.health else {
            let why = a.error.clone().unwrap_or_default();
            rows.push(vec![
                "?".into(),
                a.addr.to_string(),
                "unreachable".into(),
                "-".into(),
                why,
            ]);
            continue;
        };
        let node = vec![h.node.clone(), a.addr.to_string(), h.status.as_str().into()];
        if h.services.is_empty() {
            rows.push([node.clone(), vec!["-".into()]].concat());
        }
        for s in &h.services {
            rows.push([node.clone(), vec![s.name.clone()], health_cells(s)].concat());
        }
    }
    let header = [
        &["NODE", "ADDRESS", "NODE STATUS", "SERVICE"][..],
        &HEALTH_HEADER,
    ]
    .concat();
    print(&header, rows);
}

/// One service's health on each node that runs (or ran) it.
pub(crate) fn service_health(rows: &[(String, ServiceHealth)]) {
    let rows = rows
        .iter()
        .map(|(node, h)| [vec![node.clone()], health_cells(h)].concat())
        .collect();
    let header = [&["NODE"][..], &HEALTH_HEADER].concat();
    print(&header, rows);
}

/// One row per subscription and node: its terms, then its counters (`-` when the node did not
/// answer).
pub(crate) fn subscriptions(rows: &[SubscriptionRow]) {
    let rows = rows
        .iter()
        .map(|r| {
            let guarantee = if r.at_least_once {
                "at-least-once"
            } else {
                "at-most-once"
            };
            let terms = vec![
                r.node.clone(),
                r.pattern.clone(),
                r.queue.clone().unwrap_or_else(|| "-".into()),
                guarantee.to_string(),
            ];
            let counters = match &r.stats {
                Some(s) => vec![
                    format!("{}/{}", s.buffered, s.capacity),
                    s.in_handler.to_string(),
                    s.received.to_string(),
                    s.handled.to_string(),
                    s.failed.to_string(),
                    s.dropped.to_string(),
                ],
                None => vec!["-".to_string(); 6],
            };
            [terms, counters].concat()
        })
        .collect();
    print(
        &[
            "NODE",
            "PATTERN",
            "QUEUE",
            "GUARANTEE",
            "BUFFERED",
            "IN HANDLER",
            "RECEIVED",
            "HANDLED",
            "FAILED",
            "DROPPED",
        ],
        rows,
    );
}
