//! Topic names as NATS subjects: dot-separated tokens; patterns add `*` (one token) and `>` (one
//! or more tokens, last only).
//!
//! Stricter than NATS on purpose: `*` and `>` inside a token (`ord*`) are refused rather than
//! taken as literal characters, so a pattern never silently means something else than it
//! looks like.

use std::fmt;

/// Longest subject or pattern accepted, in bytes: topic names travel in gossip and in every
/// published frame, so they stay short.
pub const MAX_SUBJECT_LEN: usize = 256;

/// Why a subject or pattern was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SubjectError {
    /// Nothing, or an empty token (`a..b`, `.a`, `a.`).
    EmptyToken,
    /// Longer than [`MAX_SUBJECT_LEN`].
    TooLong(usize),
    /// A character that is not allowed: whitespace, control characters, or a wildcard where a
    /// concrete subject is needed.
    BadChar(char),
    /// A wildcard mixed with other characters in one token (`ord*`), or `>` not last.
    BadWildcard(String),
}

impl fmt::Display for SubjectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SubjectError::EmptyToken => {
                write!(f, "empty token (subjects look like `orders.created`)")
            }
            SubjectError::TooLong(n) => write!(f, "{n} bytes, longer than {MAX_SUBJECT_LEN}"),
            SubjectError::BadChar(c) => write!(f, "character {c:?} is not allowed"),
            SubjectError::BadWildcard(t) => write!(
                f,
                "bad wildcard in token {t:?}: `*` and `>` stand alone, and `>` only last"
            ),
        }
    }
}

impl std::error::Error for SubjectError {}

/// A concrete subject a message is published to: `orders.created`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Subject(String);

/// A subscription's subject pattern: `orders.created`, `orders.*`, `orders.>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Pattern(String);

/// One token of a pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Token<'a> {
    Literal(&'a str),
    /// `*`: exactly one token.
    One,
    /// `>`: one or more tokens, the rest of the subject.
    Rest,
}

fn check_tokens(text: &str, wildcards: bool) -> Result<(), SubjectError> {
    if text.len() > MAX_SUBJECT_LEN {
        return Err(SubjectError::TooLong(text.len()));
    }
    let tokens: Vec<&str> = text.split('.').collect();
    for (i, token) in tokens.iter().enumerate() {
        if token.is_empty() {
            return Err(SubjectError::EmptyToken);
        }
        if let Some(c) = token.chars().find(|c| c.is_whitespace() || c.is_control()) {
            return Err(SubjectError::BadChar(c));
        }
        let has_wildcard = token.contains(['*', '>']);
        if !has_wildcard {
            continue;
        }
        if !wildcards {
            let c = token
                .chars()
                .find(|c| *c == '*' || *c == '>')
                .unwrap_or('*');
            return Err(SubjectError::BadChar(c));
        }
        let alone = *token == "*" || (*token == ">" && i == tokens.len() - 1);
        if !alone {
            return Err(SubjectError::BadWildcard(token.to_string()));
        }
    }
    Ok(())
}

impl Subject {
    /// Checks `text`: non-empty tokens, no whitespace or control characters, no wildcards.
    pub fn new(text: impl Into<String>) -> Result<Self, SubjectError> {
        let text = text.into();
        check_tokens(&text, false)?;
        Ok(Subject(text))
    }

    /// The subject as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub(crate) fn tokens(&self) -> impl Iterator<Item = &str> {
        self.0.split('.')
    }
}

impl Pattern {
    /// Checks `text`: as a subject, and `*` or `>` only as whole tokens, `>` only last.
    pub fn new(text: impl Into<String>) -> Result<Self, SubjectError> {
        let text = text.into();
        check_tokens(&text, true)?;
        Ok(Pattern(text))
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub(crate) fn tokens(&self) -> impl Iterator<Item = Token<'_>> {
        self.0.split('.').map(|t| match t {
            "*" => Token::One,
            ">" => Token::Rest,
            literal => Token::Literal(literal),
        })
    }

    /// True if a message published to `subject` is for this pattern.
    pub fn matches(&self, subject: &Subject) -> bool {
        let mut subject = subject.tokens();
        for token in self.tokens() {
            match (token, subject.next()) {
                (Token::Rest, Some(_)) => return true,
                (Token::One, Some(_)) => {}
                (Token::Literal(l), Some(s)) if l == s => {}
                _ => return false,
            }
        }
        subject.next().is_none()
    }
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matches(pattern: &str, subject: &str) -> bool {
        Pattern::new(pattern)
            .unwrap()
            .matches(&Subject::new(subject).unwrap())
    }

    #[test]
    fn one_token_and_the_rest_as_in_nats() {
        assert!(matches("orders.created", "orders.created"));
        assert!(!matches("orders.created", "orders.created.eu"));
        assert!(matches("orders.*", "orders.created"));
        assert!(!matches("orders.*", "orders"), "`*` needs a token");
        assert!(
            !matches("orders.*", "orders.created.eu"),
            "`*` is one token"
        );
        assert!(matches("orders.>", "orders.created"));
        assert!(matches("orders.>", "orders.created.eu.1"));
        assert!(
            !matches("orders.>", "orders"),
            "`>` needs at least one token"
        );
        assert!(matches("*.created", "orders.created"));
        assert!(matches("*.*.eu", "orders.created.eu"));
        assert!(matches(">", "anything.at.all"));
        assert!(!matches("orders.*", "payments.created"));
    }

    #[test]
    fn bad_names_are_refused_with_a_reason() {
        for bad in ["", "a..b", ".a", "a.", "a b", "a\n"] {
            assert!(Subject::new(bad).is_err(), "{bad:?}");
            assert!(Pattern::new(bad).is_err(), "{bad:?}");
        }
        assert_eq!(Subject::new("a.*"), Err(SubjectError::BadChar('*')));
        assert_eq!(Subject::new("a.>"), Err(SubjectError::BadChar('>')));
        assert!(matches!(
            Pattern::new("a.>.b"),
            Err(SubjectError::BadWildcard(_))
        ));
        assert!(matches!(
            Pattern::new("ord*.x"),
            Err(SubjectError::BadWildcard(_))
        ));
        let long = "a".repeat(MAX_SUBJECT_LEN + 1);
        assert_eq!(
            Subject::new(long),
            Err(SubjectError::TooLong(MAX_SUBJECT_LEN + 1))
        );
    }
}
