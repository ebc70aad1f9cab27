//! `colony.node`: the service every node runs about itself, for the `colony` CLI and tools.
//!
//! It is not advertised in gossip (every node has one; a caller addresses a node by address)
//! and its name is reserved. It answers the node's health (`colony health`) and what the
//! node's selectors know of the instances they call, which `colony describe` shows per calling
//! node.

use std::sync::{Arc, Weak};

use serde::{Deserialize, Serialize};

use super::{Shared, StartError};
use crate::call::InstanceReport;
use crate::context::Context;
use crate::error::{Code, Error};
use crate::message::{Handler, Message};
use crate::service::NodeHealth;

/// The name of the per-node introspection service.
pub const NODE_SERVICE: &str = "colony.node";

/// Asks a node what its selector knows of each instance of a service.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SelectorQuery {
    /// The service.
    pub service: String,
}

/// A node's view of the instances of one service, as its selector sees them.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SelectorView {
    /// The reporting node.
    pub node: String,
    /// One row per instance; empty when the node has not called the service.
    pub instances: Vec<InstanceReport>,
}

impl Message for SelectorQuery {
    type Reply = SelectorView;
    const ENDPOINT: &'static str = "Node.Selector";
}

/// Asks a node for its health.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct HealthQuery {}

impl Message for HealthQuery {
    type Reply = NodeHealth;
    const ENDPOINT: &'static str = "Node.Health";
}

struct Introspect {
    node: Weak<Shared>,
}

impl Introspect {
    fn node(&self) -> Result<Arc<Shared>, Error> {
        self.node
            .upgrade()
            .ok_or_else(|| Error::unavailable("node is stopping"))
    }
}

impl Handler<SelectorQuery> for Introspect {
    async fn handle(&mut self, q: SelectorQuery, _: &Context) -> Result<SelectorView, Error> {
        let caller = self.node()?.caller.clone();
        Ok(SelectorView {
            node: caller.name.clone(),
            instances: caller.selectors.report(&q.service).await,
        })
    }
}

impl Handler<HealthQuery> for Introspect {
    async fn handle(&mut self, _: HealthQuery, _: &Context) -> Result<NodeHealth, Error> {
        Ok(self.node()?.health())
    }
}

pub(super) async fn serve(shared: &Arc<Shared>) -> Result<(), StartError> {
    let node = Arc::downgrade(shared);
    crate::service::ServiceBuilder::new(shared.clone(), NODE_SERVICE.into())
        .unadvertised()
        .handler::<SelectorQuery>()
        .handler::<HealthQuery>()
        .spawn(move || Introspect { node: node.clone() })
        .await
        .map(|_| ())
        .map_err(|e: Error| {
            debug_assert_ne!(e.code(), Code::Conflict);
            StartError::Io(format!("{NODE_SERVICE}: {e}"))
        })
}
