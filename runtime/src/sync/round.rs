//! One request to each of a key's replicas at once, answers taken as they come.

use std::future::{poll_fn, Future};
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use super::messages::LOCK_SERVICE;
use crate::call::Client;
use crate::error::{Code, Error};
use crate::message::Message;

type Pending<R> = Pin<Box<dyn Future<Output = Result<R, Error>> + Send>>;

/// Sends `request` to every replica in `targets` at once and hands each answer to `on` (with
/// the replica's index) as it arrives, until `on` decides (`None` if every replica answered and
/// `on` never did). The acquirer does not wait for the slowest replica, but the calls still out
/// are not dropped: the returned [`Late`] finishes them on a task of its own, so every replica
/// hears every request (a release a replica never heard would hold the key there until the
/// lease ran out).
pub(super) async fn ask_all<M, D>(
    client: &Client,
    targets: &[SocketAddr],
    request: &M,
    timeout: Duration,
    mut on: impl FnMut(usize, Result<M::Reply, Error>) -> Option<D>,
) -> (Option<D>, Late<M::Reply>)
where
    M: Message + Clone,
{
    let mut pending: Vec<Option<Pending<M::Reply>>> = targets
        .iter()
        .map(|&addr| {
            let (client, request) = (client.clone(), request.clone());
            let call: Pending<M::Reply> = Box::pin(async move {
                client
                    .request(LOCK_SERVICE, request)
                    .at(addr)
                    .timeout(timeout)
                    .await
            });
            Some(call)
        })
        .collect();
    for _ in 0..pending.len() {
        let (index, answer) = next(&mut pending).await;
        if let Some(decision) = on(index, answer) {
            return (Some(decision), Late { pending });
        }
    }
    (None, Late { pending })
}

/// The calls of a round still out when it was decided. Dropped, they finish on a task of their
/// own and their answers are ignored; [`then`](Late::then) hands each answer to a callback.
pub(super) struct Late<R: Send + 'static> {
    pending: Vec<Option<Pending<R>>>,
}

impl<R: Send + 'static> Late<R> {
    /// Finishes the calls on a task, handing each answer to `each` with the replica's index.
    pub(super) fn then(mut self, mut each: impl FnMut(usize, Result<R, Error>) + Send + 'static) {
        let mut pending = std::mem::take(&mut self.pending);
        if pending.iter().all(Option::is_none) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        runtime.spawn(async move {
            while pending.iter().any(Option::is_some) {
                let (index, answer) = next(&mut pending).await;
                each(index, answer);
            }
        });
    }
}

impl<R: Send + 'static> Drop for Late<R> {
    fn drop(&mut self) {
        if self.pending.iter().all(Option::is_none) {
            return;
        }
        let late = Late {
            pending: std::mem::take(&mut self.pending),
        };
        late.then(|_, answer| {
            if let Err(e) = answer {
                if e.code() != Code::Timeout {
                    tracing::debug!(error = %e, "a lock replica's late answer");
                }
            }
        });
    }
}

/// The next call to finish, by index. Must not be called with none pending.
async fn next<R>(pending: &mut [Option<Pending<R>>]) -> (usize, Result<R, Error>) {
    poll_fn(|cx| {
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
    .await
}
