//! The embedded medium: an in-process router, no network, no configuration.
//!
//! Subscriptions are kept in a table: concrete channels in a hash map (one
//! lookup per wave), patterns in a list checked with
//! [`Channel::matches`](crate::Channel::matches). A wave is offered to each
//! matching receive queue once, however many of that vibrator's patterns
//! match; a group gets it once, at its next member in turn.

use std::sync::{
    Arc, RwLock,
    atomic::{AtomicU64, AtomicUsize, Ordering},
};

use rustc_hash::FxHashMap;
use smallvec::SmallVec;
use smol_str::SmolStr;

use super::{Listener, Routed, SubscriptionId};
use crate::{
    Channel, Wave,
    inbox::{Inbox, Offer},
    reply::ReplyMux,
    stats::{Counters, DropReason},
};

#[derive(Default)]
pub(crate) struct EmbeddedMedium {
    table: RwLock<Table>,
    next_id: AtomicU64,
}

#[derive(Default)]
struct Table {
    exact: FxHashMap<SmolStr, Vec<Target>>,
    patterns: Vec<(Channel, Target)>,
}

enum Target {
    Inbox(SubscriptionId, Arc<Inbox>),
    Replies(SubscriptionId, Arc<ReplyMux>),
    Group {
        name: Arc<str>,
        members: Vec<(SubscriptionId, Arc<Inbox>)>,
        next: AtomicUsize,
    },
}

impl Target {
    /// Removes the subscriptions in `ids`; `false` when nothing is left.
    fn retain(&mut self, ids: &[SubscriptionId]) -> bool {
        match self {
            Target::Inbox(id, _) | Target::Replies(id, _) => !ids.contains(id),
            Target::Group { members, .. } => {
                members.retain(|(id, _)| !ids.contains(id));
                !members.is_empty()
            }
        }
    }
}

enum Recipient<'a> {
    Inbox(&'a Arc<Inbox>),
    Replies(&'a Arc<ReplyMux>),
}

impl EmbeddedMedium {
    pub(crate) fn subscribe(&self, pattern: Channel, listener: Listener) -> SubscriptionId {
        let id = SubscriptionId(self.next_id.fetch_add(1, Ordering::Relaxed));
        let mut table = self.table.write().unwrap_or_else(|e| e.into_inner());
        let Table { exact, patterns } = &mut *table;
        let targets: Vec<&mut Target> = if pattern.is_pattern() {
            patterns
                .iter_mut()
                .filter(|(p, _)| *p == pattern)
                .map(|(_, t)| t)
                .collect()
        } else {
            exact
                .get_mut(pattern.as_str())
                .map(|ts| ts.iter_mut().collect())
                .unwrap_or_default()
        };
        let new_target = match listener {
            Listener::Inbox(inbox) => Target::Inbox(id, inbox),
            Listener::Replies(mux) => Target::Replies(id, mux),
            Listener::Group(name, inbox) => {
                // Join the group if it already listens on this pattern.
                for target in targets {
                    if let Target::Group {
                        name: existing,
                        members,
                        ..
                    } = target
                    {
                        if *existing == name {
                            members.push((id, inbox));
                            return id;
                        }
                    }
                }
                Target::Group {
                    name,
                    members: vec![(id, inbox)],
                    next: AtomicUsize::new(0),
                }
            }
        };
        if pattern.is_pattern() {
            patterns.push((pattern, new_target));
        } else {
            exact
                .entry(SmolStr::new(pattern.as_str()))
                .or_default()
                .push(new_target);
        }
        id
    }

    pub(crate) fn unsubscribe(&self, ids: &[SubscriptionId]) {
        if ids.is_empty() {
            return;
        }
        let mut table = self.table.write().unwrap_or_else(|e| e.into_inner());
        table.exact.retain(|_, targets| {
            targets.retain_mut(|t| t.retain(ids));
            !targets.is_empty()
        });
        table.patterns.retain_mut(|(_, t)| t.retain(ids));
    }

    /// Offers `wave` to every matching listener, counting in `stats`.
    #[inline]
    pub(crate) fn route(&self, wave: Wave, stats: &Counters) -> Routed {
        let table = self.table.read().unwrap_or_else(|e| e.into_inner());
        let mut recipients: SmallVec<[Recipient<'_>; 4]> = SmallVec::new();
        if let Some(targets) = table.exact.get(wave.channel().as_str()) {
            for target in targets {
                visit(&mut recipients, target);
            }
        }
        for (pattern, target) in &table.patterns {
            if wave.channel().matches(pattern) {
                visit(&mut recipients, target);
            }
        }
        let matched = recipients.len();
        let Some(last) = recipients.pop() else {
            stats.unrouted();
            return Routed { matched };
        };
        for recipient in recipients {
            deliver(recipient, wave.clone(), stats);
        }
        deliver(last, wave, stats);
        Routed { matched }
    }
}

fn visit<'a>(recipients: &mut SmallVec<[Recipient<'a>; 4]>, target: &'a Target) {
    match target {
        Target::Inbox(_, inbox) => add_inbox(recipients, inbox),
        Target::Replies(_, mux) => recipients.push(Recipient::Replies(mux)),
        Target::Group { members, next, .. } => {
            let turn = next.fetch_add(1, Ordering::Relaxed) % members.len();
            add_inbox(recipients, &members[turn].1);
        }
    }
}

fn add_inbox<'a>(recipients: &mut SmallVec<[Recipient<'a>; 4]>, inbox: &'a Arc<Inbox>) {
    let seen = recipients
        .iter()
        .any(|r| matches!(r, Recipient::Inbox(i) if Arc::ptr_eq(i, inbox)));
    if !seen {
        recipients.push(Recipient::Inbox(inbox));
    }
}

#[inline]
fn deliver(recipient: Recipient<'_>, wave: Wave, stats: &Counters) {
    match recipient {
        Recipient::Inbox(inbox) => match inbox.offer(wave) {
            Offer::Queued => stats.delivered(),
            Offer::QueuedShedding => {
                stats.delivered();
                stats.dropped(DropReason::QueueFull);
            }
            Offer::Dropped(reason) => stats.dropped(reason),
            Offer::SkippedOwn | Offer::Closed => {}
        },
        Recipient::Replies(mux) => {
            if mux.complete(wave) {
                stats.delivered();
            } else {
                stats.unrouted();
            }
        }
    }
}
