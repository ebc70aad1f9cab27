//! Which members hold a key's lock state: rendezvous (highest-random-weight) hashing.
//!
//! Every node computes the same replicas from the same member names, with no coordination,
//! and a member joining or leaving moves only the keys it ranks in the top `r` for (about
//! `r / n` of them), so most keys keep their replicas through a change.

use crate::selector::stable_hash;

/// The `r` members with the highest weight for `key`, best first. Names, not addresses: a node
/// restarted elsewhere keeps its keys. The hash is fixed (FNV-1a with a SplitMix finaliser),
/// so nodes built by different compilers agree.
pub fn replicas<'m, M: AsRef<str>>(key: &str, members: &'m [M], r: usize) -> Vec<&'m str> {
    let mut ranked: Vec<(u64, &str)> = members
        .iter()
        .map(|m| (weight(m.as_ref(), key), m.as_ref()))
        .collect();
    // Ties (equal weights) are broken by name so every node orders them alike.
    ranked.sort_unstable_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(b.1)));
    ranked.dedup_by(|a, b| a.1 == b.1);
    ranked.into_iter().take(r).map(|(_, m)| m).collect()
}

/// True if `me` is among the `r` replicas of `key`.
pub fn is_replica<M: AsRef<str>>(key: &str, members: &[M], r: usize, me: &str) -> bool {
    replicas(key, members, r).contains(&me)
}

fn weight(member: &str, key: &str) -> u64 {
    // A separator that cannot appear in a node name keeps ("ab","c") apart from ("a","bc").
    let mut bytes = Vec::with_capacity(member.len() + key.len() + 1);
    bytes.extend_from_slice(member.as_bytes());
    bytes.push(0xff);
    bytes.extend_from_slice(key.as_bytes());
    stable_hash(&bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("node-{i}")).collect()
    }

    #[test]
    fn order_of_members_does_not_matter() {
        let a = names(7);
        let mut b = a.clone();
        b.reverse();
        for key in ["a", "invoice-42", "colony.leader/scheduler"] {
            assert_eq!(replicas(key, &a, 3), replicas(key, &b, 3));
        }
    }

    #[test]
    fn fewer_members_than_replicas_gives_them_all() {
        let m = names(2);
        let mut got = replicas("k", &m, 3);
        got.sort_unstable();
        assert_eq!(got, vec!["node-0", "node-1"]);
        assert!(replicas::<String>("k", &[], 3).is_empty());
    }

    #[test]
    fn a_departure_moves_only_the_keys_it_held() {
        let before = names(5);
        let after: Vec<String> = before.iter().filter(|m| *m != "node-2").cloned().collect();
        let mut moved = 0;
        for i in 0..1000 {
            let key = format!("key-{i}");
            let old = replicas(&key, &before, 3);
            let new = replicas(&key, &after, 3);
            if old.contains(&"node-2") {
                // The two survivors stay; one new member joins them.
                assert_eq!(old.iter().filter(|m| new.contains(m)).count(), 2, "{key}");
                moved += 1;
            } else {
                assert_eq!(old, new, "{key}");
            }
        }
        // node-2 ranks top-3 for about 3/5 of the keys.
        assert!((450..750).contains(&moved), "{moved}");
    }

    #[test]
    fn keys_spread_over_members() {
        let m = names(5);
        let mut firsts = std::collections::HashMap::new();
        for i in 0..5000 {
            *firsts
                .entry(replicas(&format!("k{i}"), &m, 1)[0])
                .or_insert(0) += 1;
        }
        assert_eq!(firsts.len(), 5);
        assert!(
            firsts.values().all(|&n| (800..1200).contains(&n)),
            "{firsts:?}"
        );
    }
}
