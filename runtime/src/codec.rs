//! Body codecs, chosen per call by content type: bincode (the default) or JSON.

use std::fmt;
use std::str::FromStr;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::{Code, Error};

/// Upper bound on what bincode may allocate while decoding one value. Frames are already size
/// limited; this stops a small frame that *claims* a huge collection from allocating it.
const BINCODE_DECODE_LIMIT: usize = 64 * 1024 * 1024;

fn bincode_config() -> bincode::config::Configuration {
    bincode::config::standard()
}

/// How a request or reply body is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum ContentType {
    /// `application/bincode`: compact, Rust-to-Rust. The default.
    #[default]
    Bincode,
    /// `application/json`: for tools and other languages.
    Json,
}

impl ContentType {
    /// The MIME name carried in request headers.
    pub fn as_str(self) -> &'static str {
        match self {
            ContentType::Bincode => "application/bincode",
            ContentType::Json => "application/json",
        }
    }

    /// Encodes `value`.
    pub fn encode<T: Serialize + ?Sized>(self, value: &T) -> Result<Vec<u8>, Error> {
        match self {
            ContentType::Bincode => bincode::serde::encode_to_vec(value, bincode_config())
                .map_err(|e| Error::internal(format!("bincode encode: {e}"))),
            ContentType::Json => {
                serde_json::to_vec(value).map_err(|e| Error::internal(format!("json encode: {e}")))
            }
        }
    }

    /// Encodes `value` at the end of `out` (no intermediate buffer).
    pub(crate) fn encode_into<T: Serialize + ?Sized>(
        self,
        value: &T,
        out: &mut bytes::BytesMut,
    ) -> Result<(), Error> {
        use bytes::BufMut;
        let mut writer = out.writer();
        match self {
            ContentType::Bincode => {
                bincode::serde::encode_into_std_write(value, &mut writer, bincode_config())
                    .map(|_| ())
                    .map_err(|e| Error::internal(format!("bincode encode: {e}")))
            }
            ContentType::Json => serde_json::to_writer(&mut writer, value)
                .map_err(|e| Error::internal(format!("json encode: {e}"))),
        }
    }

    /// Decodes a `T` that must fill all of `bytes`. Failures are [`Code::BadRequest`].
    pub fn decode<T: DeserializeOwned>(self, bytes: &[u8]) -> Result<T, Error> {
        match self {
            ContentType::Bincode => {
                let config = bincode_config().with_limit::<BINCODE_DECODE_LIMIT>();
                let (value, used) = bincode::serde::decode_from_slice(bytes, config)
                    .map_err(|e| Error::bad_request(format!("bincode decode: {e}")))?;
                if used != bytes.len() {
                    return Err(Error::bad_request(format!(
                        "bincode decode: {} trailing bytes",
                        bytes.len() - used
                    )));
                }
                Ok(value)
            }
            ContentType::Json => serde_json::from_slice(bytes)
                .map_err(|e| Error::bad_request(format!("json decode: {e}"))),
        }
    }
}

impl fmt::Display for ContentType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ContentType {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        // Parameters such as "; charset=utf-8" do not change the codec.
        let mime = s.split(';').next().unwrap_or("").trim();
        if mime.eq_ignore_ascii_case("application/bincode") {
            Ok(ContentType::Bincode)
        } else if mime.eq_ignore_ascii_case("application/json") {
            Ok(ContentType::Json)
        } else {
            Err(Error::new(
                Code::BadRequest,
                format!(
                    "unsupported content type {s:?} (use application/bincode or application/json)"
                ),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Sample {
        name: String,
        n: u64,
    }

    #[test]
    fn both_codecs_round_trip() {
        let v = Sample {
            name: "x".into(),
            n: 7,
        };
        for ct in [ContentType::Bincode, ContentType::Json] {
            let bytes = ct.encode(&v).unwrap();
            assert_eq!(ct.decode::<Sample>(&bytes).unwrap(), v);
        }
    }

    #[test]
    fn garbage_and_trailing_bytes_are_bad_requests() {
        for ct in [ContentType::Bincode, ContentType::Json] {
            let err = ct.decode::<Sample>(&[0xff, 0xfe, 0x00]).unwrap_err();
            assert_eq!(err.code(), Code::BadRequest);
        }
        let mut bytes = ContentType::Bincode
            .encode(&Sample {
                name: "x".into(),
                n: 1,
            })
            .unwrap();
        bytes.push(0);
        assert_eq!(
            ContentType::Bincode
                .decode::<Sample>(&bytes)
                .unwrap_err()
                .code(),
            Code::BadRequest
        );
    }

    #[test]
    fn a_huge_claimed_length_does_not_allocate() {
        // A Vec<u64> claiming 2^40 elements in a handful of bytes.
        let mut bytes = vec![253u8];
        bytes.extend_from_slice(&(1u64 << 40).to_le_bytes());
        let err = ContentType::Bincode.decode::<Vec<u64>>(&bytes).unwrap_err();
        assert_eq!(err.code(), Code::BadRequest);
    }

    #[test]
    fn content_type_names_parse() {
        assert_eq!(
            "application/json; charset=utf-8"
                .parse::<ContentType>()
                .unwrap(),
            ContentType::Json
        );
        assert_eq!(
            "Application/Bincode".parse::<ContentType>().unwrap(),
            ContentType::Bincode
        );
        assert!("text/plain".parse::<ContentType>().is_err());
    }
}
