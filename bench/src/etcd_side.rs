//! The etcd side of the locks scenario: an `etcd` child process and lock clients on
//! etcd-client's lock API (etcd's v3lock service). Built only with the `etcd` feature.
//!
//! The bench starts `etcd` itself (Debian's package: `apt-get install etcd-server`) as a
//! single member listening in clear on two free ports of 127.0.0.1, with its data directory in
//! a private scratch directory (`$TMPDIR`, or `--etcd-dir`), and waits until it answers a
//! `Status` call. When the binary is missing the etcd columns are skipped. The process is
//! killed (SIGKILL, by pid) and its directory removed when [`EtcdServer`] is dropped; its log
//! goes to `etcd.log` in that directory and is quoted if it fails to start.
//!
//! The lock clients use the API the way etcd's Go `concurrency` package does:
//!
//! - [`Session`] + [`SessionLocker`]: each client grants one lease (TTL 10 s, `concurrency`'s
//!   default 60 s is irrelevant to the cost) and keeps it alive in the background, then loops
//!   `Lock(key, lease)` + `Unlock(returned key)`: two RPCs per acquire+release pair.
//! - [`PerLockLocker`]: a lease per acquisition, what a one-shot "lock with a TTL" costs:
//!   `LeaseGrant` + `Lock` + `Unlock` + `LeaseRevoke`, four RPCs per pair.
//!
//! Every client of a run shares one [`etcd_client::Client`] (one HTTP/2 connection, requests
//! multiplexed), as the bench's colony clients share one node.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use etcd_client::{Client, ConnectOptions, LockOptions};
use tokio::task::JoinHandle;

use crate::certs::BoxError;
use crate::child::WorkDir;
use crate::locker::Locker;

/// The server's executable, looked up on `PATH`.
pub(crate) const BINARY: &str = "etcd";

/// How long the server may take to answer its first `Status`.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// An `etcd` process, killed (and its data removed) when dropped.
#[derive(Debug)]
pub(crate) struct EtcdServer {
    child: Child,
    url: String,
    // Dropped after `Drop::drop` has killed and reaped the process: nothing writes into it
    // while it is removed.
    dir: WorkDir,
}

impl EtcdServer {
    /// Starts a single-member `etcd` on free ports of 127.0.0.1 with its data directory under
    /// `parent` (default `$TMPDIR`), and waits until it answers. `Ok(None)` when the binary is
    /// not installed.
    pub(crate) async fn start(parent: Option<&Path>) -> Result<Option<Self>, BoxError> {
        // The ports are free when asked; a race with another program is retried.
        let mut last = String::new();
        for _ in 0..3 {
            let dir = match parent {
                Some(parent) => WorkDir::create_in(parent)?,
                None => WorkDir::create()?,
            };
            let (client_port, peer_port) = {
                let a = std::net::TcpListener::bind("127.0.0.1:0")?;
                let b = std::net::TcpListener::bind("127.0.0.1:0")?;
                (a.local_addr()?.port(), b.local_addr()?.port())
            };
            let url = format!("http://127.0.0.1:{client_port}");
            let peer = format!("http://127.0.0.1:{peer_port}");
            let log = std::fs::File::create(dir.path().join("etcd.log"))?;
            let spawned = Command::new(BINARY)
                .arg("--data-dir")
                .arg(dir.path().join("data"))
                .args(["--listen-client-urls", &url])
                .args(["--advertise-client-urls", &url])
                .args(["--listen-peer-urls", &peer])
                .args(["--initial-advertise-peer-urls", &peer])
                .args(["--initial-cluster", &format!("default={peer}")])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn();
            let child = match spawned {
                Ok(child) => child,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(e.into()),
            };
            // From here on, dropping `server` kills the process and removes its directory.
            let mut server = Self { child, url, dir };
            match server.wait_healthy().await {
                Ok(()) => return Ok(Some(server)),
                Err(e) => last = format!("{e}; {}", server.log_tail()),
            }
        }
        Err(last.into())
    }

    /// Polls `Status` until it answers, the process exits, or [`START_TIMEOUT`] passes.
    async fn wait_healthy(&mut self) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("{BINARY} exited with {status}"));
            }
            if let Ok(mut client) = connect(&self.url).await {
                if client.status().await.is_ok() {
                    return Ok(());
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(format!(
                    "{BINARY} did not answer at {} within {START_TIMEOUT:?}",
                    self.url
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The last lines of the server's log, to say why it failed.
    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("etcd.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        let tail = lines[lines.len().saturating_sub(5)..].join(" | ");
        format!("etcd log: {tail}")
    }

    /// Where clients connect (`http://127.0.0.1:<port>`).
    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    /// The scratch directory holding the data directory.
    pub(crate) fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        if let Err(e) = self.child.kill() {
            if e.kind() != std::io::ErrorKind::InvalidInput {
                eprintln!("could not kill {BINARY} pid {}: {e}", self.child.id());
            }
        }
        let _ = self.child.wait();
    }
}

/// The first line of `etcd --version` (`etcd Version: 3.4.23`), if it runs.
pub(crate) fn version() -> Option<String> {
    let out = Command::new(BINARY).arg("--version").output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines().next().map(|line| line.trim().to_string())
}

/// A client of the server at `url`, with etcd-client's defaults (connect timeout 1 s).
pub(crate) async fn connect(url: &str) -> Result<Client, BoxError> {
    let options = ConnectOptions::new().with_connect_timeout(Duration::from_secs(1));
    Ok(Client::connect([url], Some(options)).await?)
}

/// A lease kept alive in the background, as a `concurrency.Session` does (a keep-alive every
/// TTL/3). Close it to revoke the lease.
pub(crate) struct Session {
    client: Client,
    lease: i64,
    keep_alive: JoinHandle<()>,
}

impl Session {
    /// Grants a lease of `ttl_s` seconds and starts keeping it alive.
    pub(crate) async fn open(client: &Client, ttl_s: i64) -> Result<Self, BoxError> {
        let mut client = client.clone();
        let granted = client.lease_grant(ttl_s, None).await?;
        let lease = granted.id();
        let (mut keeper, mut stream) = client.lease_keep_alive(lease).await?;
        let period = Duration::from_secs(u64::try_from(granted.ttl().max(1)).unwrap_or(1)) / 3;
        let keep_alive = tokio::spawn(async move {
            loop {
                tokio::time::sleep(period).await;
                if let Err(e) = keeper.keep_alive().await {
                    eprintln!("  etcd lease {lease:x}: keep-alive failed: {e}");
                    return;
                }
                match stream.message().await {
                    Ok(Some(_)) => {}
                    Ok(None) => return,
                    Err(e) => {
                        eprintln!("  etcd lease {lease:x}: keep-alive failed: {e}");
                        return;
                    }
                }
            }
        });
        Ok(Self {
            client,
            lease,
            keep_alive,
        })
    }

    /// The lease's id.
    pub(crate) fn lease(&self) -> i64 {
        self.lease
    }

    /// Stops the keep-alives and revokes the lease.
    pub(crate) async fn close(mut self) {
        self.keep_alive.abort();
        if let Err(e) = self.client.lease_revoke(self.lease).await {
            eprintln!("  etcd lease {:x}: revoke failed: {e}", self.lease);
        }
    }
}

/// `Lock` + `Unlock` of one key under a session's lease.
pub(crate) struct SessionLocker {
    client: Client,
    key: String,
    lease: i64,
    wait: Duration,
}

impl SessionLocker {
    /// Locks `key` under `session`'s lease; an acquisition gives up after `wait`.
    pub(crate) fn new(client: &Client, session: &Session, key: &str, wait: Duration) -> Self {
        Self {
            client: client.clone(),
            key: key.to_string(),
            lease: session.lease(),
            wait,
        }
    }
}

/// `Lock(key, lease)` within `wait`: the key of the hold, which `Unlock` takes.
async fn lock(
    client: &mut Client,
    key: &str,
    lease: i64,
    wait: Duration,
) -> Result<Vec<u8>, String> {
    let options = LockOptions::new().with_lease(lease);
    match tokio::time::timeout(wait, client.lock(key, Some(options))).await {
        Ok(Ok(held)) => Ok(held.key().to_vec()),
        Ok(Err(e)) => Err(format!("lock: {e}")),
        Err(_) => Err(format!("lock: not acquired within {wait:?}")),
    }
}

impl Locker for SessionLocker {
    type Held = Vec<u8>;

    async fn acquire(&mut self) -> Result<Vec<u8>, String> {
        lock(&mut self.client, &self.key, self.lease, self.wait).await
    }

    async fn release(&mut self, held: Vec<u8>) -> Result<(), String> {
        self.client
            .unlock(held)
            .await
            .map(drop)
            .map_err(|e| format!("unlock: {e}"))
    }
}

/// `LeaseGrant` + `Lock` + `Unlock` + `LeaseRevoke`: a lease of its own per acquisition.
pub(crate) struct PerLockLocker {
    client: Client,
    key: String,
    ttl_s: i64,
    wait: Duration,
}

impl PerLockLocker {
    /// Locks `key` under a fresh lease of `ttl_s` seconds each time; an acquisition gives up
    /// after `wait`.
    pub(crate) fn new(client: &Client, key: &str, ttl_s: i64, wait: Duration) -> Self {
        Self {
            client: client.clone(),
            key: key.to_string(),
            ttl_s,
            wait,
        }
    }
}

impl Locker for PerLockLocker {
    /// The hold's key and its lease.
    type Held = (Vec<u8>, i64);

    async fn acquire(&mut self) -> Result<Self::Held, String> {
        let lease = self
            .client
            .lease_grant(self.ttl_s, None)
            .await
            .map_err(|e| format!("lease grant: {e}"))?
            .id();
        match lock(&mut self.client, &self.key, lease, self.wait).await {
            Ok(key) => Ok((key, lease)),
            Err(e) => {
                let _ = self.client.lease_revoke(lease).await;
                Err(e)
            }
        }
    }

    async fn release(&mut self, (key, lease): Self::Held) -> Result<(), String> {
        self.client
            .unlock(key)
            .await
            .map_err(|e| format!("unlock: {e}"))?;
        self.client
            .lease_revoke(lease)
            .await
            .map(drop)
            .map_err(|e| format!("lease revoke: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::locker::{sequential, Checks, Pairs};

    /// Both lockers against a real `etcd` (skipped when it is not installed); the server's
    /// directory is gone once it is dropped.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn both_lockers_take_and_give_back_a_real_lock() {
        let Some(server) = EtcdServer::start(None).await.unwrap() else {
            eprintln!("{BINARY} not installed: skipped");
            return;
        };
        let client = connect(server.url()).await.unwrap();
        let wait = Duration::from_secs(5);
        let checks = Checks::new();

        let session = Session::open(&client, 10).await.unwrap();
        let locker = SessionLocker::new(&client, &session, "t/session", wait);
        let (sample, _) = sequential(Pairs::new(locker, "t/session", &checks), 1, 3).await;
        assert_eq!(
            (sample.completed, sample.errors),
            (3, 0),
            "{:?}",
            sample.first_error
        );
        session.close().await;

        let locker = PerLockLocker::new(&client, "t/per-lock", 2, wait);
        let (sample, _) = sequential(Pairs::new(locker, "t/per-lock", &checks), 1, 3).await;
        assert_eq!(
            (sample.completed, sample.errors),
            (3, 0),
            "{:?}",
            sample.first_error
        );

        // Every hold was released: another client finds the key free at once.
        let mut other = client.clone();
        let lease = other.lease_grant(10, None).await.unwrap().id();
        let held = lock(&mut other, "t/session", lease, Duration::from_secs(2))
            .await
            .unwrap();
        other.unlock(held).await.unwrap();
        other.lease_revoke(lease).await.unwrap();

        let dir = server.dir().to_path_buf();
        assert!(dir.join("data").exists());
        drop(server);
        assert!(!dir.exists());
    }
}
