//! `colony publish <subject> '<json>'`: one event from a terminal or a script.
//!
//! The CLI is a short-lived publisher: it waits (`flush`) until the event has left for every
//! subscribed node and at-least-once subscribers have acknowledged it, because what it still
//! holds when it exits is lost with it.

use std::time::Duration;

use colony::{Error, Node};
use colony_actors::broker::Subject;
use serde::Serialize;

/// What `--json` prints after a publish.
#[derive(Serialize)]
struct Outcome<'a> {
    subject: &'a str,
    /// Nodes that got a copy.
    nodes: usize,
    /// Subscriptions it was handed to (one member per queue group).
    subscriptions: usize,
}

/// `publish failed: 400 BadRequest: <detail>`.
pub(crate) fn failure(e: &Error) -> String {
    format!(
        "publish failed: {} {:?}: {}",
        u16::from(e.code()),
        e.code(),
        e.detail()
    )
}

/// Refuses a bad subject or bad JSON before joining, with the runtime's code and wording.
pub(crate) fn check(subject: &str, event: &str) -> Result<(), String> {
    if let Err(e) = Subject::new(subject) {
        let why = format!("invalid subject {subject:?}: {e}");
        return Err(failure(&Error::bad_request(why)));
    }
    if let Err(e) = serde_json::from_str::<serde::de::IgnoredAny>(event) {
        let why = format!("the event is not valid JSON: {e}");
        return Err(failure(&Error::bad_request(why)));
    }
    Ok(())
}

/// Publishes `event` and waits, within `wait`, until it is delivered as far as a publisher can
/// know. Exit code 0, or a message (exit code 1).
pub(crate) async fn run(
    node: &Node,
    subject: &str,
    event: &str,
    wait: Duration,
    json: bool,
) -> Result<u8, String> {
    let client = node.client();
    let published = match client.publish_json(subject, event).timeout(wait).await {
        Ok(published) => published,
        Err(e) if json => {
            crate::print_json(&e);
            return Err(String::new());
        }
        Err(e) => return Err(failure(&e)),
    };
    let outcome = Outcome {
        subject,
        nodes: published.nodes,
        subscriptions: published.subscriptions,
    };
    if let Err(e) = client.flush(wait).await {
        return Err(format!(
            "published to {} node(s), {} subscription(s), but not confirmed within {wait:?}: {}",
            outcome.nodes,
            outcome.subscriptions,
            e.detail()
        ));
    }
    if json {
        crate::print_json(&outcome);
    } else {
        println!(
            "published to {} node(s), {} subscription(s)",
            outcome.nodes, outcome.subscriptions
        );
    }
    Ok(0)
}
