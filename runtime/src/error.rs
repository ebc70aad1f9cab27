//! The one error type of colony calls: a [`Code`], a detail, and where it came from.

use std::fmt;

use serde::{Deserialize, Serialize};

/// What went wrong, in terms a caller can act on. Numbers follow HTTP, as go-micro's do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(from = "u16", into = "u16")]
#[non_exhaustive]
pub enum Code {
    /// The request was malformed or could not be decoded (400).
    BadRequest,
    /// The caller did not prove who it is (401).
    Unauthorized,
    /// The caller is known but not allowed (403).
    Forbidden,
    /// No such service, instance or endpoint (404).
    NotFound,
    /// The deadline passed (408).
    Timeout,
    /// The request conflicts with current state (409).
    Conflict,
    /// A frame or message was larger than the limit (413).
    TooLarge,
    /// The handler failed unexpectedly or panicked (500).
    Internal,
    /// The service or node cannot take the call now: stopping, restarting, unreachable (503).
    Unavailable,
    /// A code this version does not know, kept as sent.
    Other(u16),
}

impl From<Code> for u16 {
    fn from(code: Code) -> u16 {
        match code {
            Code::BadRequest => 400,
            Code::Unauthorized => 401,
            Code::Forbidden => 403,
            Code::NotFound => 404,
            Code::Timeout => 408,
            Code::Conflict => 409,
            Code::TooLarge => 413,
            Code::Internal => 500,
            Code::Unavailable => 503,
            Code::Other(n) => n,
        }
    }
}

impl From<u16> for Code {
    fn from(n: u16) -> Code {
        match n {
            400 => Code::BadRequest,
            401 => Code::Unauthorized,
            403 => Code::Forbidden,
            404 => Code::NotFound,
            408 => Code::Timeout,
            409 => Code::Conflict,
            413 => Code::TooLarge,
            500 => Code::Internal,
            503 => Code::Unavailable,
            n => Code::Other(n),
        }
    }
}

/// Who decided the outcome: lets a caller tell "the handler said no" from "it never arrived".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    /// The service's handler returned this error: the request was delivered and processed.
    Handler,
    /// The serving node's runtime refused or failed the call (unknown endpoint, undecodable
    /// body, deadline passed before the handler ran, handler panicked).
    Server,
    /// Decided on the calling side: no connection, no instance, or no reply in time. A request
    /// that timed out here may still have run.
    Client,
}

/// A failed call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Error {
    code: Code,
    detail: String,
    origin: Origin,
}

impl Error {
    /// An error with `code` and `detail`, as a handler returns it.
    pub fn new(code: Code, detail: impl Into<String>) -> Self {
        Self {
            code,
            detail: detail.into(),
            origin: Origin::Handler,
        }
    }

    /// 400: the request makes no sense.
    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(Code::BadRequest, detail)
    }
    /// 401: the caller is not authenticated.
    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Self::new(Code::Unauthorized, detail)
    }
    /// 403: the caller is not allowed.
    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(Code::Forbidden, detail)
    }
    /// 404: no such thing.
    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(Code::NotFound, detail)
    }
    /// 408: out of time.
    pub fn timeout(detail: impl Into<String>) -> Self {
        Self::new(Code::Timeout, detail)
    }
    /// 409: conflicts with the current state.
    pub fn conflict(detail: impl Into<String>) -> Self {
        Self::new(Code::Conflict, detail)
    }
    /// 500: unexpected failure.
    pub fn internal(detail: impl Into<String>) -> Self {
        Self::new(Code::Internal, detail)
    }
    /// 503: cannot serve now.
    pub fn unavailable(detail: impl Into<String>) -> Self {
        Self::new(Code::Unavailable, detail)
    }

    /// The code.
    pub fn code(&self) -> Code {
        self.code
    }
    /// The human-readable detail.
    pub fn detail(&self) -> &str {
        &self.detail
    }
    /// Who produced the error.
    pub fn origin(&self) -> Origin {
        self.origin
    }

    /// Shortens the detail to at most `max` bytes (on a character boundary), marking the cut.
    pub(crate) fn truncated(mut self, max: usize) -> Self {
        const MARK: &str = "… (truncated)";
        if self.detail.len() > max {
            let mut cut = max.saturating_sub(MARK.len());
            while !self.detail.is_char_boundary(cut) {
                cut -= 1;
            }
            self.detail.truncate(cut);
            self.detail.push_str(MARK);
        }
        self
    }

    pub(crate) fn with_origin(mut self, origin: Origin) -> Self {
        self.origin = origin;
        self
    }
    pub(crate) fn server(code: Code, detail: impl Into<String>) -> Self {
        Self::new(code, detail).with_origin(Origin::Server)
    }
    pub(crate) fn client(code: Code, detail: impl Into<String>) -> Self {
        Self::new(code, detail).with_origin(Origin::Client)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let origin = match self.origin {
            Origin::Handler => "handler",
            Origin::Server => "server",
            Origin::Client => "client",
        };
        write!(
            f,
            "{} {:?} ({origin}): {}",
            u16::from(self.code),
            self.code,
            self.detail
        )
    }
}

impl std::error::Error for Error {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_survives_its_number() {
        for code in [
            Code::BadRequest,
            Code::Unauthorized,
            Code::Forbidden,
            Code::NotFound,
            Code::Timeout,
            Code::Conflict,
            Code::TooLarge,
            Code::Internal,
            Code::Unavailable,
            Code::Other(418),
        ] {
            assert_eq!(Code::from(u16::from(code)), code);
        }
    }

    #[test]
    fn truncation_respects_characters_and_the_limit() {
        let e = Error::conflict("é".repeat(100)).truncated(51);
        assert!(e.detail().len() <= 51);
        assert!(e.detail().starts_with("éé") && e.detail().ends_with("(truncated)"));
        let short = Error::conflict("short").truncated(51);
        assert_eq!(short.detail(), "short");
    }

    #[test]
    fn json_form_is_readable() {
        let e = Error::not_found("no such endpoint").with_origin(Origin::Server);
        let json = serde_json::to_string(&e).unwrap();
        assert_eq!(
            json,
            r#"{"code":404,"detail":"no such endpoint","origin":"server"}"#
        );
    }
}
