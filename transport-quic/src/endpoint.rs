//! A node's QUIC endpoint: it accepts connections from peers and opens streams to them.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use quinn::{RecvStream, SendStream};

use crate::config::TransportConfig;
use crate::error::{BindError, IdentityError, OneWayError, OpenError, WriteError};
use crate::fault::{Cuts, FaultySocket};
use crate::identity::Identity;
use crate::pool::Pool;

/// A bound QUIC endpoint with mutual TLS and a connection pool. Cheap to clone.
#[derive(Clone)]
pub struct Endpoint {
    quinn: quinn::Endpoint,
    pool: Arc<Pool>,
    /// Cleared by [`Endpoint::stop_accepting`]: [`Endpoint::accept`] then refuses attempts.
    accepting: Arc<AtomicBool>,
    config: Arc<TransportConfig>,
    /// Peers cut off by [`Endpoint::cut_off`]: the socket drops their datagrams.
    cuts: Arc<Cuts>,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("local_addr", &self.quinn.local_addr().ok())
            .finish_non_exhaustive()
    }
}

/// A UDP socket bound to `addr` with larger buffers. A refused buffer size is not an error:
/// the socket still works, only with the kernel's default.
fn udp_socket(addr: SocketAddr, buffer: usize) -> std::io::Result<std::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if let Err(e) = socket.set_recv_buffer_size(buffer) {
        tracing::debug!(error = %e, "cannot raise the UDP receive buffer");
    }
    if let Err(e) = socket.set_send_buffer_size(buffer) {
        tracing::debug!(error = %e, "cannot raise the UDP send buffer");
    }
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

fn quic_err(e: impl std::fmt::Display) -> IdentityError {
    IdentityError::Pem(format!("QUIC TLS config: {e}"))
}

impl Endpoint {
    /// Binds a UDP socket on `addr` and serves and dials with `identity`.
    ///
    /// Must be called inside a tokio runtime.
    pub fn bind(
        addr: SocketAddr,
        identity: &Identity,
        config: TransportConfig,
    ) -> Result<Self, BindError> {
        let transport = Arc::new(config.quinn());
        let server_tls =
            quinn::crypto::rustls::QuicServerConfig::try_from(identity.server_config()?)
                .map_err(quic_err)?;
        let mut server_config = quinn::ServerConfig::with_crypto(Arc::new(server_tls));
        server_config.transport_config(transport.clone());
        let client_tls =
            quinn::crypto::rustls::QuicClientConfig::try_from(identity.client_config()?)
                .map_err(quic_err)?;
        let mut client_config = quinn::ClientConfig::new(Arc::new(client_tls));
        client_config.transport_config(transport);

        let io = |source| BindError::Io { addr, source };
        let socket = udp_socket(addr, config.socket_buffer).map_err(io)?;
        let runtime = quinn::default_runtime().ok_or_else(|| {
            io(std::io::Error::other(
                "no tokio runtime to run the endpoint on",
            ))
        })?;
        let cuts = Arc::new(Cuts::default());
        let socket = FaultySocket::new(runtime.wrap_udp_socket(socket).map_err(io)?, cuts.clone());
        let mut quinn = quinn::Endpoint::new_with_abstract_socket(
            quinn::EndpointConfig::default(),
            Some(server_config),
            Arc::new(socket),
            runtime,
        )
        .map_err(io)?;
        quinn.set_default_client_config(client_config);
        Ok(Self {
            quinn,
            pool: Arc::default(),
            accepting: Arc::new(AtomicBool::new(true)),
            config: Arc::new(config),
            cuts,
        })
    }

    /// The address peers reach this endpoint at (useful after binding port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.quinn
            .local_addr()
            .expect("a bound UDP socket has a local address")
    }

    /// The limits this endpoint applies.
    pub fn config(&self) -> &TransportConfig {
        &self.config
    }

    /// Waits for the next incoming connection attempt; `None` once the endpoint is closed.
    ///
    /// After [`stop_accepting`](Self::stop_accepting), attempts are refused here (the peer is
    /// told at once) and this keeps waiting.
    pub async fn accept(&self) -> Option<quinn::Incoming> {
        loop {
            let incoming = self.quinn.accept().await?;
            if self.accepting.load(Ordering::Acquire) {
                return Some(incoming);
            }
            incoming.refuse();
        }
    }

    /// Opens a stream to `peer` with `open` on its pooled connection, dialling it if needed. A
    /// pooled connection may have died since it was last used: one fresh dial is allowed
    /// before giving up.
    async fn open_with<T, F, Fut>(&self, peer: SocketAddr, open: F) -> Result<T, OpenError>
    where
        F: Fn(quinn::Connection) -> Fut,
        Fut: std::future::Future<Output = Result<T, quinn::ConnectionError>>,
    {
        let mut retried = false;
        loop {
            let conn = self.pool.connection(&self.quinn, peer).await?;
            match open(conn.clone()).await {
                Ok(stream) => return Ok(stream),
                Err(source) => {
                    self.pool.forget(peer, &conn);
                    if retried {
                        return Err(OpenError::Connection { addr: peer, source });
                    }
                    retried = true;
                }
            }
        }
    }

    /// Opens a bi-directional stream to `peer`, dialling or re-dialling its pooled connection.
    ///
    /// Bounded by [`TransportConfig::open_timeout`], so a peer at its stream limit or an
    /// unreachable address gives an error instead of a silent wait.
    pub async fn open(&self, peer: SocketAddr) -> Result<(SendStream, RecvStream), OpenError> {
        let attempt = self.open_with(peer, |conn| async move { conn.open_bi().await });
        tokio::time::timeout(self.config.open_timeout, attempt)
            .await
            .map_err(|_| OpenError::Timeout { addr: peer })?
    }

    /// Opens a one-way stream to `peer` that the caller keeps writing to (a long-lived link),
    /// dialling or re-dialling its pooled connection; bounded by the open timeout.
    pub async fn open_uni(&self, peer: SocketAddr) -> Result<SendStream, OpenError> {
        let attempt = self.open_with(peer, |conn| async move { conn.open_uni().await });
        tokio::time::timeout(self.config.open_timeout, attempt)
            .await
            .map_err(|_| OpenError::Timeout { addr: peer })?
    }

    /// Sends `payload` to `peer` on a new one-way stream: fire-and-forget, no reply.
    ///
    /// The whole send (dial, open, write) is bounded by the open timeout.
    pub async fn send_oneway(
        &self,
        peer: SocketAddr,
        payload: bytes::Bytes,
    ) -> Result<(), OneWayError> {
        if payload.len() > self.config.max_oneway {
            return Err(OneWayError::TooLarge {
                len: payload.len(),
                max: self.config.max_oneway,
            });
        }
        let attempt = async {
            let mut send = self
                .open_with(peer, |conn| async move { conn.open_uni().await })
                .await?;
            send.write_chunk(payload)
                .await
                .map_err(WriteError::Stream)?;
            let _ = send.finish();
            Ok(())
        };
        tokio::time::timeout(self.config.open_timeout, attempt)
            .await
            .map_err(|_| OneWayError::Open(OpenError::Timeout { addr: peer }))?
    }

    /// Closes the pooled connection to `peer`, if any: calls waiting on it fail at once instead
    /// of waiting for the idle timeout. Used when membership declares the peer dead.
    pub fn disconnect(&self, peer: SocketAddr) {
        self.pool.disconnect(peer);
    }

    /// Refuses new incoming connections; existing ones keep working.
    ///
    /// Attempts are refused explicitly by [`accept`](Self::accept), so keep calling it: a peer
    /// then gets "connection refused" at once. (Removing the server config instead would make
    /// quinn drop the peer's packets, leaving it to wait out its own handshake timeout.)
    pub fn stop_accepting(&self) {
        self.accepting.store(false, Ordering::Release);
    }

    /// Accepts incoming connections again after [`stop_accepting`](Self::stop_accepting).
    pub fn resume_accepting(&self) {
        self.accepting.store(true, Ordering::Release);
    }

    /// Fault injection, for partition tests and chaos drills: from now on every datagram to or
    /// from these addresses is silently dropped at the UDP socket, as an iptables `DROP` rule
    /// would (Akka's `TestConductor` blackhole is the analogue). Adds to the peers already cut.
    ///
    /// Nothing is closed or reported: connections to a cut peer fail as in a real partition,
    /// by their open or idle timeouts, and dials to it time out. Cutting on one side is enough
    /// to cut both directions. Undo with [`restore`](Self::restore).
    pub fn cut_off(&self, peers: impl IntoIterator<Item = SocketAddr>) {
        self.cuts.cut(peers);
    }

    /// Ends the fault injection of [`cut_off`](Self::cut_off): traffic to and from every peer
    /// flows again. Connections that timed out meanwhile are re-dialled on their next use.
    pub fn restore(&self) {
        self.cuts.restore();
    }

    /// The peers currently cut off by [`cut_off`](Self::cut_off), in no particular order.
    pub fn cut_peers(&self) -> Vec<SocketAddr> {
        self.cuts.peers()
    }

    /// Closes every connection at once, without waiting for peers to acknowledge.
    pub fn close_now(&self) {
        self.pool.close_all();
        self.quinn.close(crate::frame::codes::SHUTDOWN, b"shutdown");
    }

    /// Closes every connection and waits (at most `grace`) for peers to be told.
    pub async fn close(&self, grace: Duration) {
        self.close_now();
        let _ = tokio::time::timeout(grace, self.quinn.wait_idle()).await;
    }
}
