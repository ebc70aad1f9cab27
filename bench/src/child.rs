//! Server processes: the bench binary started again as `colony-bench serve <kind> --dir <dir>`.
//!
//! The parent writes the certificates into a private directory, starts the child, and reads
//! one line `listening <addr>` from its stdout. The child serves until its stdin closes, which
//! happens when the parent stops it, drops it, panics, or dies from a signal; the parent also
//! kills a child it drops, so no path leaves a server behind.

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

/// A private scratch directory, removed when dropped.
#[derive(Debug)]
pub(crate) struct WorkDir(PathBuf);

impl WorkDir {
    /// Creates `$TMPDIR/colony-bench-<pid>` readable by this user only.
    pub(crate) fn create() -> std::io::Result<Self> {
        let dir = std::env::temp_dir().join(format!("colony-bench-{}", std::process::id()));
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
        instances: usize,
    ) -> Result<Self, BoxError> {
        let mut command = Command::new(std::env::current_exe()?);
        command.arg("serve").arg(kind.arg()).arg("--dir").arg(dir);
        if kind == ServerKind::Colony {
            command.arg("--instances").arg(instances.to_string());
        }
        let mut child = command
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
pub(crate) async fn serve(kind: ServerKind, dir: &Path, instances: usize) -> Result<(), BoxError> {
    let mut node = None;
    let addr = match kind {
        ServerKind::Colony => {
            // `ca.pem` written by the parent: the same cluster CA as the calling node.
            let started =
                colony_side::start_server("bench-server", colony_side::Trust::Dir(dir), instances)
                    .await?;
            let addr = started.addr();
            node = Some(started);
            addr
        }
        ServerKind::TonicTls => {
            let pki = Pki::read(dir)?;
            tonic_side::start_server(Some(&pki)).await?
        }
        ServerKind::TonicPlain => tonic_side::start_server(None).await?,
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
