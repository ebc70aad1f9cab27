//! Which subscriptions a subject reaches: a trie of pattern tokens, as NATS's sublist.
//!
//! A node keeps one for its own subscriptions (keyed by subscription id) and one for every other
//! node's, built from gossip (keyed by an index into the view's list of them, which names the
//! node); the publisher matches both and sends one copy per node among the matches.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::sync::Arc;

use super::subject::{Pattern, Subject, Token};

/// The subscriptions a subject reaches: every plain one, and each queue group's members (one of
/// which gets the message).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Matches<K> {
    /// Subscriptions without a queue group: each gets every message.
    pub plain: Vec<K>,
    /// Queue groups and their members: each group gets every message once.
    pub groups: BTreeMap<Arc<str>, Vec<K>>,
}

impl<K> Matches<K> {
    /// True if nobody is subscribed: a publish there costs a lookup and nothing else.
    pub fn is_empty(&self) -> bool {
        self.plain.is_empty() && self.groups.is_empty()
    }
}

#[derive(Debug, Clone)]
struct Entry<K> {
    id: K,
    queue: Option<Arc<str>>,
}

#[derive(Debug)]
struct Node<K> {
    literal: HashMap<Box<str>, Node<K>>,
    one: Option<Box<Node<K>>>,
    /// Patterns that end in `>` here.
    rest: Vec<Entry<K>>,
    /// Patterns that end here.
    here: Vec<Entry<K>>,
}

impl<K> Default for Node<K> {
    fn default() -> Self {
        Self {
            literal: HashMap::new(),
            one: None,
            rest: Vec::new(),
            here: Vec::new(),
        }
    }
}

impl<K> Node<K> {
    fn is_empty(&self) -> bool {
        self.literal.is_empty()
            && self.one.is_none()
            && self.rest.is_empty()
            && self.here.is_empty()
    }
}

/// Subscriptions by pattern, keyed by `K`, one pattern and queue group per key (a local
/// subscription id, or a (node, subscription) pair).
#[derive(Debug)]
pub struct Table<K> {
    root: Node<K>,
    patterns: HashMap<K, (Pattern, Option<Arc<str>>)>,
}

impl<K> Default for Table<K> {
    fn default() -> Self {
        Self {
            root: Node::default(),
            patterns: HashMap::new(),
        }
    }
}

impl<K: Clone + Eq + Hash> Table<K> {
    /// Subscribes `id` to `pattern`, in `queue` if given. False if `id` is already subscribed.
    pub fn insert(&mut self, id: K, pattern: Pattern, queue: Option<&str>) -> bool {
        if self.patterns.contains_key(&id) {
            return false;
        }
        let queue: Option<Arc<str>> = queue.map(Into::into);
        let mut node = &mut self.root;
        let mut ends_in_rest = false;
        for token in pattern.tokens() {
            node = match token {
                Token::Literal(l) => node.literal.entry(l.into()).or_default(),
                Token::One => node.one.get_or_insert_with(Default::default),
                Token::Rest => {
                    ends_in_rest = true;
                    break;
                }
            };
        }
        let entry = Entry {
            id: id.clone(),
            queue: queue.clone(),
        };
        if ends_in_rest {
            node.rest.push(entry);
        } else {
            node.here.push(entry);
        }
        self.patterns.insert(id, (pattern, queue));
        true
    }

    /// Unsubscribes `id`; false if it was not subscribed.
    pub fn remove(&mut self, id: &K) -> bool {
        let Some((pattern, _)) = self.patterns.remove(id) else {
            return false;
        };
        let tokens: Vec<Token<'_>> = pattern.tokens().collect();
        remove_in(&mut self.root, &tokens, id);
        true
    }

    /// The subscriptions a message published to `subject` reaches.
    pub fn matches(&self, subject: &Subject) -> Matches<K> {
        let tokens: Vec<&str> = subject.tokens().collect();
        let mut found = Matches {
            plain: Vec::new(),
            groups: BTreeMap::new(),
        };
        collect(&self.root, &tokens, &mut found);
        found
    }

    /// How many subscriptions it holds.
    pub fn len(&self) -> usize {
        self.patterns.len()
    }

    /// True if it holds none.
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// Every subscription: id, pattern, queue group.
    pub fn iter(&self) -> impl Iterator<Item = (&K, &Pattern, Option<&str>)> {
        self.patterns
            .iter()
            .map(|(id, (pattern, queue))| (id, pattern, queue.as_deref()))
    }
}

fn add<K: Clone>(entries: &[Entry<K>], found: &mut Matches<K>) {
    for entry in entries {
        match &entry.queue {
            None => found.plain.push(entry.id.clone()),
            Some(group) => found
                .groups
                .entry(group.clone())
                .or_default()
                .push(entry.id.clone()),
        }
    }
}

fn collect<K: Clone>(node: &Node<K>, tokens: &[&str], found: &mut Matches<K>) {
    let Some((first, rest)) = tokens.split_first() else {
        add(&node.here, found);
        return;
    };
    // `>` here takes this token and everything after it.
    add(&node.rest, found);
    if let Some(next) = node.literal.get(*first) {
        collect(next, rest, found);
    }
    if let Some(next) = &node.one {
        collect(next, rest, found);
    }
}

/// Removes `id` under the path of `tokens`, pruning nodes left empty. True if `node` is empty.
fn remove_in<K: Eq>(node: &mut Node<K>, tokens: &[Token<'_>], id: &K) -> bool {
    match tokens.split_first() {
        None => node.here.retain(|e| &e.id != id),
        Some((Token::Rest, _)) => node.rest.retain(|e| &e.id != id),
        Some((Token::Literal(l), rest)) => {
            if let Some(child) = node.literal.get_mut(*l) {
                if remove_in(child, rest, id) {
                    node.literal.remove(*l);
                }
            }
        }
        Some((Token::One, rest)) => {
            if let Some(child) = node.one.as_deref_mut() {
                if remove_in(child, rest, id) {
                    node.one = None;
                }
            }
        }
    }
    node.is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(subs: &[(u32, &str, Option<&str>)]) -> Table<u32> {
        let mut t = Table::default();
        for (id, pattern, queue) in subs {
            assert!(t.insert(*id, Pattern::new(*pattern).unwrap(), *queue));
        }
        t
    }

    fn plain(t: &Table<u32>, subject: &str) -> Vec<u32> {
        let mut ids = t.matches(&Subject::new(subject).unwrap()).plain;
        ids.sort();
        ids
    }

    #[test]
    fn a_subject_reaches_exact_one_token_and_rest_patterns() {
        let t = table(&[
            (1, "orders.created", None),
            (2, "orders.*", None),
            (3, "orders.>", None),
            (4, "*.created", None),
            (5, ">", None),
            (6, "payments.*", None),
        ]);
        assert_eq!(plain(&t, "orders.created"), vec![1, 2, 3, 4, 5]);
        assert_eq!(plain(&t, "orders.created.eu"), vec![3, 5]);
        assert_eq!(plain(&t, "orders"), vec![5]);
        assert_eq!(plain(&t, "payments.failed"), vec![5, 6]);
        assert!(table(&[(1, "a.b", None)])
            .matches(&Subject::new("x").unwrap())
            .is_empty());
    }

    #[test]
    fn queue_groups_are_listed_apart_from_plain_subscriptions() {
        let t = table(&[
            (1, "orders.*", Some("billing")),
            (2, "orders.>", Some("billing")),
            (3, "orders.created", Some("audit")),
            (4, "orders.created", None),
        ]);
        let m = t.matches(&Subject::new("orders.created").unwrap());
        assert_eq!(m.plain, vec![4]);
        let mut billing = m.groups["billing"].clone();
        billing.sort();
        assert_eq!(billing, vec![1, 2]);
        assert_eq!(m.groups["audit"], vec![3]);
    }

    #[test]
    fn removing_stops_matches_and_prunes_the_trie() {
        let mut t = table(&[(1, "a.*.c", None), (2, "a.>", None)]);
        assert!(
            !t.insert(1, Pattern::new("x").unwrap(), None),
            "ids are unique"
        );
        assert!(t.remove(&1));
        assert!(!t.remove(&1));
        assert_eq!(plain(&t, "a.b.c"), vec![2]);
        assert!(t.remove(&2));
        assert!(t.is_empty());
        assert!(t.root.is_empty(), "no empty nodes left behind");
    }
}
