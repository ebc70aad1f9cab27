//! One connection per peer, shared by every call to it, dialled again when it is lost.

use std::net::SocketAddr;
use std::sync::Arc;

use dashmap::DashMap;
use quinn::Connection;

use crate::ca::SERVER_NAME;
use crate::error::OpenError;

#[derive(Default)]
pub(crate) struct Pool {
    live: DashMap<SocketAddr, Connection>,
    // One dial at a time per peer, so a burst of first calls shares a single handshake.
    dialling: DashMap<SocketAddr, Arc<tokio::sync::Mutex<()>>>,
}

impl Pool {
    fn cached(&self, peer: SocketAddr) -> Option<Connection> {
        // Clone out of the map: no guard may live across an await.
        let conn = self.live.get(&peer).map(|c| c.value().clone())?;
        if conn.close_reason().is_none() {
            Some(conn)
        } else {
            self.forget(peer, &conn);
            None
        }
    }

    /// Drops `conn` from the pool if it is still the pooled connection to `peer`.
    pub(crate) fn forget(&self, peer: SocketAddr, conn: &Connection) {
        self.live
            .remove_if(&peer, |_, pooled| pooled.stable_id() == conn.stable_id());
    }

    pub(crate) async fn connection(
        &self,
        endpoint: &quinn::Endpoint,
        peer: SocketAddr,
    ) -> Result<Connection, OpenError> {
        if let Some(conn) = self.cached(peer) {
            return Ok(conn);
        }
        let lock = self.dialling.entry(peer).or_default().value().clone();
        let _dialling = lock.lock().await;
        if let Some(conn) = self.cached(peer) {
            return Ok(conn);
        }
        let connecting = endpoint
            .connect(peer, SERVER_NAME)
            .map_err(|source| match source {
                quinn::ConnectError::EndpointStopping => OpenError::EndpointClosed,
                source => OpenError::Connect { addr: peer, source },
            })?;
        let conn = connecting
            .await
            .map_err(|source| OpenError::Connection { addr: peer, source })?;
        tracing::debug!(%peer, "connected");
        self.live.insert(peer, conn.clone());
        Ok(conn)
    }

    pub(crate) fn disconnect(&self, peer: SocketAddr) {
        self.dialling.remove(&peer);
        if let Some((_, conn)) = self.live.remove(&peer) {
            conn.close(crate::frame::codes::PEER_GONE, b"peer left the cluster");
        }
    }

    pub(crate) fn close_all(&self) {
        for entry in self.live.iter() {
            entry
                .value()
                .close(crate::frame::codes::SHUTDOWN, b"shutdown");
        }
        self.live.clear();
    }
}
