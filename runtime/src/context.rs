//! What a handler knows about the call it is answering.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::codec::ContentType;

/// Call metadata: string keys and values, keys case-insensitive (stored lower-case), like
/// HTTP headers and go-micro's metadata.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "BTreeMap<String, String>")]
pub struct Metadata(BTreeMap<String, String>);

impl From<BTreeMap<String, String>> for Metadata {
    fn from(map: BTreeMap<String, String>) -> Self {
        Self(
            map.into_iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), v))
                .collect(),
        )
    }
}

impl Metadata {
    /// Sets `key` (any case) to `value`, returning the old value.
    pub fn insert(&mut self, key: impl AsRef<str>, value: impl Into<String>) -> Option<String> {
        self.0
            .insert(key.as_ref().to_ascii_lowercase(), value.into())
    }
    /// The value of `key`, whatever its case.
    pub fn get(&self, key: &str) -> Option<&str> {
        match self.0.get(key) {
            Some(v) => Some(v),
            None => self.0.get(&key.to_ascii_lowercase()).map(String::as_str),
        }
    }
    /// All entries, keys lower-case, in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
    /// Number of entries.
    pub fn len(&self) -> usize {
        self.0.len()
    }
    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The call a handler is answering.
#[derive(Debug, Clone)]
pub struct Context {
    pub(crate) service: Arc<str>,
    /// Borrowed for in-process calls (the message type's constant): no allocation per call.
    pub(crate) endpoint: Cow<'static, str>,
    pub(crate) request_id: u64,
    pub(crate) deadline: Instant,
    pub(crate) metadata: Metadata,
    pub(crate) peer: Option<SocketAddr>,
    pub(crate) content_type: Option<ContentType>,
    /// 0 for a call; for an event, which delivery attempt this is (1 the first).
    pub(crate) attempt: u32,
}

impl Context {
    /// The service the call addressed.
    pub fn service(&self) -> &str {
        &self.service
    }
    /// The endpoint the call addressed.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }
    /// The caller's request id, for logs and tracing.
    pub fn request_id(&self) -> u64 {
        self.request_id
    }
    /// When the caller stops waiting.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }
    /// Time left before the deadline (zero once passed).
    pub fn remaining(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }
    /// The caller's metadata.
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }
    /// The calling node's address; `None` for a call from this node.
    pub fn peer(&self) -> Option<SocketAddr> {
        self.peer
    }
    /// The codec the request arrived in; `None` for an in-process call (never encoded).
    pub fn content_type(&self) -> Option<ContentType> {
        self.content_type
    }
    /// For an event, the subject it was published to (its [`endpoint`](Self::endpoint));
    /// `None` for a call.
    pub fn subject(&self) -> Option<&str> {
        (self.attempt > 0).then_some(&*self.endpoint)
    }
    /// For an event, which delivery attempt this is: 1 the first time, more when an
    /// at-least-once subscription redelivers it. 0 for a call.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_keys_ignore_case_in_every_path() {
        let mut md = Metadata::default();
        md.insert("X-Trace-Id", "abc");
        assert_eq!(md.get("x-trace-id"), Some("abc"));
        assert_eq!(md.get("X-TRACE-ID"), Some("abc"));
        let wire: Metadata = serde_json::from_str(r#"{"Content-Owner":"me"}"#).unwrap();
        assert_eq!(wire.get("content-owner"), Some("me"));
    }
}
