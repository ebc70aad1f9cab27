//! What travels on a broker link: events and acknowledgements, each a length-prefixed frame.
//!
//! ```text
//! link stream:  0x02, then frames until the link closes
//! frame:        u32 length (big-endian) | kind | ...
//!   event  (0): u32 header length | EventHeader (bincode) | event body (as published)
//!   acks   (1): Vec<WireAck> (bincode)
//! ```
//!
//! The body is not re-encoded into the header: it is written once, after it, and read back as
//! a slice of the frame.

use std::net::SocketAddr;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use colony_quic::{ReadError, RecvStream};
use serde::{Deserialize, Serialize};

use crate::codec::ContentType;
use crate::context::Metadata;
use crate::error::{Code, Error};

/// First byte of a one-way stream that carries a broker link (gossip's is `0x01`).
pub(crate) const LINK: u8 = 0x02;

const EVENT: u8 = 0;
const ACKS: u8 = 1;

/// Longest error text an acknowledgement carries.
const MAX_ACK_ERROR: usize = 1024;

/// Room a frame needs beyond its event body: its header (subject, targets, metadata).
pub(crate) const HEADER_ROOM: usize = 64 * 1024;

/// Who an event is for on the receiving node, and for at-least-once what to acknowledge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct WireTarget {
    /// The subscription id on the receiving node.
    pub(crate) sub: u64,
    /// At-least-once: the publisher's delivery id and the attempt.
    pub(crate) ack: Option<(u64, u32)>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct EventHeader {
    pub(crate) subject: String,
    pub(crate) content_type: ContentType,
    pub(crate) targets: Vec<WireTarget>,
    /// The publisher's node, where acknowledgements go (set when a target wants one).
    pub(crate) reply_to: Option<SocketAddr>,
    /// How long the receiver may wait for room in a full (blocking) buffer: what is left of
    /// the publisher's deadline. Relative, so clocks need not agree.
    pub(crate) timeout_ms: u32,
    pub(crate) metadata: Metadata,
}

/// How an at-least-once attempt ended, sent back to the publisher's node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct WireAck {
    pub(crate) id: u64,
    pub(crate) attempt: u32,
    /// `None`: handled; else why the attempt failed.
    pub(crate) error: Option<String>,
}

/// A frame read off a link.
#[derive(Debug)]
pub(crate) enum Frame {
    Event(EventHeader, Bytes),
    Acks(Vec<WireAck>),
}

fn config() -> bincode::config::Configuration {
    bincode::config::standard()
}

/// One event frame, length prefix included.
pub(crate) fn event(header: &EventHeader, body: &[u8]) -> Result<Bytes, Error> {
    let head = bincode::serde::encode_to_vec(header, config())
        .map_err(|e| Error::internal(format!("event header: {e}")))?;
    let len = 1 + 4 + head.len() + body.len();
    let mut frame = BytesMut::with_capacity(4 + len);
    frame.put_u32(len as u32);
    frame.put_u8(EVENT);
    frame.put_u32(head.len() as u32);
    frame.put_slice(&head);
    frame.put_slice(body);
    Ok(frame.freeze())
}

/// One frame of acknowledgements, length prefix included.
pub(crate) fn acks(acks: &mut [WireAck]) -> Result<Bytes, Error> {
    for ack in acks.iter_mut() {
        if let Some(error) = &mut ack.error {
            if error.len() > MAX_ACK_ERROR {
                let mut cut = MAX_ACK_ERROR;
                while !error.is_char_boundary(cut) {
                    cut -= 1;
                }
                error.truncate(cut);
            }
        }
    }
    let body = bincode::serde::encode_to_vec(&*acks, config())
        .map_err(|e| Error::internal(format!("acks: {e}")))?;
    let mut frame = BytesMut::with_capacity(5 + body.len());
    frame.put_u32(1 + body.len() as u32);
    frame.put_u8(ACKS);
    frame.put_slice(&body);
    Ok(frame.freeze())
}

/// Reads a frame's contents (its length prefix already taken off).
pub(crate) fn decode(mut frame: Bytes) -> Result<Frame, Error> {
    let bad =
        |what: &str| Error::server(Code::BadRequest, format!("malformed broker frame: {what}"));
    if frame.is_empty() {
        return Err(bad("empty"));
    }
    let limited = config().with_limit::<{ HEADER_ROOM }>();
    match frame.get_u8() {
        EVENT => {
            if frame.len() < 4 {
                return Err(bad("no header length"));
            }
            let head_len = frame.get_u32() as usize;
            if head_len > frame.len() {
                return Err(bad("header longer than the frame"));
            }
            let head = frame.split_to(head_len);
            let (header, used): (EventHeader, usize) =
                bincode::serde::decode_from_slice(&head, limited)
                    .map_err(|e| bad(&format!("event header: {e}")))?;
            if used != head_len {
                return Err(bad("trailing bytes after the event header"));
            }
            Ok(Frame::Event(header, frame))
        }
        ACKS => {
            let (acks, used): (Vec<WireAck>, usize) =
                bincode::serde::decode_from_slice(&frame, limited)
                    .map_err(|e| bad(&format!("acks: {e}")))?;
            if used != frame.len() {
                return Err(bad("trailing bytes after the acks"));
            }
            Ok(Frame::Acks(acks))
        }
        kind => Err(bad(&format!("unknown kind {kind}"))),
    }
}

/// Reads frames off a link stream, many per read: a link carries thousands of small frames a
/// second, and one read per frame would cost a lock in quinn each.
pub(crate) struct FrameReader {
    buf: BytesMut,
    max: usize,
}

impl FrameReader {
    /// Frames of at most `max` bytes; a longer one ends the link.
    pub(crate) fn new(max: usize) -> Self {
        Self {
            buf: BytesMut::new(),
            max,
        }
    }

    /// The next frame's contents; `None` when the stream ends cleanly between frames.
    pub(crate) async fn next(&mut self, recv: &mut RecvStream) -> Result<Option<Bytes>, ReadError> {
        loop {
            if self.buf.len() >= 4 {
                let len = u32::from_be_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]])
                    as usize;
                if len > self.max {
                    let _ = recv.stop(colony_quic::frame::codes::FRAME_TOO_LARGE);
                    return Err(ReadError::TooLarge {
                        len: len as u64,
                        max: self.max,
                    });
                }
                if self.buf.len() >= 4 + len {
                    self.buf.advance(4);
                    return Ok(Some(self.buf.split_to(len).freeze()));
                }
            }
            // The buffer holds at most one partial frame plus one chunk: bounded by `max`.
            match recv.read_chunk(64 * 1024, true).await? {
                Some(chunk) => self.buf.extend_from_slice(&chunk.bytes),
                None if self.buf.is_empty() => return Ok(None),
                None => return Err(ReadError::Truncated),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> EventHeader {
        EventHeader {
            subject: "orders.created".into(),
            content_type: ContentType::Bincode,
            targets: vec![WireTarget {
                sub: 7,
                ack: Some((42, 2)),
            }],
            reply_to: Some("127.0.0.1:7000".parse().unwrap()),
            timeout_ms: 5000,
            metadata: Metadata::default(),
        }
    }

    fn contents(frame: Bytes) -> Bytes {
        let len = u32::from_be_bytes(frame[..4].try_into().unwrap()) as usize;
        assert_eq!(len, frame.len() - 4);
        frame.slice(4..)
    }

    #[test]
    fn an_event_round_trips_with_its_body_untouched() {
        let frame = event(&header(), b"body bytes").unwrap();
        match decode(contents(frame)).unwrap() {
            Frame::Event(h, body) => {
                assert_eq!(h, header());
                assert_eq!(&body[..], b"body bytes");
            }
            other => panic!("expected an event, got {other:?}"),
        }
    }

    #[test]
    fn acks_round_trip_and_long_errors_are_cut() {
        let mut sent = vec![
            WireAck {
                id: 1,
                attempt: 1,
                error: None,
            },
            WireAck {
                id: 2,
                attempt: 3,
                error: Some("é".repeat(2000)),
            },
        ];
        let frame = acks(&mut sent).unwrap();
        let Frame::Acks(got) = decode(contents(frame)).unwrap() else {
            panic!("expected acks")
        };
        assert_eq!(got[0], sent[0]);
        assert!(got[1].error.as_ref().unwrap().len() <= MAX_ACK_ERROR);
    }

    #[test]
    fn garbage_is_refused_with_a_reason() {
        for bad in [
            &b""[..],
            &[9u8][..],
            &[EVENT, 0, 0, 0, 200][..],
            &[ACKS, 0xff, 0xff][..],
        ] {
            let err = decode(Bytes::copy_from_slice(bad)).unwrap_err();
            assert_eq!(err.code(), Code::BadRequest, "{bad:?}");
            assert!(
                err.detail().contains("malformed broker frame"),
                "{}",
                err.detail()
            );
        }
    }
}
