//! The serving side of a call: accept connections and streams, decode, dispatch, reply.
//!
//! Bad input ends only its own stream: it is answered with an error code when the caller can
//! still read one, and the connection and the node go on serving.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use colony_quic::frame::{self, codes};
use colony_quic::{ReadError, RecvStream, SendStream};

use super::Shared;
use crate::broker::LINK;
use crate::codec::ContentType;
use crate::context::Context;
use crate::error::{Code, Error, Origin};
use crate::membership::GOSSIP;
use crate::service::{call_encoded, RESERVED_PREFIX};
use crate::wire::{
    decode_header, encode_header, HeaderFormat, ReplyHeader, RequestHeader, MAX_DETAIL, MAX_HEADER,
};

/// How long a new stream may take to deliver its request header.
const HEADER_WAIT: Duration = Duration::from_secs(10);

pub(super) async fn accept_loop(shared: Arc<Shared>) {
    loop {
        let incoming = tokio::select! {
            _ = shared.cancel.cancelled() => return,
            incoming = shared.caller.endpoint.accept() => incoming,
        };
        let Some(incoming) = incoming else { return };
        tokio::spawn(serve_connection(shared.clone(), incoming));
    }
}

async fn serve_connection(shared: Arc<Shared>, incoming: colony_quic::Incoming) {
    let remote = incoming.remote_address();
    let conn = match incoming.await {
        Ok(conn) => conn,
        Err(e) => {
            // Includes peers whose certificate is not from the cluster CA.
            tracing::info!(node = %shared.caller.name, peer = %remote, error = %e, "handshake refused");
            return;
        }
    };
    loop {
        let streams = tokio::select! {
            _ = shared.cancel.cancelled() => return,
            oneway = conn.accept_uni() => match oneway {
                Ok(recv) => {
                    tokio::spawn(serve_oneway(shared.clone(), recv, remote));
                    continue;
                }
                Err(e) => Err(e),
            },
            streams = conn.accept_bi() => streams,
        };
        match streams {
            Ok((send, recv)) => {
                shared
                    .calls
                    .spawn(serve_call(shared.clone(), send, recv, remote));
            }
            Err(e) => {
                tracing::debug!(node = %shared.caller.name, peer = %remote, error = %e, "connection ended");
                return;
            }
        }
    }
}

/// Serves a one-way stream by its first byte: a gossip message (the whole stream), or a broker
/// link (frames until it closes).
async fn serve_oneway(shared: Arc<Shared>, mut recv: RecvStream, from: SocketAddr) {
    let mut kind = [0u8; 1];
    let first = tokio::time::timeout(HEADER_WAIT, recv.read_exact(&mut kind)).await;
    if !matches!(first, Ok(Ok(()))) {
        tracing::debug!(node = %shared.caller.name, peer = %from, "dropped one-way stream without a kind");
        return;
    }
    match kind[0] {
        GOSSIP => {
            let max = shared.caller.endpoint.config().max_oneway.saturating_sub(1);
            match frame::read_oneway(recv, max).await {
                Ok(payload) => shared.gossip_inbox.deliver(from, payload),
                Err(e) => {
                    tracing::debug!(node = %shared.caller.name, peer = %from, error = %e, "dropped one-way message")
                }
            }
        }
        LINK => shared.caller.broker.clone().serve_link(recv, from).await,
        other => {
            let _ = recv.stop(codes::MALFORMED);
            tracing::debug!(node = %shared.caller.name, peer = %from, kind = other, "dropped one-way stream of unknown kind")
        }
    }
}

/// What a finished call writes back.
struct Answer {
    format: HeaderFormat,
    request_id: u64,
    outcome: Result<Vec<u8>, Error>,
}

impl Answer {
    fn refuse(format: HeaderFormat, request_id: u64, error: Error) -> Self {
        Self {
            format,
            request_id,
            outcome: Err(error),
        }
    }
}

async fn serve_call(
    shared: Arc<Shared>,
    mut send: SendStream,
    mut recv: RecvStream,
    peer: SocketAddr,
) {
    // A caller that gives up (its deadline passed, it was cancelled) stops the stream: drop the
    // call then, so an instance that has not started it yet skips it.
    let caller_gone = send.stopped();
    let answered = tokio::select! {
        answered = answer(&shared, &mut recv, peer) => answered,
        _ = caller_gone => {
            tracing::debug!(node = %shared.caller.name, %peer, "caller gave up; call dropped");
            return;
        }
    };
    let Some(answer) = answered else {
        // Nothing readable arrived (the caller reset or closed the stream): nobody to answer.
        frame::abandon(&mut send, &mut recv, codes::MALFORMED);
        return;
    };
    let max = shared.caller.endpoint.config().max_frame;
    let (error, body) = match answer.outcome {
        Ok(body) if body.len() <= max => (None, body),
        Ok(body) => (
            Some(Error::server(
                Code::TooLarge,
                format!(
                    "reply of {} bytes exceeds the {max} byte frame limit",
                    body.len()
                ),
            )),
            Vec::new(),
        ),
        Err(error) => {
            tracing::debug!(node = %shared.caller.name, %peer, %error, "call failed");
            (Some(error.truncated(MAX_DETAIL)), Vec::new())
        }
    };
    let failed = error.is_some();
    let header = encode_header(
        answer.format,
        &ReplyHeader {
            request_id: answer.request_id,
            error,
        },
    );
    let mut out = BytesMut::new();
    // Both fit: the header's only unbounded part, the error detail, is capped, and the body was
    // checked against the limit above.
    let _ = frame::encode_frame(&mut out, &header, usize::MAX);
    let _ = frame::encode_frame(&mut out, &body, usize::MAX);
    let written = frame::write_frames(&mut send, out.freeze()).await.is_ok();
    if written {
        let _ = send.finish();
    }
    if failed {
        // Whatever else the caller sends on this stream will not be read.
        let _ = recv.stop(codes::MALFORMED);
    }
    if written {
        // Stay a call in flight until the caller has acknowledged the whole reply: shutdown
        // waits for calls in flight and then closes connections, which discards reply bytes
        // still unsent or unacknowledged.
        let _ = send.stopped().await;
    }
}

fn read_failure(e: ReadError, what: &str) -> Option<Error> {
    match e {
        ReadError::TooLarge { len, max } => Some(Error::server(
            Code::TooLarge,
            format!("{what} frame of {len} bytes exceeds the {max} byte limit"),
        )),
        ReadError::Truncated => Some(Error::server(
            Code::BadRequest,
            format!("stream ended inside the {what} frame"),
        )),
        ReadError::Finished => Some(Error::server(
            Code::BadRequest,
            format!("stream ended before the {what} frame"),
        )),
        ReadError::Stream(_) => None,
    }
}

/// Reads, checks and runs one call. `None` when the stream died before anything could be said.
async fn answer(shared: &Shared, recv: &mut RecvStream, peer: SocketAddr) -> Option<Answer> {
    let max = shared.caller.endpoint.config().max_frame;
    // A stream that never sends its header must not hold a task for the connection's life.
    let head = match tokio::time::timeout(HEADER_WAIT, frame::read_frame(recv, MAX_HEADER.min(max)))
        .await
    {
        Ok(Ok(head)) => head,
        Ok(Err(ReadError::Finished)) => return None,
        Ok(Err(e)) => {
            let error = read_failure(e, "header")?;
            return Some(Answer::refuse(HeaderFormat::Bincode, 0, error));
        }
        Err(_) => {
            let error = Error::server(
                Code::Timeout,
                format!("no request header within {HEADER_WAIT:?}"),
            );
            return Some(Answer::refuse(HeaderFormat::Bincode, 0, error));
        }
    };
    let (format, header) = decode_header::<RequestHeader>(&head);
    let header = match header {
        Ok(h) => h,
        Err(e) => {
            let error = Error::server(e.code(), format!("request header: {}", e.detail()));
            return Some(Answer::refuse(format, 0, error));
        }
    };
    let request_id = header.request_id;
    let refuse = |error: Error| Some(Answer::refuse(format, request_id, error));
    // The deadline is taken from when the header arrived: relative, so clocks need not agree.
    let timeout = match header.timeout_ms {
        0 => shared.call_timeout(),
        ms => Duration::from_millis(ms),
    };
    let deadline = Instant::now() + timeout;
    let body = match tokio::time::timeout_at(deadline.into(), frame::read_frame(recv, max)).await {
        Ok(Ok(body)) => body,
        Ok(Err(e)) => return refuse(read_failure(e, "body")?),
        Err(_) => {
            return refuse(Error::server(
                Code::Timeout,
                "the request body did not arrive before the deadline",
            ))
        }
    };
    // colony's own services (health, introspection) answer until the end: a draining node
    // reports itself draining, not unreachable.
    if shared.refuses_calls() && !header.service.starts_with(RESERVED_PREFIX) {
        return refuse(Error::server(
            Code::Unavailable,
            format!("node {} is shutting down", shared.caller.name),
        ));
    }
    let content_type = match header.content_type.parse::<ContentType>() {
        Ok(ct) => ct,
        Err(e) => return refuse(Error::server(Code::BadRequest, e.detail())),
    };
    let Some((service_name, service)) = shared.caller.services.get(&header.service) else {
        return refuse(Error::server(
            Code::NotFound,
            format!(
                "service {} does not run on node {}",
                header.service, shared.caller.name
            ),
        ));
    };
    let ctx = Context {
        service: service_name,
        endpoint: header.endpoint.into(),
        request_id,
        deadline,
        metadata: header.metadata,
        peer: Some(peer),
        content_type: Some(content_type),
        attempt: 0,
    };
    let outcome = call_encoded(service.as_ref(), ctx, content_type, &body, Origin::Server).await;
    Some(Answer {
        format,
        request_id,
        outcome,
    })
}
