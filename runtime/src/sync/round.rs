//! One request to each of a key's replicas at once, answers taken as they come.

use std::future::{poll_fn, Future, IntoFuture};
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use super::messages::LOCK_SERVICE;
use crate::call::Client;
use crate::error::Error;
use crate::message::Message;

type Pending<'c, R> = Pin<Box<dyn Future<Output = Result<R, Error>> + Send + 'c>>;

/// Sends `request` to every replica in `targets` at once and hands each answer to `on` (with
/// the replica's index) as it arrives, until `on` decides. Calls still out when `on` decides
/// are dropped: the acquirer does not wait for the slowest replica. `None` if every replica
/// answered and `on` never decided.
pub(super) async fn ask_all<M, D>(
    client: &Client,
    targets: &[SocketAddr],
    request: &M,
    timeout: Duration,
    mut on: impl FnMut(usize, Result<M::Reply, Error>) -> Option<D>,
) -> Option<D>
where
    M: Message + Clone,
{
    let mut pending: Vec<Option<Pending<'_, M::Reply>>> = targets
        .iter()
        .map(|addr| {
            Some(
                client
                    .request(LOCK_SERVICE, request.clone())
                    .at(*addr)
                    .timeout(timeout)
                    .into_future(),
            )
        })
        .collect();
    for _ in 0..pending.len() {
        let (index, answer) = poll_fn(|cx| {
            for (i, slot) in pending.iter_mut().enumerate() {
                if let Some(call) = slot {
                    if let Poll::Ready(answer) = call.as_mut().poll(cx) {
                        *slot = None;
                        return Poll::Ready((i, answer));
                    }
                }
            }
            Poll::Pending
        })
        .await;
        if let Some(decision) = on(index, answer) {
            return Some(decision);
        }
    }
    None
}
