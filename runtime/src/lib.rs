#![doc = include_str!("../README.md")]

mod broker;
mod call;
mod codec;
mod context;
mod error;
pub mod layer;
mod membership;
mod message;
mod node;
mod service;
mod sync;
mod wire;

pub use broker::{
    DeadLetter, Event, Publish, Published, Subscriber, Subscription, SubscriptionInfo,
    SubscriptionStats,
};
pub use call::{Call, CallDefaults, Client, InstanceReport};
pub use codec::ContentType;
pub use context::{Context, Metadata};
pub use error::{Code, Error, Origin};
pub use membership::{
    GossipStats, Member, MembershipConfig, Registry, RegistryEvent, Role, ServiceInstance, Watch,
};
pub use message::{Handler, Message};
pub use node::{Node, NodeBuilder, StartError};
pub use sync::{Election, Leader, LeaderWatch, Leadership, LockGuard, LockRequest, LockSettings};
/// colony's own per-node service and its messages, for tools like the `colony` CLI.
pub mod introspect {
    pub use crate::node::introspect::{HealthQuery, SelectorQuery, SelectorView, NODE_SERVICE};
}
/// Pub/sub settings, from `colony-actors`: a full subscriber's policy, at-least-once terms.
pub use colony_actors::broker::{Overflow, Redelivery};
pub use service::{
    BrokerHealth, Lifecycle, NodeHealth, NodeStatus, Recovery, ServiceBuilder, ServiceHealth,
    ServiceRef, ServiceStatus, Subscribing,
};

/// Instance selection and resilience settings, from `colony-actors`.
pub use colony_actors::selector::{BudgetPolicy, OutlierPolicy, Strategy};
/// Supervision settings, from `colony-actors`.
pub use colony_actors::{ChildPolicy, RestartPolicy, RestartStrategy};
/// TLS identity and transport settings, from `colony-quic`.
pub use colony_quic::{ClusterCa, Identity, TransportConfig};

/// What most programs need: `use colony::prelude::*;`.
pub mod prelude {
    pub use crate::{Client, Code, Context, Error, Event, Handler, Message, Node, Subscriber};
}
