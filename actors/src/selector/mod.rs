//! Choosing where a call goes: the selector's decision logic, free of I/O and of clocks.
//!
//! The runtime's selector actor (one per service a node calls) owns a table of instances and
//! these pieces; callers read the table lock-free on the hot path:
//!
//! - [`Load`]: each instance's live statistics (calls in flight, smoothed latency, failures in a
//!   row, health), atomics that callers update in line;
//! - [`pick`] with a [`Strategy`]: random, round-robin, least outstanding, power of two choices
//!   on latency (the default), local first, or rendezvous hashing on a request key;
//! - [`Outliers`]: ejection of failing instances for a growing period, probe, return;
//! - [`RetryBudget`]: retries capped at a fraction of calls.
//!
//! ```
//! use std::sync::atomic::AtomicUsize;
//! use std::time::Duration;
//! use colony_actors::selector::{pick, stable_hash, Candidate, Load, Strategy};
//!
//! struct Instance { load: Load, id: u64 }
//! impl Candidate for Instance {
//!     fn load(&self) -> &Load { &self.load }
//!     fn is_local(&self) -> bool { false }
//!     fn id_hash(&self) -> u64 { self.id }
//! }
//!
//! let fast = Instance { load: Load::default(), id: stable_hash(b"a") };
//! let slow = Instance { load: Load::default(), id: stable_hash(b"b") };
//! fast.load.observe(Duration::from_micros(80));
//! slow.load.observe(Duration::from_millis(40));
//! let table = [fast, slow];
//! let rr = AtomicUsize::new(0);
//! let i = pick(Strategy::PowerOfTwoChoices, None, &table, &rr, false, |_, _| true);
//! assert_eq!(i, Some(0));
//! ```

mod budget;
mod load;
mod outliers;
mod rng;
mod strategy;

pub use budget::{BudgetPolicy, RetryBudget};
pub use load::{Health, InFlight, Load, FADE_TIME};
pub use outliers::{OutlierPolicy, Outliers, Verdict};
pub use rng::{below as random_below, stable_hash, unit as random_unit};
pub use strategy::{pick, Candidate, Strategy};
