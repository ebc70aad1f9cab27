//! A link: this node's one long-lived stream to a peer, carrying every event and ack for it.
//!
//! One stream per peer rather than one per event: events stay in publish order, many are
//! written per system call, and QUIC's flow control on that stream is what slows a publisher
//! whose subscribers cannot keep up (their node stops reading when a blocking buffer is full).
//! If the stream breaks, the frames of that write are lost (at-least-once events are resent by
//! the outbox) and the next write opens a new one.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use colony_quic::Endpoint;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::frame::{self, WireAck, LINK};

/// Frames a link queues before publishers wait.
const LINK_QUEUE: usize = 4096;

/// Frames written per system call, at most.
const BATCH: usize = 256;

/// What a link carries.
pub(crate) enum Outgoing {
    /// An encoded event frame.
    Event(Bytes),
    /// An acknowledgement; consecutive ones share a frame.
    Ack(WireAck),
}

/// Why [`Link::try_send`] did not queue.
pub(crate) enum TrySend {
    /// The link's queue is full: here is the frame back.
    Full(Outgoing),
    /// The link is gone (node stopping).
    Closed,
}

/// The sending half of a link to one peer.
#[derive(Clone)]
pub(crate) struct Link {
    tx: mpsc::Sender<Outgoing>,
    /// Frames queued or being written: zero once everything sent so far is on the wire.
    pub(crate) unsent: Arc<AtomicUsize>,
}

impl Link {
    /// Starts the link's writer task; it ends when the last sender is dropped or on `cancel`.
    pub(crate) fn start(
        endpoint: Endpoint,
        peer: SocketAddr,
        node: String,
        lost: Arc<AtomicUsize>,
        cancel: CancellationToken,
    ) -> Self {
        let (tx, rx) = mpsc::channel(LINK_QUEUE);
        let unsent = Arc::new(AtomicUsize::new(0));
        tokio::spawn(write_loop(
            Writer {
                endpoint,
                peer,
                node,
                lost,
                unsent: unsent.clone(),
            },
            rx,
            cancel,
        ));
        Self { tx, unsent }
    }

    /// Queues a frame, waiting while the link is full (its peer is slow to read).
    pub(crate) async fn send(&self, out: Outgoing) -> Result<(), ()> {
        self.unsent.fetch_add(1, Ordering::AcqRel);
        self.tx.send(out).await.map_err(|_| {
            self.unsent.fetch_sub(1, Ordering::AcqRel);
        })
    }

    /// Queues a frame if the link has room, without waiting; hands it back if full.
    pub(crate) fn try_send(&self, out: Outgoing) -> Result<(), TrySend> {
        self.unsent.fetch_add(1, Ordering::AcqRel);
        self.tx.try_send(out).map_err(|e| {
            self.unsent.fetch_sub(1, Ordering::AcqRel);
            match e {
                mpsc::error::TrySendError::Full(out) => TrySend::Full(out),
                mpsc::error::TrySendError::Closed(_) => TrySend::Closed,
            }
        })
    }

    /// Queues an ack without waiting: acks are sent from instance tasks, which must not block.
    /// A full link hands the wait to a task of its own (acks are bounded by the events in
    /// flight, which the windows bound).
    pub(crate) fn send_ack(&self, ack: WireAck) {
        self.unsent.fetch_add(1, Ordering::AcqRel);
        match self.tx.try_send(Outgoing::Ack(ack)) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(out)) => {
                let link = self.clone();
                tokio::spawn(async move {
                    if link.tx.send(out).await.is_err() {
                        link.unsent.fetch_sub(1, Ordering::AcqRel);
                    }
                });
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.unsent.fetch_sub(1, Ordering::AcqRel);
            }
        }
    }
}

struct Writer {
    endpoint: Endpoint,
    peer: SocketAddr,
    node: String,
    lost: Arc<AtomicUsize>,
    unsent: Arc<AtomicUsize>,
}

async fn write_loop(w: Writer, mut rx: mpsc::Receiver<Outgoing>, cancel: CancellationToken) {
    let mut stream = None;
    let mut taken = Vec::with_capacity(BATCH);
    let mut chunks: Vec<Bytes> = Vec::with_capacity(BATCH);
    loop {
        let n = tokio::select! {
            _ = cancel.cancelled() => return,
            n = rx.recv_many(&mut taken, BATCH) => n,
        };
        if n == 0 {
            if let Some(mut s) = stream.take() {
                let _: Result<(), _> = colony_quic::SendStream::finish(&mut s);
            }
            return;
        }
        let mut acks = Vec::new();
        for out in taken.drain(..) {
            match out {
                Outgoing::Event(frame) => {
                    flush_acks(&mut acks, &mut chunks);
                    chunks.push(frame);
                }
                Outgoing::Ack(ack) => acks.push(ack),
            }
        }
        flush_acks(&mut acks, &mut chunks);
        if stream.is_none() {
            match w.endpoint.open_uni(w.peer).await {
                Ok(mut s) => match s.write_all(&[LINK]).await {
                    Ok(()) => stream = Some(s),
                    Err(e) => {
                        tracing::debug!(node = %w.node, peer = %w.peer, error = %e, "broker link failed to start")
                    }
                },
                Err(e) => {
                    tracing::debug!(node = %w.node, peer = %w.peer, error = %e, "broker link could not open")
                }
            }
        }
        // One contiguous write: quinn walks its send buffer's segments for every packet, so
        // hundreds of small chunks cost more there than one copy here.
        let written = match stream.as_mut() {
            Some(s) => {
                let mut batch = BytesMut::with_capacity(chunks.iter().map(Bytes::len).sum());
                for chunk in &chunks {
                    batch.extend_from_slice(chunk);
                }
                s.write_chunk(batch.freeze())
                    .await
                    .map_err(|e| e.to_string())
            }
            None => Err("no stream".into()),
        };
        if let Err(e) = written {
            w.lost.fetch_add(n, Ordering::Relaxed);
            tracing::debug!(node = %w.node, peer = %w.peer, error = %e, frames = n, "broker link lost frames");
            stream = None;
        }
        chunks.clear();
        w.unsent.fetch_sub(n, Ordering::AcqRel);
    }
}

fn flush_acks(acks: &mut Vec<WireAck>, chunks: &mut Vec<Bytes>) {
    if acks.is_empty() {
        return;
    }
    match frame::acks(acks) {
        Ok(frame) => chunks.push(frame),
        Err(e) => tracing::warn!(error = %e.detail(), "acks could not be encoded"),
    }
    acks.clear();
}
