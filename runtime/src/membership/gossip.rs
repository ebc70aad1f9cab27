//! chitchat's messages carried over the node's QUIC endpoint instead of plain UDP.
//!
//! Each message travels on its own one-way stream, tagged [`GOSSIP`]. Only peers holding a
//! certificate from the cluster CA can open streams, so nobody outside the cluster can join,
//! inject or alter membership state: the property plain chitchat UDP lacks.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use chitchat::transport::{Socket, Transport};
use chitchat::{ChitchatMessage, Deserializable, Serializable};
use colony_quic::Endpoint;
use tokio::sync::{mpsc, Mutex};

/// First byte of a one-way stream that carries a chitchat message.
pub(crate) const GOSSIP: u8 = 0x01;

/// Gossip messages waiting for chitchat to read them; beyond this, new ones are dropped (gossip
/// repeats itself every round, so a dropped message costs latency, not state).
const INBOX: usize = 1024;

/// Gossip traffic counters of one node.
#[derive(Debug, Default)]
pub(crate) struct GossipCounters {
    pub(crate) bytes_sent: AtomicU64,
    pub(crate) bytes_received: AtomicU64,
    pub(crate) rejected: AtomicU64,
}

/// Where the server hands inbound gossip streams.
#[derive(Clone)]
pub(crate) struct GossipInbox {
    tx: mpsc::Sender<(SocketAddr, Bytes)>,
    counters: Arc<GossipCounters>,
}

impl GossipInbox {
    /// Accepts one inbound one-way payload (tag byte already checked) from `from`.
    pub(crate) fn deliver(&self, from: SocketAddr, payload: Bytes) {
        self.counters
            .bytes_received
            .fetch_add(payload.len() as u64 + 1, Ordering::Relaxed);
        if self.tx.try_send((from, payload)).is_err() {
            self.counters.rejected.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The chitchat [`Transport`] over a colony endpoint.
pub(crate) struct QuicGossip {
    endpoint: Endpoint,
    inbox: Mutex<Option<mpsc::Receiver<(SocketAddr, Bytes)>>>,
    counters: Arc<GossipCounters>,
}

impl QuicGossip {
    pub(crate) fn new(endpoint: Endpoint, counters: Arc<GossipCounters>) -> (Self, GossipInbox) {
        let (tx, rx) = mpsc::channel(INBOX);
        let inbox = GossipInbox {
            tx,
            counters: counters.clone(),
        };
        let transport = Self {
            endpoint,
            inbox: Mutex::new(Some(rx)),
            counters,
        };
        (transport, inbox)
    }
}

#[async_trait::async_trait]
impl Transport for QuicGossip {
    async fn open(&self, _listen_addr: SocketAddr) -> anyhow::Result<Box<dyn Socket>> {
        let inbox = self
            .inbox
            .lock()
            .await
            .take()
            .ok_or_else(|| anyhow::anyhow!("the gossip socket is already open"))?;
        Ok(Box::new(QuicGossipSocket {
            endpoint: self.endpoint.clone(),
            inbox,
            counters: self.counters.clone(),
        }))
    }
}

struct QuicGossipSocket {
    endpoint: Endpoint,
    inbox: mpsc::Receiver<(SocketAddr, Bytes)>,
    counters: Arc<GossipCounters>,
}

#[async_trait::async_trait]
impl Socket for QuicGossipSocket {
    async fn send(&mut self, to: SocketAddr, msg: ChitchatMessage) -> anyhow::Result<()> {
        let mut buf = Vec::with_capacity(1 + msg.serialized_len());
        buf.push(GOSSIP);
        msg.serialize(&mut buf);
        let payload = Bytes::from(buf);
        let len = payload.len() as u64;
        let endpoint = self.endpoint.clone();
        let counters = self.counters.clone();
        // Never hold up chitchat's loop on a slow or dead peer: the send runs on its own, bounded
        // by the endpoint's open timeout.
        tokio::spawn(async move {
            match endpoint.send_oneway(to, payload).await {
                Ok(()) => {
                    counters.bytes_sent.fetch_add(len, Ordering::Relaxed);
                }
                Err(e) => tracing::trace!(peer = %to, error = %e, "gossip send failed"),
            }
        });
        Ok(())
    }

    async fn recv(&mut self) -> anyhow::Result<(SocketAddr, ChitchatMessage)> {
        loop {
            let (from, payload) = self
                .inbox
                .recv()
                .await
                .ok_or_else(|| anyhow::anyhow!("gossip inbox closed"))?;
            let mut bytes = &payload[..];
            match ChitchatMessage::deserialize(&mut bytes) {
                Ok(msg) if bytes.is_empty() => return Ok((from, msg)),
                Ok(_) | Err(_) => {
                    self.counters.rejected.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(%from, len = payload.len(), "dropped malformed gossip message");
                }
            }
        }
    }
}
