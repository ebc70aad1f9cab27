//! Server processes: the bench binary started again as `colony-bench serve <kind> --dir <dir>`.
//!
//! The parent writes the certificates into a private directory, starts the child, and reads
//! one line `listening <addr>` from its stdout. The child serves until its stdin closes, which
//! happens when the parent stops it, drops it, panics, or dies from a signal; the parent also
//! kills a child it drops, so no path leaves a server behind. [`ChildServer::kill`] is the
//! resilience scenario's `kill -9`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use clap::ValueEnum;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};

use crate::certs::{BoxError, Pki};
use crate::{colony_side, tonic_side};

/// What a child prints once it serves, followed by its address.
const READY: &str = "listening";

/// How long a child may take to start serving.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Which server a child runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum ServerKind {
    /// A colony node serving the echo service.
    Colony,
    /// tonic gRPC with mutual TLS (rustls on ring).
    TonicTls,
    /// tonic gRPC in clear text.
    TonicPlain,
}

impl ServerKind {
    fn arg(self) -> &'static str {
        match self {
            ServerKind::Colony => "colony",
            ServerKind::TonicTls => "tonic-tls",
            ServerKind::TonicPlain => "tonic-plain",
        }
    }
}

/// How a child serves, beyond its kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ServeOptions {
    /// Instances of colony's echo service (colony only).
    pub(crate) instances: usize,
    /// The node's name (colony only); nodes of one cluster need distinct names.
    pub(crate) name: String,
    /// A node to join (colony only); without it the child starts a cluster of its own.
    pub(crate) seed: Option<SocketAddr>,
    /// Answer every call with "unavailable": a broken instance, for the resilience scenario.
    pub(crate) fail: bool,
    /// The node's `lock_max_ttl` (colony only; the locks scenario); `None`: colony's default.
    pub(crate) lock_max_ttl: Option<Duration>,
}

/// The name of a colony server child unless told otherwise.
pub(crate) const DEFAULT_NAME: &str = "bench-server";

impl ServeOptions {
    /// A lone server with `instances` instances of the echo service, answering every call.
    pub(crate) fn instances(instances: usize) -> Self {
        Self {
            instances,
            name: DEFAULT_NAME.into(),
            seed: None,
            fail: false,
            lock_max_ttl: None,
        }
    }

    /// The command line of `colony-bench serve` for `kind` with these options.
    pub(crate) fn args(&self, kind: ServerKind, dir: &Path) -> Vec<std::ffi::OsString> {
        let mut args: Vec<std::ffi::OsString> = vec![
            "serve".into(),
            kind.arg().into(),
            "--dir".into(),
            dir.into(),
        ];
        if kind == ServerKind::Colony {
            args.extend(["--instances".into(), self.instances.to_string().into()]);
            args.extend(["--name".into(), self.name.clone().into()]);
            if let Some(seed) = self.seed {
                args.extend(["--seed".into(), seed.to_string().into()]);
            }
            if let Some(ttl) = self.lock_max_ttl {
                // Whole milliseconds: what `parse_duration` reads back exactly.
                let ms = ttl.as_millis();
                args.extend(["--lock-max-ttl".into(), format!("{ms}ms").into()]);
            }
        }
        if self.fail {
            args.push("--fail".into());
        }
        args
    }
}

/// A private scratch directory, removed when dropped.
#[derive(Debug)]
pub(crate) struct WorkDir(PathBuf);

impl WorkDir {
    /// Creates `$TMPDIR/colony-bench-<pid>-<n>` readable by this user only (`n` counts the
    /// directories this process made, so two environments never share one).
    pub(crate) fn create() -> std::io::Result<Self> {
        Self::create_in(&std::env::temp_dir())
    }

    /// Creates `<parent>/colony-bench-<pid>-<n>`, as [`WorkDir::create`] does in `$TMPDIR`.
    pub(crate) fn create_in(parent: &Path) -> std::io::Result<Self> {
        static MADE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = MADE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = parent.join(format!("colony-bench-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut builder = std::fs::DirBuilder::new();
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder.create(&dir)?;
        Ok(Self(dir))
    }

    /// The directory.
    pub(crate) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running server child.
#[derive(Debug)]
pub(crate) struct ChildServer {
    child: Child,
    addr: SocketAddr,
}

/// Reads the address out of the child's ready line.
pub(crate) fn parse_ready(line: &str) -> Option<SocketAddr> {
    let rest = line.trim().strip_prefix(READY)?;
    rest.trim().parse().ok()
}

impl ChildServer {
    /// Starts `kind` in a child process that reads its certificates from `dir`.
    pub(crate) async fn start(
        kind: ServerKind,
        dir: &Path,
        options: &ServeOptions,
    ) -> Result<Self, BoxError> {
        let mut child = Command::new(std::env::current_exe()?)
            .args(options.args(kind, dir))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()?;
        let stdout = child.stdout.take().ok_or("child has no stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let first = tokio::time::timeout(START_TIMEOUT, lines.next_line()).await;
        // On any failure `child` is dropped here, which kills it.
        let line = match first {
            Ok(Ok(Some(line))) => line,
            Ok(Ok(None)) => {
                return Err(format!("{} server exited before serving", kind.arg()).into())
            }
            Ok(Err(e)) => return Err(e.into()),
            Err(_) => return Err(format!("{} server did not start in time", kind.arg()).into()),
        };
        let addr = parse_ready(&line)
            .ok_or_else(|| format!("unexpected line from {} server: {line:?}", kind.arg()))?;
        Ok(Self { child, addr })
    }

    /// Where the child serves.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The child's process id.
    pub(crate) fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Kills the child with SIGKILL (`kill -9`: no goodbye, no flush) and reaps it.
    pub(crate) async fn kill(mut self) {
        if let Err(e) = self.child.kill().await {
            eprintln!("could not kill server pid {:?}: {e}", self.child.id());
        }
    }

    /// Asks the child to stop (closes its stdin) and waits; kills it if it lingers.
    pub(crate) async fn stop(mut self) {
        drop(self.child.stdin.take());
        if tokio::time::timeout(Duration::from_secs(5), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

/// The child's side: serve `kind` until stdin closes.
pub(crate) async fn serve(
    kind: ServerKind,
    dir: &Path,
    options: &ServeOptions,
) -> Result<(), BoxError> {
    let mut node = None;
    let addr = match kind {
        ServerKind::Colony => {
            // `ca.pem` written by the parent: the same cluster CA as the calling node.
            let member = colony_side::Member {
                name: &options.name,
                trust: colony_side::Trust::Dir(dir),
                instances: options.instances,
                seed: options.seed,
                fail: options.fail,
                lock_max_ttl: options.lock_max_ttl,
            };
            let started = colony_side::start_member(member).await?;
            let addr = started.addr();
            node = Some(started);
            addr
        }
        ServerKind::TonicTls => {
            let pki = Pki::read(dir)?;
            tonic_side::start_server(Some(&pki), options.fail).await?
        }
        ServerKind::TonicPlain => tonic_side::start_server(None, options.fail).await?,
    };
    let mut stdout = tokio::io::stdout();
    stdout
        .write_all(format!("{READY} {addr}\n").as_bytes())
        .await?;
    stdout.flush().await?;
    // Serve until the parent closes our stdin (or goes away).
    let mut stdin = tokio::io::stdin();
    let mut buf = [0u8; 64];
    while stdin.read(&mut buf).await.map(|n| n > 0).unwrap_or(false) {}
    if let Some(node) = node {
        node.shutdown().await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_line_parses() {
        assert_eq!(
            parse_ready("listening 127.0.0.1:4433\n"),
            Some("127.0.0.1:4433".parse().unwrap())
        );
        assert_eq!(parse_ready("listening nowhere"), None);
        assert_eq!(parse_ready("127.0.0.1:4433"), None);
    }

    #[test]
    fn serve_options_become_arguments() {
        let dir = Path::new("/tmp/certs");
        let lone = ServeOptions::instances(8);
        assert_eq!(
            lone.args(ServerKind::Colony, dir),
            [
                "serve",
                "colony",
                "--dir",
                "/tmp/certs",
                "--instances",
                "8",
                "--name",
                DEFAULT_NAME
            ]
        );
        let member = ServeOptions {
            name: "echo-2".into(),
            seed: Some("127.0.0.1:7000".parse().unwrap()),
            fail: true,
            ..lone.clone()
        };
        let args = member.args(ServerKind::Colony, dir);
        assert_eq!(
            args[6..],
            ["--name", "echo-2", "--seed", "127.0.0.1:7000", "--fail"]
        );
        let locks = ServeOptions {
            lock_max_ttl: Some(Duration::from_millis(2500)),
            ..lone.clone()
        };
        assert_eq!(
            locks.args(ServerKind::Colony, dir)[8..],
            ["--lock-max-ttl", "2500ms"]
        );
        // tonic takes no colony options, but can be told to fail.
        assert_eq!(
            member.args(ServerKind::TonicTls, dir),
            ["serve", "tonic-tls", "--dir", "/tmp/certs", "--fail"]
        );
        assert_eq!(lone.args(ServerKind::TonicPlain, dir).len(), 4);
    }

    #[test]
    fn work_dir_is_private_and_removed() {
        let dir = WorkDir::create().unwrap();
        let path = dir.path().to_path_buf();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o700);
        }
        drop(dir);
        assert!(!path.exists());
    }
}
