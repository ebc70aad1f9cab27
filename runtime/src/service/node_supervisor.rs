//! The node-level supervisor: the root of the node's supervision tree.
//!
//! Each service's supervisor is linked under it. A service supervisor that gives up (more
//! instance failures than its restart budget allows, OTP's escalation) tells it at once, before
//! it stops: this actor takes the service out of routing and gossip, logs it, marks it failed,
//! and restarts the whole service after the cool-down of its [`Recovery`](super::Recovery), if
//! any. A service supervisor that exits any other way (it failed itself) is handled the same.
//! A service stopped on purpose is removed from the node's table before its supervisor stops,
//! which is how the two are told apart. Every other service keeps serving throughout.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use colony_actors::ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, SupervisionEvent};
use colony_actors::{stop_children, ENDED};

use super::roster::Entry;
use super::Host;

/// How long a stopping node waits for its services' supervisors to stop.
const CHILD_STOP_GRACE: Duration = Duration::from_secs(10);

/// What the node-level supervisor is told.
pub(crate) enum NodeSupervisorMsg {
    /// This service supervisor (already linked under this actor) runs an incarnation of the
    /// entry.
    Adopt(Arc<Entry>, ActorId),
    /// This service supervisor has just exhausted its restart budget: it will stop once its
    /// instances' calls at hand are done, but the service leaves routing now.
    GaveUp(Arc<Entry>, ActorId, String),
    /// The cool-down set after escalation number `u32` ended: restart the service if it is
    /// still failed, by that same failure, and still declared.
    Restart(Arc<Entry>, u32),
}

pub(crate) struct NodeSupervisor {
    pub(crate) host: Weak<dyn Host>,
}

#[derive(Default)]
pub(crate) struct Children {
    by_id: HashMap<ActorId, Arc<Entry>>,
    /// Exits of supervisors not adopted yet (a service can fail before its `Adopt` arrives,
    /// since supervision events overtake messages): the reason, kept until the adoption.
    early_exits: HashMap<ActorId, String>,
}

/// Spawns the node-level supervisor; `lost` runs if it ever ends while the node is not shutting
/// down (ractor would have taken every service supervisor with it).
pub(crate) async fn start(
    host: Weak<dyn Host>,
    lost: impl FnOnce() + Send + 'static,
) -> Result<ActorRef<NodeSupervisorMsg>, colony_actors::ractor::SpawnErr> {
    let (actor, ended) = Actor::spawn(None, NodeSupervisor { host: host.clone() }, ()).await?;
    tokio::spawn(async move {
        let _ = ended.await;
        if host.upgrade().is_some_and(|h| !h.is_closing()) {
            lost();
        }
    });
    Ok(actor)
}

impl NodeSupervisor {
    /// The incarnation of `entry` run by `supervisor` gave up or exited. If it is still the one
    /// in the node's table, the service failed (or, all its instances having ended, is done):
    /// out of the table and gossip at once, then marked failed and scheduled for a restart.
    /// Otherwise it was stopped on purpose, or this was already handled.
    async fn service_down(
        &self,
        myself: &ActorRef<NodeSupervisorMsg>,
        entry: &Arc<Entry>,
        supervisor: ActorId,
        reason: &str,
    ) {
        let Some(host) = self.host.upgrade() else {
            return;
        };
        let name = &entry.name;
        let Some((_, service)) = host.services().get(name) else {
            return;
        };
        if service.supervisor().get_id() != supervisor
            || !host.services().remove_if_same(name, &service)
        {
            return;
        }
        host.local_changed(name);
        if host.roster().is_current(entry) {
            if reason.starts_with(ENDED) {
                // Transient or temporary instances that all ended: done, not failed.
                host.roster().remove_if_same(entry);
                tracing::info!(node = %host.node_name(), service = %name, %reason, "service ended; withdrawn");
            } else {
                // Recorded before the withdraw's await, so health never sees it in between.
                failed(myself, &host, entry, reason, service.restarts(), true);
            }
        }
        host.membership().withdraw(name).await;
    }
}

/// Marks `entry` failed (`ran`: an incarnation that served failed; else a restart did not
/// start) and schedules its restart after the cool-down, if it has one.
pub(crate) fn failed(
    myself: &ActorRef<NodeSupervisorMsg>,
    host: &Arc<dyn Host>,
    entry: &Arc<Entry>,
    reason: &str,
    restarts: u64,
    ran: bool,
) {
    let (wait, escalation) = entry.failed(reason, restarts, ran, host.is_closing());
    tracing::error!(node = %host.node_name(), service = %entry.name, %reason, restart_in = ?wait, "service failed past its restart budget; withdrawn");
    if let Some(wait) = wait {
        let entry = entry.clone();
        myself.send_after(wait, move || NodeSupervisorMsg::Restart(entry, escalation));
    }
}

/// Starts a failed service again (after its cool-down, or by hand), once claimed; a start that
/// fails counts as one more failure, unless the node is shutting down or the service was
/// stopped meanwhile.
pub(crate) async fn restart(
    myself: &ActorRef<NodeSupervisorMsg>,
    host: &Arc<dyn Host>,
    entry: &Arc<Entry>,
) -> Result<(), crate::Error> {
    tracing::info!(node = %host.node_name(), service = %entry.name, "restarting failed service");
    let started = entry.start(host).await;
    if let Err(e) = &started {
        if !host.is_closing() && host.roster().is_current(entry) {
            let why = format!("restart failed: {e}");
            failed(myself, host, entry, &why, 0, false);
        } else {
            entry.restart_refused();
        }
    }
    started
}

impl Actor for NodeSupervisor {
    type Msg = NodeSupervisorMsg;
    type State = Children;
    type Arguments = ();

    async fn pre_start(
        &self,
        _myself: ActorRef<NodeSupervisorMsg>,
        _: (),
    ) -> Result<Children, ActorProcessingErr> {
        Ok(Children::default())
    }

    async fn post_stop(
        &self,
        myself: ActorRef<NodeSupervisorMsg>,
        _: &mut Children,
    ) -> Result<(), ActorProcessingErr> {
        // ractor kills an actor's children when it exits: stop them first, each finishing the
        // message at hand, so a node dropped without `shutdown` still answers what runs.
        stop_children(&myself.get_cell(), "node stopping", CHILD_STOP_GRACE).await;
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<NodeSupervisorMsg>,
        msg: NodeSupervisorMsg,
        children: &mut Children,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            NodeSupervisorMsg::Adopt(entry, id) => match children.early_exits.remove(&id) {
                Some(reason) => self.service_down(&myself, &entry, id, &reason).await,
                None => {
                    children.by_id.insert(id, entry);
                }
            },
            NodeSupervisorMsg::GaveUp(entry, id, reason) => {
                self.service_down(&myself, &entry, id, &reason).await;
            }
            NodeSupervisorMsg::Restart(entry, escalation) => {
                let Some(host) = self.host.upgrade() else {
                    return Ok(());
                };
                if host.is_closing() || !host.roster().is_current(&entry) {
                    return Ok(());
                }
                if entry.claim_restart(Some(escalation)) {
                    // Starting runs the instances' `started` hooks: not on this actor, which
                    // must stay free to hear of other services' failures.
                    tokio::spawn(async move {
                        let _ = restart(&myself, &host, &entry).await;
                    });
                }
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<NodeSupervisorMsg>,
        event: SupervisionEvent,
        children: &mut Children,
    ) -> Result<(), ActorProcessingErr> {
        let (id, reason) = match event {
            SupervisionEvent::ActorTerminated(cell, _, reason) => {
                (cell.get_id(), reason.unwrap_or_else(|| "stopped".into()))
            }
            SupervisionEvent::ActorFailed(cell, err) => {
                (cell.get_id(), format!("service supervisor failed: {err}"))
            }
            _ => return Ok(()),
        };
        match children.by_id.remove(&id) {
            Some(entry) => self.service_down(&myself, &entry, id, &reason).await,
            None => {
                children.early_exits.insert(id, reason);
            }
        }
        Ok(())
    }
}
