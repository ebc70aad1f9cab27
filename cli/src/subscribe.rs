//! `colony subscribe <pattern>`: the terminal as a subscriber.
//!
//! The CLI's node (client-only) spawns a one-instance service, `cli-sub-<pid>`, subscribed to
//! the pattern with `serde_json::Value` events: its subscription travels in gossip like any
//! service's, so publishers send it events, as JSON since it has no Rust types. Each event is
//! printed as one JSON line on stdout, flushed at once, so `jq` or a script can follow:
//!
//! ```text
//! {"subject":"orders.created","event":{"id":7}}
//! {"subject":"orders.created","event":{"id":8},"attempt":2}    # an at-least-once redelivery
//! ```
//!
//! Nothing else goes to stdout; status goes to stderr. It runs until Ctrl-C or SIGTERM (then
//! the node leaves gracefully: what it holds is handled or, at-least-once, acknowledged first),
//! or until `--count` events are printed.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use colony::{Context, Error, Node, Overflow, Subscriber};
use colony_actors::broker::Pattern;
use serde::Serialize;
use serde_json::Value;
use tokio::io::AsyncWriteExt;
use tokio::sync::Notify;

/// What to subscribe to, from the command line.
pub(crate) struct Options {
    pub(crate) pattern: String,
    pub(crate) queue: Option<String>,
    pub(crate) at_least_once: bool,
    pub(crate) count: Option<u64>,
}

/// Refuses a bad pattern before joining.
pub(crate) fn check(pattern: &str) -> Result<(), String> {
    Pattern::new(pattern)
        .map(|_| ())
        .map_err(|e| format!("invalid subscription pattern {pattern:?}: {e}"))
}

/// One printed line.
#[derive(Serialize)]
struct Line<'a> {
    subject: &'a str,
    event: &'a Value,
    /// Only on a redelivery: the first attempt is the usual case, and keeps lines short.
    #[serde(skip_serializing_if = "is_first")]
    attempt: u32,
}

fn is_first(attempt: &u32) -> bool {
    *attempt <= 1
}

/// Shared by the instance (restarted or not) and the command: how many events were printed,
/// and whether the command should end.
struct Tally {
    printed: AtomicU64,
    limit: Option<u64>,
    ended: AtomicBool,
    /// Stdout is closed: the reader is gone.
    closed: AtomicBool,
    /// Wakes the command: the count is reached, or stdout closed.
    end: Notify,
}

impl Tally {
    fn finish(&self) {
        if !self.ended.swap(true, Ordering::AcqRel) {
            self.end.notify_one();
        }
    }
}

/// The subscriber's state: prints each event it handles.
struct Printer {
    out: tokio::io::Stdout,
    tally: Arc<Tally>,
}

impl Subscriber<Value> for Printer {
    async fn handle(&mut self, event: Value, ctx: &Context) -> Result<(), Error> {
        // Past the count (the node is leaving), events are refused rather than silently
        // swallowed: at-least-once ones go to another subscriber.
        if self.tally.ended.load(Ordering::Acquire) {
            return Err(Error::unavailable("colony subscribe is leaving"));
        }
        let line = Line {
            subject: ctx.subject().unwrap_or_default(),
            event: &event,
            attempt: ctx.attempt(),
        };
        let mut text = serde_json::to_vec(&line).map_err(|e| Error::internal(e.to_string()))?;
        text.push(b'\n');
        let written = async {
            self.out.write_all(&text).await?;
            self.out.flush().await
        };
        if let Err(e) = written.await {
            // `colony subscribe ... | head -1`: the reader is gone, so is the point of going on.
            self.tally.closed.store(true, Ordering::Release);
            self.tally.finish();
            return Err(Error::unavailable(format!("stdout closed: {e}")));
        }
        let printed = self.tally.printed.fetch_add(1, Ordering::AcqRel) + 1;
        if self.tally.limit == Some(printed) {
            self.tally.finish();
        }
        Ok(())
    }
}

/// Subscribes and prints events until interrupted or `--count` is reached. The caller shuts the
/// node down afterwards.
pub(crate) async fn run(node: &Node, options: Options) -> Result<u8, String> {
    let name = format!("cli-sub-{}", std::process::id());
    let tally = Arc::new(Tally {
        printed: AtomicU64::new(0),
        limit: options.count,
        ended: AtomicBool::new(false),
        closed: AtomicBool::new(false),
        end: Notify::new(),
    });
    // One instance: events are printed in the order the subscription receives them.
    let mut sub = node
        .service(name.as_str())
        .instances(1)
        .subscribe::<Value>(&options.pattern);
    if let Some(queue) = &options.queue {
        sub = sub.queue(queue.as_str());
    }
    sub = if options.at_least_once {
        sub.at_least_once()
    } else {
        // A terminal that cannot keep up drops its oldest events (counted, see `colony
        // describe`) rather than slowing the cluster's publishers down.
        sub.overflow(Overflow::DropOldest)
    };
    let for_instances = tally.clone();
    sub.spawn(move || Printer {
        out: tokio::io::stdout(),
        tally: for_instances.clone(),
    })
    .await
    .map_err(|e| {
        format!(
            "cannot subscribe: {} {:?}: {}",
            u16::from(e.code()),
            e.code(),
            e.detail()
        )
    })?;
    let queue = options
        .queue
        .as_deref()
        .map_or(String::new(), |q| format!(", queue group {q}"));
    let guarantee = if options.at_least_once {
        "at-least-once"
    } else {
        "at-most-once"
    };
    eprintln!(
        "colony: subscribed to {} as {name} ({guarantee}{queue}); events print as JSON lines; \
         Ctrl-C to stop",
        options.pattern
    );
    let why = tokio::select! {
        _ = tally.end.notified() => "done",
        _ = tokio::signal::ctrl_c() => "interrupted",
        _ = terminated() => "terminated",
    };
    let why = match tally.closed.load(Ordering::Acquire) {
        true => "stdout closed",
        false => why,
    };
    // The node now leaves gracefully; a second Ctrl-C does not wait for it.
    tokio::spawn(async {
        if tokio::signal::ctrl_c().await.is_ok() {
            std::process::exit(130);
        }
    });
    tally.ended.store(true, Ordering::Release);
    eprintln!(
        "colony: {why} after {} event(s); leaving the cluster",
        tally.printed.load(Ordering::Acquire)
    );
    Ok(0)
}

/// Resolves on SIGTERM (how `kill`, systemd and Kubernetes ask a process to stop).
async fn terminated() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            term.recv().await;
            return;
        }
    }
    std::future::pending::<()>().await
}
