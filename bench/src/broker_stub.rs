//! Stand-in for `broker_side.rs` until colony's pub/sub API is on this branch: every colony
//! subscriber or publisher fails to start with [`MISSING`], so the scenario reports the colony
//! columns as not measured and still runs NATS. Built without the `colony-pubsub` feature.

use std::net::SocketAddr;
use std::path::Path;

use colony::Node;

use crate::certs::BoxError;
use crate::publish::Publisher;
use crate::tally::SharedTally;
use crate::tick::Tick;

/// Why the colony side cannot run.
pub(crate) const MISSING: &str = "colony's pub/sub API is not built in (feature colony-pubsub)";

/// Fails: no pub/sub API.
pub(crate) async fn subscriber_node(
    _dir: &Path,
    _name: &str,
    _seed: SocketAddr,
    _scenario: &str,
    _queue: Option<&str>,
    _tally: SharedTally,
) -> Result<Node, BoxError> {
    Err(MISSING.into())
}

/// A publisher that fails every publish.
#[derive(Clone)]
pub(crate) struct ColonyPublisher;

impl ColonyPublisher {
    /// A publisher that fails.
    pub(crate) fn new(_client: colony::Client, _subject: String) -> Self {
        Self
    }
}

impl Publisher for ColonyPublisher {
    async fn publish(&self, _tick: Tick) -> Result<(), String> {
        Err(MISSING.into())
    }

    async fn flush(&self) -> Result<(), String> {
        Ok(())
    }
}
