//! One remote attempt: an encoded request out, an encoded reply back, on a fresh QUIC stream.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::pin;
use std::task::{Poll, Waker};
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use colony_quic::frame;
use colony_quic::{OpenError, ReadError, SendStream, WriteError};

use super::attempt::Failure;
use super::Caller;
use crate::codec::ContentType;
use crate::context::Metadata;
use crate::error::{Code, Error};
use crate::wire::{decode_header, encode_header, ReplyHeader, RequestHeader, MAX_HEADER};

/// Where an encoded call goes.
#[derive(Clone, Copy)]
pub(crate) struct Target<'a> {
    pub(crate) addr: SocketAddr,
    pub(crate) service: &'a str,
    pub(crate) endpoint: &'a str,
}

fn open_failure(e: OpenError) -> Failure {
    let code = if e.is_auth_failure() {
        Code::Unauthorized
    } else {
        Code::Unavailable
    };
    Failure::not_delivered(Error::client(code, e.to_string()))
}

/// Whether the peer's QUIC stack acknowledged every byte of the request, FIN included. Asked
/// once, without waiting: quinn forgets a send stream once all of it is acknowledged, and then
/// reports it stopped with no code even after the connection is gone.
fn acknowledged(send: &SendStream) -> bool {
    let mut stopped = pin!(send.stopped());
    matches!(
        stopped
            .as_mut()
            .poll(&mut std::task::Context::from_waker(Waker::noop())),
        Poll::Ready(Ok(None))
    )
}

/// One encoded request out, one encoded reply back, all before `deadline` (past it: `Timeout`
/// from the client; the request may have run).
pub(crate) async fn exchange(
    caller: &Caller,
    target: Target<'_>,
    ct: ContentType,
    body: &[u8],
    metadata: Metadata,
    deadline: Instant,
) -> Result<Bytes, Failure> {
    let addr = target.addr;
    let within = exchange_unbounded(caller, target, ct, body, metadata, deadline);
    tokio::time::timeout_at(deadline.into(), within)
        .await
        .unwrap_or_else(|_| {
            let waited = deadline.saturating_duration_since(Instant::now());
            Err(Failure::delivered(Error::client(
                Code::Timeout,
                format!("no reply from {addr} before the deadline ({waited:?} left)"),
            )))
        })
}

async fn exchange_unbounded(
    caller: &Caller,
    target: Target<'_>,
    ct: ContentType,
    body: &[u8],
    metadata: Metadata,
    deadline: Instant,
) -> Result<Bytes, Failure> {
    let Target { addr, .. } = target;
    let max = caller.endpoint.config().max_frame;
    let remaining = deadline.saturating_duration_since(Instant::now());
    let header = RequestHeader {
        service: target.service.to_string(),
        endpoint: target.endpoint.to_string(),
        content_type: ct.as_str().to_string(),
        timeout_ms: (remaining.as_millis() as u64).max(1),
        request_id: caller.request_id(),
        metadata,
    };
    let mut out = BytesMut::new();
    let too_large = |e: WriteError| {
        Failure::not_delivered(Error::client(Code::TooLarge, format!("request: {e}")))
    };
    frame::encode_frame(
        &mut out,
        &encode_header(ct.into(), &header),
        MAX_HEADER.min(max),
    )
    .map_err(too_large)?;
    frame::encode_frame(&mut out, body, max).map_err(too_large)?;

    let (mut send, mut recv) = caller.endpoint.open(addr).await.map_err(open_failure)?;
    let written = frame::write_frames(&mut send, out.freeze()).await;
    let _ = send.finish();
    // Even if the server stopped our write half-way, its reply may explain why: read it first.
    let lost = |e: ReadError, send: &SendStream| match e {
        ReadError::TooLarge { .. } => Failure::delivered(Error::client(
            Code::TooLarge,
            format!("reply from {addr}: {e}"),
        )),
        e if e.is_auth_failure() => Failure::not_delivered(Error::client(
            Code::Unauthorized,
            format!("{addr} refused our certificate in the TLS handshake: {e}"),
        )),
        e => {
            let error = match &written {
                Err(w) => Error::client(Code::Unavailable, format!("sending to {addr}: {w}")),
                Ok(()) => Error::client(Code::Unavailable, format!("no reply from {addr}: {e}")),
            };
            // Not acknowledged: the server never had the whole request (see the note on
            // `acknowledged` and docs/architecture.md for the one ambiguous case).
            if acknowledged(send) {
                Failure::delivered(error)
            } else {
                Failure::not_delivered(error)
            }
        }
    };
    let head = match frame::read_frame(&mut recv, MAX_HEADER.min(max)).await {
        Ok(head) => head,
        Err(e) => return Err(lost(e, &send)),
    };
    let reply: ReplyHeader = decode_header(&head).1.map_err(|e| {
        Failure::delivered(Error::client(
            Code::Internal,
            format!("malformed reply header from {addr}: {}", e.detail()),
        ))
    })?;
    if let Some(error) = reply.error {
        return Err(Failure::from_reply(error));
    }
    match frame::read_frame(&mut recv, max).await {
        Ok(body) => Ok(body),
        Err(e) => Err(Failure::delivered(lost(e, &send).error)),
    }
}
