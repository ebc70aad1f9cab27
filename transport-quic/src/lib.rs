//! The wire under colony: mutually-authenticated QUIC between nodes, and nothing about actors.
//!
//! - [`ClusterCa`] is a cluster's certificate authority; [`ClusterCa::issue`] gives a node its
//!   [`Identity`]. With no CA configured, [`ClusterCa::load_or_create`] keeps one per user in
//!   `~/.colony` (owner-only), so nodes started by one user on one machine trust each other.
//! - [`Endpoint`] binds one UDP port, serves peers and dials them. Every connection is TLS 1.3
//!   with client certificates: a peer whose certificate is not from the cluster CA is refused in
//!   the handshake, in both directions. One connection per peer is pooled and re-dialled when
//!   lost; each call gets its own bi-directional stream, and one-way messages (gossip) each get a
//!   uni-directional stream ([`Endpoint::send_oneway`], [`frame::read_oneway`]).
//!   For partition tests, [`Endpoint::cut_off`] drops a peer's datagrams at the UDP socket
//!   until [`Endpoint::restore`].
//! - [`frame`] reads and writes length-prefixed frames with a size limit checked before any
//!   allocation.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use colony_quic::{ClusterCa, Endpoint, TransportConfig, frame};
//!
//! let ca = ClusterCa::generate()?;
//! let server = Endpoint::bind("127.0.0.1:0".parse()?, &ca.issue("a")?, TransportConfig::default())?;
//! let client = Endpoint::bind("127.0.0.1:0".parse()?, &ca.issue("b")?, TransportConfig::default())?;
//!
//! let (mut send, mut recv) = client.open(server.local_addr()).await?;
//! let mut buf = bytes::BytesMut::new();
//! frame::encode_frame(&mut buf, b"hello", client.config().max_frame)?;
//! frame::write_frames(&mut send, buf.freeze()).await?;
//! send.finish()?;
//! # Ok(()) }
//! ```

mod ca;
mod config;
mod endpoint;
mod error;
mod fault;
pub mod frame;
mod identity;
mod pool;

pub use ca::{ClusterCa, CA_FILE, SERVER_NAME};
pub use config::TransportConfig;
pub use endpoint::Endpoint;
pub use error::{BindError, IdentityError, OneWayError, OpenError, ReadError, WriteError};
pub use identity::{Identity, ALPN};
pub use quinn::{Connection, Incoming, RecvStream, SendStream, VarInt};
