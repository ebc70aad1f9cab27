//! A hand-made wire client, for bytes no typed client sends.

use std::net::SocketAddr;

use bytes::{Bytes, BytesMut};
use colony::TransportConfig;
use colony::{ClusterCa, Error, Metadata};
use colony_quic::{frame, Endpoint};
use serde::{Deserialize, Serialize};

/// A bare QUIC endpoint on `127.0.0.1:0` with a certificate from `ca` and default limits.
pub fn raw_endpoint(ca: &ClusterCa) -> Endpoint {
    let identity = ca.issue("raw").expect("issue raw identity");
    Endpoint::bind(
        "127.0.0.1:0".parse().unwrap(),
        &identity,
        TransportConfig::default(),
    )
    .expect("bind raw endpoint")
}

/// A request header as a JSON tool writes it.
pub fn json_header(
    service: &str,
    endpoint: &str,
    content_type: &str,
    request_id: u64,
    metadata: &[(&str, &str)],
) -> Vec<u8> {
    let metadata: serde_json::Map<String, serde_json::Value> = metadata
        .iter()
        .map(|(k, v)| (k.to_string(), serde_json::Value::from(*v)))
        .collect();
    serde_json::to_vec(&serde_json::json!({
        "service": service,
        "endpoint": endpoint,
        "content_type": content_type,
        "timeout_ms": 10_000,
        "request_id": request_id,
        "metadata": metadata,
    }))
    .unwrap()
}

/// The request header in its binary form, field for field as the runtime's (private) one.
#[derive(Debug, Serialize)]
struct BincodeRequestHeader {
    service: String,
    endpoint: String,
    content_type: String,
    timeout_ms: u64,
    request_id: u64,
    metadata: Metadata,
}

/// A request header in the binary form: `0x00` then bincode.
pub fn bincode_header(
    service: &str,
    endpoint: &str,
    content_type: &str,
    request_id: u64,
) -> Vec<u8> {
    let header = BincodeRequestHeader {
        service: service.into(),
        endpoint: endpoint.into(),
        content_type: content_type.into(),
        timeout_ms: 10_000,
        request_id,
        metadata: Metadata::default(),
    };
    let mut out = vec![0x00];
    out.extend(bincode::serde::encode_to_vec(&header, bincode::config::standard()).unwrap());
    out
}

/// Frames each part with a 4-byte length prefix, unlimited in size.
pub fn frames(parts: &[&[u8]]) -> Bytes {
    let mut out = BytesMut::new();
    for part in parts {
        frame::encode_frame(&mut out, part, usize::MAX).unwrap();
    }
    out.freeze()
}

/// How a reply header was encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderFormat {
    /// `0x00` then bincode.
    Bincode,
    /// JSON text.
    Json,
}

/// A reply header, decoded.
#[derive(Debug, Clone, Deserialize)]
pub struct RawReplyHeader {
    /// The request id the server echoed.
    pub request_id: u64,
    /// The call's error, if it failed.
    #[serde(default)]
    pub error: Option<Error>,
}

/// What came back on a hand-made call's stream.
#[derive(Debug)]
pub struct RawReply {
    /// The reply header frame exactly as received.
    pub header_bytes: Bytes,
    /// The header's encoding.
    pub format: HeaderFormat,
    /// The decoded header.
    pub header: RawReplyHeader,
    /// The body frame.
    pub body: Bytes,
    /// Index of the stream on its connection (0 for the first stream of a connection).
    pub stream_index: u64,
}

/// Decodes a reply header frame in either format.
pub fn decode_reply_header(bytes: &[u8]) -> (HeaderFormat, RawReplyHeader) {
    match bytes.first() {
        Some(0x00) => {
            let (header, used) =
                bincode::serde::decode_from_slice(&bytes[1..], bincode::config::standard())
                    .expect("bincode reply header");
            assert_eq!(used, bytes.len() - 1, "trailing bytes after reply header");
            (HeaderFormat::Bincode, header)
        }
        Some(b'{') => (
            HeaderFormat::Json,
            serde_json::from_slice(bytes).expect("JSON reply header"),
        ),
        other => panic!("reply header starts with {other:?}"),
    }
}

/// Opens a stream to `addr`, writes `bytes` (ignoring a write refused by the server), finishes,
/// and reads the reply: `Err` with the reason when the stream gives no reply header.
pub async fn raw_call(
    endpoint: &Endpoint,
    addr: SocketAddr,
    bytes: Bytes,
) -> Result<RawReply, String> {
    let (mut send, mut recv) = endpoint
        .open(addr)
        .await
        .map_err(|e| format!("open: {e}"))?;
    let stream_index = send.id().index();
    // The server may stop reading before everything is written; its reply still explains why.
    let _ = frame::write_frames(&mut send, bytes).await;
    let _ = send.finish();
    let limit = 16 * 1024 * 1024;
    let header_bytes = frame::read_frame(&mut recv, limit)
        .await
        .map_err(|e| format!("reply header: {e}"))?;
    let (format, header) = decode_reply_header(&header_bytes);
    let body = frame::read_frame(&mut recv, limit)
        .await
        .map_err(|e| format!("reply body: {e}"))?;
    match frame::read_frame(&mut recv, limit).await {
        Err(colony_quic::ReadError::Finished) => {}
        other => return Err(format!("expected the reply to end, got {other:?}")),
    }
    Ok(RawReply {
        header_bytes,
        format,
        header,
        body,
        stream_index,
    })
}
