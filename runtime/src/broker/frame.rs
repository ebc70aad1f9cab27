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

use std::borrow::Cow;

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

/// What an event frame says before its body. Borrowed both ways: written from the
/// publisher's values, read as slices of the received frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct EventHeader<'a> {
    pub(crate) subject: &'a str,
    pub(crate) content_type: ContentType,
    pub(crate) targets: Cow<'a, [WireTarget]>,
    /// The publisher's node, where acknowledgements go (set when a target wants one).
    pub(crate) reply_to: Option<SocketAddr>,
    pub(crate) metadata: Cow<'a, Metadata>,
}

/// How an at-least-once attempt ended, sent back to the publisher's node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct WireAck {
    pub(crate) id: u64,
    pub(crate) attempt: u32,
    /// `None`: handled; else why the attempt failed.
    pub(crate) error: Option<String>,
}

/// A frame read off a link: an event's header borrows from the frame's bytes.
#[derive(Debug)]
pub(crate) enum Frame<'a> {
    Event(EventHeader<'a>, Bytes),
    Acks(Vec<WireAck>),
}

fn config() -> bincode::config::Configuration {
    bincode::config::standard()
}

/// Starts an event frame: its prefix and header written, its body to be appended (encoded
/// straight into it: one allocation per frame), then [`finish`]ed. `body_hint` sizes it.
pub(crate) fn begin_event(header: &EventHeader<'_>, body_hint: usize) -> Result<BytesMut, Error> {
    let mut frame = BytesMut::with_capacity(64 + header.subject.len() + body_hint);
    frame.put_u32(0);
    frame.put_u8(EVENT);
    frame.put_u32(0);
    let start = frame.len();
    bincode::serde::encode_into_std_write(header, &mut (&mut frame).writer(), config())
        .map_err(|e| Error::internal(format!("event header: {e}")))?;
    let head_len = (frame.len() - start) as u32;
    frame[5..9].copy_from_slice(&head_len.to_be_bytes());
    Ok(frame)
}

/// The length of an event frame's body so far.
pub(crate) fn body_len(frame: &BytesMut) -> usize {
    let head_len = u32::from_be_bytes([frame[5], frame[6], frame[7], frame[8]]) as usize;
    frame.len() - 9 - head_len
}

/// Writes the frame's length prefix: ready to send.
pub(crate) fn finish(mut frame: BytesMut) -> Bytes {
    let len = (frame.len() - 4) as u32;
    frame[..4].copy_from_slice(&len.to_be_bytes());
    frame.freeze()
}

/// One event frame with `body`, length prefix included.
#[cfg(test)]
pub(crate) fn event(header: &EventHeader<'_>, body: &[u8]) -> Result<Bytes, Error> {
    let mut frame = begin_event(header, body.len())?;
    frame.put_slice(body);
    Ok(finish(frame))
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

/// Reads a frame's contents (its length prefix already taken off); an event's header borrows
/// from `frame`.
pub(crate) fn decode(frame: &Bytes) -> Result<Frame<'_>, Error> {
    let bad =
        |what: &str| Error::server(Code::BadRequest, format!("malformed broker frame: {what}"));
    let Some((&kind, rest)) = frame.split_first() else {
        return Err(bad("empty"));
    };
    let limited = config().with_limit::<{ HEADER_ROOM }>();
    match kind {
        EVENT => {
            let Some((len, rest)) = rest.split_first_chunk::<4>() else {
                return Err(bad("no header length"));
            };
            let head_len = u32::from_be_bytes(*len) as usize;
            if head_len > rest.len() {
                return Err(bad("header longer than the frame"));
            }
            let (header, used): (EventHeader<'_>, usize) =
                bincode::serde::borrow_decode_from_slice(&rest[..head_len], limited)
                    .map_err(|e| bad(&format!("event header: {e}")))?;
            if used != head_len {
                return Err(bad("trailing bytes after the event header"));
            }
            Ok(Frame::Event(header, frame.slice(5 + head_len..)))
        }
        ACKS => {
            let (acks, used): (Vec<WireAck>, usize) =
                bincode::serde::decode_from_slice(rest, limited)
                    .map_err(|e| bad(&format!("acks: {e}")))?;
            if used != rest.len() {
                return Err(bad("trailing bytes after the acks"));
            }
            Ok(Frame::Acks(acks))
        }
        kind => Err(bad(&format!("unknown kind {kind}"))),
    }
}

/// Reads frames off a link stream, many per read: a link carries thousands of small frames a
/// second, and one read per frame would cost a lock in quinn each. A frame that lies whole in
/// a received chunk is returned as a slice of it (no copy); only frames that straddle two
/// chunks are copied.
pub(crate) struct FrameReader {
    /// The rest of the last chunk read.
    chunk: Bytes,
    /// A frame begun in an earlier chunk (its length prefix included): at most `4 + max`.
    partial: BytesMut,
    max: usize,
}

impl FrameReader {
    /// Frames of at most `max` bytes; a longer one ends the link.
    pub(crate) fn new(max: usize) -> Self {
        Self {
            chunk: Bytes::new(),
            partial: BytesMut::new(),
            max,
        }
    }

    /// The next frame's contents; `None` when the stream ends cleanly between frames.
    pub(crate) async fn next(&mut self, recv: &mut RecvStream) -> Result<Option<Bytes>, ReadError> {
        loop {
            match self.take() {
                Ok(Some(frame)) => return Ok(Some(frame)),
                Ok(None) => {}
                Err(len) => {
                    let _ = recv.stop(colony_quic::frame::codes::FRAME_TOO_LARGE);
                    return Err(ReadError::TooLarge {
                        len: len as u64,
                        max: self.max,
                    });
                }
            }
            match recv.read_chunk(64 * 1024, true).await? {
                Some(chunk) => self.feed(chunk.bytes),
                None if self.partial.is_empty() => return Ok(None),
                None => return Err(ReadError::Truncated),
            }
        }
    }

    /// Hands the reader the next chunk of the stream (only once [`take`](Self::take) has
    /// returned `Ok(None)`: everything before it is consumed then).
    fn feed(&mut self, chunk: Bytes) {
        debug_assert!(self.chunk.is_empty());
        self.chunk = chunk;
    }

    /// The next whole frame in what was fed, `Ok(None)` if more is needed (everything fed is
    /// then consumed), or the announced length of a frame over the limit.
    fn take(&mut self) -> Result<Option<Bytes>, usize> {
        if self.partial.is_empty() {
            if self.chunk.len() >= 4 {
                let len = prefix(&self.chunk);
                if len > self.max {
                    return Err(len);
                }
                if self.chunk.len() >= 4 + len {
                    let frame = self.chunk.slice(4..4 + len);
                    self.chunk.advance(4 + len);
                    return Ok(Some(frame));
                }
            }
            self.partial.extend_from_slice(&self.chunk);
            self.chunk.clear();
            return Ok(None);
        }
        if self.partial.len() < 4 {
            self.move_to_partial(4 - self.partial.len());
            if self.partial.len() < 4 {
                return Ok(None);
            }
        }
        let len = prefix(&self.partial);
        if len > self.max {
            return Err(len);
        }
        self.move_to_partial(4 + len - self.partial.len());
        if self.partial.len() < 4 + len {
            return Ok(None);
        }
        let frame = Bytes::copy_from_slice(&self.partial[4..]);
        self.partial.clear();
        Ok(Some(frame))
    }

    fn move_to_partial(&mut self, want: usize) {
        let n = want.min(self.chunk.len());
        self.partial.extend_from_slice(&self.chunk[..n]);
        self.chunk.advance(n);
    }
}

fn prefix(bytes: &[u8]) -> usize {
    u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> EventHeader<'static> {
        EventHeader {
            subject: "orders.created",
            content_type: ContentType::Bincode,
            targets: Cow::Owned(vec![WireTarget {
                sub: 7,
                ack: Some((42, 2)),
            }]),
            reply_to: Some("127.0.0.1:7000".parse().unwrap()),
            metadata: Cow::Owned(Metadata::default()),
        }
    }

    fn contents(frame: Bytes) -> Bytes {
        let len = u32::from_be_bytes(frame[..4].try_into().unwrap()) as usize;
        assert_eq!(len, frame.len() - 4);
        frame.slice(4..)
    }

    #[test]
    fn an_event_round_trips_with_its_body_untouched() {
        let frame = contents(event(&header(), b"body bytes").unwrap());
        match decode(&frame).unwrap() {
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
        let frame = contents(acks(&mut sent).unwrap());
        let Frame::Acks(got) = decode(&frame).unwrap() else {
            panic!("expected acks")
        };
        assert_eq!(got[0], sent[0]);
        assert!(got[1].error.as_ref().unwrap().len() <= MAX_ACK_ERROR);
    }

    #[test]
    fn frames_come_out_whole_however_the_stream_is_cut() {
        let frames: Vec<Bytes> = (0..20u8)
            .map(|i| event(&header(), &vec![i; usize::from(i) * 7]).unwrap())
            .collect();
        let stream: Vec<u8> = frames.iter().flat_map(|f| f.to_vec()).collect();
        for cut in [1, 3, 4, 5, 17, 64, 1000, stream.len()] {
            let mut reader = FrameReader::new(1 << 20);
            let mut got = Vec::new();
            for piece in stream.chunks(cut) {
                reader.feed(Bytes::copy_from_slice(piece));
                while let Some(frame) = reader.take().unwrap() {
                    got.push(frame);
                }
            }
            let want: Vec<Bytes> = frames.iter().map(|f| f.slice(4..)).collect();
            assert_eq!(got, want, "chunks of {cut} bytes");
            assert!(reader.partial.is_empty());
        }
    }

    #[test]
    fn a_frame_over_the_limit_is_refused_before_it_is_buffered() {
        let mut reader = FrameReader::new(16);
        reader.feed(Bytes::from_static(&[0, 0, 1, 0, 1, 2]));
        assert_eq!(reader.take(), Err(256));
        let mut split = FrameReader::new(16);
        split.feed(Bytes::from_static(&[0, 0]));
        assert_eq!(split.take(), Ok(None));
        split.feed(Bytes::from_static(&[0, 17, 9]));
        assert_eq!(split.take(), Err(17));
    }

    #[test]
    fn garbage_is_refused_with_a_reason() {
        for bad in [
            &b""[..],
            &[9u8][..],
            &[EVENT, 0, 0, 0, 200][..],
            &[ACKS, 0xff, 0xff][..],
        ] {
            let err = decode(&Bytes::copy_from_slice(bad)).unwrap_err();
            assert_eq!(err.code(), Code::BadRequest, "{bad:?}");
            assert!(
                err.detail().contains("malformed broker frame"),
                "{}",
                err.detail()
            );
        }
    }
}
