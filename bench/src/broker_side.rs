//! colony's side of the pub/sub scenario: the subscriber services and the publisher.
//!
//! A subscriber child's node joins the publishing node and spawns two subscriber services on
//! the scenario's subjects: `sink-amo` (at-most-once, the default) and `sink-alo`
//! (`.at_least_once()`), both with the default buffer and overflow, and in a queue group when
//! asked. Their handler only records the tick in the child's tally and acknowledges it. The
//! publisher is what a colony user writes: `client.publish(subject, tick).await` in a loop,
//! from one or several tasks sharing the node's client, then `client.flush(..)` (which also
//! waits for the at-least-once acknowledgements).

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use colony::{Context, Error, Event, Node, Subscriber};

use crate::certs::BoxError;
use crate::publish::Publisher;
use crate::tally::SharedTally;
use crate::tick::{Mode, Tick};

/// How long a flush may wait for the subscribers' acknowledgements.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(60);

impl Event for Tick {}

/// A subscriber instance: counts what it is handed.
struct Sink {
    tally: SharedTally,
}

impl Subscriber<Tick> for Sink {
    async fn handle(&mut self, tick: Tick, _ctx: &Context) -> Result<(), Error> {
        self.tally
            .lock()
            .expect("tally lock")
            .record(tick.run, tick.probe, tick.seq, tick.sent_ns);
        Ok(())
    }
}

/// Starts a node named `name` that joins `seed` (CA from `dir`) and subscribes to
/// `scenario`'s at-most-once and at-least-once subjects, in `queue` group if given.
pub(crate) async fn subscriber_node(
    dir: &Path,
    name: &str,
    seed: SocketAddr,
    scenario: &str,
    queue: Option<&str>,
    tally: SharedTally,
) -> Result<Node, BoxError> {
    let node = Node::builder()
        .name(name)
        .listen("127.0.0.1:0")
        .ca_dir(dir)
        .seeds([seed.to_string()])
        .start()
        .await?;
    for (mode, service) in [
        (Mode::AtMostOnce, "sink-amo"),
        (Mode::AtLeastOnce, "sink-alo"),
    ] {
        let mut subscribing = node
            .service(service)
            .subscribe::<Tick>(&mode.pattern(scenario));
        if let Some(group) = queue {
            subscribing = subscribing.queue(group);
        }
        if mode == Mode::AtLeastOnce {
            subscribing = subscribing.at_least_once();
        }
        let tally = tally.clone();
        subscribing
            .spawn(move || Sink {
                tally: tally.clone(),
            })
            .await?;
    }
    Ok(node)
}

/// Publishes ticks to one subject through a node's client.
#[derive(Clone)]
pub(crate) struct ColonyPublisher {
    client: colony::Client,
    subject: String,
}

impl ColonyPublisher {
    /// A publisher to `subject` through `client`.
    pub(crate) fn new(client: colony::Client, subject: String) -> Self {
        Self { client, subject }
    }
}

impl Publisher for ColonyPublisher {
    async fn publish(&self, tick: Tick) -> Result<(), String> {
        self.client
            .publish(&self.subject, tick)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    /// Waits until every publish has left the node and every at-least-once delivery is
    /// acknowledged (`Client::flush`).
    async fn flush(&self) -> Result<(), String> {
        self.client
            .flush(FLUSH_TIMEOUT)
            .await
            .map_err(|e| e.to_string())
    }
}
