//! Pub/sub fixtures: the [`Job`] event, and the [`Recorder`] subscriber that remembers what it
//! handled and tells it through the [`Received`] call (for subscribers in other processes).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use colony::{Context, Error, Event, Handler, Message, Node, Redelivery, ServiceRef, Subscriber};
use serde::{Deserialize, Serialize};

/// An event with an id, published by the pub/sub tests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    /// Which one.
    pub id: u64,
}

impl Event for Job {}

/// One event a [`Recorder`] handled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Handled {
    /// The job's id.
    pub id: u64,
    /// `Context::attempt` when it was handled.
    pub attempt: u32,
    /// `Context::subject` when it was handled.
    pub subject: String,
}

/// Asks a [`Recorder`] service what it has handled so far, in order.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Received {}

impl Message for Received {
    type Reply = Vec<Handled>;
    const ENDPOINT: &'static str = "Recorder.Received";
}

/// A subscription of a [`Recorder`] service, as `colony-test-node --subscribe` takes it:
/// `<service>:<pattern>[:<queue>][:alo]` (an empty queue is none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscribeSpec {
    /// The service name.
    pub service: String,
    /// The subject pattern.
    pub pattern: String,
    /// The queue group, if any.
    pub queue: Option<String>,
    /// At-least-once delivery.
    pub at_least_once: bool,
}

impl SubscribeSpec {
    /// Parses `<service>:<pattern>[:<queue>][:alo]`.
    pub fn parse(spec: &str) -> Result<Self, String> {
        let parts: Vec<&str> = spec.split(':').collect();
        let bad = || format!("bad subscription {spec:?}: <service>:<pattern>[:<queue>][:alo]");
        if parts.len() < 2 || parts.len() > 4 || parts[0].is_empty() {
            return Err(bad());
        }
        let at_least_once = match parts.get(3) {
            None => false,
            Some(&"alo") => true,
            Some(_) => return Err(bad()),
        };
        Ok(Self {
            service: parts[0].to_string(),
            pattern: parts[1].to_string(),
            queue: parts
                .get(2)
                .filter(|q| !q.is_empty())
                .map(|q| q.to_string()),
            at_least_once,
        })
    }

    /// The spec in `--subscribe` form.
    pub fn arg(&self) -> String {
        let mut arg = format!(
            "{}:{}:{}",
            self.service,
            self.pattern,
            self.queue.as_deref().unwrap_or("")
        );
        if self.at_least_once {
            arg.push_str(":alo");
        }
        arg
    }
}

/// How a [`Recorder`] service handles its events.
#[derive(Debug, Clone, Default)]
pub struct RecorderOptions {
    /// Redelivery terms of an at-least-once subscription (default: colony's).
    pub redelivery: Option<Redelivery>,
    /// Time each event takes to handle.
    pub delay: Duration,
    /// Appends `<id> <attempt>` for each handled event to `<dir>/<node>.<service>.ids`,
    /// written through before the handler returns (so it survives a `kill -9`).
    pub record_dir: Option<PathBuf>,
}

/// A subscriber that records every [`Job`] it handles.
#[derive(Clone)]
pub struct Recorder {
    handled: Arc<Mutex<Vec<Handled>>>,
    delay: Duration,
    file: Option<Arc<Mutex<File>>>,
}

impl Subscriber<Job> for Recorder {
    async fn handle(&mut self, job: Job, ctx: &Context) -> Result<(), Error> {
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        if let Some(file) = &self.file {
            let line = format!("{} {}\n", job.id, ctx.attempt());
            file.lock()
                .unwrap()
                .write_all(line.as_bytes())
                .expect("write the record file");
        }
        self.handled.lock().unwrap().push(Handled {
            id: job.id,
            attempt: ctx.attempt(),
            subject: ctx.subject().unwrap_or_default().to_string(),
        });
        Ok(())
    }
}

impl Handler<Received> for Recorder {
    async fn handle(&mut self, _req: Received, _ctx: &Context) -> Result<Vec<Handled>, Error> {
        Ok(self.handled.lock().unwrap().clone())
    }
}

/// Where [`RecorderOptions::record_dir`] puts the records of `service` on node `node`.
pub fn record_file(dir: &Path, node: &str, service: &str) -> PathBuf {
    dir.join(format!("{node}.{service}.ids"))
}

/// Reads a record file: `(id, attempt)` per handled event; empty if there is none yet.
pub fn read_records(path: &Path) -> Vec<(u64, u32)> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    text.lines()
        // A process killed mid-write may leave half a line.
        .filter_map(|line| {
            let (id, attempt) = line.split_once(' ')?;
            Some((id.parse().ok()?, attempt.parse().ok()?))
        })
        .collect()
}

/// Runs a [`Recorder`] service on `node` with the subscription `spec`, answering [`Received`].
pub async fn start_recorder(
    node: &Node,
    spec: &SubscribeSpec,
    options: &RecorderOptions,
) -> Result<ServiceRef, Error> {
    let file = options.record_dir.as_ref().map(|dir| {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(record_file(dir, node.name(), &spec.service))
            .expect("open the record file");
        Arc::new(Mutex::new(file))
    });
    let recorder = Recorder {
        handled: Arc::default(),
        delay: options.delay,
        file,
    };
    let mut subscribing = node.service(&spec.service).subscribe::<Job>(&spec.pattern);
    if let Some(queue) = &spec.queue {
        subscribing = subscribing.queue(queue.clone());
    }
    if spec.at_least_once {
        subscribing = subscribing.redelivery(options.redelivery.unwrap_or_default());
    }
    subscribing
        .handler::<Received>()
        .spawn(move || recorder.clone())
        .await
}
