//! Human-readable tables: columns padded to their widest cell.

use colony::introspect::SelectorView;
use colony::{Member, Role, ServiceInstance};

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
