//! The NATS core side of the pub/sub scenario: a `nats-server` child, its subscribers and
//! publisher (async-nats).
//!
//! The bench starts `nats-server` itself (Debian's package: `apt-get install nats-server`) on a
//! free port of 127.0.0.1, in clear text, with its defaults (no JetStream: NATS core is
//! at-most-once, like colony's default). When the binary is missing the NATS rows are skipped.
//! The server is killed when [`NatsServer`] is dropped.
//!
//! The publisher is what an async-nats user writes: `client.publish(subject, bytes)` in a loop
//! (it hands the message to the client's connection task, which batches writes), then
//! `client.flush()`. Subscribers read `client.subscribe(..)` (or `queue_subscribe`) as a stream
//! in a spawned task. Client settings are async-nats' defaults (subscription buffer 65,536
//! messages; a full buffer drops messages and reports a slow consumer, which is logged).

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use bytes::Bytes;
use tokio::process::{Child, Command};

use crate::certs::BoxError;
use crate::publish::Publisher;
use crate::tally::SharedTally;
use crate::tick::Tick;

/// The server's executable, looked up on `PATH`.
pub(crate) const BINARY: &str = "nats-server";

/// How long the server may take to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// A `nats-server` process, killed when dropped.
#[derive(Debug)]
pub(crate) struct NatsServer {
    _child: Child,
    addr: SocketAddr,
}

impl NatsServer {
    /// Starts `nats-server -a 127.0.0.1 -p <free port>` and waits until it accepts a
    /// connection. `Ok(None)` when the binary is not installed.
    pub(crate) async fn start() -> Result<Option<Self>, BoxError> {
        // The port is free when asked; a race with another program is retried.
        let mut last = None;
        for _ in 0..3 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")?
                .local_addr()?
                .port();
            let spawned = Command::new(BINARY)
                .args(["-a", "127.0.0.1", "-p", &port.to_string()])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .kill_on_drop(true)
                .spawn();
            let mut child = match spawned {
                Ok(child) => child,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(e.into()),
            };
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            let deadline = tokio::time::Instant::now() + START_TIMEOUT;
            loop {
                if let Ok(Some(status)) = child.try_wait() {
                    last = Some(format!("{BINARY} exited with {status}"));
                    break;
                }
                if tokio::net::TcpStream::connect(addr).await.is_ok() {
                    return Ok(Some(Self {
                        _child: child,
                        addr,
                    }));
                }
                if tokio::time::Instant::now() >= deadline {
                    last = Some(format!("{BINARY} did not listen on {addr} in time"));
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        Err(last.unwrap_or_default().into())
    }

    /// Where clients connect.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }
}

/// A client of the server at `addr`, with async-nats' defaults; slow-consumer and error
/// events are logged to stderr under `name`.
pub(crate) async fn connect(addr: SocketAddr, name: &str) -> Result<async_nats::Client, BoxError> {
    let label = name.to_string();
    let client = async_nats::ConnectOptions::new()
        .name(name)
        .event_callback(move |event| {
            let label = label.clone();
            async move {
                if !matches!(event, async_nats::Event::Connected) {
                    eprintln!("  nats client {label}: {event}");
                }
            }
        })
        .connect(addr.to_string())
        .await?;
    Ok(client)
}

/// Subscribes to `pattern` (in `queue` group if given) and records every tick in `tally`
/// from a spawned task. Returns the client, which keeps the subscription open.
pub(crate) async fn subscribe(
    addr: SocketAddr,
    name: &str,
    pattern: &str,
    queue: Option<&str>,
    tally: SharedTally,
) -> Result<async_nats::Client, BoxError> {
    use futures_util::StreamExt as _;

    let client = connect(addr, name).await?;
    let mut subscriber = match queue {
        Some(group) => {
            client
                .queue_subscribe(pattern.to_string(), group.to_string())
                .await?
        }
        None => client.subscribe(pattern.to_string()).await?,
    };
    client.flush().await?;
    tokio::spawn(async move {
        while let Some(message) = subscriber.next().await {
            if let Some((run, probe, seq, sent_ns)) = Tick::decode_header(&message.payload) {
                tally
                    .lock()
                    .expect("tally lock")
                    .record(run, probe, seq, sent_ns);
            }
        }
    });
    Ok(client)
}

/// Publishes ticks to one subject with a shared client.
#[derive(Debug, Clone)]
pub(crate) struct NatsPublisher {
    client: async_nats::Client,
    subject: async_nats::Subject,
}

impl NatsPublisher {
    /// A publisher to `subject` through `client`.
    pub(crate) fn new(client: async_nats::Client, subject: &str) -> Self {
        Self {
            client,
            subject: async_nats::Subject::from(subject.to_string()),
        }
    }
}

impl Publisher for NatsPublisher {
    async fn publish(&self, tick: Tick) -> Result<(), String> {
        self.client
            .publish(self.subject.clone(), Bytes::from(tick.encode()))
            .await
            .map_err(|e| e.to_string())
    }

    async fn flush(&self) -> Result<(), String> {
        self.client.flush().await.map_err(|e| e.to_string())
    }
}
