//! Temporary directories and nodes in child processes.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

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
    /// finds its replies.
    stdout: tokio::sync::mpsc::UnboundedReceiver<String>,
    /// Lines read from `stdout` that no wait has taken yet, oldest first.
    unread: VecDeque<String>,
}

/// Whether the words of `line` start with the words of `prefix`.
fn starts_with_words(line: &str, prefix: &str) -> bool {
    let mut words = line.split_whitespace();
    prefix.split_whitespace().all(|p| words.next() == Some(p))
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
            unread: VecDeque::new(),
        };
        guard.stdin = guard.child.stdin.take();
        let stdout = guard.child.stdout.take().expect("child stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            // Keep draining stdout after the address line so the child never blocks on it;
            // the lines after it go to `command` and `wait_line`, which keep what they skip.
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

    /// Sends one command line to the child on its stdin and waits (bounded) for its reply on
    /// stdout, which it returns. Lines the child prints meanwhile that are not the reply (logs,
    /// asynchronous reports such as `LEADING ...`) are kept for [`wait_line`](Self::wait_line).
    ///
    /// Every command is answered by one line, flushed (see `tests/bin/test_node.rs` for what
    /// each does); the reply starts with the words below (`KEY` and `NAME` as sent):
    ///
    /// | command                            | reply                                               |
    /// |------------------------------------|-----------------------------------------------------|
    /// | `cut ADDR [ADDR...]` (a partition) | `CUT`                                               |
    /// | `restore` (heal it)                | `RESTORED`                                          |
    /// | `members`                          | `MEMBERS NAME...`                                   |
    /// | `lock KEY TTL_MS WAIT_MS`          | `LOCKED KEY TOKEN` or `REFUSED KEY CODE DETAIL`     |
    /// | `write KEY`                        | `WRITE KEY accepted\|rejected\|none\|failed ...`    |
    /// | `held KEY`                         | `HELD KEY true\|false`                               |
    /// | `release KEY`                      | `RELEASED KEY ok\|none\|CODE`                        |
    /// | `elect NAME TTL_MS`                | `CAMPAIGNING NAME` (later `LEADING NAME TOKEN`)     |
    /// | `leader NAME`                      | `LEADER NAME NODE TOKEN` or `LEADER NAME none`      |
    /// | `workers KEY COUNT CLIENTS TTL_MS` | `WORKING KEY` (later `WORKERS DONE KEY N ERRORS`)   |
    ///
    /// The wait is [`HANG_LIMIT`], plus `WAIT_MS` for `lock`. Panics on any other command,
    /// after [`close_stdin`](Self::close_stdin), or when the child does not answer in time (it
    /// ignores a malformed command, with a line on stderr).
    pub async fn command(&mut self, line: &str) -> String {
        let words: Vec<&str> = line.split_whitespace().collect();
        let arg = |i: usize| {
            *words
                .get(i)
                .unwrap_or_else(|| panic!("{line:?}: argument {i} missing"))
        };
        let (replies, limit): (Vec<String>, Duration) = match words.first().copied() {
            Some("cut") => (vec!["CUT".into()], HANG_LIMIT),
            Some("restore") => (vec!["RESTORED".into()], HANG_LIMIT),
            Some("members") => (vec!["MEMBERS".into()], HANG_LIMIT),
            Some("lock") => {
                let wait: u64 = arg(3).parse().expect("lock KEY TTL_MS WAIT_MS");
                (
                    vec![format!("LOCKED {}", arg(1)), format!("REFUSED {}", arg(1))],
                    HANG_LIMIT + Duration::from_millis(wait),
                )
            }
            Some("write") => (vec![format!("WRITE {}", arg(1))], HANG_LIMIT),
            Some("held") => (vec![format!("HELD {}", arg(1))], HANG_LIMIT),
            Some("release") => (vec![format!("RELEASED {}", arg(1))], HANG_LIMIT),
            Some("elect") => (vec![format!("CAMPAIGNING {}", arg(1))], HANG_LIMIT),
            Some("leader") => (vec![format!("LEADER {}", arg(1))], HANG_LIMIT),
            Some("workers") => (vec![format!("WORKING {}", arg(1))], HANG_LIMIT),
            _ => panic!("not a colony-test-node command: {line:?}"),
        };
        let stdin = self
            .stdin
            .as_mut()
            .expect("the child's stdin is closed: no more commands");
        writeln!(stdin, "{}", line.trim())
            .and_then(|()| stdin.flush())
            .unwrap_or_else(|e| panic!("send {line:?} to the child node: {e}"));
        let replies: Vec<&str> = replies.iter().map(String::as_str).collect();
        self.wait_any(&replies, limit, &format!("its reply to {line:?}"))
            .await
    }

    /// Waits (at most `limit`) for a line of the child's stdout that starts with the words of
    /// `prefix` (`"LEADING sched"` matches `LEADING sched 17`, not `LEADING scheduler 17`),
    /// and returns it. Lines already printed and not yet taken count, oldest first; the
    /// others stay for later waits.
    pub async fn wait_line(&mut self, prefix: &str, limit: Duration) -> String {
        self.wait_any(&[prefix], limit, &format!("a line {prefix:?}"))
            .await
    }

    /// The first line printed so far, not yet taken, that starts with the words of `prefix`,
    /// without waiting.
    pub fn try_line(&mut self, prefix: &str) -> Option<String> {
        while let Ok(line) = self.stdout.try_recv() {
            self.keep(line);
        }
        self.take_unread(&[prefix])
    }

    /// Keeps a line no wait took (the oldest go past a bound: a child logging on stdout).
    fn keep(&mut self, line: String) {
        if self.unread.len() >= 100_000 {
            self.unread.pop_front();
        }
        self.unread.push_back(line);
    }

    fn take_unread(&mut self, prefixes: &[&str]) -> Option<String> {
        let at = self
            .unread
            .iter()
            .position(|l| prefixes.iter().any(|p| starts_with_words(l, p)))?;
        self.unread.remove(at)
    }

    async fn wait_any(&mut self, prefixes: &[&str], limit: Duration, what: &str) -> String {
        if let Some(line) = self.take_unread(prefixes) {
            return line;
        }
        let found = tokio::time::timeout(limit, async {
            while let Some(line) = self.stdout.recv().await {
                if prefixes.iter().any(|p| starts_with_words(&line, p)) {
                    return Some(line);
                }
                self.keep(line);
            }
            None
        })
        .await;
        match found {
            Ok(Some(line)) => line,
            Ok(None) => panic!("the child node's stdout ended before {what}"),
            Err(_) => panic!("the child node did not print {what} within {limit:?}"),
        }
    }

    /// Sends `signal` (`STOP`, `CONT`, `TERM`...) to the child with `kill -<signal>`.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("run kill");
        assert!(
            status.success(),
            "kill -{signal} {} failed: {status}",
            self.id()
        );
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
