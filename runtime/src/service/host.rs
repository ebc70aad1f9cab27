//! What a service needs of the node it runs on, and nothing more.
//!
//! The node implements this; the service module never names the node, so the dependency goes
//! one way (node -> service).

use std::sync::Arc;

use colony_actors::ractor::ActorRef;

use super::node_supervisor::NodeSupervisorMsg;
use super::roster::Roster;
use super::LocalServices;
use crate::broker::AckSink;
use crate::layer::ServeLayer;
use crate::membership::Membership;

pub(crate) trait Host: Send + Sync + 'static {
    fn node_name(&self) -> &str;
    /// The services running on the node, by name.
    fn services(&self) -> &LocalServices;
    /// Every service declared here, failed ones included, in start order.
    fn roster(&self) -> &Roster;
    /// The root of the node's supervision tree (`None` while the node starts or once stopped).
    fn node_supervisor(&self) -> Option<ActorRef<NodeSupervisorMsg>>;
    /// Where services are advertised and withdrawn.
    fn membership(&self) -> &Membership;
    /// True once the node is shutting down: no new service starts.
    fn is_closing(&self) -> bool;
    /// The node's serve layers, run before every delivery.
    fn serve_layers(&self) -> Arc<[Arc<dyn ServeLayer>]>;
    /// A service started or stopped here: the node's callers must see it before their next call.
    fn local_changed(&self, service: &str);
    /// Where the node's subscriptions send acknowledgements (its broker).
    fn acks(&self) -> Arc<dyn AckSink>;
}
