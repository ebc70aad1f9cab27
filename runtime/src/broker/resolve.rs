//! Which subscriptions a subject reaches, cached per subject: a publish to a subject seen
//! before costs one map lookup and two version checks, not a walk of the wildcard tables.
//!
//! A cached route is valid while the gossip view it was built from is the current one and this
//! node's subscriptions have not changed; either change rebuilds it on the next publish.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use colony_actors::broker::{Subject, SubjectError};
use dashmap::DashMap;

use super::local::LocalSubscriptions;
use super::routes::RemoteSubscription;
use super::subscription::LocalSubscription;
use crate::membership::{Registry, SharedView};

/// Subjects cached at most; past it the cache starts over (publishers to ever-new subjects
/// must not grow it without bound).
const MAX_ROUTES: usize = 4096;

/// One subscription a publish reaches.
pub(super) enum Target<'v> {
    Local(Arc<LocalSubscription>),
    Remote(&'v RemoteSubscription),
}

impl Target<'_> {
    pub(super) fn at_least_once(&self) -> bool {
        match self {
            Target::Local(s) => s.terms.redelivery.is_some(),
            Target::Remote(s) => s.redelivery.is_some(),
        }
    }
}

#[derive(Clone)]
enum Member {
    Local(Arc<LocalSubscription>),
    /// An index into the view's cluster subscriptions.
    Remote(usize),
}

/// Where a subject's events go, for one view and one set of local subscriptions.
pub(super) struct Route {
    pub(super) subject: Subject,
    view: SharedView,
    local_version: u64,
    plain: Vec<Member>,
    groups: Vec<(Arc<str>, Vec<Member>)>,
}

impl Route {
    fn build(subject: Subject, view: SharedView, local: &LocalSubscriptions, node: &str) -> Self {
        let local_version = local.version();
        let mut plain = Vec::new();
        let mut groups: BTreeMap<Arc<str>, Vec<Member>> = BTreeMap::new();
        let found = local.matches(&subject);
        let member = |id: &u64| local.get(*id).map(Member::Local);
        plain.extend(found.plain.iter().filter_map(member));
        for (group, members) in found.groups {
            groups
                .entry(group)
                .or_default()
                .extend(members.iter().filter_map(member));
        }
        let (remote, remote_groups) = view.subscriptions.matches(&subject, node);
        plain.extend(remote.into_iter().map(Member::Remote));
        for (group, members) in remote_groups {
            groups
                .entry(group)
                .or_default()
                .extend(members.into_iter().map(Member::Remote));
        }
        Self {
            subject,
            view,
            local_version,
            plain,
            groups: groups.into_iter().filter(|(_, m)| !m.is_empty()).collect(),
        }
    }

    fn target(&self, member: &Member) -> Target<'_> {
        match member {
            Member::Local(sub) => Target::Local(sub.clone()),
            Member::Remote(i) => Target::Remote(self.view.subscriptions.get(*i)),
        }
    }

    /// True if nobody is subscribed.
    pub(super) fn is_empty(&self) -> bool {
        self.plain.is_empty() && self.groups.is_empty()
    }

    /// Every plain subscription, and one member of each queue group, turning by `rotation`.
    pub(super) fn targets(&self, rotation: &AtomicU64) -> Vec<Target<'_>> {
        let mut targets: Vec<Target<'_>> = self.plain.iter().map(|m| self.target(m)).collect();
        for (_, members) in &self.groups {
            let turn = rotation.fetch_add(1, Ordering::Relaxed) as usize % members.len();
            targets.push(self.target(&members[turn]));
        }
        targets
    }

    /// The one subscription a publish reaches, when it reaches exactly one (one plain
    /// subscription, or one queue group's pick).
    pub(super) fn single(&self, rotation: &AtomicU64) -> Option<Target<'_>> {
        match (self.plain.as_slice(), self.groups.as_slice()) {
            ([only], []) => Some(self.target(only)),
            ([], [(_, members)]) => {
                let turn = rotation.fetch_add(1, Ordering::Relaxed) as usize % members.len();
                Some(self.target(&members[turn]))
            }
            _ => None,
        }
    }

    /// The plain subscriptions only.
    pub(super) fn plain(&self) -> impl Iterator<Item = Target<'_>> {
        self.plain.iter().map(|m| self.target(m))
    }

    /// Every member of queue group `group`.
    pub(super) fn group(&self, group: &str) -> Vec<Target<'_>> {
        self.groups
            .iter()
            .filter(|(g, _)| &**g == group)
            .flat_map(|(_, members)| members.iter().map(|m| self.target(m)))
            .collect()
    }
}

/// Routes by subject.
#[derive(Default)]
pub(super) struct Routes {
    by_subject: DashMap<Box<str>, Arc<Route>>,
}

impl Routes {
    /// The route of `subject` now: cached if still valid, else built (and the subject checked).
    pub(super) fn get(
        &self,
        subject: &str,
        registry: &Registry,
        local: &LocalSubscriptions,
        node: &str,
    ) -> Result<Arc<Route>, SubjectError> {
        if let Some(route) = self.by_subject.get(subject) {
            if registry.is_current(&route.view) && route.local_version == local.version() {
                return Ok(route.clone());
            }
        }
        let route = Arc::new(Route::build(
            Subject::new(subject)?,
            registry.current(),
            local,
            node,
        ));
        if self.by_subject.len() >= MAX_ROUTES {
            self.by_subject.clear();
        }
        self.by_subject.insert(subject.into(), route.clone());
        Ok(route)
    }
}
