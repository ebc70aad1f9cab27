//! Transport tuning, with defaults chosen for RPC between nodes on a LAN.

use std::time::Duration;

/// Limits and timers of an [`Endpoint`](crate::Endpoint).
#[derive(Debug, Clone)]
pub struct TransportConfig {
    /// Largest frame accepted or sent, in bytes. Default 16 MiB.
    pub max_frame: usize,
    /// Concurrent bi-directional streams a peer may open on one connection. quinn's default of
    /// 100 makes the 101st concurrent call wait silently; default here 4096.
    pub max_concurrent_streams: u32,
    /// Upper bound on dialling a peer and opening a stream. Default 5 s.
    pub open_timeout: Duration,
    /// A connection with no traffic for this long is closed. Default 30 s.
    pub idle_timeout: Duration,
    /// Keep-alive ping interval, so idle pooled connections survive. Default 5 s.
    pub keep_alive: Duration,
    /// Concurrent one-way (uni-directional) streams a peer may open: gossip and other
    /// fire-and-forget messages. Default 256.
    pub max_concurrent_oneway: u32,
    /// Requested UDP send and receive buffer size, in bytes. Default 4 MiB. The kernel's
    /// default (about 200 KiB on Linux) drops datagrams under bursts, which QUIC then treats
    /// as congestion; Linux caps the request at `net.core.rmem_max` / `wmem_max`.
    pub socket_buffer: usize,
    /// Largest one-way message accepted, in bytes. Default 128 KiB (a chitchat message is at
    /// most 64 KiB).
    pub max_oneway: usize,
}

impl Default for TransportConfig {
    fn default() -> Self {
        Self {
            max_frame: 16 * 1024 * 1024,
            max_concurrent_streams: 4096,
            open_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(30),
            keep_alive: Duration::from_secs(5),
            max_concurrent_oneway: 256,
            socket_buffer: 4 * 1024 * 1024,
            max_oneway: 128 * 1024,
        }
    }
}

impl TransportConfig {
    pub(crate) fn quinn(&self) -> quinn::TransportConfig {
        let mut t = quinn::TransportConfig::default();
        // Bound what one peer can make us buffer across all its streams (quinn's default is
        // unlimited): room for a few maximum-size frames in flight.
        let window = (self.max_frame as u64)
            .saturating_mul(4)
            .clamp(8 << 20, quinn::VarInt::MAX.into_inner());
        t.receive_window(quinn::VarInt::from_u64(window).unwrap_or(quinn::VarInt::MAX))
            .max_concurrent_bidi_streams(quinn::VarInt::from_u32(self.max_concurrent_streams))
            .max_concurrent_uni_streams(quinn::VarInt::from_u32(self.max_concurrent_oneway))
            .keep_alive_interval(Some(self.keep_alive))
            .max_idle_timeout(Some(
                quinn::IdleTimeout::try_from(self.idle_timeout)
                    .unwrap_or_else(|_| quinn::IdleTimeout::from(quinn::VarInt::MAX)),
            ));
        t
    }
}
