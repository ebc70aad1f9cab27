//! The two traits a service author implements: [`Message`] for each request type, and
//! [`Handler`] for each request a service answers.

use std::future::Future;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::context::Context;
use crate::error::Error;

/// A request type: it names its endpoint and its reply type.
///
/// ```
/// use colony::Message;
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize)]
/// struct Hello { name: String }
/// #[derive(Serialize, Deserialize)]
/// struct HelloReply { greeting: String }
///
/// impl Message for Hello {
///     type Reply = HelloReply;
///     const ENDPOINT: &'static str = "Greeter.Hello";
/// }
/// ```
///
/// Request and reply travel as bincode or JSON between nodes, so they must round-trip through
/// both: avoid `#[serde(skip)]`, `flatten`, `untagged` and internally-tagged enums, which bincode
/// cannot represent faithfully.
pub trait Message: Serialize + DeserializeOwned + Send + 'static {
    /// What the handler answers.
    type Reply: Serialize + DeserializeOwned + Send + 'static;
    /// The endpoint name callers address, `Service.Method` by convention.
    const ENDPOINT: &'static str;
}

/// A service's answer to one [`Message`] type.
///
/// Each instance of a service is an actor: `handle` runs one request at a time with exclusive
/// access to the instance's state. A panic fails the instance; its supervisor replaces it and the
/// caller receives an [`Internal`](crate::Code::Internal) error.
pub trait Handler<M: Message>: Send + 'static {
    /// Answers `req`. Errors returned here reach the caller with
    /// [`Origin::Handler`](crate::Origin::Handler).
    fn handle(
        &mut self,
        req: M,
        ctx: &Context,
    ) -> impl Future<Output = Result<M::Reply, Error>> + Send;
}
