//! The floor under colony's remote call: plain quinn request/response loops, no runtime.
//!
//! Same transport settings as a colony node (TLS 1.3 on ring with client certificates, 4096
//! concurrent streams, 5 s keep-alive, 30 s idle timeout) and the same framing
//! (`colony_quic::frame`, a 4-byte length then the bytes), but no headers, no codec and no
//! actors: the server echoes the frame's bytes. Two client shapes:
//!
//! - [`Shape::StreamPerCall`]: a new bi-directional stream per request, as colony does;
//! - [`Shape::OneStream`]: one long-lived stream carrying every request and reply.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use colony_quic::frame;
use quinn::{Connection, RecvStream, SendStream};

use crate::certs::{BoxError, Pki, SERVER_NAME};
use crate::load::Caller;

const ALPN: &[u8] = b"colony-bench-raw/1";

/// Largest frame read, as colony's default.
const MAX_FRAME: usize = 16 * 1024 * 1024;

fn transport() -> Arc<quinn::TransportConfig> {
    // The settings of colony_quic::TransportConfig::default().
    let mut t = quinn::TransportConfig::default();
    t.max_concurrent_bidi_streams(quinn::VarInt::from_u32(4096))
        .max_concurrent_uni_streams(quinn::VarInt::from_u32(0))
        .keep_alive_interval(Some(Duration::from_secs(5)))
        .max_idle_timeout(Some(
            quinn::IdleTimeout::try_from(Duration::from_secs(30)).expect("30 s is a valid timeout"),
        ));
    Arc::new(t)
}

/// Binds a server on a free loopback port that echoes every frame on every stream; the accept
/// loop runs in a spawned task. Returns the endpoint (drop it to stop) and its address.
pub(crate) fn start_server(pki: &Pki) -> Result<(quinn::Endpoint, SocketAddr), BoxError> {
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(pki.rustls_server(ALPN)?)?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    config.transport_config(transport());
    let endpoint = quinn::Endpoint::server(config, "127.0.0.1:0".parse()?)?;
    let addr = endpoint.local_addr()?;
    let accepting = endpoint.clone();
    tokio::spawn(async move {
        while let Some(incoming) = accepting.accept().await {
            tokio::spawn(async move {
                let Ok(conn) = incoming.await else { return };
                while let Ok((send, recv)) = conn.accept_bi().await {
                    tokio::spawn(echo_stream(send, recv));
                }
            });
        }
    });
    Ok((endpoint, addr))
}

/// Answers every frame on a stream with the same bytes until the caller finishes it.
async fn echo_stream(mut send: SendStream, mut recv: RecvStream) {
    while let Ok(request) = frame::read_frame(&mut recv, MAX_FRAME).await {
        let mut out = BytesMut::new();
        if frame::encode_frame(&mut out, &request, MAX_FRAME).is_err()
            || frame::write_frames(&mut send, out.freeze()).await.is_err()
        {
            return;
        }
    }
    let _ = send.finish();
}

/// A client endpoint and its one connection to the server at `addr`.
pub(crate) async fn connect(
    pki: &Pki,
    addr: SocketAddr,
) -> Result<(quinn::Endpoint, Connection), BoxError> {
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(pki.rustls_client(ALPN)?)?;
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    config.transport_config(transport());
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse()?)?;
    endpoint.set_default_client_config(config);
    let conn = endpoint.connect(addr, SERVER_NAME)?.await?;
    Ok((endpoint, conn))
}

/// How requests travel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shape {
    /// A new bi-directional stream per request (colony's shape).
    StreamPerCall,
    /// One long-lived stream, requests and replies as consecutive frames.
    OneStream,
}

/// One load task's request/response loop.
pub(crate) struct RawCaller {
    conn: Connection,
    shape: Shape,
    /// The request, already framed.
    request: Bytes,
    payload: usize,
    stream: Option<(SendStream, RecvStream)>,
}

impl RawCaller {
    /// Sends `payload` bytes per request over `conn`.
    pub(crate) fn new(conn: Connection, shape: Shape, payload: usize) -> Self {
        let mut request = BytesMut::new();
        frame::encode_frame(&mut request, &vec![b'x'; payload], MAX_FRAME)
            .expect("bench payloads are under the frame limit");
        Self {
            conn,
            shape,
            request: request.freeze(),
            payload,
            stream: None,
        }
    }

    fn check(&self, reply: &Bytes) -> Result<(), String> {
        if reply.len() == self.payload {
            Ok(())
        } else {
            Err(format!(
                "echo of {} bytes, sent {}",
                reply.len(),
                self.payload
            ))
        }
    }
}

impl Caller for RawCaller {
    async fn call(&mut self) -> Result<(), String> {
        let err = |e: &dyn std::fmt::Display| e.to_string();
        let reply = match self.shape {
            Shape::StreamPerCall => {
                let (mut send, mut recv) = self.conn.open_bi().await.map_err(|e| err(&e))?;
                frame::write_frames(&mut send, self.request.clone())
                    .await
                    .map_err(|e| err(&e))?;
                send.finish().map_err(|e| err(&e))?;
                frame::read_frame(&mut recv, MAX_FRAME)
                    .await
                    .map_err(|e| err(&e))?
            }
            Shape::OneStream => {
                if self.stream.is_none() {
                    self.stream = Some(self.conn.open_bi().await.map_err(|e| err(&e))?);
                }
                let request = self.request.clone();
                let (send, recv) = self.stream.as_mut().expect("opened above");
                let result = async {
                    frame::write_frames(send, request)
                        .await
                        .map_err(|e| err(&e))?;
                    frame::read_frame(recv, MAX_FRAME)
                        .await
                        .map_err(|e| err(&e))
                }
                .await;
                if result.is_err() {
                    self.stream = None;
                }
                result?
            }
        };
        self.check(&reply)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn both_shapes_echo() {
        let pki = Pki::generate().unwrap();
        let (_server, addr) = start_server(&pki).unwrap();
        let (_client, conn) = connect(&pki, addr).await.unwrap();
        for shape in [Shape::StreamPerCall, Shape::OneStream] {
            let mut caller = RawCaller::new(conn.clone(), shape, 100);
            for _ in 0..3 {
                caller.call().await.unwrap();
            }
        }
    }
}
