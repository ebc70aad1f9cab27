//! Length-prefixed frames: a 4-byte big-endian length, then that many bytes.
//!
//! Every read is bounded by a limit chosen by the caller, checked *before* any allocation, so a
//! peer cannot make us buffer more than the limit by announcing a huge frame.

use bytes::{BufMut, Bytes, BytesMut};
use quinn::{RecvStream, SendStream, VarInt};

use crate::error::{ReadError, WriteError};

/// Bytes in a frame's length prefix.
pub const PREFIX_LEN: usize = 4;

/// Application error codes used when colony resets or stops a stream.
pub mod codes {
    use quinn::VarInt;
    /// The peer announced a frame over the limit.
    pub const FRAME_TOO_LARGE: VarInt = VarInt::from_u32(0x10);
    /// The bytes on the stream were not a valid message.
    pub const MALFORMED: VarInt = VarInt::from_u32(0x11);
    /// The node is shutting down.
    pub const SHUTDOWN: VarInt = VarInt::from_u32(0x12);
    /// The peer was declared dead or left the cluster.
    pub const PEER_GONE: VarInt = VarInt::from_u32(0x13);
}

/// Appends one frame holding `body` to `buf`.
///
/// Fails without touching `buf` when `body` is over `max` bytes.
pub fn encode_frame(buf: &mut BytesMut, body: &[u8], max: usize) -> Result<(), WriteError> {
    if body.len() > max || body.len() > u32::MAX as usize {
        return Err(WriteError::TooLarge {
            len: body.len(),
            max,
        });
    }
    buf.reserve(PREFIX_LEN + body.len());
    buf.put_u32(body.len() as u32);
    buf.put_slice(body);
    Ok(())
}

/// Writes pre-encoded frames (see [`encode_frame`]) in one go.
pub async fn write_frames(send: &mut SendStream, frames: Bytes) -> Result<(), WriteError> {
    send.write_chunk(frames).await.map_err(WriteError::Stream)
}

/// Reads one frame of at most `max` bytes.
///
/// On an oversized announcement the receiving side of the stream is stopped with
/// [`codes::FRAME_TOO_LARGE`] so the peer stops sending, and nothing is allocated.
pub async fn read_frame(recv: &mut RecvStream, max: usize) -> Result<Bytes, ReadError> {
    let mut prefix = [0u8; PREFIX_LEN];
    let mut filled = 0;
    while filled < PREFIX_LEN {
        match recv.read(&mut prefix[filled..]).await? {
            Some(n) => filled += n,
            None if filled == 0 => return Err(ReadError::Finished),
            None => return Err(ReadError::Truncated),
        }
    }
    let len = u32::from_be_bytes(prefix) as usize;
    if len > max {
        let _ = recv.stop(codes::FRAME_TOO_LARGE);
        return Err(ReadError::TooLarge {
            len: len as u64,
            max,
        });
    }
    // Buffer only what has arrived: a peer announcing `max` bytes on many streams and sending
    // nothing must not make us allocate `max` per stream. A frame that arrives in one piece is
    // returned without a copy.
    // Start small and let the buffer double as data arrives: at most twice what was received.
    let mut body = BytesMut::with_capacity(len.min(64 * 1024));
    while body.len() < len {
        let chunk = recv
            .read_chunk(len - body.len(), true)
            .await?
            .ok_or(ReadError::Truncated)?;
        if body.is_empty() && chunk.bytes.len() == len {
            return Ok(chunk.bytes);
        }
        body.extend_from_slice(&chunk.bytes);
    }
    Ok(body.freeze())
}

/// Reads a whole one-way stream of at most `max` bytes.
///
/// Over the limit, the stream is stopped with [`codes::FRAME_TOO_LARGE`] and nothing more is
/// buffered.
pub async fn read_oneway(mut recv: RecvStream, max: usize) -> Result<Bytes, ReadError> {
    match recv.read_to_end(max).await {
        Ok(bytes) => Ok(Bytes::from(bytes)),
        Err(quinn::ReadToEndError::TooLong) => {
            let _ = recv.stop(codes::FRAME_TOO_LARGE);
            Err(ReadError::TooLarge {
                len: max as u64 + 1,
                max,
            })
        }
        Err(quinn::ReadToEndError::Read(e)) => Err(ReadError::Stream(e)),
    }
}

/// Stops the receiving half and resets the sending half of a stream whose input made no sense.
pub fn abandon(send: &mut SendStream, recv: &mut RecvStream, code: VarInt) {
    let _ = recv.stop(code);
    let _ = send.reset(code);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_refuses_oversized_body_and_leaves_buffer_alone() {
        let mut buf = BytesMut::new();
        let err = encode_frame(&mut buf, &[0u8; 11], 10).unwrap_err();
        assert!(matches!(err, WriteError::TooLarge { len: 11, max: 10 }));
        assert!(buf.is_empty());
    }

    #[test]
    fn encode_prefixes_length_big_endian() {
        let mut buf = BytesMut::new();
        encode_frame(&mut buf, b"abc", 10).unwrap();
        encode_frame(&mut buf, b"", 10).unwrap();
        assert_eq!(&buf[..], &[0, 0, 0, 3, b'a', b'b', b'c', 0, 0, 0, 0]);
    }
}
