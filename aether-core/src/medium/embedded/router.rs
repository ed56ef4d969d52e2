//! The embedded medium's router: which receive queues hear a channel.
//!
//! Subscriptions are kept in a table: concrete channels in a hash map (one
//! lookup per wave), patterns in a list checked with
//! [`Channel::matches`](crate::Channel::matches). A wave is offered to each
//! matching receive queue once, however many of that vibrator's patterns
//! match; a group gets it once, at its next member in turn.

use std::sync::{
    Arc, Mutex,
    atomic::{AtomicU64, AtomicUsize, Ordering},
};

use arc_swap::ArcSwap;
use rustc_hash::FxHashMap;
use smallvec::SmallVec;
use smol_str::SmolStr;

use crate::medium::{Listener, SubscriptionId, offer_counted};
use crate::{
    Channel, Wave, hopping::gate::HopGate, inbox::Inbox, reply::ReplyMux, stats::Counters,
};

/// The routing table is read on every emit and changed only when someone
/// resonates or stops: emitters read an immutable snapshot without any lock
/// or shared write, and a change copies the table and swaps the copy in.
#[derive(Default)]
pub(crate) struct Router {
    table: ArcSwap<Table>,
    /// Serializes changes (copy, change, swap), so none is lost.
    writer: Mutex<()>,
    next_id: AtomicU64,
}

#[derive(Clone, Default)]
struct Table {
    exact: FxHashMap<SmolStr, Vec<Target>>,
    /// Each distinct pattern once, so a wave is matched against it once
    /// however many vibrators resonate on it.
    patterns: Vec<(Channel, Vec<Target>)>,
}

#[derive(Clone)]
enum Target {
    Inbox(SubscriptionId, Arc<Inbox>),
    Replies(SubscriptionId, Arc<ReplyMux>),
    Group(Arc<Group>),
    Hopping(SubscriptionId, Arc<HopGate>),
}

/// A group's members on one pattern; each wave goes to the next in turn.
struct Group {
    name: Arc<str>,
    members: Vec<(SubscriptionId, Arc<Inbox>)>,
    next: AtomicUsize,
}

impl Group {
    /// A copy with `members` (a table change makes a new group).
    fn with_members(&self, members: Vec<(SubscriptionId, Arc<Inbox>)>) -> Group {
        Group {
            name: self.name.clone(),
            members,
            next: AtomicUsize::new(self.next.load(Ordering::Relaxed)),
        }
    }
}

impl Target {
    /// Removes the subscriptions in `ids`; `None` when nothing is left.
    fn without(self, ids: &[SubscriptionId]) -> Option<Target> {
        match self {
            Target::Inbox(id, _) | Target::Replies(id, _) | Target::Hopping(id, _)
                if ids.contains(&id) =>
            {
                None
            }
            Target::Group(group) if group.members.iter().any(|(id, _)| ids.contains(id)) => {
                let members: Vec<_> = group
                    .members
                    .iter()
                    .filter(|(id, _)| !ids.contains(id))
                    .cloned()
                    .collect();
                (!members.is_empty()).then(|| Target::Group(Arc::new(group.with_members(members))))
            }
            kept => Some(kept),
        }
    }
}

enum Recipient<'a> {
    Inbox(&'a Arc<Inbox>),
    Replies(&'a Arc<ReplyMux>),
    Hopping(&'a Arc<HopGate>),
}

impl Router {
    /// Copies the table, lets `change` edit the copy, and swaps it in.
    fn change<R>(&self, change: impl FnOnce(&mut Table) -> R) -> R {
        let _writer = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let mut table = Table::clone(&self.table.load());
        let result = change(&mut table);
        self.table.store(Arc::new(table));
        result
    }

    pub(crate) fn subscribe(&self, pattern: Channel, listener: Listener) -> SubscriptionId {
        let id = SubscriptionId(self.next_id.fetch_add(1, Ordering::Relaxed));
        self.change(|table| {
            let targets = if pattern.is_pattern() {
                match table.patterns.iter().position(|(p, _)| *p == pattern) {
                    Some(i) => &mut table.patterns[i].1,
                    None => {
                        table.patterns.push((pattern, Vec::new()));
                        &mut table.patterns.last_mut().expect("pushed").1
                    }
                }
            } else {
                table
                    .exact
                    .entry(SmolStr::new(pattern.as_str()))
                    .or_default()
            };
            let new_target = match listener {
                Listener::Inbox(inbox) => Target::Inbox(id, inbox),
                Listener::Replies(mux) => Target::Replies(id, mux),
                Listener::Hopping(gate) => Target::Hopping(id, gate),
                Listener::Group(name, inbox) => {
                    // Join the group if it already listens on this pattern.
                    let existing = targets.iter_mut().find_map(|t| match t {
                        Target::Group(group) if group.name == name => Some(group),
                        _ => None,
                    });
                    if let Some(group) = existing {
                        let mut members = group.members.clone();
                        members.push((id, inbox));
                        *group = Arc::new(group.with_members(members));
                        return;
                    }
                    Target::Group(Arc::new(Group {
                        name,
                        members: vec![(id, inbox)],
                        next: AtomicUsize::new(0),
                    }))
                }
            };
            targets.push(new_target);
        });
        id
    }

    pub(crate) fn unsubscribe(&self, ids: &[SubscriptionId]) {
        if ids.is_empty() {
            return;
        }
        self.change(|table| {
            let keep = |targets: &mut Vec<Target>| {
                *targets = std::mem::take(targets)
                    .into_iter()
                    .filter_map(|t| t.without(ids))
                    .collect();
                !targets.is_empty()
            };
            table.exact.retain(|_, targets| keep(targets));
            table.patterns.retain_mut(|(_, targets)| keep(targets));
        });
    }

    /// Offers `wave` to every matching listener, counting in `stats`: how
    /// many receive queues and reply waiters matched.
    #[inline(always)]
    pub(crate) fn route(&self, wave: Wave, stats: &Counters) -> usize {
        let table = self.table.load();
        let mut recipients = table.recipients(wave.channel());
        let matched = recipients.len();
        let Some(last) = recipients.pop() else {
            stats.unrouted();
            return matched;
        };
        let shared = !recipients.is_empty();
        for recipient in recipients {
            deliver(recipient, wave.clone(), shared, stats);
        }
        deliver(last, wave, shared, stats);
        matched
    }

    /// Offers a durable wave to every matching receive queue, counting in
    /// `stats`: how many queued it (none: it waits in the durable outbox,
    /// uncounted as unrouted).
    pub(crate) fn route_durable(&self, wave: Wave, stats: &Counters) -> usize {
        let table = self.table.load();
        let mut recipients = table.recipients(wave.channel());
        let Some(last) = recipients.pop() else {
            return 0;
        };
        let shared = !recipients.is_empty();
        let mut queued = 0;
        let mut offer = |recipient: Recipient<'_>, wave: Wave| match recipient {
            Recipient::Inbox(inbox) => {
                inbox.note_shared(shared);
                queued += usize::from(offer_counted(inbox, wave, stats).queued);
            }
            other => deliver(other, wave, shared, stats),
        };
        for recipient in recipients {
            offer(recipient, wave.clone());
        }
        offer(last, wave);
        queued
    }

    /// Offers `wave` to every listener of `routing`, which may be another
    /// channel than the wave's own (a reflection travels on its source's
    /// reflection channel), counting in `stats`; gives the wave back,
    /// uncounted, when nobody listens (a diffracting wave then bends).
    pub(crate) fn route_on(&self, routing: &Channel, wave: Wave, stats: &Counters) -> Reached {
        let table = self.table.load();
        let mut recipients = table.recipients(routing);
        let Some(last) = recipients.pop() else {
            return Reached::Nobody(wave);
        };
        let shared = !recipients.is_empty();
        for recipient in recipients {
            deliver(recipient, wave.clone(), shared, stats);
        }
        deliver(last, wave, shared, stats);
        Reached::Listeners
    }
}

/// Whom [`Router::route_on`] reached.
pub(crate) enum Reached {
    /// At least one listener.
    Listeners,
    /// Nobody: the wave, given back.
    Nobody(Wave),
}

impl Table {
    /// Who hears a wave on `channel`: each receive queue once, a group's
    /// next member, reply waiters and hopping gates.
    #[inline]
    fn recipients(&self, channel: &Channel) -> SmallVec<[Recipient<'_>; 4]> {
        let mut recipients = SmallVec::new();
        if let Some(targets) = self.exact.get(channel.as_str()) {
            for target in targets {
                visit(&mut recipients, target);
            }
        }
        for (pattern, targets) in &self.patterns {
            if channel.matches(pattern) {
                for target in targets {
                    visit(&mut recipients, target);
                }
            }
        }
        recipients
    }
}

fn visit<'a>(recipients: &mut SmallVec<[Recipient<'a>; 4]>, target: &'a Target) {
    match target {
        Target::Inbox(_, inbox) => add_inbox(recipients, inbox),
        Target::Replies(_, mux) => recipients.push(Recipient::Replies(mux)),
        Target::Hopping(_, gate) => recipients.push(Recipient::Hopping(gate)),
        Target::Group(group) => {
            let turn = group.next.fetch_add(1, Ordering::Relaxed) % group.members.len();
            add_inbox(recipients, &group.members[turn].1);
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

/// Offers `wave` to `recipient`; a receive queue is told whether the wave
/// goes to other recipients too (`shared`: its receiver then spins before
/// it parks, `Inbox::poll_take`).
#[inline(always)]
fn deliver(recipient: Recipient<'_>, wave: Wave, shared: bool, stats: &Counters) {
    match recipient {
        Recipient::Inbox(inbox) => {
            inbox.note_shared(shared);
            offer_counted(inbox, wave, stats);
        }
        Recipient::Replies(mux) => {
            if mux.complete(wave) {
                stats.delivered();
            } else {
                stats.unrouted();
            }
        }
        Recipient::Hopping(gate) => {
            gate.offer(wave, stats);
        }
    }
}
