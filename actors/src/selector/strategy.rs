//! How one instance is chosen among the candidates: the strategies, as plain functions.

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use super::load::{Health, Load};
use super::rng;

/// How a call chooses among the instances that may take it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Strategy {
    /// Any instance, uniformly.
    Random,
    /// Each instance in turn.
    RoundRobin,
    /// The instance with the fewest calls in flight from this node (ties broken at random).
    LeastOutstanding,
    /// Two instances at random; the one with the lower smoothed latency × (in flight + 1)
    /// wins. Finagle's and Linkerd's default: it avoids slow and busy instances without the herd
    /// behaviour of always taking the single best one.
    #[default]
    PowerOfTwoChoices,
    /// This node's own instance when it has one (no network), otherwise power of two choices.
    LocalFirst,
}

/// What the strategies need to know of an instance.
pub trait Candidate {
    /// The instance's live statistics.
    fn load(&self) -> &Load;
    /// Whether the instance runs on this node.
    fn is_local(&self) -> bool;
    /// A stable hash of the instance's identity, for rendezvous hashing.
    fn id_hash(&self) -> u64;
}

impl<C: Candidate> Candidate for std::sync::Arc<C> {
    fn load(&self) -> &Load {
        (**self).load()
    }
    fn is_local(&self) -> bool {
        (**self).is_local()
    }
    fn id_hash(&self) -> u64 {
        (**self).id_hash()
    }
}

/// Chooses an instance among `candidates` for which `eligible` holds and whose health admits a
/// call; returns its index.
///
/// With a `key` (a [`stable_hash`](super::stable_hash) of the request key) the choice is
/// rendezvous hashing, whatever the strategy: the same key goes to the same instance, and when
/// an instance joins or leaves only the keys that hash highest to it move (about 1/N).
///
/// `probing` says whether any candidate is probing after an ejection: only then is the list
/// scanned for a probe to hand out, so the common case costs nothing.
pub fn pick<C: Candidate>(
    strategy: Strategy,
    key: Option<u64>,
    candidates: &[C],
    round_robin: &AtomicUsize,
    probing: bool,
    eligible: impl Fn(usize, &C) -> bool,
) -> Option<usize> {
    let usable = |i: usize, c: &C| c.load().is_healthy() && eligible(i, c);
    if probing {
        // An instance back from ejection gets exactly one call to prove itself.
        let probe = candidates.iter().enumerate().position(|(i, c)| {
            c.load().health() == Health::Probing && eligible(i, c) && c.load().admits()
        });
        if probe.is_some() {
            return probe;
        }
    }
    if let Some(key) = key {
        return candidates
            .iter()
            .enumerate()
            .filter(|(i, c)| usable(*i, c))
            .max_by_key(|(_, c)| rng::mix(key ^ c.id_hash()))
            .map(|(i, _)| i);
    }
    let n = candidates.len();
    match (n, strategy) {
        (0, _) => None,
        (1, _) => usable(0, &candidates[0]).then_some(0),
        (_, Strategy::RoundRobin) => {
            // A skipped turn takes a fresh number, so an ejected instance's turns are spread
            // over the others instead of all going to the instance after it.
            (0..n)
                .map(|_| round_robin.fetch_add(1, Relaxed) % n)
                .find(|&i| usable(i, &candidates[i]))
        }
        (_, Strategy::LeastOutstanding) => {
            // Ties are broken uniformly (reservoir sampling over the equal minima).
            let mut best: Option<(usize, u32)> = None;
            let mut ties = 0;
            for (i, c) in candidates.iter().enumerate() {
                if !usable(i, c) {
                    continue;
                }
                let load = c.load().outstanding();
                match best {
                    Some((_, b)) if load > b => {}
                    Some((_, b)) if load == b => {
                        ties += 1;
                        if rng::below(ties) == 0 {
                            best = Some((i, load));
                        }
                    }
                    _ => {
                        best = Some((i, load));
                        ties = 1;
                    }
                }
            }
            best.map(|(i, _)| i)
        }
        (_, Strategy::Random) => {
            let i = rng::below(n);
            if usable(i, &candidates[i]) {
                return Some(i);
            }
            sample_two(candidates, usable).0
        }
        (_, Strategy::LocalFirst) => candidates
            .iter()
            .enumerate()
            .position(|(i, c)| c.is_local() && usable(i, c))
            .or_else(|| power_of_two(candidates, |i, c| !c.is_local() && usable(i, c))),
        (_, Strategy::PowerOfTwoChoices) => power_of_two(candidates, usable),
    }
}

/// Two distinct instances drawn uniformly among the usable ones, in one pass and without
/// allocating (reservoir sampling); fewer when fewer are usable.
fn sample_two<C>(
    candidates: &[C],
    usable: impl Fn(usize, &C) -> bool,
) -> (Option<usize>, Option<usize>) {
    let mut picked = [None, None];
    let mut seen = 0;
    for (i, c) in candidates.iter().enumerate() {
        if !usable(i, c) {
            continue;
        }
        seen += 1;
        if seen <= 2 {
            picked[seen - 1] = Some(i);
        } else {
            let slot = rng::below(seen);
            if slot < 2 {
                picked[slot] = Some(i);
            }
        }
    }
    // The first slot alone must be uniform too (Random uses it): swap at random.
    if rng::below(2) == 1 {
        picked.swap(0, 1);
        if picked[0].is_none() {
            picked.swap(0, 1);
        }
    }
    (picked[0], picked[1])
}

fn power_of_two<C: Candidate>(
    candidates: &[C],
    usable: impl Fn(usize, &C) -> bool,
) -> Option<usize> {
    let n = candidates.len();
    let cheaper = |a: usize, b: usize| {
        if candidates[b].load().cost() < candidates[a].load().cost() {
            b
        } else {
            a
        }
    };
    // Common case: two distinct random instances that may both take the call.
    let a = rng::below(n);
    let b = (a + 1 + rng::below(n - 1)) % n;
    if usable(a, &candidates[a]) && usable(b, &candidates[b]) {
        return Some(cheaper(a, b));
    }
    match sample_two(candidates, usable) {
        (Some(a), Some(b)) => Some(cheaper(a, b)),
        (one, _) => one,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::selector::stable_hash;
    use std::time::Duration;

    struct Inst {
        load: Load,
        local: bool,
        hash: u64,
    }

    impl Candidate for Inst {
        fn load(&self) -> &Load {
            &self.load
        }
        fn is_local(&self) -> bool {
            self.local
        }
        fn id_hash(&self) -> u64 {
            self.hash
        }
    }

    fn instances(n: usize) -> Vec<Inst> {
        (0..n)
            .map(|i| Inst {
                load: Load::default(),
                local: false,
                hash: stable_hash(format!("svc@node-{i}").as_bytes()),
            })
            .collect()
    }

    fn histogram(strategy: Strategy, insts: &[Inst], calls: usize) -> Vec<usize> {
        let rr = AtomicUsize::new(0);
        let mut seen = vec![0; insts.len()];
        for _ in 0..calls {
            seen[pick(strategy, None, insts, &rr, false, |_, _| true).unwrap()] += 1;
        }
        seen
    }

    /// Within 6 standard deviations of a uniform share: fails by chance about once in 10^8.
    fn assert_uniform(seen: &[usize], calls: usize) {
        let n = seen.len() as f64;
        let p = 1.0 / n;
        let mean = calls as f64 * p;
        let sd = (calls as f64 * p * (1.0 - p)).sqrt();
        for &s in seen {
            assert!((s as f64 - mean).abs() <= 6.0 * sd, "{seen:?}");
        }
    }

    #[test]
    fn random_spreads_uniformly() {
        assert_uniform(&histogram(Strategy::Random, &instances(5), 50_000), 50_000);
    }

    #[test]
    fn round_robin_is_exact() {
        assert_eq!(
            histogram(Strategy::RoundRobin, &instances(4), 400),
            vec![100; 4]
        );
    }

    #[test]
    fn round_robin_spreads_an_ejected_instance_turns_evenly() {
        let insts = instances(3);
        insts[1].load.set_health(Health::Ejected);
        assert_eq!(
            histogram(Strategy::RoundRobin, &insts, 3_000),
            vec![1_500, 0, 1_500]
        );
    }

    #[test]
    fn random_and_power_of_two_stay_uniform_around_an_ejected_instance() {
        let insts = instances(5);
        insts[2].load.set_health(Health::Ejected);
        for i in &insts {
            i.load.observe(Duration::from_micros(100));
        }
        for strategy in [Strategy::Random, Strategy::PowerOfTwoChoices] {
            let seen = histogram(strategy, &insts, 40_000);
            assert_eq!(seen[2], 0);
            let others: Vec<usize> = [0, 1, 3, 4].iter().map(|&i| seen[i]).collect();
            assert_uniform(&others, 40_000);
        }
    }

    #[test]
    fn power_of_two_spreads_equal_instances_uniformly() {
        let insts = instances(4);
        for i in &insts {
            i.load.observe(Duration::from_micros(100));
        }
        assert_uniform(
            &histogram(Strategy::PowerOfTwoChoices, &insts, 40_000),
            40_000,
        );
    }

    #[test]
    fn power_of_two_avoids_a_slow_instance() {
        let insts = instances(3);
        insts[0].load.observe(Duration::from_millis(50));
        insts[1].load.observe(Duration::from_micros(100));
        insts[2].load.observe(Duration::from_micros(100));
        let seen = histogram(Strategy::PowerOfTwoChoices, &insts, 30_000);
        // The slow one wins only when it is drawn twice, which two distinct draws never do.
        assert_eq!(seen[0], 0, "{seen:?}");
    }

    #[test]
    fn least_outstanding_avoids_a_busy_instance() {
        let insts = instances(3);
        let _busy: Vec<_> = (0..5).map(|_| insts[1].load.begin()).collect();
        let seen = histogram(Strategy::LeastOutstanding, &insts, 3_000);
        assert_eq!(seen[1], 0, "{seen:?}");
        assert_uniform(&[seen[0], seen[2]], 3_000);
    }

    #[test]
    fn local_first_stays_local_until_the_local_one_is_out() {
        let mut insts = instances(3);
        insts[2].local = true;
        assert_eq!(
            histogram(Strategy::LocalFirst, &insts, 100),
            vec![0, 0, 100]
        );
        insts[2].load.set_health(Health::Ejected);
        let seen = histogram(Strategy::LocalFirst, &insts, 100);
        assert_eq!(seen[2], 0);
        assert_eq!(seen[0] + seen[1], 100);
    }

    #[test]
    fn ejected_and_filtered_instances_are_never_picked() {
        let insts = instances(4);
        insts[0].load.set_health(Health::Ejected);
        let rr = AtomicUsize::new(0);
        for strategy in [
            Strategy::Random,
            Strategy::RoundRobin,
            Strategy::LeastOutstanding,
            Strategy::PowerOfTwoChoices,
            Strategy::LocalFirst,
        ] {
            for _ in 0..1_000 {
                let i = pick(strategy, None, &insts, &rr, false, |i, _| i != 3).unwrap();
                assert!(i == 1 || i == 2, "{strategy:?} picked {i}");
            }
            assert_eq!(pick(strategy, None, &insts, &rr, false, |_, _| false), None);
        }
    }

    #[test]
    fn a_probe_goes_out_once_then_normal_picks_resume() {
        let insts = instances(3);
        insts[1].load.set_health(Health::Probing);
        let rr = AtomicUsize::new(0);
        let first = pick(Strategy::RoundRobin, None, &insts, &rr, true, |_, _| true);
        assert_eq!(first, Some(1));
        for _ in 0..100 {
            let i = pick(Strategy::RoundRobin, None, &insts, &rr, true, |_, _| true);
            assert_ne!(i, Some(1), "a second call went to the probing instance");
        }
    }

    fn owner(insts: &[Inst], key: &str) -> u64 {
        let rr = AtomicUsize::new(0);
        let k = Some(stable_hash(key.as_bytes()));
        let i = pick(Strategy::Random, k, insts, &rr, false, |_, _| true).unwrap();
        insts[i].hash
    }

    #[test]
    fn rendezvous_hashing_is_sticky_and_moves_about_one_nth() {
        let keys: Vec<String> = (0..10_000).map(|k| format!("user-{k}")).collect();
        let five = instances(5);
        let before: Vec<u64> = keys.iter().map(|k| owner(&five, k)).collect();
        // Same key, same instance, every time.
        assert!(keys.iter().zip(&before).all(|(k, b)| owner(&five, k) == *b));
        // One instance leaves: only its keys move (about 1/5 of them), and nothing else.
        let four: Vec<Inst> = instances(5).into_iter().take(4).collect();
        let gone = five[4].hash;
        let mut moved = 0;
        for (k, b) in keys.iter().zip(&before) {
            let now = owner(&four, k);
            if now != *b {
                assert_eq!(*b, gone, "a key moved off an instance that stayed");
                moved += 1;
            }
        }
        assert!(
            (1_600..=2_400).contains(&moved),
            "{moved} of 10000 keys moved"
        );
        // An instance joins: only keys that now hash highest to it move (about 1/6).
        let six = instances(6);
        let joined = six[5].hash;
        let moved_in = keys
            .iter()
            .zip(&before)
            .filter(|(k, b)| {
                let now = owner(&six, k);
                assert!(now == **b || now == joined);
                now != **b
            })
            .count();
        assert!((1_300..=2_050).contains(&moved_in), "{moved_in} keys moved");
    }
}
