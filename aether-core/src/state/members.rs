//! Who else holds a map: the members one replica knows, which one it
//! probes next, and when it says one is gone.
//!
//! The cost of presence stays flat per replica however many replicas a map
//! has (in the manner of SWIM): each heartbeat a replica probes one member,
//! the next of a shuffled round of them all, with a ping to that member's
//! own channel (or, when an anti-entropy round is due, its digest, which
//! the member answers as a ping and repairs from), and the member answers;
//! a member that answers none of its probes for `presence_timeout` is
//! gone, and the prober tells everyone at once. Each heartbeat about one
//! replica of the map (each with chance `1 / members`, every one in a map
//! of up to three) says hello to all: how a keeper finds a map, and how the
//! two sides of a healed partition find each other. A replica alone says
//! it less and less often, down to once every [`LONE_HELLO_EVERY`]
//! heartbeats. A replica that opens says hello to all and takes the
//! members from the replica it caught up from. So a replica sends two
//! messages a heartbeat and receives about three, not one from every other
//! replica.
//!
//! What a replica hears from a member itself (a hello, a ping, an answer)
//! counts above what others say of it: a member said gone by a probe is
//! taken back only on its own word, never from a roster, for
//! [`GONE_REMEMBERED`] presence timeouts; a replica told it is gone says
//! hello to all, and everyone takes it back.
//!
//! The rules here are pure (time and chance are passed in), so the tests
//! below run whole groups of replicas as a model.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    time::{Duration, Instant},
};

use smol_str::SmolStr;

use super::Presence;

/// At most this many members are known: a flood of made-up ones cannot grow
/// the table forever.
pub(super) const MAX_MEMBERS: usize = 4096;

/// How many replicas, about, check a newcomer heard by its hello at once
/// (each with chance `CHECKERS / members`): a hello nobody answers for (a
/// made-up member) is gone for everyone within a presence timeout.
const CHECKERS: usize = 4;

/// How long (in presence timeouts) a member said gone is not taken back
/// from what others say of it.
const GONE_REMEMBERED: u32 = 10;

/// Probes at once at the most: a member not answering is pinged again each
/// heartbeat until its timeout, besides the next of the round.
const MAX_PROBING: usize = 16;

/// A replica with no members says hello at its 1st, 2nd, 4th and 8th
/// heartbeat alone, then every this many: a map nobody else holds (a
/// keeper's map whose writers are gone) costs a message a few heartbeats,
/// not one each, and a replica cut off from the rest is found again
/// within this many heartbeats of the cut healing.
pub(super) const LONE_HELLO_EVERY: u32 = 8;

/// The members one replica knows.
#[derive(Debug)]
pub(super) struct Members {
    live: HashMap<u64, SmolStr>,
    /// Members said gone (by this replica's probes or another's), and when.
    gone: HashMap<u64, Instant>,
    /// What is left of this round of probes (taken from the end).
    order: Vec<u64>,
    /// Members probed and not answered yet: since when.
    probing: HashMap<u64, Instant>,
    /// Newcomers heard by their hello that this replica checks at once
    /// (pinged each heartbeat until they answer): since when.
    checking: HashMap<u64, Instant>,
    /// Members added within the last presence timeout, oldest first: the
    /// others are the settled members a newcomer's check counts on (a
    /// flood of made-up hellos does not make each one less likely to be
    /// checked).
    young: VecDeque<(u64, Instant)>,
    /// Members that said they keep the map for others: remembered while
    /// gone too (a replica's id is its own for its life), up to
    /// [`MAX_MEMBERS`].
    keepers: HashSet<u64>,
    /// Heartbeats in a row this replica has had no members.
    alone: u32,
    rng: u64,
}

/// What a heartbeat's round asks of the replica.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Round {
    /// Probe this member for the first time (the next of the round).
    pub(super) probe: Option<u64>,
    /// Ping these members again: they have not answered yet.
    pub(super) ping: Vec<u64>,
    /// These did not answer for the presence timeout: they are gone (tell
    /// everyone).
    pub(super) gone: Vec<(u64, SmolStr)>,
}

impl Members {
    /// No members yet; `seed` makes this replica's choices its own.
    pub(super) fn new(seed: u64) -> Self {
        Self {
            live: HashMap::new(),
            gone: HashMap::new(),
            order: Vec::new(),
            probing: HashMap::new(),
            checking: HashMap::new(),
            young: VecDeque::new(),
            keepers: HashSet::new(),
            alone: 0,
            rng: seed | 1,
        }
    }

    /// A number below `n` (n > 0), from a xorshift generator: choices
    /// that spread probes and hellos, not secrets.
    fn below(&mut self, n: usize) -> usize {
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        (x % n as u64) as usize
    }

    /// The member `node` named `name` answered this replica's ping (or a
    /// digest): it is there, its probe and its check are answered.
    /// `Joined` if it is new.
    pub(super) fn heard(&mut self, node: u64, name: &str, now: Instant) -> Option<Presence> {
        self.probing.remove(&node);
        self.checking.remove(&node);
        self.gone.remove(&node);
        self.add(node, name, now)
    }

    /// The member `node` named `name` said hello or pinged this replica:
    /// it is there, and a probe of it is answered. A check of a newcomer
    /// waits for its answer to this replica's own ping (anyone may say
    /// hello or ping in a made-up id, again and again). `Joined` if it is
    /// new.
    pub(super) fn spoke(&mut self, node: u64, name: &str, now: Instant) -> Option<Presence> {
        self.probing.remove(&node);
        self.gone.remove(&node);
        self.add(node, name, now)
    }

    /// A newcomer heard by its hello alone (it was not a member before):
    /// with chance `CHECKERS / settled members` this replica checks it at
    /// once, so that about four replicas ping it within a heartbeat and a
    /// made-up member (nobody answers) is gone for everyone within a
    /// presence timeout, not when its turn in the rounds comes.
    pub(super) fn check(&mut self, node: u64, now: Instant) {
        let settled = self.live.len().saturating_sub(self.young.len()).max(1);
        if self.live.contains_key(&node) && (settled <= CHECKERS || self.below(settled) < CHECKERS)
        {
            self.checking.insert(node, now);
        }
    }

    /// A newcomer heard by a message to this replica alone (a ping or an
    /// answer): nobody else heard it, so this replica checks it at once.
    pub(super) fn check_alone(&mut self, node: u64, now: Instant) {
        if self.live.contains_key(&node) {
            self.checking.insert(node, now);
        }
    }

    /// Another replica says `node` named `name` is a member (a roster):
    /// taken unless it was said gone lately. `Joined` if it is new.
    pub(super) fn told(&mut self, node: u64, name: &str, now: Instant) -> Option<Presence> {
        if self.gone.contains_key(&node) {
            return None;
        }
        self.add(node, name, now)
    }

    fn add(&mut self, node: u64, name: &str, now: Instant) -> Option<Presence> {
        if self.live.contains_key(&node) || self.live.len() >= MAX_MEMBERS {
            return None;
        }
        self.live.insert(node, SmolStr::new(name));
        self.young.push_back((node, now));
        // A newcomer is probed within this round, at a random place.
        let at = self.below(self.order.len() + 1);
        self.order.insert(at, node);
        Some(Presence::Joined(name.to_string()))
    }

    /// `node` said goodbye, or a probe found it gone: `Left` if it was a
    /// member. It is not taken back from rosters for a while.
    pub(super) fn left(&mut self, node: u64, now: Instant) -> Option<Presence> {
        self.probing.remove(&node);
        self.checking.remove(&node);
        let name = self.live.remove(&node)?;
        if self.gone.len() < MAX_MEMBERS {
            self.gone.insert(node, now);
        }
        Some(Presence::Left(name.to_string()))
    }

    /// A heartbeat: members whose probe went unanswered for `timeout` are
    /// gone; those still unanswered are pinged again, and the next member
    /// of the round for the first time.
    pub(super) fn round(&mut self, now: Instant, timeout: Duration) -> Round {
        let mut round = Round::default();
        let mut overdue: Vec<u64> = self
            .probing
            .iter()
            .chain(&self.checking)
            .filter(|(_, since)| now.saturating_duration_since(**since) >= timeout)
            .map(|(node, _)| *node)
            .collect();
        overdue.sort_unstable();
        overdue.dedup();
        for node in overdue {
            self.probing.remove(&node);
            self.checking.remove(&node);
            if let Some(name) = self.live.remove(&node) {
                self.gone.insert(node, now);
                round.gone.push((node, name));
            }
        }
        while self
            .young
            .front()
            .is_some_and(|(_, at)| now.saturating_duration_since(*at) >= timeout)
        {
            self.young.pop_front();
        }
        round.ping.extend(self.probing.keys().copied());
        round.ping.extend(
            self.checking
                .keys()
                .filter(|n| !self.probing.contains_key(n)),
        );
        round.ping.sort_unstable();
        if self.probing.len() < MAX_PROBING
            && let Some(next) = self.next_probe()
        {
            self.probing.insert(next, now);
            round.probe = Some(next);
        }
        let remembered = timeout.saturating_mul(GONE_REMEMBERED);
        self.gone
            .retain(|_, at| now.saturating_duration_since(*at) < remembered);
        round
    }

    /// The next member of the round not being probed already; a new round,
    /// shuffled, when this one is done.
    fn next_probe(&mut self) -> Option<u64> {
        for _ in 0..2 {
            while let Some(node) = self.order.pop() {
                if self.live.contains_key(&node)
                    && !self.probing.contains_key(&node)
                    && !self.checking.contains_key(&node)
                {
                    return Some(node);
                }
            }
            let mut order: Vec<u64> = self.live.keys().copied().collect();
            order.sort_unstable();
            for i in (1..order.len()).rev() {
                let j = self.below(i + 1);
                order.swap(i, j);
            }
            self.order = order;
        }
        None
    }

    /// A member at random (whom to send a digest when anti-entropy runs
    /// more often than probes).
    pub(super) fn partner(&mut self) -> Option<u64> {
        if self.live.is_empty() {
            return None;
        }
        let at = self.below(self.live.len());
        self.live.keys().nth(at).copied()
    }

    /// Whether this replica says hello to all this heartbeat: with chance
    /// `1 / members` (itself counted), so that the map's replicas together
    /// say about one a heartbeat (every heartbeat each, in a map of up to
    /// three); alone, less and less often, down to one every
    /// [`LONE_HELLO_EVERY`] heartbeats.
    pub(super) fn says_hello(&mut self) -> bool {
        if self.live.is_empty() {
            self.alone = self.alone.wrapping_add(1);
            let beat = self.alone;
            return beat.is_power_of_two() && beat <= LONE_HELLO_EVERY
                || beat.is_multiple_of(LONE_HELLO_EVERY);
        }
        self.alone = 0;
        let n = self.live.len() + 1;
        n <= 3 || self.below(n) == 0
    }

    /// Whether `node` is a live member named `name`.
    pub(super) fn is(&self, node: u64, name: &str) -> bool {
        self.live.get(&node).is_some_and(|n| n == name)
    }

    /// The live members.
    pub(super) fn len(&self) -> usize {
        self.live.len()
    }

    /// The live member `node` keeps the map for others (it said so).
    pub(super) fn keeps(&mut self, node: u64) {
        if !self.live.contains_key(&node) {
            return;
        }
        if self.keepers.len() >= MAX_MEMBERS {
            let live = &self.live;
            self.keepers.retain(|n| live.contains_key(n));
        }
        if self.keepers.len() < MAX_MEMBERS {
            self.keepers.insert(node);
        }
    }

    /// Whether the live member `node` keeps the map for others.
    pub(super) fn is_keeper(&self, node: u64) -> bool {
        self.keepers.contains(&node) && self.live.contains_key(&node)
    }

    /// Whether a live member keeps the map for others.
    pub(super) fn knows_keeper(&self) -> bool {
        self.keepers.iter().any(|node| self.live.contains_key(node))
    }

    /// The live members' names, each with whether it is a keeper, sorted,
    /// each pair once.
    pub(super) fn roles(&self) -> Vec<(String, bool)> {
        let mut roles: Vec<(String, bool)> = self
            .live
            .iter()
            .map(|(node, name)| (name.to_string(), self.keepers.contains(node)))
            .collect();
        roles.sort();
        roles.dedup();
        roles
    }

    /// The live members' names, sorted, each once.
    pub(super) fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.live.values().map(ToString::to_string).collect();
        names.sort();
        names.dedup();
        names
    }

    /// The live members, for a roster.
    pub(super) fn roster(&self) -> Vec<(u64, SmolStr)> {
        let mut members: Vec<(u64, SmolStr)> =
            self.live.iter().map(|(n, s)| (*n, s.clone())).collect();
        members.sort_unstable_by_key(|(n, _)| *n);
        members
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use proptest::prelude::*;

    use super::*;

    const HEARTBEAT: Duration = Duration::from_secs(1);
    const TIMEOUT: Duration = Duration::from_secs(3);

    /// A group of replicas as a model of the bus: every message a replica
    /// sends reaches every replica it is meant for that is up and not cut
    /// off from it; a replica is up or crashed, and in a side of a
    /// partition (replicas of different sides hear nothing of each other).
    struct Group {
        members: Vec<Members>,
        up: Vec<bool>,
        side: Vec<u8>,
        now: Instant,
        /// Messages sent, for the cost.
        sent: u64,
    }

    fn name(i: usize) -> String {
        format!("r{i}")
    }

    fn id(i: usize) -> u64 {
        i as u64 + 1
    }

    impl Group {
        /// `n` replicas opened one after another: each says hello to all
        /// and takes the roster of one that was there.
        fn open(n: usize) -> Self {
            let mut group = Group {
                members: Vec::new(),
                up: Vec::new(),
                side: Vec::new(),
                now: Instant::now(),
                sent: 0,
            };
            for i in 0..n {
                group
                    .members
                    .push(Members::new(0x9E37_79B9 * (i as u64 + 7)));
                group.up.push(true);
                group.side.push(0);
                group.hello(i);
                if i > 0 {
                    group.catch_up(i, (i * 7919) % i);
                }
            }
            group
        }

        fn hears(&self, from: usize, to: usize) -> bool {
            from != to && self.up[from] && self.up[to] && self.side[from] == self.side[to]
        }

        fn hello(&mut self, from: usize) {
            self.sent += 1;
            for to in 0..self.members.len() {
                if self.hears(from, to) {
                    let now = self.now;
                    if self.members[to].spoke(id(from), &name(from), now).is_some() {
                        self.members[to].check(id(from), now);
                    }
                }
            }
        }

        fn catch_up(&mut self, joiner: usize, answerer: usize) {
            if !self.hears(answerer, joiner) {
                return;
            }
            self.sent += 1;
            let mut roster = self.members[answerer].roster();
            roster.push((id(answerer), SmolStr::new(name(answerer))));
            for (node, who) in roster {
                if node != id(joiner) {
                    self.members[joiner].told(node, &who, self.now);
                }
            }
        }

        /// One heartbeat of every replica that is up.
        fn heartbeat(&mut self) {
            self.now += HEARTBEAT;
            for i in 0..self.members.len() {
                if !self.up[i] {
                    continue;
                }
                let round = self.members[i].round(self.now, TIMEOUT);
                for (node, _) in round.gone {
                    self.sent += 1;
                    for to in 0..self.members.len() {
                        if self.hears(i, to) {
                            if id(to) == node {
                                // Told it is gone while there: hello.
                                self.hello(to);
                            } else {
                                self.members[to].left(node, self.now);
                            }
                        }
                    }
                }
                for node in round.probe.into_iter().chain(round.ping) {
                    self.sent += 1;
                    let target = (node - 1) as usize;
                    if target < self.members.len() && self.hears(i, target) {
                        if self.members[target]
                            .spoke(id(i), &name(i), self.now)
                            .is_some()
                        {
                            self.members[target].check_alone(id(i), self.now);
                        }
                        self.sent += 1;
                        self.members[i].heard(node, &name(target), self.now);
                    }
                }
                if self.members[i].says_hello() {
                    self.hello(i);
                }
            }
        }

        /// What replica `i` should know: the others up on its side.
        fn truth(&self, i: usize) -> BTreeSet<String> {
            (0..self.members.len())
                .filter(|&j| self.hears(j, i))
                .map(name)
                .collect()
        }

        fn knows(&self, i: usize) -> BTreeSet<String> {
            self.members[i].names().into_iter().collect()
        }

        fn settled(&self) -> bool {
            (0..self.members.len()).all(|i| !self.up[i] || self.knows(i) == self.truth(i))
        }

        /// Heartbeats until every replica that is up knows exactly the
        /// others up on its side, or `bound` heartbeats: how many it took.
        fn settle(&mut self, bound: u32) -> Option<u32> {
            for beat in 0..=bound {
                if self.settled() {
                    return Some(beat);
                }
                self.heartbeat();
            }
            None
        }
    }

    #[test]
    fn a_replica_opened_knows_every_member_at_once_and_every_member_knows_it() {
        let group = Group::open(50);
        assert!(group.settled());
    }

    #[test]
    fn a_crashed_replica_is_gone_for_everyone_within_a_few_heartbeats_past_the_timeout() {
        for n in [3, 10, 100, 300] {
            let mut group = Group::open(n);
            group.settle(5).expect("settled");
            group.up[n / 2] = false;
            let beats = group.settle(60).expect("everyone notices");
            // Probed by someone within a heartbeat or two (each of the
            // others probes it with chance about 1/n a heartbeat), then
            // the timeout.
            let timeout_beats = (TIMEOUT.as_secs_f64() / HEARTBEAT.as_secs_f64()) as u32;
            assert!(
                beats <= timeout_beats + 8,
                "{n} replicas: {beats} heartbeats"
            );
        }
    }

    #[test]
    fn what_each_replica_sends_a_heartbeat_does_not_grow_with_the_group() {
        let mut per_replica = BTreeMap::new();
        for n in [10, 100, 1000] {
            let mut group = Group::open(n);
            // Past the opening (its newcomers checked, each by a few).
            for _ in 0..4 {
                group.heartbeat();
            }
            assert!(group.settled());
            group.sent = 0;
            for _ in 0..20 {
                group.heartbeat();
            }
            per_replica.insert(n, group.sent as f64 / n as f64 / 20.0);
        }
        for (n, sent) in &per_replica {
            assert!(
                *sent < 2.5,
                "{n} replicas: {sent} messages a heartbeat each"
            );
        }
        // Received: a ping, an answer, about one hello a heartbeat.
        assert!(
            per_replica[&1000] <= per_replica[&10] * 1.5,
            "{per_replica:?}"
        );
    }

    /// A replica alone says hello at its 1st, 2nd, 4th and 8th heartbeat
    /// alone, then every 8th; one that finds a member says hello as any
    /// other, and alone again starts over.
    #[test]
    fn a_replica_alone_says_hello_less_and_less_often() {
        let hellos = |m: &mut Members, beats: u32| -> Vec<u32> {
            (1..=beats).filter(|_| m.says_hello()).collect()
        };
        let mut m = Members::new(3);
        assert_eq!(hellos(&mut m, 40), [1, 2, 4, 8, 16, 24, 32, 40]);
        let now = Instant::now();
        m.heard(9, "other", now);
        // Two replicas: each says hello every heartbeat.
        assert_eq!(hellos(&mut m, 3), [1, 2, 3]);
        m.left(9, now);
        assert_eq!(hellos(&mut m, 9), [1, 2, 4, 8]);
    }

    /// Two replicas cut off from each other long enough that each is alone
    /// find each other again within [`LONE_HELLO_EVERY`] heartbeats of
    /// the cut healing, however long it lasted.
    #[test]
    fn replicas_alone_after_a_long_cut_find_each_other_soon_after_it_heals() {
        for cut in [4, 10, 30, 100] {
            let mut group = Group::open(2);
            group.settle(3).expect("settled");
            group.side[1] = 1;
            for _ in 0..cut {
                group.heartbeat();
            }
            assert!(group.members.iter().all(|m| m.len() == 0), "{cut}");
            group.side[1] = 0;
            let beats = group.settle(60).expect("found again");
            assert!(beats <= LONE_HELLO_EVERY, "cut {cut}: {beats} heartbeats");
        }
    }

    #[test]
    fn a_keeper_is_told_apart_and_stays_one_when_taken_back() {
        let now = Instant::now();
        let mut m = Members::new(7);
        m.heard(1, "script", now);
        m.heard(2, "pi", now);
        m.keeps(2);
        m.keeps(3); // not a member: nothing
        assert_eq!(
            m.roles(),
            [("pi".to_string(), true), ("script".to_string(), false)]
        );
        m.left(2, now);
        assert_eq!(m.roles(), [("script".to_string(), false)]);
        m.heard(2, "pi", now);
        assert_eq!(m.roles()[0], ("pi".to_string(), true));
        assert_eq!(m.names(), ["pi", "script"]);
    }

    #[test]
    fn a_member_told_gone_while_there_is_taken_back_by_its_own_word() {
        let mut group = Group::open(5);
        group.settle(3).expect("settled");
        // Replica 1 cannot hear 3 for a while: it says 3 is gone.
        group.side[3] = 1;
        let now = group.now;
        for _ in 0..6 {
            group.heartbeat();
        }
        assert!(!group.members[0].is(id(3), "r3"));
        group.side[3] = 0;
        let beats = group.settle(30).expect("healed");
        assert!(beats <= 12, "{beats}");
        // Rosters alone never bring back a member said gone.
        let mut m = Members::new(1);
        m.heard(9, "x", now);
        m.left(9, now);
        assert_eq!(m.told(9, "x", now), None);
        assert_eq!(m.heard(9, "x", now), Some(Presence::Joined("x".into())));
    }

    /// Anti-entropy as a model: each round every replica pulls from the
    /// member it probes next (its digest rides on the probe, what differs
    /// comes back). A write one replica alone holds (taken in during a
    /// partition, say) reaches every replica within a number of rounds that
    /// grows with the logarithm of the group.
    #[test]
    fn a_difference_anywhere_reaches_every_replica_in_logarithmic_rounds() {
        for n in [3, 10, 100, 1000] {
            let mut group = Group::open(n);
            let mut worst = 0;
            for holder in [0, n / 3, n - 1] {
                let mut has = vec![false; n];
                has[holder] = true;
                let mut rounds = 0;
                while !has.iter().all(|h| *h) {
                    rounds += 1;
                    let before = has.clone();
                    group.now += HEARTBEAT;
                    for (i, held) in has.iter_mut().enumerate() {
                        let round = group.members[i].round(group.now, TIMEOUT);
                        if let Some(partner) = round.probe {
                            *held |= before[(partner - 1) as usize];
                        }
                        // Every member pinged answers.
                        let now = group.now;
                        for node in round.probe.into_iter().chain(round.ping) {
                            group.members[i].heard(node, &name((node - 1) as usize), now);
                        }
                    }
                    assert!(rounds < 1000, "{n} replicas: never everywhere");
                }
                worst = worst.max(rounds);
            }
            let bound = 2.0 * (n as f64).log2() + 4.0;
            assert!(f64::from(worst) <= bound, "{n} replicas: {worst} rounds");
        }
    }

    /// A burst of hellos from made-up members (nobody answers for them)
    /// reaches every replica: each is checked at once by about four, and
    /// all are gone for everyone within a few heartbeats past the timeout;
    /// a replica that crashes meanwhile is still seen gone in time.
    #[test]
    fn made_up_members_are_gone_soon_and_a_crash_is_still_noticed() {
        for n in [3, 5, 50] {
            let mut group = Group::open(n);
            group.settle(3).expect("settled");
            let now = group.now;
            for fake in 0..3000u64 {
                let node = 1_000_000 + fake;
                for m in &mut group.members {
                    if m.spoke(node, &format!("ghost{fake}"), now).is_some() {
                        m.check(node, now);
                    }
                }
            }
            assert!(group.members.iter().all(|m| m.len() > 2000));
            group.up[n - 1] = false;
            let timeout_beats = (TIMEOUT.as_secs_f64() / HEARTBEAT.as_secs_f64()) as u32;
            let beats = group.settle(60).expect("the ghosts go, the crash is seen");
            assert!(
                beats <= timeout_beats + 8,
                "{n} replicas: {beats} heartbeats"
            );
        }
    }

    /// Made-up members that ping one replica (heard by it alone, as
    /// forged pings and answers are): it checks each at once, and all are
    /// gone within a few heartbeats past the timeout, not one a heartbeat.
    #[test]
    fn made_up_members_heard_by_one_replica_alone_are_gone_soon() {
        let mut group = Group::open(3);
        group.settle(3).expect("settled");
        let now = group.now;
        // Each made-up id pings twice or more (as copies of a forged ping
        // do): its check still waits for an answer to the victim's ping.
        for fake in 0..600u64 {
            let node = 2_000_000 + fake % 200;
            let victim = &mut group.members[0];
            if victim.spoke(node, "victim", now).is_some() {
                victim.check_alone(node, now);
            }
        }
        assert!(group.members[0].len() > 200);
        let timeout_beats = (TIMEOUT.as_secs_f64() / HEARTBEAT.as_secs_f64()) as u32;
        let beats = group.settle(60).expect("the made-up members go");
        assert!(beats <= timeout_beats + 3, "{beats} heartbeats");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// Every replica that can hear another comes to know exactly the
        /// others it can hear, whatever crashes and partitions came before:
        /// after the last fault, within a bound.
        #[test]
        fn every_replica_comes_to_know_exactly_those_it_can_hear(
            n in 2usize..24,
            faults in prop::collection::vec((0usize..24, 0u8..3, 0u8..3), 0..6),
        ) {
            let mut group = Group::open(n);
            for (who, what, beats) in faults {
                let who = who % n;
                match what {
                    0 => group.up[who] = false,
                    1 => group.side[who] = 1 - group.side[who],
                    _ => {}
                }
                for _ in 0..beats {
                    group.heartbeat();
                }
            }
            // The partition heals; the crashed stay down.
            group.side.iter_mut().for_each(|s| *s = 0);
            // A heal is found by the hellos (about one a heartbeat for the
            // group), then by pings; a crash by the probes and the timeout.
            let bound = 8 * n as u32 + 20;
            prop_assert!(group.settle(bound).is_some(), "not settled in {} heartbeats", bound);
        }
    }
}
