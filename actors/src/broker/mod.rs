//! Pub/sub's decision logic, free of I/O and of clocks: what the runtime's broker
//! (`runtime/src/broker/`: topic actors, links between nodes, the publisher's outbox) decides
//! with.
//!
//! - [`Subject`] and [`Pattern`]: topic names as NATS subjects, `orders.created`; patterns add
//!   `*` (one token) and `>` (the rest);
//! - [`Table`]: which subscriptions a subject reaches, plain ones and queue groups (one member
//!   of each group gets a message), as NATS's sublist;
//! - [`InFlight`] with a [`Redelivery`] policy: at-least-once delivery, acks, redelivery with
//!   backoff, dead letters after N attempts;
//! - [`Bounded`] with an [`Overflow`] policy: a subscriber's bounded buffer that blocks the
//!   publisher or drops the oldest, never grows.
//!
//! ```
//! use colony_actors::broker::{Pattern, Subject, Table};
//!
//! let mut subscriptions = Table::default();
//! subscriptions.insert("audit", Pattern::new("orders.>").unwrap(), None);
//! subscriptions.insert("billing-1", Pattern::new("orders.*").unwrap(), Some("billing"));
//! subscriptions.insert("billing-2", Pattern::new("orders.*").unwrap(), Some("billing"));
//!
//! let reached = subscriptions.matches(&Subject::new("orders.created").unwrap());
//! assert_eq!(reached.plain, vec!["audit"]);
//! assert_eq!(reached.groups["billing"].len(), 2); // one of them gets it
//! assert!(subscriptions.matches(&Subject::new("payments.failed").unwrap()).is_empty());
//! ```

mod buffer;
mod delivery;
mod subject;
mod table;

pub use buffer::{Bounded, Overflow, Pushed};
pub use delivery::{InFlight, Redelivery, Retry};
pub use subject::{Pattern, Subject, SubjectError, MAX_SUBJECT_LEN};
pub use table::{Matches, Table};
