//! Temporary directories and nodes in child processes.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};

use colony::ClusterCa;

use crate::*;

/// A private temporary directory, removed on drop.
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    /// Creates a fresh directory under the system temporary directory.
    pub fn new(prefix: &str) -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let path = std::env::temp_dir().join(format!(
            "colony-tests-{prefix}-{}-{n}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&path).expect("create temp dir");
        Self(path)
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Writes `ca` as `ca.pem` in a new temporary directory, for `NodeBuilder::ca_dir`.
pub fn write_ca_dir(ca: &ClusterCa) -> TempDir {
    let dir = TempDir::new("ca");
    std::fs::write(dir.path().join(colony_quic::CA_FILE), ca.to_pem()).expect("write CA");
    dir
}

/// A node running in a child process (the `colony-test-node` binary). Dropping the guard kills
/// the process and reaps it, whatever path the test takes.
#[derive(Debug)]
pub struct ChildNode {
    child: Child,
    stdin: Option<ChildStdin>,
    addr: SocketAddr,
    /// The child's stdout lines after `LISTENING <addr>`, where [`command`](Self::command)
    /// finds its acknowledgements.
    stdout: tokio::sync::mpsc::UnboundedReceiver<String>,
}

impl ChildNode {
    /// Starts `exe --ca-dir <ca_dir> --name <name>` and waits (bounded) for its
    /// `LISTENING <addr>` line. Blocking: call it from `spawn_blocking` in async tests.
    pub fn spawn(exe: &Path, ca_dir: &Path, name: &str) -> Self {
        Self::spawn_with(exe, ca_dir, name, &[])
    }

    /// [`spawn`](Self::spawn) with extra arguments (`--seed ADDR`, `--service NAME`,
    /// `--unavailable`...).
    pub fn spawn_with(exe: &Path, ca_dir: &Path, name: &str, extra: &[String]) -> Self {
        let child = Command::new(exe)
            .arg("--ca-dir")
            .arg(ca_dir)
            .arg("--name")
            .arg(name)
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start colony-test-node");
        let (lines_tx, lines_rx) = tokio::sync::mpsc::unbounded_channel();
        // From here on the guard owns the process: any panic below kills it.
        let mut guard = ChildNode {
            child,
            stdin: None,
            addr: "127.0.0.1:0".parse().unwrap(),
            stdout: lines_rx,
        };
        guard.stdin = guard.child.stdin.take();
        let stdout = guard.child.stdout.take().expect("child stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            // Keep draining stdout after the address line so the child never blocks on it;
            // the lines after it go to `command`, which skips what it does not wait for.
            let mut tx = Some(tx);
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.is_none() {
                    let _ = lines_tx.send(line);
                } else if let Some(addr) = line.strip_prefix("LISTENING ") {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(addr.trim().to_string());
                    }
                }
            }
        });
        let line = rx
            .recv_timeout(HANG_LIMIT)
            .expect("colony-test-node printed no LISTENING line");
        guard.addr = line.parse().expect("LISTENING address parses");
        guard
    }

    /// [`spawn_with`](Self::spawn_with) from async code: runs the blocking start-up on the
    /// blocking pool.
    pub async fn start(exe: &Path, ca_dir: &Path, name: &str, extra: &[String]) -> Self {
        let (exe, ca_dir, name, extra) = (
            exe.to_path_buf(),
            ca_dir.to_path_buf(),
            name.to_string(),
            extra.to_vec(),
        );
        tokio::task::spawn_blocking(move || Self::spawn_with(&exe, &ca_dir, &name, &extra))
            .await
            .expect("child node start-up")
    }

    /// The child node's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The child's process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// `kill -9`: SIGKILL (no goodbye, no CONNECTION_CLOSE: only silence), then reaps it. The
    /// guard's drop does the same; this keeps the guard for later use of [`addr`](Self::addr).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM (through `kill -TERM`): the child shuts down gracefully (`Node::shutdown`) and
    /// exits 0. Returns at once; [`wait_exit`](Self::wait_exit) waits for the exit.
    pub fn terminate(&mut self) {
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()
            .expect("run kill -TERM");
        assert!(
            status.success(),
            "kill -TERM {} failed: {status}",
            self.id()
        );
    }

    /// Sends one command line to the child on its stdin and waits (bounded) for its
    /// acknowledgement on stdout; other lines the child prints meanwhile (logs) are skipped.
    ///
    /// - `cut ADDR [ADDR...]`: the child drops all traffic to and from these nodes, as a network
    ///   partition would (`Node::cut_off`); acknowledged with `CUT`.
    /// - `restore`: traffic flows again (`Node::restore`); acknowledged with `RESTORED`.
    ///
    /// Panics on any other command, after [`close_stdin`](Self::close_stdin), or when the child
    /// does not acknowledge in time (it ignores a malformed command, with a line on stderr).
    pub async fn command(&mut self, line: &str) {
        let ack = match line.split_whitespace().next() {
            Some("cut") => "CUT",
            Some("restore") => "RESTORED",
            _ => panic!("not a colony-test-node command: {line:?}"),
        };
        let stdin = self
            .stdin
            .as_mut()
            .expect("the child's stdin is closed: no more commands");
        writeln!(stdin, "{}", line.trim())
            .and_then(|()| stdin.flush())
            .unwrap_or_else(|e| panic!("send {line:?} to the child node: {e}"));
        let acknowledged = async {
            while let Some(out) = self.stdout.recv().await {
                if out.trim() == ack {
                    return;
                }
            }
            panic!("the child node's stdout ended before it acknowledged {line:?}");
        };
        tokio::time::timeout(HANG_LIMIT, acknowledged)
            .await
            .unwrap_or_else(|_| panic!("the child node did not acknowledge {line:?}"));
    }

    /// Closes the child's stdin, which asks it to shut down.
    pub fn close_stdin(&mut self) {
        if let Some(mut stdin) = self.stdin.take() {
            let _ = stdin.flush();
        }
    }

    /// Waits (bounded, polling) for the child to exit.
    pub async fn wait_exit(&mut self) -> ExitStatus {
        let mut status = None;
        wait_until(
            || {
                status = self.child.try_wait().expect("try_wait");
                status.is_some()
            },
            "the child node to exit",
        )
        .await;
        status.unwrap()
    }
}

impl Drop for ChildNode {
    fn drop(&mut self) {
        self.stdin.take();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
