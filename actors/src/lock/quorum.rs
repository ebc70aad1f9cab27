//! The acquirer's side: counting the replicas' answers until a majority decides.

use std::time::Duration;

use super::table::{Owner, Renewal, Vote};

/// Votes needed among `replicas`: a strict majority.
pub fn majority(replicas: usize) -> usize {
    replicas / 2 + 1
}

/// Why an acquisition was not granted this round.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Another owner holds the key (the longest-running lease reported).
    Held {
        /// Its holder.
        owner: Owner,
        /// Its token.
        token: u64,
        /// How long it runs on at the replica that reported it.
        remaining: Duration,
    },
    /// Too many replicas are new to the key (see the quarantine rule).
    Quarantined {
        /// The shortest wait reported.
        remaining: Duration,
    },
    /// Too many replicas could not be reached, see no majority of the cluster, are not the
    /// key's replicas in their own view, or are full.
    Unavailable {
        /// What the last of them said.
        reason: String,
    },
    /// The replicas split their votes between acquirers; nobody has a majority.
    Split,
}

/// What one replica answered, as the acquirer sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// The replica voted.
    Vote(Vote),
    /// The replica refused to vote, or could not be reached.
    Failed(String),
}

/// A round's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// A majority granted. `token` is the largest proposed; `confirm` lists the granters
    /// (by index) that proposed less and must be told.
    Granted {
        /// The lease's fencing token.
        token: u64,
        /// Granters to confirm the token with.
        confirm: Vec<usize>,
        /// Every granter, by index.
        granters: Vec<usize>,
    },
    /// No majority can grant this round; `granters` should be released.
    Refused {
        /// Why.
        refusal: Refusal,
        /// Replicas that granted anyway, by index.
        granters: Vec<usize>,
    },
}

/// The answers to one acquisition round, from `replicas` replicas.
#[derive(Debug)]
pub struct Tally {
    replicas: usize,
    granted: Vec<(usize, u64)>,
    /// A granter created the key's state: wait for every answer, and refuse if any replica
    /// reports a running lease or does not vote.
    created: bool,
    answered: usize,
    /// Replicas that did not vote (unreachable, no majority in sight, not a replica).
    silent: usize,
    others: usize,
    held: Option<(Owner, u64, Duration)>,
    quarantined: Option<Duration>,
    failed: Option<String>,
}

impl Tally {
    /// A round asking `replicas` replicas.
    pub fn new(replicas: usize) -> Self {
        Self {
            replicas,
            granted: Vec::new(),
            created: false,
            answered: 0,
            silent: 0,
            others: 0,
            held: None,
            quarantined: None,
            failed: None,
        }
    }

    /// Replica `index` answered; returns the decision once one is certain.
    pub fn add(&mut self, index: usize, answer: Answer) -> Option<Decision> {
        self.answered += 1;
        match answer {
            Answer::Vote(Vote::Granted { token }) => self.granted.push((index, token)),
            Answer::Vote(Vote::Created { token }) => {
                self.created = true;
                self.granted.push((index, token));
            }
            Answer::Vote(Vote::Held {
                owner,
                token,
                remaining,
            }) => {
                self.others += 1;
                if self.held.as_ref().is_none_or(|h| remaining > h.2) {
                    self.held = Some((owner, token, remaining));
                }
            }
            Answer::Vote(Vote::Quarantined { remaining }) => {
                self.others += 1;
                self.quarantined = Some(self.quarantined.map_or(remaining, |q| q.min(remaining)));
            }
            Answer::Vote(Vote::Full) => {
                self.others += 1;
                self.failed = Some("the replica's lock table is full".into());
            }
            Answer::Vote(Vote::Withdrawn) => {
                self.others += 1;
                self.failed = Some("the acquisition was released before it arrived".into());
            }
            Answer::Failed(reason) => {
                self.others += 1;
                self.silent += 1;
                self.failed = Some(reason);
            }
        }
        self.decision()
    }

    fn decision(&self) -> Option<Decision> {
        let need = majority(self.replicas);
        let granters: Vec<usize> = self.granted.iter().map(|g| g.0).collect();
        // A majority that includes a replica new to the key is not enough while another
        // replica may still report a running lease (it knows what the new one cannot: a holder
        // renewing through replicas that have not yet seen this membership). So such a grant
        // counts only once every replica has voted and none reports a lease; a replica that
        // cannot be heard blocks it (until the failure detector takes a dead one out of the
        // view, and so out of the key's replicas).
        let heard_all = self.answered >= self.replicas;
        let objection = self.held.is_some() || self.silent > 0;
        if self.created && self.granted.len() >= need && !heard_all && !objection {
            return None;
        }
        if self.granted.len() >= need && !(self.created && objection) {
            let token = self.granted.iter().map(|g| g.1).max().unwrap_or(0);
            let confirm = self
                .granted
                .iter()
                .filter(|g| g.1 != token)
                .map(|g| g.0)
                .collect();
            return Some(Decision::Granted {
                token,
                confirm,
                granters,
            });
        }
        if self.replicas - self.others >= need && !(self.created && objection) {
            return None;
        }
        // Not enough replicas left to grant: name the reason that matters most to the caller.
        let refusal = if let Some((owner, token, remaining)) = &self.held {
            Refusal::Held {
                owner: owner.clone(),
                token: *token,
                remaining: *remaining,
            }
        } else if let Some(remaining) = self.quarantined {
            Refusal::Quarantined { remaining }
        } else if let Some(reason) = &self.failed {
            Refusal::Unavailable {
                reason: reason.clone(),
            }
        } else {
            Refusal::Split
        };
        Some(Decision::Refused { refusal, granters })
    }
}

/// The answers to one renewal round.
#[derive(Debug)]
pub struct RenewTally {
    replicas: usize,
    renewed: usize,
    taken: Option<Owner>,
    taken_count: usize,
    other: usize,
}

/// A renewal round's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Renewed {
    /// A majority extended the lease.
    Yes,
    /// A majority says another owner holds the key: the lease is over.
    Lost {
        /// The new holder.
        owner: Owner,
    },
    /// Neither: try again while the lease lasts.
    Undecided,
}

impl RenewTally {
    /// A round asking `replicas` replicas.
    pub fn new(replicas: usize) -> Self {
        Self {
            replicas,
            renewed: 0,
            taken: None,
            taken_count: 0,
            other: 0,
        }
    }

    /// One replica's answer (`None`: it failed); returns the outcome once certain.
    pub fn add(&mut self, answer: Option<Renewal>) -> Option<Renewed> {
        match answer {
            Some(Renewal::Renewed) => self.renewed += 1,
            Some(Renewal::Taken { owner }) => {
                self.taken_count += 1;
                self.taken = Some(owner);
            }
            Some(Renewal::Unknown) | None => self.other += 1,
        }
        let need = majority(self.replicas);
        if self.renewed >= need {
            return Some(Renewed::Yes);
        }
        if self.taken_count >= need {
            return self.taken.clone().map(|owner| Renewed::Lost { owner });
        }
        if self.renewed + self.taken_count + self.other >= self.replicas {
            return Some(Renewed::Undecided);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner(id: u64) -> Owner {
        Owner {
            node: "x".into(),
            id,
        }
    }

    #[test]
    fn two_of_three_grant_and_the_largest_token_wins() {
        let mut t = Tally::new(3);
        assert_eq!(t.add(0, Answer::Vote(Vote::Granted { token: 7 })), None);
        assert_eq!(
            t.add(2, Answer::Vote(Vote::Granted { token: 9 })),
            Some(Decision::Granted {
                token: 9,
                confirm: vec![0],
                granters: vec![0, 2]
            })
        );
    }

    #[test]
    fn a_holder_on_two_replicas_refuses_with_its_name() {
        let mut t = Tally::new(3);
        assert_eq!(t.add(0, Answer::Vote(Vote::Granted { token: 3 })), None);
        let held = Vote::Held {
            owner: owner(1),
            token: 2,
            remaining: Duration::from_secs(4),
        };
        assert_eq!(t.add(1, Answer::Vote(held.clone())), None);
        match t.add(2, Answer::Vote(held)) {
            Some(Decision::Refused {
                refusal: Refusal::Held { owner: o, .. },
                granters,
            }) => {
                assert_eq!(o, owner(1));
                assert_eq!(granters, vec![0]);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_majority_of_new_replicas_waits_for_the_last_and_yields_to_a_running_lease() {
        let held = Vote::Held {
            owner: owner(1),
            token: 9,
            remaining: Duration::from_millis(500),
        };
        // Two replicas create the key; the third still sees another's lease: refused.
        let mut t = Tally::new(3);
        assert_eq!(t.add(0, Answer::Vote(Vote::Created { token: 20 })), None);
        assert_eq!(t.add(1, Answer::Vote(Vote::Created { token: 20 })), None);
        assert!(matches!(
            t.add(2, Answer::Vote(held.clone())),
            Some(Decision::Refused {
                refusal: Refusal::Held { .. },
                ..
            })
        ));
        // The Held answer first: refused as soon as a creation comes.
        let mut t = Tally::new(3);
        assert_eq!(t.add(2, Answer::Vote(held)), None);
        assert_eq!(t.add(0, Answer::Vote(Vote::Granted { token: 10 })), None);
        assert!(matches!(
            t.add(1, Answer::Vote(Vote::Created { token: 20 })),
            Some(Decision::Refused { .. })
        ));
        // The third cannot be heard: it might know a lease, so no grant yet.
        let mut t = Tally::new(3);
        assert_eq!(t.add(0, Answer::Vote(Vote::Created { token: 20 })), None);
        assert_eq!(t.add(1, Answer::Vote(Vote::Granted { token: 10 })), None);
        assert!(matches!(
            t.add(2, Answer::Failed("down".into())),
            Some(Decision::Refused {
                refusal: Refusal::Unavailable { .. },
                ..
            })
        ));
        // Nobody objects: granted once every answer is in.
        let mut t = Tally::new(3);
        assert_eq!(t.add(0, Answer::Vote(Vote::Created { token: 20 })), None);
        assert_eq!(t.add(1, Answer::Vote(Vote::Granted { token: 10 })), None);
        assert!(matches!(
            t.add(
                2,
                Answer::Vote(Vote::Quarantined {
                    remaining: Duration::from_secs(1)
                })
            ),
            Some(Decision::Granted { token: 20, .. })
        ));
    }

    #[test]
    fn unreachable_replicas_refuse_once_a_majority_is_impossible() {
        let mut t = Tally::new(3);
        assert_eq!(t.add(0, Answer::Failed("down".into())), None);
        assert!(matches!(
            t.add(1, Answer::Failed("down".into())),
            Some(Decision::Refused {
                refusal: Refusal::Unavailable { .. },
                ..
            })
        ));
    }

    #[test]
    fn one_replica_decides_alone() {
        let mut t = Tally::new(1);
        assert!(matches!(
            t.add(0, Answer::Vote(Vote::Granted { token: 1 })),
            Some(Decision::Granted { token: 1, .. })
        ));
    }

    #[test]
    fn renewal_needs_a_majority_and_loses_to_a_majority_of_takers() {
        let mut r = RenewTally::new(3);
        assert_eq!(r.add(Some(Renewal::Renewed)), None);
        assert_eq!(r.add(Some(Renewal::Renewed)), Some(Renewed::Yes));
        let mut r = RenewTally::new(3);
        let taken = Renewal::Taken { owner: owner(2) };
        assert_eq!(r.add(Some(taken.clone())), None);
        assert_eq!(r.add(Some(taken)), Some(Renewed::Lost { owner: owner(2) }));
        let mut r = RenewTally::new(3);
        r.add(None);
        r.add(Some(Renewal::Renewed));
        assert_eq!(r.add(Some(Renewal::Unknown)), Some(Renewed::Undecided));
    }
}
