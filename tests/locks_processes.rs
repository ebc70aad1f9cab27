//! Distributed locks across `colony-test-node` processes, with the failures only processes
//! have: a holder `kill -9`ed, a holder paused with SIGSTOP past its lease, a network partition
//! (injected at each node's transport with `cut`), a leader that dies. Every holder writes to a
//! fence (`colony_tests::fence`) with its token; the fence, in this process on a node of a
//! cluster of its own, says afterwards whether a stale holder's write got through or two
//! holders overlapped.
//!
//! The children are driven through their stdin (`ChildNode::command`, protocol in
//! `tests/bin/test_node.rs`). Leases are 1 s, and so is the longest lease (`--lock-max-ttl-ms`):
//! a replica new to a key waits that long before creating it, so first acquisitions wait.

use std::path::Path;
use std::time::{Duration, Instant};

use colony_tests::fence::{Fence, KeyFence, Phase};
use colony_tests::*;

const EXE: &str = env!("CARGO_BIN_EXE_colony-test-node");

/// The lease of every lock here, and the cluster's longest (ms).
const TTL: u64 = 1000;

/// Child processes `n0..`, the first the others' seed, and the fence they write to.
struct Cluster {
    nodes: Vec<ChildNode>,
    fence: Fence,
    _ca_dir: TempDir,
}

/// Starts `n` children that see each other, and a fence.
async fn cluster(n: usize) -> Cluster {
    let ca = new_ca();
    let ca_dir = write_ca_dir(&ca);
    let fence = Fence::start(&ca).await;
    let args = [
        "--lock-max-ttl-ms".to_string(),
        TTL.to_string(),
        "--fence".to_string(),
        fence.addr().to_string(),
    ];
    let mut nodes = vec![ChildNode::start(EXE.as_ref(), ca_dir.path(), "n0", &args).await];
    let seed = nodes[0].addr().to_string();
    for i in 1..n {
        let mut extra = args.to_vec();
        extra.extend(["--seed".to_string(), seed.clone()]);
        nodes.push(start_child(ca_dir.path(), &format!("n{i}"), &extra).await);
    }
    let all = names(n);
    for node in &mut nodes {
        wait_members(node, &all).await;
    }
    Cluster {
        nodes,
        fence,
        _ca_dir: ca_dir,
    }
}

async fn start_child(ca_dir: &Path, name: &str, extra: &[String]) -> ChildNode {
    ChildNode::start(EXE.as_ref(), ca_dir, name, extra).await
}

fn names(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("n{i}")).collect()
}

/// The reply's words after the first `skip`.
fn words(reply: &str, skip: usize) -> Vec<String> {
    reply
        .split_whitespace()
        .skip(skip)
        .map(str::to_string)
        .collect()
}

/// The members a child sees, sorted.
async fn members(node: &mut ChildNode) -> Vec<String> {
    words(&node.command("members").await, 1)
}

/// Polls a child until it sees exactly `expected` (sorted names) as live members.
async fn wait_members(node: &mut ChildNode, expected: &[String]) {
    let mut seen = Vec::new();
    let polled = tokio::time::timeout(HANG_LIMIT, async {
        loop {
            seen = members(node).await;
            if seen == expected {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(
        polled.is_ok(),
        "the child at {} still sees {seen:?}, not {expected:?}",
        node.addr()
    );
}

/// A refused acquisition: the error's code and detail.
#[derive(Debug)]
struct Refused {
    code: String,
    detail: String,
}

/// `lock KEY TTL WAIT_MS`: the token, or why not.
async fn lock(node: &mut ChildNode, key: &str, wait_ms: u64) -> Result<u64, Refused> {
    let reply = node.command(&format!("lock {key} {TTL} {wait_ms}")).await;
    let w = words(&reply, 0);
    match w[0].as_str() {
        "LOCKED" => Ok(w[2].parse().expect("a token")),
        "REFUSED" => Err(Refused {
            code: w[2].clone(),
            detail: w[3..].join(" "),
        }),
        _ => unreachable!("{reply}"),
    }
}

/// `lock` that must succeed.
async fn locked(node: &mut ChildNode, key: &str, wait_ms: u64) -> u64 {
    lock(node, key, wait_ms)
        .await
        .unwrap_or_else(|r| panic!("lock {key} at {}: {r:?}", node.addr()))
}

/// `lock` that must be refused with `code`; returns the detail.
async fn refused(node: &mut ChildNode, key: &str, wait_ms: u64, code: &str) -> String {
    match lock(node, key, wait_ms).await {
        Ok(token) => panic!(
            "lock {key} at {}: granted ({token}), expected {code}",
            node.addr()
        ),
        Err(r) => {
            assert_eq!(r.code, code, "lock {key} at {}: {}", node.addr(), r.detail);
            r.detail
        }
    }
}

/// `write KEY`: `accepted`, `rejected`, `none` or `failed ...`.
async fn write(node: &mut ChildNode, key: &str) -> String {
    words(&node.command(&format!("write {key}")).await, 2).join(" ")
}

async fn held(node: &mut ChildNode, key: &str) -> bool {
    let reply = node.command(&format!("held {key}")).await;
    match words(&reply, 2)[0].as_str() {
        "true" => true,
        "false" => false,
        _ => unreachable!("{reply}"),
    }
}

/// Polls `held KEY` until it is `want`; returns how long that took.
async fn wait_held(node: &mut ChildNode, key: &str, want: bool) -> Duration {
    let start = Instant::now();
    let polled = tokio::time::timeout(HANG_LIMIT, async {
        while held(node, key).await != want {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(
        polled.is_ok(),
        "held {key} at {} never became {want}",
        node.addr()
    );
    start.elapsed()
}

/// `leader NAME`: (node, token), or none.
async fn leader(node: &mut ChildNode, name: &str) -> Option<(String, u64)> {
    let reply = node.command(&format!("leader {name}")).await;
    let w = words(&reply, 2);
    (w[0] != "none").then(|| (w[0].clone(), w[1].parse().expect("a token")))
}

/// Polls `leader NAME` until it names `node` with `token`.
async fn wait_leader(child: &mut ChildNode, name: &str, node: &str, token: u64) {
    let mut seen = None;
    let polled = tokio::time::timeout(HANG_LIMIT, async {
        loop {
            seen = leader(child, name).await;
            if seen.as_ref() == Some(&(node.to_string(), token)) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(
        polled.is_ok(),
        "the child at {} sees leader {seen:?}, never {node} ({token})",
        child.addr()
    );
}

/// Waits (at most `limit`) for the first of `nodes` (by index, `None`: skipped) to print a line
/// starting with `prefix`; returns its index and the line.
async fn first_line(
    nodes: &mut [Option<&mut ChildNode>],
    prefix: &str,
    limit: Duration,
) -> (usize, String) {
    let found = tokio::time::timeout(limit, async {
        loop {
            for (i, node) in nodes.iter_mut().enumerate() {
                if let Some(line) = node.as_mut().and_then(|n| n.try_line(prefix)) {
                    return (i, line);
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    found.unwrap_or_else(|_| panic!("no child printed {prefix:?} within {limit:?}"))
}

/// The fence's account of `key`, with the checks every test makes: no two writers at once
/// with one token, and the sections' tokens only grow in the order the fence took them.
async fn fence_of(fence: &Fence, key: &str) -> KeyFence {
    let k = fence.report().await.key(key);
    assert_eq!(k.overlaps, 0, "overlapping sections: {k:#?}");
    assert_eq!(k.reused, 0, "a token written by two holders: {k:#?}");
    assert!(
        k.tokens_strictly_increase(),
        "holders' tokens in acceptance order: {:?}",
        k.holders()
    );
    k
}

/// Twelve workers (4 per process) take turns on one key, 10 sections each, every section a
/// fence `Begin` and `End` with the section's token.
///
/// A failure here is two holders inside at once: a section preempted by the next token's
/// `Begin` (its `End` then rejected as stale), printed with what the fence took around it.
/// (Seen with an acquirer that released a lost round's late grants with the owner id its next
/// round reused: the release then freed the next round's winning grant at that replica.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_in_three_processes_never_overlap_at_the_fence() {
    let mut c = cluster(3).await;
    let started = Instant::now();
    for node in &mut c.nodes {
        node.command(&format!("workers hot 10 4 {TTL}")).await;
    }
    let mut done = Vec::new();
    for node in &mut c.nodes {
        let line = node
            .wait_line("WORKERS DONE hot", Duration::from_secs(90))
            .await;
        done.push(words(&line, 3));
    }
    eprintln!("120 contended sections in {:?}", started.elapsed());
    let report = c.fence.report().await.key("hot");
    // A section cut short: show what the fence took around it.
    for stale in &report.rejected {
        eprintln!("REJECTED {stale:?}; around it:");
        for w in report
            .accepted
            .iter()
            .filter(|w| w.at_us.abs_diff(stale.at_us) < 20_000)
        {
            eprintln!("  accepted {w:?}");
        }
    }
    assert_eq!(done, vec![["40", "0"]; 3], "sections, errors per process");
    let k = fence_of(&c.fence, "hot").await;
    // How long the key sat free between sections (release, then the next grant): contention
    // backoff, and stray grants of refused tries that a replica keeps for a lease.
    let mut gaps: Vec<u64> = k
        .accepted
        .windows(2)
        .filter(|w| w[0].phase == Phase::End && w[1].phase == Phase::Begin)
        .map(|w| (w[1].at_us - w[0].at_us) / 1000)
        .collect();
    gaps.sort_unstable();
    eprintln!(
        "free between sections (ms): median {}, 90th {}, max {}",
        gaps[gaps.len() / 2],
        gaps[gaps.len() * 9 / 10],
        gaps[gaps.len() - 1]
    );
    assert_eq!(k.sections, 120, "{k:#?}");
    assert_eq!(k.opening_tokens().len(), 120);
    assert_eq!(k.accepted.len(), 240);
    assert!(k.rejected.is_empty(), "rejected: {:?}", k.rejected);
    assert_eq!(
        (k.preempted, k.unmatched_ends),
        (0, 0),
        "no section was cut short: {k:#?}"
    );
    // Every worker had its turns.
    for node in 0..3 {
        for w in 0..4 {
            let writer = format!("n{node}/w{w}");
            let turns = k
                .accepted
                .iter()
                .filter(|a| a.writer == writer && a.phase == Phase::Begin)
                .count();
            assert_eq!(turns, 10, "{writer}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_holder_is_replaced_with_a_larger_token() {
    let mut c = cluster(3).await;
    let (n0, rest) = c.nodes.split_first_mut().unwrap();
    let n1 = &mut rest[0];
    let t1 = locked(n0, "k", 10_000).await;
    assert_eq!(write(n0, "k").await, "accepted");
    let detail = refused(n1, "k", 0, "Conflict").await;
    assert!(detail.contains("n0"), "names the holder: {detail}");

    n0.kill();
    let killed = Instant::now();
    let t2 = locked(n1, "k", 15_000).await;
    let takeover = killed.elapsed();
    eprintln!("the holder killed: taken over after {takeover:?}, token {t1} -> {t2}");
    assert!(t2 > t1, "{t2} > {t1}");
    // The dead holder's lease ran out (1 s, plus a renewal period at most); its replicas
    // need not notice the death first.
    assert!(takeover < Duration::from_secs(8), "{takeover:?}");
    assert_eq!(write(n1, "k").await, "accepted");

    let k = fence_of(&c.fence, "k").await;
    assert_eq!(k.opening_tokens(), [t1, t2]);
    assert!(k.rejected.is_empty());
}

/// A key whose three replicas among `n0..n4` include `n0` and `n1`.
fn key_replicated_on_n0_and_n1() -> String {
    let all = names(5);
    (0..1000)
        .map(|i| format!("part-{i}"))
        .find(|k| {
            let replicas = colony_actors::lock::replicas(k, &all, 3);
            replicas.contains(&"n0") && replicas.contains(&"n1")
        })
        .expect("some key is replicated on n0 and n1")
}

/// A 5-node cluster split 2|3 while `n0` holds a key the minority holds two replicas of:
/// what the partition tests share, up to the heal.
struct Partitioned {
    c: Cluster,
    key: String,
    /// The token of `n0`, the holder before the partition.
    t1: u64,
    /// The token of `n2`, the holder on the majority side (still holding at the heal, unless
    /// its renewals failed while the connections to the returning nodes came back).
    t2: u64,
}

/// `n0` holds the key and writes; the cluster splits into {n0, n1} | {n2, n3, n4}, each side
/// cutting the other at its transport; the minority cannot grant and `n0`'s lease ends; `n2`
/// takes the key over with a larger token and writes; `n0`'s late write is fenced off; the
/// partition heals and every node sees the five members again.
async fn partition_and_heal() -> Partitioned {
    let mut c = cluster(5).await;
    let key = key_replicated_on_n0_and_n1();
    let all = names(5);
    eprintln!(
        "key {key}: replicas {:?}",
        colony_actors::lock::replicas(&key, &all, 3)
    );
    let t1 = locked(&mut c.nodes[0], &key, 15_000).await;
    assert_eq!(write(&mut c.nodes[0], &key).await, "accepted");

    // Each side cuts the other.
    let addrs: Vec<String> = c.nodes.iter().map(|n| n.addr().to_string()).collect();
    let (minority, majority) = (addrs[..2].join(" "), addrs[2..].join(" "));
    let cut_at = Instant::now();
    for (i, node) in c.nodes.iter_mut().enumerate() {
        let other = if i < 2 { &majority } else { &minority };
        node.command(&format!("cut {other}")).await;
    }
    for (i, node) in c.nodes.iter_mut().enumerate() {
        let side = if i < 2 { &all[..2] } else { &all[2..] };
        wait_members(node, side).await;
    }
    eprintln!("partition seen on both sides after {:?}", cut_at.elapsed());

    // The minority holds two of the key's three replicas, and still grants nothing: its
    // replicas see 2 of the 5 members they know.
    let detail = refused(&mut c.nodes[1], &key, 3000, "Unavailable").await;
    assert!(detail.contains("no majority"), "{detail}");
    wait_held(&mut c.nodes[0], &key, false).await;

    // The majority takes the key over, with a larger token.
    let t2 = locked(&mut c.nodes[2], &key, 15_000).await;
    eprintln!(
        "majority side: token {t1} -> {t2}, {:?} after the cut",
        cut_at.elapsed()
    );
    assert!(t2 > t1, "{t2} > {t1}");
    assert_eq!(write(&mut c.nodes[2], &key).await, "accepted");
    // The old holder's late write is fenced off.
    assert_eq!(write(&mut c.nodes[0], &key).await, "rejected");

    // Heal.
    let healing = Instant::now();
    for node in &mut c.nodes {
        node.command("restore").await;
    }
    for node in &mut c.nodes {
        wait_members(node, &all).await;
    }
    eprintln!(
        "healed: five members everywhere {:?} after restore",
        healing.elapsed()
    );
    Partitioned { c, key, t1, t2 }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_2_3_grants_only_on_the_majority_side_and_fences_the_minority() {
    let Partitioned {
        mut c, key, t1, t2, ..
    } = partition_and_heal().await;
    // Whether the majority's holder kept its lease through the heal depends on how fast the
    // connections to the returning nodes come back (its key's replicas move back to them as
    // soon as gossip says they live): not asserted. Its release is answered either way.
    let released = c.nodes[2].command(&format!("release {key}")).await;
    eprintln!("{released}");
    // The former minority holds two of the key's three replicas again; their records are
    // from before the partition (token t1), and must not make the next token smaller than t2.
    let t3 = locked(&mut c.nodes[0], &key, 20_000).await;
    eprintln!("after the heal n0 takes the key back: token {t2} -> {t3}");
    assert!(
        t3 > t2,
        "after the heal, a token larger than the majority's: {t3} > {t2}"
    );
    assert_eq!(write(&mut c.nodes[0], &key).await, "accepted");

    let k = fence_of(&c.fence, &key).await;
    assert_eq!(k.opening_tokens(), [t1, t2, t3]);
    assert_eq!(k.preempted, 0);
    let rejected: Vec<(u64, &str)> = k
        .rejected
        .iter()
        .map(|w| (w.token, w.writer.as_str()))
        .collect();
    assert_eq!(rejected, [(t1, "n0")]);
}

/// Right after the heal the former minority holds two of the key's three replicas again, its
/// records from before the partition, while the majority's holder may still hold the lease
/// (renewed through the replicas it saw before it saw the returning nodes). `n0` keeps asking
/// for the key from then on: it may get it only once `n2` no longer holds it, and with a token
/// past `n2`'s.
///
/// This failed about 1 run in 4 before replicas new to a key (here `n0` and `n1`, just out of
/// their quarantine) had to hear every replica before their grant counted: `n2` keeps renewing
/// through {n2, n3, n4} until its own view shows the returning nodes, which can be later than
/// the quarantine's end, and only `n3` could tell.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_former_minority_does_not_grant_a_held_key_right_after_the_heal() {
    let Partitioned { mut c, key, t2, .. } = partition_and_heal().await;
    let asked = Instant::now();
    match lock(&mut c.nodes[0], &key, 5000).await {
        Err(r) => assert_eq!(r.code, "Conflict", "{r:?}"),
        Ok(t3) => {
            let granted = asked.elapsed();
            let n2_holds = held(&mut c.nodes[2], &key).await;
            eprintln!("n0 granted {t3} {granted:?} after the heal; n2 ({t2}) holds: {n2_holds}");
            assert!(t3 > t2, "{t3} > {t2}");
            assert!(
                !n2_holds,
                "n0 was granted the key (token {t3}, {granted:?} after the heal) while n2 still \
                 holds it (token {t2})"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_paused_past_its_lease_is_fenced_off_when_it_resumes() {
    let mut c = cluster(3).await;
    let key = "paused";
    let t1 = locked(&mut c.nodes[0], key, 10_000).await;
    assert_eq!(write(&mut c.nodes[0], key).await, "accepted");

    c.nodes[0].signal("STOP");
    let stopped = Instant::now();
    let taken = lock(&mut c.nodes[1], key, 15_000).await;
    let took = stopped.elapsed();
    let n1_write = write(&mut c.nodes[1], key).await;
    c.nodes[0].signal("CONT");
    let t2 = taken.unwrap_or_else(|r| panic!("n1 takes the key of a paused holder: {r:?}"));
    eprintln!("paused holder: n1 took the key after {took:?}, token {t1} -> {t2}");
    assert!(t2 > t1, "{t2} > {t1}");
    assert_eq!(n1_write, "accepted");

    // The paused holder wakes up believing nothing; its write carries the old token.
    assert_eq!(write(&mut c.nodes[0], key).await, "rejected");
    wait_held(&mut c.nodes[0], key, false).await;

    let k = fence_of(&c.fence, key).await;
    assert_eq!(k.opening_tokens(), [t1, t2]);
    assert_eq!(k.rejected.len(), 1, "{:?}", k.rejected);
    assert_eq!(
        (k.rejected[0].token, k.rejected[0].writer.as_str()),
        (t1, "n0")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_leader_dies_another_candidate_leads_with_a_larger_token() {
    let mut c = cluster(3).await;
    for node in &mut c.nodes {
        node.command(&format!("elect sched {TTL}")).await;
    }
    let (first, line) = {
        let mut all: Vec<Option<&mut ChildNode>> = c.nodes.iter_mut().map(Some).collect();
        first_line(&mut all, "LEADING sched", HANG_LIMIT).await
    };
    let first_name = format!("n{first}");
    let t1: u64 = words(&line, 2)[0].parse().unwrap();
    // Everyone learns who leads; nobody else leads meanwhile.
    for node in &mut c.nodes {
        wait_leader(node, "sched", &first_name, t1).await;
    }
    for (i, node) in c.nodes.iter_mut().enumerate() {
        if i != first {
            assert_eq!(node.try_line("LEADING sched"), None, "n{i} leads too");
        }
    }

    c.nodes[first].kill();
    let killed = Instant::now();
    let (second, line) = {
        let mut rest: Vec<Option<&mut ChildNode>> = c
            .nodes
            .iter_mut()
            .enumerate()
            .map(|(i, n)| (i != first).then_some(n))
            .collect();
        // The lease (1 s) runs out, or the failure detector removes the leader (1-2 s).
        first_line(&mut rest, "LEADING sched", Duration::from_secs(10)).await
    };
    let t2: u64 = words(&line, 2)[0].parse().unwrap();
    eprintln!(
        "leader n{first} ({t1}) killed; n{second} leads ({t2}) after {:?}",
        killed.elapsed()
    );
    assert!(t2 > t1, "{t2} > {t1}");
    let second_name = format!("n{second}");
    let third = 3 - first - second;
    wait_leader(&mut c.nodes[third], "sched", &second_name, t2).await;
    wait_leader(&mut c.nodes[second], "sched", &second_name, t2).await;
    assert_eq!(
        c.nodes[third].try_line("LEADING sched"),
        None,
        "n{third} leads too"
    );
    assert_eq!(
        c.nodes[second].try_line("DEPOSED sched"),
        None,
        "the new leader keeps its lease"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewals_keep_a_holder_for_four_leases() {
    let mut c = cluster(3).await;
    let key = "long";
    let token = locked(&mut c.nodes[0], key, 10_000).await;
    let start = Instant::now();
    let (mut checks, mut misnamed) = (0, 0);
    while start.elapsed() < Duration::from_millis(4 * TTL) {
        assert!(
            held(&mut c.nodes[0], key).await,
            "lost after {:?}",
            start.elapsed()
        );
        let detail = refused(&mut c.nodes[1], key, 0, "Conflict").await;
        // The holder named is the longest lease a replica reported: n0, unless a replica
        // still counts a stray grant of one of n1's own earlier refused tries (a grant that
        // arrived after the try was decided; released as soon as it arrives since 10ce798).
        // Counted, not asserted.
        if !detail.contains("node n0 ") {
            eprintln!("n1 refused, naming another holder than n0 (token {token}): {detail}");
            misnamed += 1;
        }
        checks += 1;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(checks >= 5, "{checks} checks");
    eprintln!("{checks} checks, {misnamed} refusals naming another holder");
    assert!(held(&mut c.nodes[0], key).await);
    assert_eq!(write(&mut c.nodes[0], key).await, "accepted");
    assert_eq!(c.nodes[0].try_line("DEPOSED"), None);
    let k = fence_of(&c.fence, key).await;
    assert_eq!(k.opening_tokens(), [token]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_keys_and_leases_are_refused_and_the_node_keeps_serving() {
    let mut c = cluster(1).await;
    let n0 = &mut c.nodes[0];
    let detail = refused(n0, "\"\"", 0, "BadRequest").await;
    assert!(detail.contains("got 0"), "{detail}");
    let huge = "x".repeat(2000);
    let detail = refused(n0, &huge, 0, "BadRequest").await;
    assert!(detail.contains("got 2000"), "{detail}");
    let reply = n0.command(&format!("lock k {} 0", TTL * 2)).await;
    assert!(
        reply.starts_with("REFUSED k BadRequest") && reply.contains("max_ttl"),
        "{reply}"
    );
    assert_eq!(write(n0, "k").await, "none");
    // Still serving.
    locked(n0, "k", 10_000).await;
    assert_eq!(write(n0, "k").await, "accepted");
    let released = n0.command("release k").await;
    assert_eq!(released, "RELEASED k ok");
}
