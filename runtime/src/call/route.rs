//! Which instances may take a call: version, labels, excluded nodes, the endpoint itself.

use std::fmt;

use super::selector::Instance;
use crate::error::{Code, Error};

/// A version filter: an exact version, or a semver range.
#[derive(Debug, Clone)]
pub(crate) enum VersionFilter {
    /// `1.2.3`: only that version (compared as text, so non-semver versions work too).
    Exact(String),
    /// `^1.2`, `>=1.0, <2`, `~1.4`, `1.2` (caret by default, as Cargo).
    Range(semver::VersionReq),
}

impl VersionFilter {
    pub(crate) fn parse(text: &str) -> Result<Self, Error> {
        let text = text.trim();
        if semver::Version::parse(text).is_ok() || text.is_empty() {
            return Ok(Self::Exact(text.to_string()));
        }
        // A range starts with an operator or a digit, or lists comparators; anything else
        // (`canary`, `v2`) is a version name, compared as text.
        let looks_like_range = text.starts_with(['^', '~', '=', '<', '>', '*'])
            || text.starts_with(|c: char| c.is_ascii_digit())
            || text.contains(',');
        if !looks_like_range {
            return Ok(Self::Exact(text.to_string()));
        }
        semver::VersionReq::parse(text)
            .map(Self::Range)
            .map_err(|e| {
                Error::client(
                    Code::BadRequest,
                    format!("version filter {text:?} is neither a version nor a semver range: {e}"),
                )
            })
    }

    fn admits(&self, instance: &Instance) -> bool {
        match self {
            Self::Exact(v) => instance.version == *v,
            Self::Range(req) => instance.semver.as_ref().is_some_and(|v| req.matches(v)),
        }
    }
}

/// Conditions an instance must meet to take a call.
#[derive(Debug, Clone, Default)]
pub(crate) struct Filter {
    pub(crate) version: Option<Result<VersionFilter, Error>>,
    pub(crate) labels: Vec<(String, String)>,
    pub(crate) exclude_nodes: Vec<String>,
}

/// No condition at all.
pub(crate) static NO_FILTER: Filter = Filter {
    version: None,
    labels: Vec::new(),
    exclude_nodes: Vec::new(),
};

impl Filter {
    pub(crate) fn is_empty(&self) -> bool {
        self.version.is_none() && self.labels.is_empty() && self.exclude_nodes.is_empty()
    }

    /// The filter's own mistake (an unparsable version range), reported before any attempt.
    pub(crate) fn check(&self) -> Result<(), Error> {
        match &self.version {
            Some(Err(e)) => Err(e.clone()),
            _ => Ok(()),
        }
    }

    pub(crate) fn admits(&self, instance: &Instance) -> bool {
        if let Some(Ok(version)) = &self.version {
            if !version.admits(instance) {
                return false;
            }
        }
        self.labels
            .iter()
            .all(|(k, v)| instance.metadata.get(k) == Some(v))
            && !self.exclude_nodes.contains(&instance.node)
    }
}

impl fmt::Display for Filter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        match &self.version {
            Some(Ok(VersionFilter::Exact(v))) => parts.push(format!("version {v}")),
            Some(Ok(VersionFilter::Range(r))) => parts.push(format!("version {r}")),
            _ => {}
        }
        for (k, v) in &self.labels {
            parts.push(format!("{k}={v}"));
        }
        for n in &self.exclude_nodes {
            parts.push(format!("not on {n}"));
        }
        write!(f, "{}", parts.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_versions_and_ranges_parse_apart() {
        assert!(
            matches!(VersionFilter::parse("1.2.3"), Ok(VersionFilter::Exact(v)) if v == "1.2.3")
        );
        assert!(matches!(
            VersionFilter::parse("^1.2"),
            Ok(VersionFilter::Range(_))
        ));
        assert!(matches!(
            VersionFilter::parse(">=1.0, <2"),
            Ok(VersionFilter::Range(_))
        ));
        let err = VersionFilter::parse(">=1.0 <<2").unwrap_err();
        assert_eq!(err.code(), Code::BadRequest);
        assert!(
            matches!(VersionFilter::parse("canary"), Ok(VersionFilter::Exact(v)) if v == "canary")
        );
    }
}
