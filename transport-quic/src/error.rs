//! One error enum per operation, in the style of quinn's own errors.

use std::io;
use std::net::SocketAddr;

/// Creating, loading or using a cluster CA or node identity failed.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// Certificate generation or signing failed.
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    /// The CA or identity files could not be read or written.
    #[error("cannot access {path}: {source}")]
    Io {
        /// The file or directory involved.
        path: std::path::PathBuf,
        /// What the OS said.
        source: io::Error,
    },
    /// A PEM file did not hold what it should.
    #[error("malformed PEM: {0}")]
    Pem(String),
    /// rustls refused the certificate or key.
    #[error("TLS configuration rejected: {0}")]
    Tls(#[from] rustls::Error),
    /// No per-user directory could be found for the default CA.
    #[error("no home directory: set COLONY_HOME or configure a CA explicitly")]
    NoHome,
}

/// Binding an [`Endpoint`](crate::Endpoint) failed.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// The UDP socket could not be bound.
    #[error("cannot bind {addr}: {source}")]
    Io {
        /// The address asked for.
        addr: SocketAddr,
        /// What the OS said.
        source: io::Error,
    },
    /// The identity could not be turned into a TLS configuration.
    #[error(transparent)]
    Identity(#[from] IdentityError),
}

/// Opening a stream to a peer failed; nothing was sent.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The endpoint is shut down.
    #[error("endpoint is closed")]
    EndpointClosed,
    /// The connection attempt could not start (bad address, endpoint stopping...).
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// The peer.
        addr: SocketAddr,
        /// quinn's reason.
        source: quinn::ConnectError,
    },
    /// The handshake failed: peer unreachable, refused our certificate, or we refused its.
    #[error("connection to {addr} failed: {source}")]
    Connection {
        /// The peer.
        addr: SocketAddr,
        /// quinn's reason.
        source: quinn::ConnectionError,
    },
    /// No handshake or stream within the configured open timeout.
    #[error("timed out opening a stream to {addr}")]
    Timeout {
        /// The peer.
        addr: SocketAddr,
    },
}

impl OpenError {
    /// True when the TLS handshake refused a certificate (ours or the peer's): the peer is not
    /// a member of this cluster, or we are not a member of its cluster.
    pub fn is_auth_failure(&self) -> bool {
        match self {
            OpenError::Connection { source, .. } => closed_by_tls_alert(source),
            _ => false,
        }
    }
}

/// True when a connection ended with a TLS alert: a handshake refused a certificate.
fn closed_by_tls_alert(error: &quinn::ConnectionError) -> bool {
    fn tls_alert(code: quinn::TransportErrorCode) -> bool {
        (0x100..=0x1ff).contains(&u64::from(code))
    }
    match error {
        quinn::ConnectionError::TransportError(e) => tls_alert(e.code),
        quinn::ConnectionError::ConnectionClosed(close) => tls_alert(close.error_code),
        _ => false,
    }
}

/// Reading a frame failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The peer announced a frame larger than the limit; the stream was stopped.
    #[error("frame of {len} bytes exceeds the {max} byte limit")]
    TooLarge {
        /// Announced length.
        len: u64,
        /// Configured limit.
        max: usize,
    },
    /// The stream ended in the middle of a frame.
    #[error("stream ended inside a frame")]
    Truncated,
    /// The stream ended cleanly before a frame began.
    #[error("stream ended before a frame")]
    Finished,
    /// The peer reset the stream or the connection was lost.
    #[error("stream read failed: {0}")]
    Stream(#[from] quinn::ReadError),
}

impl ReadError {
    /// True when the connection was lost because the peer refused our certificate. With TLS 1.3
    /// a client learns this only after its own side of the handshake finished, so the refusal
    /// shows up on the first read of a stream rather than when opening it.
    pub fn is_auth_failure(&self) -> bool {
        matches!(self, ReadError::Stream(quinn::ReadError::ConnectionLost(e)) if closed_by_tls_alert(e))
    }
}

/// Writing a frame failed.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The frame is larger than the limit; nothing was written.
    #[error("frame of {len} bytes exceeds the {max} byte limit")]
    TooLarge {
        /// Frame length.
        len: usize,
        /// Configured limit.
        max: usize,
    },
    /// The peer stopped the stream or the connection was lost.
    #[error("stream write failed: {0}")]
    Stream(#[from] quinn::WriteError),
}

/// Sending a one-way message failed.
#[derive(Debug, thiserror::Error)]
pub enum OneWayError {
    /// The message is larger than [`TransportConfig::max_oneway`](crate::TransportConfig).
    #[error("one-way message of {len} bytes exceeds the {max} byte limit")]
    TooLarge {
        /// Message length.
        len: usize,
        /// Configured limit.
        max: usize,
    },
    /// No stream could be opened.
    #[error(transparent)]
    Open(#[from] OpenError),
    /// The stream broke while writing.
    #[error(transparent)]
    Write(#[from] WriteError),
}
