//! The call protocol on one QUIC bi-stream.
//!
//! ```text
//! caller -> server:  [len][request header] [len][request body]   then FIN
//! server -> caller:  [len][reply header]   [len][reply body]     then FIN
//! ```
//!
//! Each `[len]` is a 4-byte big-endian frame length (see `colony_quic::frame`). A header frame
//! is either `0x00` followed by bincode, or JSON text (it starts with `{`), so a tool in any
//! language can call a service with JSON alone. The reply header uses the request's format. The
//! body's codec is named by the request header's `content_type`; a failed call has an empty body.

use serde::{Deserialize, Serialize};

use crate::codec::ContentType;
use crate::context::Metadata;
use crate::error::Error;

const BINCODE_HEADER: u8 = 0x00;

/// Largest request or reply header accepted (service, endpoint, metadata, error detail): headers
/// are small, so a header frame near the body limit is an attack or a bug.
pub(crate) const MAX_HEADER: usize = 64 * 1024;

/// Longest error detail sent in a reply header, so that the header stays under [`MAX_HEADER`]
/// whatever a handler puts in its error.
pub(crate) const MAX_DETAIL: usize = 16 * 1024;
const JSON_HEADER: u8 = b'{';

/// How a header frame is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HeaderFormat {
    Bincode,
    Json,
}

impl From<ContentType> for HeaderFormat {
    fn from(ct: ContentType) -> Self {
        match ct {
            ContentType::Bincode => HeaderFormat::Bincode,
            ContentType::Json => HeaderFormat::Json,
        }
    }
}

/// What the caller says about its call.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct RequestHeader {
    pub(crate) service: String,
    pub(crate) endpoint: String,
    pub(crate) content_type: String,
    /// Time the caller will wait, from when it sent the request. Relative, so that clocks of
    /// different machines need not agree.
    pub(crate) timeout_ms: u64,
    pub(crate) request_id: u64,
    #[serde(default)]
    pub(crate) metadata: Metadata,
}

/// The outcome, ahead of the reply body.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ReplyHeader {
    pub(crate) request_id: u64,
    #[serde(default)]
    pub(crate) error: Option<Error>,
}

pub(crate) fn encode_header<T: Serialize>(format: HeaderFormat, header: &T) -> Vec<u8> {
    match format {
        HeaderFormat::Bincode => {
            let mut out = vec![BINCODE_HEADER];
            // Headers hold only strings, integers and maps: encoding them cannot fail.
            let body = ContentType::Bincode.encode(header).unwrap_or_default();
            out.extend_from_slice(&body);
            out
        }
        HeaderFormat::Json => ContentType::Json.encode(header).unwrap_or_default(),
    }
}

/// Decodes a header frame; the format is returned even when decoding fails, so the reply can be
/// written in a form the caller reads.
pub(crate) fn decode_header<T: for<'de> Deserialize<'de>>(
    frame: &[u8],
) -> (HeaderFormat, Result<T, Error>) {
    match frame.first() {
        Some(&BINCODE_HEADER) => (
            HeaderFormat::Bincode,
            ContentType::Bincode.decode(&frame[1..]),
        ),
        Some(&JSON_HEADER) => (HeaderFormat::Json, ContentType::Json.decode(frame)),
        _ => (
            HeaderFormat::Bincode,
            Err(Error::bad_request(
                "malformed header frame: expected 0x00+bincode or JSON",
            )),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> RequestHeader {
        let mut metadata = Metadata::default();
        metadata.insert("Trace", "1");
        RequestHeader {
            service: "greeter".into(),
            endpoint: "Greeter.Hello".into(),
            content_type: "application/json".into(),
            timeout_ms: 1000,
            request_id: 9,
            metadata,
        }
    }

    #[test]
    fn headers_round_trip_in_both_formats() {
        for format in [HeaderFormat::Bincode, HeaderFormat::Json] {
            let bytes = encode_header(format, &header());
            let (seen, decoded) = decode_header::<RequestHeader>(&bytes);
            assert_eq!(seen, format);
            let decoded = decoded.unwrap();
            assert_eq!(decoded.endpoint, "Greeter.Hello");
            assert_eq!(decoded.metadata.get("trace"), Some("1"));
        }
    }

    #[test]
    fn a_json_tool_can_write_a_header_by_hand() {
        let text = br#"{"service":"greeter","endpoint":"Greeter.Hello","content_type":"application/json","timeout_ms":500,"request_id":1}"#;
        let (format, decoded) = decode_header::<RequestHeader>(text);
        assert_eq!(format, HeaderFormat::Json);
        assert!(decoded.unwrap().metadata.is_empty());
    }

    #[test]
    fn garbage_is_a_bad_request() {
        let (_, decoded) = decode_header::<RequestHeader>(&[0xde, 0xad]);
        assert_eq!(decoded.unwrap_err().code(), crate::Code::BadRequest);
        let (_, decoded) = decode_header::<RequestHeader>(&[]);
        assert_eq!(decoded.unwrap_err().code(), crate::Code::BadRequest);
    }
}
