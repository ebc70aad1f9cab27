#![doc = include_str!("../README.md")]

mod client;
mod codec;
mod context;
mod error;
mod membership;
mod message;
mod node;
mod service;
mod wire;

pub use client::{Call, Client};
pub use codec::ContentType;
pub use context::{Context, Metadata};
pub use error::{Code, Error, Origin};
pub use membership::{
    GossipStats, Member, MembershipConfig, Registry, RegistryEvent, Role, ServiceInstance, Watch,
};
pub use message::{Handler, Message};
pub use node::{Node, NodeBuilder, StartError};
pub use service::{ServiceBuilder, ServiceRef};

/// Supervision settings, from `colony-actors`.
pub use colony_actors::{RestartPolicy, Strategy};
/// TLS identity and transport settings, from `colony-quic`.
pub use colony_quic::{ClusterCa, Identity, TransportConfig};

/// What most programs need: `use colony::prelude::*;`.
pub mod prelude {
    pub use crate::{Client, Code, Context, Error, Handler, Message, Node};
}
