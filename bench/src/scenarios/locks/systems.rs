//! The systems the locks scenario compares: colony in two placements and etcd in two ways,
//! how each is started and stopped (`Env`), and one run of a cell on one of them.

use std::sync::Arc;
use std::time::Duration;

use crate::load::{drive, Plan};
use crate::lock_side::{LockCluster, Placement};
use crate::locker::{sequential, Checks, Locker, Pairs};
use crate::stats::Summary;
use crate::table::time_us;

#[cfg(not(feature = "etcd"))]
use super::ETCD_NOT_BUILT;
#[cfg(feature = "etcd")]
use super::SESSION_TTL_S;
use super::{Cell, LockSettings, READY_SLACK};
/// The systems compared, in table order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum System {
    Colony,
    ColonyMember,
    EtcdSession,
    EtcdPerLock,
}

pub(super) const SYSTEMS: [System; 4] = [
    System::Colony,
    System::ColonyMember,
    System::EtcdSession,
    System::EtcdPerLock,
];

impl System {
    pub(super) fn label(self) -> &'static str {
        match self {
            System::Colony => "colony",
            System::ColonyMember => "colony (client on a member)",
            System::EtcdSession => "etcd (session lease)",
            System::EtcdPerLock => "etcd (lease per lock)",
        }
    }
}

/// etcd and its shared client, or why there is none.
#[cfg(feature = "etcd")]
type Etcd = Result<(crate::etcd_side::EtcdServer, etcd_client::Client), String>;

/// What the scenario runs against.
pub(super) struct Env {
    pub(super) colony: Result<LockCluster, String>,
    pub(super) colony_member: Result<LockCluster, String>,
    #[cfg(feature = "etcd")]
    pub(super) etcd: Etcd,
    /// Fencing-token checks of colony's holds, across the whole scenario.
    pub(super) colony_checks: Arc<Checks>,
}

impl Env {
    pub(super) async fn start(s: &LockSettings, notes: &mut Vec<String>) -> Self {
        let wanted = |label: &str| {
            s.only
                .as_ref()
                .is_none_or(|only| label.contains(only.as_str()))
        };
        let mut clusters = Vec::new();
        for (system, placement) in [
            (System::Colony, Placement::ClientOnly),
            (System::ColonyMember, Placement::Member),
        ] {
            let cluster = if wanted(system.label()) {
                eprintln!(
                    "locks: starting {}'s lock cluster ({placement:?}, lock_max_ttl {:?})",
                    system.label(),
                    s.max_ttl
                );
                start_colony(s, placement).await
            } else {
                Err("not selected (--only)".into())
            };
            match &cluster {
                Ok((_, quarantine)) => notes.push(format!(
                    "{}: the first acquisition took {} (a fresh node refuses to create lock \
                     state for lock_max_ttl = {:?}: the quarantine, waited out before any \
                     measurement).",
                    system.label(),
                    time_us(quarantine.as_secs_f64() * 1e6),
                    s.max_ttl
                )),
                Err(e) => {
                    eprintln!("locks: {} not measured: {e}", system.label());
                    notes.push(format!("{}: not measured: {e}", system.label()));
                }
            }
            clusters.push(cluster.map(|(cluster, _)| cluster));
        }
        let colony_member = clusters.pop().expect("two clusters");
        let colony = clusters.pop().expect("two clusters");
        #[cfg(feature = "etcd")]
        let etcd = {
            let wanted_etcd =
                wanted(System::EtcdSession.label()) || wanted(System::EtcdPerLock.label());
            let etcd = if wanted_etcd {
                start_etcd(s).await
            } else {
                Err("not selected (--only)".into())
            };
            if let Err(e) = &etcd {
                eprintln!("locks: etcd not measured: {e}");
                notes.push(format!("etcd: not measured: {e}"));
            }
            etcd
        };
        #[cfg(not(feature = "etcd"))]
        {
            eprintln!("locks: {ETCD_NOT_BUILT}");
            notes.push(format!("{ETCD_NOT_BUILT}."));
        }
        Self {
            colony,
            colony_member,
            #[cfg(feature = "etcd")]
            etcd,
            colony_checks: Checks::new(),
        }
    }

    /// Why `system` is not measured, if it is not.
    pub(super) fn missing(&self, system: System) -> Option<String> {
        match system {
            System::Colony => self.colony.as_ref().err().cloned(),
            System::ColonyMember => self.colony_member.as_ref().err().cloned(),
            #[cfg(feature = "etcd")]
            System::EtcdSession | System::EtcdPerLock => self.etcd.as_ref().err().cloned(),
            #[cfg(not(feature = "etcd"))]
            System::EtcdSession | System::EtcdPerLock => Some(ETCD_NOT_BUILT.into()),
        }
    }

    pub(super) async fn stop(self) {
        for cluster in [self.colony, self.colony_member].into_iter().flatten() {
            cluster.stop().await;
        }
        // Dropping etcd's server kills it and removes its data.
    }
}

/// Starts the cluster and takes every key of both cells once (waiting out the quarantine).
async fn start_colony(
    s: &LockSettings,
    placement: Placement,
) -> Result<(LockCluster, Duration), String> {
    let cluster = LockCluster::start(s.max_ttl, placement)
        .await
        .map_err(|e| e.to_string())?;
    let mut keys = Cell::Uncontended.distinct_keys(s);
    keys.extend(Cell::Contended.distinct_keys(s));
    match cluster.ready(&keys, s.ttl, s.max_ttl + READY_SLACK).await {
        Ok(first) => Ok((cluster, first)),
        Err(e) => {
            cluster.stop().await;
            Err(e.to_string())
        }
    }
}

#[cfg(feature = "etcd")]
async fn start_etcd(s: &LockSettings) -> Etcd {
    use crate::etcd_side::{self, EtcdServer};

    let server = match EtcdServer::start(s.etcd_dir.as_deref()).await {
        Ok(Some(server)) => server,
        Ok(None) => {
            return Err(format!(
                "`{}` was not found on PATH (`apt-get install etcd-server`)",
                etcd_side::BINARY
            ))
        }
        Err(e) => return Err(format!("{} did not start: {e}", etcd_side::BINARY)),
    };
    eprintln!(
        "locks: started {} at {} (data in {})",
        etcd_side::version().unwrap_or_else(|| etcd_side::BINARY.into()),
        server.url(),
        server.dir().display()
    );
    let client = etcd_side::connect(server.url())
        .await
        .map_err(|e| format!("connecting to etcd: {e}"))?;
    Ok((server, client))
}

/// Runs `lockers` (each with its key) as `cell`: the uncontended cell's single client makes
/// its pairs in sequence, the contended cell's clients run concurrently for the window.
async fn measure<L: Locker>(
    cell: Cell,
    lockers: Vec<(L, String)>,
    s: &LockSettings,
    checks: &Arc<Checks>,
) -> (Summary, Option<String>) {
    let mut callers: Vec<_> = lockers
        .into_iter()
        .map(|(locker, key)| Pairs::new(locker, &key, checks))
        .collect();
    let (sample, window) = match cell {
        Cell::Uncontended => {
            let caller = callers.pop().expect("one client");
            sequential(caller, s.warmup_pairs, s.pairs).await
        }
        Cell::Contended => {
            let plan = Plan {
                concurrency: callers.len(),
                warmup: s.warmup,
                duration: s.duration,
            };
            let sample = drive(plan, || callers.pop().expect("one caller per task")).await;
            (sample, s.duration)
        }
    };
    (sample.summarise(window, 0), sample.first_error.clone())
}

/// One run of `cell` on `system`.
pub(super) async fn run(
    env: &Env,
    system: System,
    cell: Cell,
    s: &LockSettings,
) -> Result<(Summary, Option<String>), String> {
    let keys = cell.keys(s);
    match system {
        System::Colony | System::ColonyMember => {
            let cluster = match system {
                System::Colony => &env.colony,
                _ => &env.colony_member,
            };
            let cluster = cluster.as_ref().map_err(Clone::clone)?;
            let lockers = keys
                .into_iter()
                .map(|key| (cluster.locker(&key, s.ttl, s.wait), key))
                .collect();
            Ok(measure(cell, lockers, s, &env.colony_checks).await)
        }
        #[cfg(feature = "etcd")]
        System::EtcdSession => {
            use crate::etcd_side::{Session, SessionLocker};

            let (_, client) = env.etcd.as_ref().map_err(Clone::clone)?;
            let mut sessions = Vec::with_capacity(keys.len());
            for _ in &keys {
                match Session::open(client, SESSION_TTL_S).await {
                    Ok(session) => sessions.push(session),
                    Err(e) => {
                        for session in sessions {
                            session.close().await;
                        }
                        return Err(format!("lease grant: {e}"));
                    }
                }
            }
            let lockers = keys
                .into_iter()
                .zip(&sessions)
                .map(|(key, session)| (SessionLocker::new(client, session, &key, s.wait), key))
                .collect();
            let result = measure(cell, lockers, s, &Checks::new()).await;
            for session in sessions {
                session.close().await;
            }
            Ok(result)
        }
        #[cfg(feature = "etcd")]
        System::EtcdPerLock => {
            use crate::etcd_side::PerLockLocker;

            let (_, client) = env.etcd.as_ref().map_err(Clone::clone)?;
            let lockers = keys
                .into_iter()
                .map(|key| (PerLockLocker::new(client, &key, s.ttl_s(), s.wait), key))
                .collect();
            Ok(measure(cell, lockers, s, &Checks::new()).await)
        }
        #[cfg(not(feature = "etcd"))]
        System::EtcdSession | System::EtcdPerLock => Err(ETCD_NOT_BUILT.into()),
    }
}
