//! What an instance actor runs: one message at a time against its own state.

use std::future::Future;

/// The state and logic of one service instance.
///
/// The runtime implements this for typed services; the supervisor only needs to create, run and
/// replace instances, so it knows nothing about messages beyond this trait.
pub trait Behavior: Send + Sized + 'static {
    /// What the instance's mailbox carries.
    type Msg: ractor::Message;

    /// Handles one message. A panic here fails the instance; its supervisor decides what follows.
    fn handle(&mut self, msg: Self::Msg) -> impl Future<Output = ()> + Send;
}
