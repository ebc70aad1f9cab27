//! `colony lock <key> -- <command>`: runs a command while holding a cluster lock, and
//! `colony leader <name>`: who leads an election.
//!
//! The command gets the lock's fencing token in `COLONY_LOCK_TOKEN` (and the key in
//! `COLONY_LOCK_KEY`) to pass on to whatever it writes, so a write made after the lease was
//! lost is refused there (docs/locks.md). If the lease is lost while the command runs (the CLI
//! is cut off from the replicas, or was paused), the command gets SIGTERM and `colony` exits 1.

use std::time::Duration;

use colony::{Error, Node};
use tokio::process::Command;

/// `lock failed: 409 Conflict: <detail>`.
fn failure(e: &Error) -> String {
    format!(
        "lock failed: {} {:?}: {}",
        u16::from(e.code()),
        e.code(),
        e.detail()
    )
}

/// Parses `10s`, `500ms`, `2m`, or a plain number of seconds.
pub(crate) fn duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("{text:?} is not a duration: use 10s, 500ms, 2m or seconds");
    let (number, unit) = match text.find(|c: char| c.is_ascii_alphabetic()) {
        Some(i) => text.split_at(i),
        None => (text, "s"),
    };
    let value: f64 = number.trim().parse().map_err(|_| bad())?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        _ => return Err(bad()),
    };
    Duration::try_from_secs_f64(seconds).map_err(|_| bad())
}

/// Acquires `key`, runs `command` with the token in its environment, releases. Exit code: the
/// command's (1 if it died by a signal), or 1 when the lock was not acquired or was lost.
pub(crate) async fn run(
    node: &Node,
    key: &str,
    ttl: Duration,
    wait: Duration,
    command: &[String],
) -> Result<u8, String> {
    let (program, args) = command
        .split_first()
        .ok_or("no command to run: colony lock <key> -- <command> [args...]")?;
    let guard = node
        .lock(key)
        .ttl(ttl)
        .wait(wait)
        .await
        .map_err(|e| failure(&e))?;
    let child = Command::new(program)
        .args(args)
        .env("COLONY_LOCK_TOKEN", guard.token().to_string())
        .env("COLONY_LOCK_KEY", key)
        .kill_on_drop(true)
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(e) => {
            // Released now, not left to its TTL by a process about to exit.
            let _ = guard.release().await;
            return Err(format!("cannot run {program:?}: {e}"));
        }
    };
    let lost = guard.lost();
    let status = tokio::select! {
        status = child.wait() => status.map_err(|e| format!("waiting for {program:?}: {e}"))?,
        () = lost => {
            if let Some(pid) = child.id() {
                // SIGTERM first, so the command can stop cleanly; kill_on_drop ends it otherwise.
                let _ = std::process::Command::new("kill").arg(pid.to_string()).status();
            }
            let _ = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
            return Err(format!(
                "lock lost: the lease on {key:?} (token {}) ended while {program:?} ran; it was sent SIGTERM",
                guard.token()
            ));
        }
    };
    if let Err(e) = guard.release().await {
        eprintln!("colony: {}", failure(&e));
    }
    Ok(status.code().map_or(1, |c| c.clamp(0, 255) as u8))
}

/// Prints the leader of `name` (exit 0), or says there is none (exit 1). With `watch`, prints
/// one line per change until Ctrl-C.
pub(crate) async fn leader(node: &Node, name: &str, watch: bool, json: bool) -> Result<u8, String> {
    let mut leaders = node.leader_of(name);
    let show = |leader: &Option<colony::Leader>| match (leader, json) {
        (Some(l), true) => println!(
            "{}",
            serde_json::json!({"election": name, "node": l.node, "addr": l.addr, "token": l.token})
        ),
        (None, true) => println!("{}", serde_json::json!({"election": name, "node": null})),
        (Some(l), false) => println!("{name}: {} at {} (token {})", l.node, l.addr, l.token),
        (None, false) => println!("{name}: no leader"),
    };
    let current = leaders.current();
    show(&current);
    if !watch {
        return Ok(u8::from(current.is_none()));
    }
    loop {
        tokio::select! {
            next = leaders.changed() => show(&next),
            _ = tokio::signal::ctrl_c() => return Ok(0),
        }
    }
}
