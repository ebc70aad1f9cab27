//! In-process pub/sub helpers: the [`Probe`] subscriber, which records every call of its
//! handler in [`Calls`] (optionally failing, panicking or waiting on a [`gate`] first), and
//! clusters of nodes in this process with the waits, publishes and checks the pub/sub tests
//! share.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use colony::{
    ClusterCa, ContentType, Context, Error, Node, Published, ServiceRef, Subscriber, Subscribing,
    SubscriptionStats,
};
use tokio::sync::Semaphore;

use crate::{converge, node_builder, start_node, within, Job};

/// Events a subscription keeps in its service's mailboxes, per instance (the runtime's
/// `WINDOW_PER_INSTANCE`, with the default mailbox of 1024): with a handler stuck, at most this
/// many leave the subscription's buffer.
pub const WINDOW: usize = 64;

/// One call of a [`Probe`]'s handler.
#[derive(Debug, Clone)]
pub struct Call {
    /// The job's id.
    pub id: u64,
    /// `Context::subject`.
    pub subject: String,
    /// `Context::attempt`.
    pub attempt: u32,
    /// The event came from another node (`Context::peer`).
    pub remote: bool,
    /// `Context::content_type`: `None` when the value arrived without encoding.
    pub content_type: Option<ContentType>,
    /// The handler returned `Ok`.
    pub ok: bool,
}

/// The calls of a [`Probe`] service, shared by its instances and their restarts.
#[derive(Debug, Clone, Default)]
pub struct Calls(Arc<Mutex<Vec<Call>>>);

impl Calls {
    /// Every call so far, in order.
    pub fn all(&self) -> Vec<Call> {
        self.0.lock().unwrap().clone()
    }

    /// Ids handled with `Ok`, in order.
    pub fn handled(&self) -> Vec<u64> {
        self.all()
            .into_iter()
            .filter(|c| c.ok)
            .map(|c| c.id)
            .collect()
    }

    /// How many calls returned `Ok`.
    pub fn handled_count(&self) -> usize {
        self.0.lock().unwrap().iter().filter(|c| c.ok).count()
    }

    fn push(&self, call: Call) {
        self.0.lock().unwrap().push(call);
    }
}

/// What a [`Probe`] does with a job.
#[derive(Debug, Clone, Copy, Default)]
pub enum Mode {
    /// Handles it.
    #[default]
    Ok,
    /// Panics on the first attempt of the ids the function picks.
    PanicFirst(fn(u64) -> bool),
    /// Fails every attempt with `Err`.
    Fail,
}

/// A subscriber that records every call, optionally waiting on a gate first.
#[derive(Debug, Clone, Default)]
pub struct Probe {
    /// Where its calls are recorded.
    pub calls: Calls,
    /// What it does with each job.
    pub mode: Mode,
    /// Every call waits until the gate is closed (a closed semaphore is an open gate).
    pub gate: Option<Arc<Semaphore>>,
}

impl Probe {
    /// A probe that handles every job, recording into `calls`.
    pub fn new(calls: &Calls) -> Self {
        Self {
            calls: calls.clone(),
            ..Self::default()
        }
    }

    /// A probe that handles every job, recording into `calls`, each call waiting on `gate` first.
    pub fn gated(calls: &Calls, gate: &Arc<Semaphore>) -> Self {
        Self {
            gate: Some(gate.clone()),
            ..Self::new(calls)
        }
    }
}

impl Subscriber<Job> for Probe {
    async fn handle(&mut self, job: Job, ctx: &Context) -> Result<(), Error> {
        if let Some(gate) = &self.gate {
            let _ = gate.acquire().await;
        }
        let fails = match self.mode {
            Mode::Ok => false,
            Mode::PanicFirst(pick) => pick(job.id) && ctx.attempt() == 1,
            Mode::Fail => true,
        };
        self.calls.push(Call {
            id: job.id,
            subject: ctx.subject().expect("an event has a subject").to_string(),
            attempt: ctx.attempt(),
            remote: ctx.peer().is_some(),
            content_type: ctx.content_type(),
            ok: !fails,
        });
        match self.mode {
            Mode::PanicFirst(_) if fails => {
                panic!("probe panics on the first attempt of job {}", job.id)
            }
            Mode::Fail => Err(Error::internal(format!("probe fails job {}", job.id))),
            _ => Ok(()),
        }
    }
}

/// Spawns `subscribing` with `probe`'s state.
pub async fn spawn_probe(subscribing: Subscribing<Probe>, probe: Probe) -> ServiceRef {
    subscribing
        .spawn(move || probe.clone())
        .await
        .expect("subscriber starts")
}

/// Runs service `name` on `node`: a [`Probe`] recording into `calls`, subscribed to `pattern`.
pub async fn subscribe(node: &Node, name: &str, pattern: &str, calls: &Calls) -> ServiceRef {
    spawn_probe(
        node.service(name).subscribe::<Job>(pattern),
        Probe::new(calls),
    )
    .await
}

/// A gate held closed until the test opens it.
pub fn gate() -> Arc<Semaphore> {
    Arc::new(Semaphore::new(0))
}

/// Starts nodes named `names`, the first one the others' seed, and waits until each sees all.
pub async fn cluster(ca: &Arc<ClusterCa>, names: &[&str]) -> Vec<Node> {
    let first = start_node(ca, names[0]).await;
    let seed = first.addr().to_string();
    let mut nodes = vec![first];
    for name in &names[1..] {
        let node = node_builder(ca, name)
            .seeds([seed.clone()])
            .start()
            .await
            .expect("node starts");
        nodes.push(node);
    }
    for node in &nodes {
        converge(node, "every member", |r| r.members().len() == names.len()).await;
    }
    nodes
}

/// Waits until every node in `nodes` sees `count` instances of each service in `services`.
pub async fn see(nodes: &[Node], services: &[&str], count: usize) {
    for node in nodes {
        for service in services {
            converge(node, &format!("{count} instances of {service}"), |r| {
                r.instances(service).len() == count
            })
            .await;
        }
    }
}

/// Shuts `nodes` down, one after another.
pub async fn shutdown(nodes: Vec<Node>) {
    for node in nodes {
        within("node shutdown", node.shutdown()).await;
    }
}

/// The counters of `service`'s subscription to `pattern` on its node.
pub fn stats(service: &ServiceRef, pattern: &str) -> SubscriptionStats {
    service
        .health()
        .expect("the service runs")
        .subscriptions
        .into_iter()
        .find(|s| s.pattern == pattern)
        .unwrap_or_else(|| panic!("no subscription to {pattern}"))
}

/// What a publish returns that reached `subscriptions` subscriptions on `nodes` nodes.
pub fn published(nodes: usize, subscriptions: usize) -> Published {
    Published {
        nodes,
        subscriptions,
    }
}

/// Publishes `Job { id }` to `subject` from `from`, and asserts that it succeeds with `expected`.
pub async fn publish_job(from: &Node, subject: &str, id: u64, expected: Published) {
    let got = from
        .client()
        .publish(subject, Job { id })
        .await
        .unwrap_or_else(|e| panic!("publish {id} to {subject} from {}: {e}", from.name()));
    assert_eq!(
        got,
        expected,
        "publish {id} to {subject} from {}",
        from.name()
    );
}

/// [`publish_job`] for each of `ids`, in order: every publish must succeed with `expected`.
pub async fn publish_jobs(
    from: &Node,
    subject: &str,
    ids: impl IntoIterator<Item = u64>,
    expected: Published,
) {
    for id in ids {
        publish_job(from, subject, id, expected).await;
    }
}

/// The ids in `range`, as a set.
pub fn ids(range: std::ops::Range<u64>) -> BTreeSet<u64> {
    range.collect()
}

/// Asserts `handled` holds every id in `0..n` exactly once.
pub fn assert_exactly_once(handled: &[u64], n: u64, who: &str) {
    let mut count: BTreeMap<u64, usize> = BTreeMap::new();
    for id in handled {
        *count.entry(*id).or_default() += 1;
    }
    let twice: Vec<u64> = count
        .iter()
        .filter(|(_, c)| **c > 1)
        .map(|(id, _)| *id)
        .collect();
    assert!(
        twice.is_empty(),
        "{who} handled ids more than once: {twice:?}"
    );
    let missing: Vec<u64> = (0..n).filter(|id| !count.contains_key(id)).collect();
    assert!(missing.is_empty(), "{who} never handled ids {missing:?}");
    assert_eq!(handled.len() as u64, n, "{who}: handled count");
}
