//! Shared fixtures for colony's integration tests.
//!
//! - Message types and the [`Fixture`] service that answers them: echo (with what the handler saw
//!   of its call), chosen errors, sleeps, calls held until a test opens a gate, panics, counters
//!   and large replies.
//! - Node start helpers that use an in-memory [`ClusterCa`], never the per-user CA.
//! - [`wait_until`] and [`within`]: bounded polling and bounded waits, so a broken test fails
//!   instead of hanging.
//! - A hand-made wire client ([`raw_call`] and the header helpers) for bytes no typed client sends.
//! - [`ChildNode`]: a node in another OS process, killed when the guard drops (or stopped
//!   gracefully with SIGTERM).
//! - [`load::Load`]: callers that keep calling until stopped, and what they saw.
//! - Pub/sub: the [`Job`] event and the [`Recorder`] subscriber, which tells what it handled
//!   through the [`Received`] call.
//! - [`fence`]: a resource written with fencing tokens, that reports stale writes and
//!   overlapping critical sections (the multi-process lock tests).
//! - [`probe`]: the [`probe::Probe`] subscriber, which records each call of its handler, and the
//!   in-process clusters, waits and checks of the pub/sub tests.

use std::time::Duration;

/// Longest any single wait in a test may take before the test is declared hung.
pub const HANG_LIMIT: Duration = Duration::from_secs(20);

/// Name under which [`start_fixture`] usually runs the fixture service.
pub const FIXTURE: &str = "fixture";

pub mod fence;
mod fixture;
pub mod load;
mod nodes;
pub mod probe;
mod process;
mod pubsub;
mod raw;
pub mod selection;

pub use fixture::*;
pub use nodes::*;
pub use process::*;
pub use pubsub::*;
pub use raw::*;
