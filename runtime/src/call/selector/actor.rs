//! The selector actor: it follows membership and turns marks into ejections and returns.

use std::sync::Arc;
use std::time::Instant;

use colony_actors::ractor::{Actor, ActorProcessingErr, ActorRef, ActorRuntime, RpcReplyPort};
use colony_actors::selector::{Health, OutlierPolicy, Outliers, Verdict};

use super::{InstanceReport, Selector};

/// What a caller tells the selector about an instance: only what changes its view. Routine
/// successes are folded into the instance's atomics and never sent.
#[derive(Debug)]
pub(crate) enum Mark {
    /// A failure that counts against the instance's health; `run` failures in a row so far.
    /// `key` names the incarnation (`Instance::key`).
    Failed { key: Arc<str>, run: u32 },
    /// A success after failures, or a probe's success.
    Recovered { key: Arc<str> },
}

pub(crate) enum SelectorMsg {
    /// The cluster view changed.
    Refresh,
    Mark(Mark),
    /// An ejection may have ended.
    ProbeDue {
        key: Arc<str>,
        until: Instant,
    },
    /// Once a second: idle instances' latency fades, the retry budget's clock advances.
    Tick,
    Report(RpcReplyPort<Vec<InstanceReport>>),
}

/// How often the actor's timer runs (latency fading, retry budget clock).
const TICK: std::time::Duration = std::time::Duration::from_secs(1);

struct SelectorActor {
    selector: Arc<Selector>,
    policy: OutlierPolicy,
}

pub(super) fn start(selector: &Arc<Selector>, policy: OutlierPolicy) {
    let actor = SelectorActor {
        selector: selector.clone(),
        policy,
    };
    match ActorRuntime::spawn_instant(None, actor, ()) {
        Ok((actor, _)) => {
            if let Err(extra) = selector.actor.set(actor) {
                extra.stop(None);
            }
        }
        Err(e) => {
            tracing::error!(service = %selector.service, error = %e, "selector actor did not start")
        }
    }
}

impl SelectorActor {
    fn eject(&self, myself: &ActorRef<SelectorMsg>, outliers: &mut Outliers, mark: Mark) {
        let selector = &self.selector;
        let table = selector.table();
        match mark {
            Mark::Failed { key, run } => {
                let Some(instance) = table.incarnation(&key) else {
                    return;
                };
                let id = &instance.id;
                let was_probing = instance.load.health() == Health::Probing;
                if instance.load.health() == Health::Ejected {
                    return;
                }
                let available = table
                    .instances
                    .iter()
                    .filter(|i| i.load.is_healthy())
                    .count()
                    + usize::from(was_probing);
                match outliers.failed(&key, run, available, Instant::now()) {
                    Verdict::Eject { until, ejections } => {
                        instance.load.set_health(Health::Ejected);
                        selector.recount_probing(&table);
                        let period = until.saturating_duration_since(Instant::now());
                        tracing::warn!(service = %selector.service, instance = %id, run, ejections, ?period, "instance ejected after consecutive failures");
                        myself.send_after(period, move || SelectorMsg::ProbeDue { key, until });
                    }
                    // Logged at the threshold, then at doubling runs: a failing last instance
                    // must not flood the log.
                    Verdict::SpareLast
                        if run == self.policy.consecutive_failures || run.is_power_of_two() =>
                    {
                        tracing::warn!(service = %selector.service, instance = %id, run, "instance keeps failing but is the last one available: not ejected");
                    }
                    Verdict::SpareLast | Verdict::Keep | Verdict::Restore => {}
                }
            }
            Mark::Recovered { key } => {
                // Only a probe's success restores: a call that was already in flight when the
                // instance was ejected proves nothing.
                let Some(instance) = table.incarnation(&key) else {
                    return;
                };
                if instance.load.health() != Health::Probing {
                    return;
                }
                if let Verdict::Restore = outliers.succeeded(&key, Instant::now()) {
                    instance.load.set_health(Health::Healthy);
                    selector.recount_probing(&table);
                    tracing::info!(service = %selector.service, instance = %instance.id, "probe succeeded: instance back in rotation");
                }
            }
        }
    }

    fn probe_due(
        &self,
        myself: &ActorRef<SelectorMsg>,
        outliers: &Outliers,
        key: Arc<str>,
        until: Instant,
    ) {
        if outliers.ejected_until(&key) != Some(until) {
            return; // Restored or ejected again since this timer was set.
        }
        let table = self.selector.table();
        let Some(instance) = table.incarnation(&key) else {
            return;
        };
        let first = instance.load.health() == Health::Ejected;
        // Also re-arms a probe whose call never reported back (its caller gave up).
        instance.load.set_health(Health::Probing);
        self.selector.recount_probing(&table);
        if first {
            tracing::info!(service = %self.selector.service, instance = %instance.id, "ejection over: probing");
        }
        myself.send_after(self.policy.base_ejection, move || SelectorMsg::ProbeDue {
            key,
            until,
        });
    }

    fn report(&self, outliers: &Outliers) -> Vec<InstanceReport> {
        let now = Instant::now();
        self.selector
            .table()
            .instances
            .iter()
            .map(|i| {
                let (calls, failures) = i.load.totals();
                let health = i.load.health();
                InstanceReport {
                    id: i.id.to_string(),
                    node: i.node.clone(),
                    addr: i.addr,
                    local: i.local.is_some(),
                    health: format!("{health:?}").to_lowercase(),
                    outstanding: i.load.outstanding(),
                    latency_us: i.load.srtt().map(|d| d.as_micros() as u64),
                    consecutive_failures: i.load.consecutive_failures(),
                    ejected_for_ms: (health == Health::Ejected)
                        .then(|| outliers.ejected_until(&i.key))
                        .flatten()
                        .map(|t| t.saturating_duration_since(now).as_millis() as u64),
                    ejections: outliers.ejections(&i.key),
                    calls,
                    failures,
                }
            })
            .collect()
    }
}

impl Actor for SelectorActor {
    type Msg = SelectorMsg;
    type State = Outliers;
    type Arguments = ();

    async fn pre_start(
        &self,
        myself: ActorRef<SelectorMsg>,
        _: (),
    ) -> Result<Outliers, ActorProcessingErr> {
        // The timer ends with the actor.
        myself.send_interval(TICK, || SelectorMsg::Tick);
        Ok(Outliers::new(self.policy))
    }

    async fn handle(
        &self,
        myself: ActorRef<SelectorMsg>,
        msg: SelectorMsg,
        outliers: &mut Outliers,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            SelectorMsg::Refresh => {
                self.selector.rebuild(false);
                let table = self.selector.table();
                outliers.retain(|key| table.incarnation(key).is_some());
            }
            SelectorMsg::Mark(mark) => self.eject(&myself, outliers, mark),
            SelectorMsg::ProbeDue { key, until } => self.probe_due(&myself, outliers, key, until),
            SelectorMsg::Tick => {
                self.selector.budget.tick(Instant::now());
                for instance in &self.selector.table().instances {
                    instance.load.fade(TICK);
                }
            }
            SelectorMsg::Report(reply) => {
                let _ = reply.send(self.report(outliers));
            }
        }
        Ok(())
    }
}
