//! One service instance: a tokio task that runs its [`Behavior`] over a mailbox of its own.
//!
//! An instance is not a ractor actor: a ractor actor costs about 6.7 KB idle (two unbounded
//! channels whose first blocks are allocated up front, 2.6 KB of them for supervision events an
//! instance never receives, a 128-byte-aligned task and boxed processing loop), which made
//! 100,000 instances take 740 MB. Here an idle instance is one task (640 bytes) and one small
//! shared mailbox (120 bytes: a lock around a queue that allocates on first use). What the
//! supervisor needs of an actor is kept: one message at a time, a panic fails the instance and
//! is reported, `stop` finishes the message at hand and drops the rest, `drain` finishes every
//! queued message first, and a killed instance is aborted where it stands.

use std::any::Any;
use std::collections::VecDeque;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Poll, Waker};

use ractor::ActorRef;

use crate::behavior::{Behavior, Done};
use crate::supervisor::{Exited, SupervisorMsg};

/// Makes a fresh [`Behavior`] for every start and restart of an instance.
pub type Factory<B> = Arc<dyn Fn() -> B + Send + Sync>;

/// Which incarnation of an instance: unique in the process, never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct InstanceId(u64);

/// Above this many slots, an emptied queue gives its memory back: a burst does not stay
/// allocated in an instance that has gone idle again.
const KEEP_CAPACITY: usize = 8;

/// The queue and lifecycle of one incarnation, shared by its senders and its task.
pub(crate) struct Mailbox<M> {
    id: InstanceId,
    /// Messages sent and not yet handled (see [`Instances::send`](crate::Instances::send)),
    /// counted down by [`Done`].
    pub(crate) depth: AtomicU32,
    queue: Mutex<Queue<M>>,
}

struct Queue<M> {
    messages: VecDeque<M>,
    /// False once stopping, draining or exited: sends are handed back.
    open: bool,
    /// Set by `stop`: exit after the message at hand, with this reason.
    stop: Option<Option<String>>,
    /// Set by `drain`: exit once the queue is empty.
    draining: bool,
    /// The task, when it waits for a message or a stop. Kept under the queue's lock: one lock
    /// per message on each side, where a `Notify` beside it took a second one.
    waiting: Option<Waker>,
}

/// Releases the lock, then wakes the task if it waits: woken under the lock, it would only
/// block on it.
fn release_and_wake<M>(mut queue: MutexGuard<'_, Queue<M>>) {
    let waiter = queue.waiting.take();
    drop(queue);
    if let Some(waiter) = waiter {
        waiter.wake();
    }
}

/// Why a message was handed back: the instance has stopped, or is stopping.
pub(crate) struct Closed<M>(pub(crate) M);

impl<M> std::fmt::Debug for Closed<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Closed(..)")
    }
}

impl<M> Mailbox<M> {
    fn new() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        Self {
            id: InstanceId(NEXT.fetch_add(1, Ordering::Relaxed)),
            depth: AtomicU32::new(0),
            queue: Mutex::new(Queue {
                messages: VecDeque::new(),
                open: true,
                stop: None,
                draining: false,
                waiting: None,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Queue<M>> {
        // Nothing panics while holding the lock; a poisoned one is still consistent.
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn get_id(&self) -> InstanceId {
        self.id
    }

    /// Queues `msg`, or hands it back when the instance no longer takes messages.
    pub(crate) fn send_message(&self, msg: M) -> Result<(), Closed<M>> {
        let mut queue = self.lock();
        if !queue.open {
            return Err(Closed(msg));
        }
        queue.messages.push_back(msg);
        release_and_wake(queue);
        Ok(())
    }

    /// Exits after the message at hand; queued messages are dropped, new ones refused.
    pub(crate) fn stop(&self, reason: Option<String>) {
        let mut queue = self.lock();
        queue.open = false;
        queue.stop.get_or_insert(reason);
        release_and_wake(queue);
    }

    /// Handles what is queued, then exits; new messages are refused. Fails if already closed.
    pub(crate) fn drain(&self) -> Result<(), ()> {
        let mut queue = self.lock();
        if !queue.open {
            return Err(());
        }
        queue.open = false;
        queue.draining = true;
        release_and_wake(queue);
        Ok(())
    }

    /// Refuses new messages and drops the queued ones (outside the lock: dropping a message
    /// may answer its caller).
    pub(crate) fn close(&self) {
        let dropped = {
            let mut queue = self.lock();
            queue.open = false;
            std::mem::take(&mut queue.messages)
        };
        drop(dropped);
    }

    /// The next message, or why to exit. Stopping goes before queued messages, as in ractor.
    fn next(&self) -> impl Future<Output = Result<M, Option<String>>> + '_ {
        std::future::poll_fn(|cx| {
            let mut queue = self.lock();
            if let Some(reason) = queue.stop.take() {
                return Poll::Ready(Err(reason));
            }
            if let Some(msg) = queue.messages.pop_front() {
                if queue.messages.is_empty() && queue.messages.capacity() > KEEP_CAPACITY {
                    queue.messages = VecDeque::new();
                }
                return Poll::Ready(Ok(msg));
            }
            if queue.draining {
                return Poll::Ready(Err(Some("Drained".into())));
            }
            match &mut queue.waiting {
                Some(waker) if waker.will_wake(cx.waker()) => {}
                waiting => *waiting = Some(cx.waker().clone()),
            }
            Poll::Pending
        })
    }
}

/// A running incarnation: its mailbox and its task.
pub(crate) struct Child<M> {
    pub(crate) mailbox: Arc<Mailbox<M>>,
    pub(crate) task: tokio::task::JoinHandle<()>,
}

impl<M> Child<M> {
    /// Stops it at once, as ractor kills an actor: the message at hand is abandoned (its task is
    /// aborted), queued ones dropped. Its exit is reported as a failure, which the supervisor
    /// ignores: it kills only instances it has already taken out of their slot.
    pub(crate) fn kill(&self) {
        self.mailbox.close();
        self.task.abort();
    }
}

/// Starts an instance from `factory`: makes its state and runs its `started` hook here (a hook
/// that fails or a factory that panics fails the start, and nothing runs), then spawns the task
/// that handles its messages. Its exit is reported to `supervisor`.
pub(crate) async fn start<B: Behavior>(
    factory: &Factory<B>,
    supervisor: ActorRef<SupervisorMsg>,
    timeout: std::time::Duration,
) -> Result<Child<B::Msg>, String> {
    let mut state = std::panic::catch_unwind(AssertUnwindSafe(|| factory()))
        .map_err(|panic| format!("instance factory panicked: {}", panic_text(panic)))?;
    let started = {
        let mut started = std::pin::pin!(state.started());
        let mut hook = std::pin::pin!(catch_panic(started.as_mut()));
        // Hook-less states are ready at the first poll: no timer, no clock read, no task
        // switch per start. Only a hook that has to wait is raced against the timeout.
        match std::future::poll_fn(|cx| Poll::Ready(hook.as_mut().poll(cx))).await {
            Poll::Ready(done) => Ok(done),
            Poll::Pending => tokio::time::timeout(timeout, hook).await,
        }
    };
    match started {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(why))) => return Err(why),
        Ok(Err(panic)) => return Err(format!("started hook panicked: {}", panic_text(panic))),
        Err(_) => return Err(format!("started hook did not finish within {timeout:?}")),
    }
    let mailbox = Arc::new(Mailbox::new());
    let task = tokio::spawn(run(mailbox.clone(), state, supervisor));
    Ok(Child { mailbox, task })
}

async fn run<B: Behavior>(
    mailbox: Arc<Mailbox<B::Msg>>,
    state: B,
    supervisor: ActorRef<SupervisorMsg>,
) {
    // Reports the exit however the task ends: a panic outside the handler (a `Drop` of the
    // state, of a request, of the handler's future) must not leave a slot that looks live.
    // (Its fields are used in place, not through a local reference: an idle instance's task
    // is 128-byte aligned, and 16 bytes more cross into the next 128.)
    let report = ExitReport {
        mailbox,
        supervisor: Some(supervisor),
    };
    // Declared after the report, so a panic unwinding the task drops the state first: the
    // supervisor hears of the exit only once the old state has let go of what it held.
    let mut state = state;
    let exit = loop {
        let msg = match report.mailbox.next().await {
            Ok(msg) => msg,
            Err(reason) => {
                let why = reason.unwrap_or_else(|| "stopped".into());
                break Exited::stopped(report.mailbox.id, why);
            }
        };
        // Pinned in place, not boxed: no allocation per message.
        let mut handling = std::pin::pin!(state.handle(msg, Done(&report.mailbox.depth)));
        if let Err(panic) = catch_panic(handling.as_mut()).await {
            break Exited::failed(report.mailbox.id, panic_text(panic));
        }
    };
    // Callers waiting in the queue hear at once that their call never ran.
    report.close_mailbox();
    if !exit.failed {
        // Stopped on purpose: the state is intact and may clean up (a panicked one is not).
        if let Err(panic) = catch_panic(std::pin::pin!(state.stopping())).await {
            tracing::warn!(panic = %panic_text(panic), "an instance's stopping hook panicked");
        }
    }
    // A state whose drop panics: still this exit, and its reason kept.
    let exit = match std::panic::catch_unwind(AssertUnwindSafe(move || drop(state))) {
        Ok(()) => exit,
        Err(panic) => Exited::failed(
            report.mailbox.id,
            format!(
                "{} (then its state panicked when dropped: {})",
                exit.why,
                panic_text(panic)
            ),
        ),
    };
    report.finish(exit);
}

/// Tells the supervisor how an instance ended: with [`finish`](Self::finish), or, if a panic
/// unwinds the task first, when dropped, as a failure. Kept small: an idle instance carries it.
struct ExitReport<M> {
    mailbox: Arc<Mailbox<M>>,
    /// Taken once the exit is reported.
    supervisor: Option<ActorRef<SupervisorMsg>>,
}

impl<M> ExitReport<M> {
    /// Refuses new messages and drops the queued ones; a `Drop` of theirs that panics is
    /// contained here (it may run while another panic unwinds, where a second one aborts).
    fn close_mailbox(&self) {
        let _ = std::panic::catch_unwind(AssertUnwindSafe(|| self.mailbox.close()));
    }

    fn finish(mut self, exit: Exited) {
        self.close_mailbox();
        if let Some(supervisor) = self.supervisor.take() {
            let _ = supervisor.send_message(SupervisorMsg::Exited(exit));
        }
    }
}

impl<M> Drop for ExitReport<M> {
    fn drop(&mut self) {
        if let Some(supervisor) = self.supervisor.take() {
            self.close_mailbox();
            let why = "panicked outside its handler (in a drop)";
            let exit = Exited::failed(self.mailbox.id, why.into());
            let _ = supervisor.send_message(SupervisorMsg::Exited(exit));
        }
    }
}

/// Polls `future` to the end, turning a panic inside it into an error. The caller drops the
/// future (and what it holds, such as a caller's reply port) afterwards.
fn catch_panic<T, F: Future<Output = T>>(
    mut future: Pin<&mut F>,
) -> impl Future<Output = Result<T, Box<dyn Any + Send>>> + '_ {
    std::future::poll_fn(move |cx| {
        match std::panic::catch_unwind(AssertUnwindSafe(|| future.as_mut().poll(cx))) {
            Ok(Poll::Ready(out)) => Poll::Ready(Ok(out)),
            Ok(Poll::Pending) => Poll::Pending,
            Err(panic) => Poll::Ready(Err(panic)),
        }
    })
}

pub(crate) fn panic_text(panic: Box<dyn Any + Send>) -> String {
    match panic.downcast::<String>() {
        Ok(text) => *text,
        Err(panic) => match panic.downcast::<&'static str>() {
            Ok(text) => (*text).to_string(),
            Err(_) => "panicked".to_string(),
        },
    }
}
