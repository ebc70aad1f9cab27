//! Fault injection at the UDP level: a socket that silently drops every datagram sent to, or
//! received from, a "cut" address, as an iptables `DROP` rule would.
//!
//! Every [`Endpoint`](crate::Endpoint) binds through [`FaultySocket`], so a test (or a chaos
//! drill) can partition processes on one machine without network namespaces: QUIC connections
//! and gossip to a cut peer fail exactly as in a real partition, by loss and timeouts, with no
//! error delivered by magic. With nothing cut, the cost is one atomic load per send and per
//! received batch.

use std::collections::HashSet;
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::task::{ready, Context, Poll};

use quinn::udp::{RecvMeta, Transmit};
use quinn::{AsyncUdpSocket, UdpPoller};

/// Batches made only of dropped datagrams that one `poll_recv` discards before handing an
/// all-empty batch back to quinn, whose receive loop skips empty entries and bounds its own
/// work: a flood from a cut peer cannot keep the endpoint driver in our loop.
const MAX_DROPPED_BATCHES: usize = 16;

/// The set of cut addresses, shared by an endpoint and its socket.
#[derive(Debug, Default)]
pub(crate) struct Cuts {
    /// Whether `peers` is non-empty: the only thing read on the fast path. Written under the
    /// write lock of `peers`, so it always agrees with the set once that lock is released.
    any: AtomicBool,
    peers: RwLock<HashSet<SocketAddr>>,
}

impl Cuts {
    /// Drops traffic to and from `peers` from now on (added to the addresses already cut).
    pub(crate) fn cut(&self, peers: impl IntoIterator<Item = SocketAddr>) {
        let mut set = self.peers.write().unwrap_or_else(PoisonError::into_inner);
        set.extend(peers.into_iter().map(canonical));
        self.any.store(!set.is_empty(), Ordering::Release);
    }

    /// Lets all traffic through again.
    pub(crate) fn restore(&self) {
        let mut set = self.peers.write().unwrap_or_else(PoisonError::into_inner);
        set.clear();
        self.any.store(false, Ordering::Release);
    }

    /// The addresses cut off now.
    pub(crate) fn peers(&self) -> Vec<SocketAddr> {
        let set = self.peers.read().unwrap_or_else(PoisonError::into_inner);
        set.iter().copied().collect()
    }

    /// Whether anything is cut: one atomic load.
    fn any(&self) -> bool {
        self.any.load(Ordering::Acquire)
    }

    /// Whether datagrams to or from `addr` are dropped.
    fn is_cut(&self, addr: SocketAddr) -> bool {
        self.any()
            && self
                .peers
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .contains(&canonical(addr))
    }

    /// Empties (`len = 0`) the entries of `meta` received from cut addresses; returns how many
    /// entries are left non-empty.
    fn drop_received(&self, meta: &mut [RecvMeta]) -> usize {
        let set = self.peers.read().unwrap_or_else(PoisonError::into_inner);
        let mut kept = 0;
        for m in meta {
            if m.len > 0 && set.contains(&canonical(m.addr)) {
                m.len = 0;
            } else if m.len > 0 {
                kept += 1;
            }
        }
        kept
    }
}

/// `addr` with an IPv4-mapped IPv6 address (as a dual-stack socket reports IPv4 peers) turned
/// into plain IPv4, so one cut covers both spellings.
fn canonical(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(v4.into(), v6.port()),
            None => addr,
        },
        SocketAddr::V4(_) => addr,
    }
}

/// A quinn UDP socket that drops datagrams to and from the addresses in its [`Cuts`], and
/// otherwise delegates everything to the runtime's socket.
#[derive(Debug)]
pub(crate) struct FaultySocket {
    inner: Arc<dyn AsyncUdpSocket>,
    cuts: Arc<Cuts>,
}

impl FaultySocket {
    pub(crate) fn new(inner: Arc<dyn AsyncUdpSocket>, cuts: Arc<Cuts>) -> Self {
        Self { inner, cuts }
    }
}

impl AsyncUdpSocket for FaultySocket {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        self.inner.clone().create_io_poller()
    }

    /// A datagram to a cut address is reported sent and goes nowhere, as a firewall's `DROP`.
    fn try_send(&self, transmit: &Transmit<'_>) -> io::Result<()> {
        if self.cuts.is_cut(transmit.destination) {
            return Ok(());
        }
        self.inner.try_send(transmit)
    }

    /// Datagrams from cut addresses are emptied in place (`len = 0`): quinn's receive loop
    /// (`RecvState::poll_socket`) takes `buf[0..meta.len]` and handles nothing of an empty
    /// one. A batch left with nothing is not returned: the socket is read again, which either
    /// yields more datagrams or registers the waker and returns `Pending` (up to
    /// [`MAX_DROPPED_BATCHES`] times, then the empty batch goes back to quinn's loop).
    fn poll_recv(
        &self,
        cx: &mut Context<'_>,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        let mut dropped_batches = 0;
        loop {
            let n = ready!(self.inner.poll_recv(cx, bufs, meta))?;
            if n == 0 || !self.cuts.any() {
                return Poll::Ready(Ok(n));
            }
            if self.cuts.drop_received(&mut meta[..n]) > 0 {
                return Poll::Ready(Ok(n));
            }
            dropped_batches += 1;
            if dropped_batches >= MAX_DROPPED_BATCHES {
                return Poll::Ready(Ok(n));
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    fn max_transmit_segments(&self) -> usize {
        self.inner.max_transmit_segments()
    }

    fn max_receive_segments(&self) -> usize {
        self.inner.max_receive_segments()
    }

    fn may_fragment(&self) -> bool {
        self.inner.may_fragment()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quinn::Runtime;
    use std::time::Duration;

    const LIMIT: Duration = Duration::from_secs(10);

    fn plain_socket() -> std::net::UdpSocket {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.set_read_timeout(Some(LIMIT)).unwrap();
        socket
    }

    fn faulty() -> (Arc<FaultySocket>, Arc<Cuts>) {
        let std = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let inner = quinn::TokioRuntime.wrap_udp_socket(std).unwrap();
        let cuts = Arc::new(Cuts::default());
        (Arc::new(FaultySocket::new(inner, cuts.clone())), cuts)
    }

    fn transmit(to: SocketAddr, contents: &[u8]) -> Transmit<'_> {
        Transmit {
            destination: to,
            ecn: None,
            contents,
            segment_size: None,
            src_ip: None,
        }
    }

    /// Sends like quinn does: on `WouldBlock`, waits for the socket's poller, then retries.
    async fn send(socket: &Arc<FaultySocket>, to: SocketAddr, contents: &[u8]) -> io::Result<()> {
        let mut poller = socket.clone().create_io_poller();
        loop {
            match socket.try_send(&transmit(to, contents)) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::future::poll_fn(|cx| poller.as_mut().poll_writable(cx)).await?
                }
                sent => return sent,
            }
        }
    }

    /// Waits (bounded) for the next batch and returns its non-empty datagrams.
    async fn receive(socket: &FaultySocket) -> Vec<(SocketAddr, Vec<u8>)> {
        let mut storage = vec![[0u8; 1500]; 8];
        let mut meta = [RecvMeta::default(); 8];
        let mut bufs: Vec<IoSliceMut<'_>> =
            storage.iter_mut().map(|b| IoSliceMut::new(b)).collect();
        let n = tokio::time::timeout(
            LIMIT,
            std::future::poll_fn(|cx| socket.poll_recv(cx, &mut bufs, &mut meta)),
        )
        .await
        .expect("a datagram arrives")
        .expect("receive");
        meta[..n]
            .iter()
            .zip(&bufs)
            .filter(|(m, _)| m.len > 0)
            .map(|(m, b)| (m.addr, b[..m.len].to_vec()))
            .collect()
    }

    #[tokio::test]
    async fn sends_to_a_cut_address_are_swallowed() {
        let (socket, cuts) = faulty();
        let peer = plain_socket();
        let to = peer.local_addr().unwrap();
        cuts.cut([to]);
        assert_eq!(cuts.peers(), vec![to]);
        // Not even asked of the real socket, whose write readiness is still unknown here.
        socket
            .try_send(&transmit(to, b"dropped"))
            .expect("a dropped send reports success");
        cuts.restore();
        assert!(cuts.peers().is_empty());
        send(&socket, to, b"sent").await.expect("send");
        // Loopback keeps order: had the first datagram left, it would be read first.
        let mut buf = [0u8; 64];
        let (len, from) = peer
            .recv_from(&mut buf)
            .expect("the second datagram arrives");
        assert_eq!(&buf[..len], b"sent");
        assert_eq!(from, socket.local_addr().unwrap());
    }

    #[tokio::test]
    async fn datagrams_from_a_cut_address_are_never_returned() {
        let (socket, cuts) = faulty();
        let local = socket.local_addr().unwrap();
        let (cut, open) = (plain_socket(), plain_socket());
        cuts.cut([cut.local_addr().unwrap()]);

        cut.send_to(b"dropped", local).unwrap();
        open.send_to(b"kept", local).unwrap();
        let got = receive(&socket).await;
        assert_eq!(got, vec![(open.local_addr().unwrap(), b"kept".to_vec())]);

        // The dropped datagram was consumed, not left for later: after a heal, the next one
        // from that peer is the first returned.
        cuts.restore();
        cut.send_to(b"after", local).unwrap();
        let got = receive(&socket).await;
        assert_eq!(got, vec![(cut.local_addr().unwrap(), b"after".to_vec())]);
    }

    #[tokio::test]
    async fn a_batch_of_only_dropped_datagrams_waits_for_more() {
        let (socket, cuts) = faulty();
        let local = socket.local_addr().unwrap();
        let (cut, open) = (plain_socket(), plain_socket());
        cuts.cut([cut.local_addr().unwrap()]);
        cut.send_to(b"dropped", local).unwrap();
        // Started before the kept datagram is sent: it must not resolve on the dropped one.
        let receiving = tokio::spawn({
            let socket = socket.clone();
            async move { receive(&socket).await }
        });
        tokio::task::yield_now().await;
        open.send_to(b"kept", local).unwrap();
        let got = receiving.await.unwrap();
        assert_eq!(got, vec![(open.local_addr().unwrap(), b"kept".to_vec())]);
    }

    #[test]
    fn mapped_ipv6_addresses_match_their_ipv4_cut() {
        let cuts = Cuts::default();
        assert!(!cuts.is_cut("127.0.0.1:9".parse().unwrap()));
        cuts.cut(["127.0.0.1:9".parse().unwrap()]);
        assert!(cuts.is_cut("[::ffff:127.0.0.1]:9".parse().unwrap()));
        assert!(!cuts.is_cut("127.0.0.1:10".parse().unwrap()));
    }
}
