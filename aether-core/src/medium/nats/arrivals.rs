//! The core subscriptions' arrivals, in emission order across resonances.
//!
//! The client reads the connection in order and hands each message to its
//! subscription's channel; read by one task per subscription, waves of one
//! emitter heard through two resonances of a vibrator (`orders.*` and
//! `billing.quote`) could reach its queue in either order. One task reads
//! every core subscription of the aether instead, and hands the waves out
//! in the order their emitters sent them:
//!
//! - It waits for a message on any subscription, then sweeps in passes the
//!   subscriptions that hold messages (each one's waker marks it as the
//!   client fills its channel), taking what each holds, until a pass finds
//!   nothing (or a bound: a round takes at most [`ROUND`] messages, an
//!   equal share from each subscription, and one that has read an
//!   emitter's waves further than another by more than [`ROUND_WAVES`]
//!   waits for it, so that none runs ahead of the others and the copies of
//!   one message that several group resonances of a vibrator bring stay
//!   close enough to be told apart). A message taken in one pass has every message
//!   the client read before it taken by the end of the next pass (the
//!   client filled that channel, and marked it, first), so all but the last
//!   pass's messages are complete.
//! - Waves carry their emitting process and its emit sequence in their id:
//!   the waves taken are merged so that, for each process, sequences go up,
//!   keeping each subscription's own order. A wave of the last pass goes now
//!   only if a wave already complete comes after it in its process's
//!   sequence; the rest wait for the next pass, which comes at once.
//!
//! With one subscription there is nothing to merge: its messages go as they
//! come, in batches.

use std::{
    collections::{HashMap, VecDeque},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll, Wake, Waker},
};

use async_nats::{Message, Subscriber};
use futures_util::{StreamExt, task::AtomicWaker};
use tokio::{sync::mpsc, task::AbortHandle};

use super::{Fanout, LastChannel, Shared, take_each};
use crate::{
    Channel, Wave,
    hopping::gate::HopGate,
    inbox::{GroupResonance, Inbox},
    medium::{SubscriptionId, offer_all_counted, offer_batch_counted, offer_counted_once},
};

/// Most messages taken in one round, from every subscription.
const ROUND: usize = 1024;
/// Most waves (as their frames say) taken in one round when there are
/// several subscriptions to merge: the copies of one message that a
/// vibrator's group resonances bring are then handed out within a few
/// rounds' waves of each other, well inside the queue's memory of them
/// (`inbox::RECENT_WAVES`).
pub(crate) const ROUND_WAVES: usize = 4096;
/// Most passes over the subscriptions in one round.
const PASSES: usize = 4;

/// Where a subscription's waves go.
pub(super) enum Target {
    /// The plain resonances on one subject.
    Fanout(Arc<Fanout>),
    /// A group resonance's queue subscription (counted while it lives).
    Group {
        inbox: Arc<Inbox>,
        id: SubscriptionId,
        _resonance: GroupResonance,
    },
    /// A hopping resonance's gate.
    Hopping(Arc<HopGate>),
}

enum Command {
    Add(u64, Subscriber, Target, LastChannel),
    Remove(u64),
}

/// The task that reads an aether's core subscriptions.
pub(super) struct Arrivals {
    commands: mpsc::UnboundedSender<Command>,
    next: std::sync::atomic::AtomicU64,
    task: AbortHandle,
}

impl Arrivals {
    pub(super) fn start(shared: Arc<Shared>) -> Self {
        let (commands, received) = mpsc::unbounded_channel();
        // Unconstrained: a subscription's channel answers "nothing" only when
        // it holds nothing, never for a spent cooperative budget (a round is
        // bounded by ROUND and waits for the next message).
        let task = tokio::spawn(tokio::task::unconstrained(run(received, shared))).abort_handle();
        Self {
            commands,
            next: std::sync::atomic::AtomicU64::new(1),
            task,
        }
    }

    /// Reads `subscriber` from now on, its waves to `target`, decoded with
    /// `last`; the key that removes it.
    pub(super) fn add(&self, subscriber: Subscriber, target: Target, last: LastChannel) -> u64 {
        let key = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let _ = self
            .commands
            .send(Command::Add(key, subscriber, target, last));
        key
    }

    /// Drops subscription `key` (which unsubscribes it), with what it held.
    pub(super) fn remove(&self, key: u64) {
        let _ = self.commands.send(Command::Remove(key));
    }

    /// Drops every subscription.
    pub(super) fn stop(&self) {
        self.task.abort();
    }
}

/// One subscription, as the task holds it.
struct Sub {
    key: u64,
    /// Its messages' wakes: the task's, with this subscription's key.
    wakes: Arc<SubWaker>,
    waker: Waker,
    subscriber: Subscriber,
    target: Target,
    last: LastChannel,
    /// Messages taken and not decoded yet, with the pass that took them.
    messages: Vec<(usize, Message)>,
    /// Waves decoded and not handed out yet, and whether each is complete
    /// (every message before it is taken).
    waves: VecDeque<(Wave, bool)>,
    /// Its subscription ended, or its vibrator is gone: removed after this
    /// round.
    done: bool,
    /// The emitting process and sequence of the last wave it decoded.
    front: Option<(u32, u64)>,
}

impl Sub {
    /// Whether a wave on `channel` is taken through another resonance of
    /// every vibrator this subscription serves (counted there, once).
    fn heard_elsewhere(target: &Target, channel: &Channel) -> bool {
        match target {
            Target::Fanout(fanout) => {
                let members = fanout.members.load();
                !members.is_empty()
                    && members
                        .iter()
                        .all(|(id, inbox)| inbox.heard_elsewhere(channel, *id, false))
            }
            Target::Group { inbox, id, .. } => inbox.heard_elsewhere(channel, *id, true),
            Target::Hopping(_) => false,
        }
    }

    /// Decodes the messages taken; a wave is complete if its message was
    /// taken before pass `full` began (a pass that emptied every
    /// subscription).
    fn decode(&mut self, shared: &Shared, full: usize) {
        let waves = &mut self.waves;
        Self::take(
            &mut self.messages,
            &mut self.last,
            &self.target,
            shared,
            |pass, wave| waves.push_back((wave, pass < full)),
        );
        self.front = waves.back().and_then(|(w, _)| order_of(w)).or(self.front);
    }

    /// Decodes the messages taken straight into `batch`, in order: with
    /// nothing to merge, every wave is complete and goes as it comes.
    fn decode_into(&mut self, shared: &Shared, batch: &mut VecDeque<Wave>) {
        Self::take(
            &mut self.messages,
            &mut self.last,
            &self.target,
            shared,
            |_, wave| batch.push_back(wave),
        );
        self.front = batch.back().and_then(order_of).or(self.front);
    }

    /// Every wave of `messages`, with the pass that took its message, to
    /// `put`.
    fn take(
        messages: &mut Vec<(usize, Message)>,
        last: &mut LastChannel,
        target: &Target,
        shared: &Shared,
        mut put: impl FnMut(usize, Wave),
    ) {
        for (pass, message) in messages.drain(..) {
            take_each(
                shared,
                message,
                last,
                |channel| Self::heard_elsewhere(target, channel),
                |wave| put(pass, wave),
            );
        }
    }

    /// Hands `batch` (its waves, in order) to the target; false once the
    /// vibrator is gone.
    fn hand_out(&self, shared: &Shared, batch: &mut VecDeque<Wave>) -> bool {
        match &self.target {
            Target::Fanout(fanout) => {
                let members = fanout.members.load();
                if let [(id, inbox)] = &members[..] {
                    let heard = |w: &Wave| !inbox.heard_elsewhere(w.channel(), *id, false);
                    if !inbox.may_hear_elsewhere(*id, false) || batch.iter().all(heard) {
                        offer_batch_counted(inbox, batch, &shared.stats);
                        return true;
                    }
                }
                for (id, inbox) in members.iter() {
                    let mine = batch
                        .iter()
                        .filter(|w| !inbox.heard_elsewhere(w.channel(), *id, false))
                        .cloned();
                    offer_all_counted(inbox, mine, &shared.stats);
                }
                batch.clear();
                true
            }
            Target::Group { inbox, .. } => {
                // Each group resonance is a queue subscription of its own,
                // which may bring a copy of a message another one brings.
                let mut open = true;
                for wave in batch.drain(..) {
                    open &= offer_counted_once(inbox, wave, &shared.stats).open;
                }
                open
            }
            Target::Hopping(gate) => {
                let mut open = true;
                for wave in batch.drain(..) {
                    open &= gate.offer(wave, &shared.stats).open;
                }
                open
            }
        }
    }
}

/// Which subscriptions hold messages not taken: each subscription's waker
/// puts its key here (once, until it is polled again) and wakes the task,
/// so that a round visits those alone, however many the aether has.
#[derive(Default)]
struct Ready {
    keys: std::sync::Mutex<Vec<u64>>,
    task: AtomicWaker,
}

impl Ready {
    fn take(&self) -> Vec<u64> {
        std::mem::take(&mut *self.keys.lock().unwrap_or_else(|e| e.into_inner()))
    }

    fn is_empty(&self) -> bool {
        self.keys
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty()
    }
}

/// A subscription's waker: the client calls it as it puts a message on the
/// subscription's channel, before it reads the next one off the connection.
struct SubWaker {
    key: u64,
    queued: AtomicBool,
    ready: Arc<Ready>,
}

impl Wake for SubWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if !self.queued.swap(true, Ordering::AcqRel) {
            self.ready
                .keys
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(self.key);
            self.ready.task.wake();
        }
    }
}

/// The subscriptions, found by key.
#[derive(Default)]
struct Subs {
    list: Vec<Sub>,
    at: HashMap<u64, usize>,
}

impl Subs {
    fn apply(&mut self, command: Command, ready: &Arc<Ready>) {
        match command {
            Command::Add(key, subscriber, target, last) => {
                let waker = Arc::new(SubWaker {
                    key,
                    queued: AtomicBool::new(false),
                    ready: ready.clone(),
                });
                // Polled in the next round, which registers its waker.
                waker.wake_by_ref();
                self.at.insert(key, self.list.len());
                self.list.push(Sub {
                    key,
                    waker: Waker::from(waker.clone()),
                    wakes: waker,
                    subscriber,
                    target,
                    last,
                    messages: Vec::new(),
                    waves: VecDeque::new(),
                    done: false,
                    front: None,
                });
            }
            Command::Remove(key) => {
                if self.at.contains_key(&key) {
                    self.list.retain(|s| s.key != key);
                    self.index();
                }
            }
        }
    }

    fn drop_done(&mut self) {
        if self.list.iter().any(|s| s.done) {
            self.list.retain(|s| !s.done);
            self.index();
        }
    }

    fn index(&mut self) {
        self.at = self
            .list
            .iter()
            .enumerate()
            .map(|(i, s)| (s.key, i))
            .collect();
    }
}

async fn run(mut commands: mpsc::UnboundedReceiver<Command>, shared: Arc<Shared>) {
    let ready = Arc::new(Ready::default());
    let mut subs = Subs::default();
    let mut batch = VecDeque::new();
    loop {
        let waiting = subs.list.iter().any(|s| !s.waves.is_empty());
        if !waiting {
            // Wait for a command or a message on any subscription.
            let woke = std::future::poll_fn(|cx| {
                if let Poll::Ready(command) = commands.poll_recv(cx) {
                    return Poll::Ready(Some(command));
                }
                ready.task.register(cx.waker());
                if ready.is_empty() {
                    Poll::Pending
                } else {
                    Poll::Ready(None)
                }
            })
            .await;
            match woke {
                Some(None) => return,
                Some(Some(command)) => {
                    subs.apply(command, &ready);
                    continue;
                }
                None => {}
            }
        }
        while let Ok(command) = commands.try_recv() {
            subs.apply(command, &ready);
        }
        // Sweep in passes over the subscriptions that hold messages, until
        // one finds none, or the bounds. A pass is full when it emptied
        // every subscription; a message is complete once a full pass began
        // after it was taken. A subscription not emptied (the round's
        // bound) stays ready for the next round.
        let (mut taken, mut taken_waves) = (0, 0);
        let mut last_full: Option<usize> = None;
        for pass in 0..=PASSES {
            let keys = ready.take();
            if keys.is_empty() {
                last_full = Some(pass);
                break;
            }
            let mut full = true;
            // Each subscription ready takes an equal share of what is left
            // of the round: the client fills their channels in the order it
            // reads, so none falls behind the others by more than a share
            // (the copies of one message that a vibrator's group
            // resonances bring stay close enough to be told apart).
            let share = ROUND.saturating_sub(taken).div_ceil(keys.len()).max(1);
            let subs_many = subs.list.len() > 1;
            let wave_share = if subs_many {
                ROUND_WAVES
                    .saturating_sub(taken_waves)
                    .div_ceil(keys.len())
                    .max(1)
            } else {
                usize::MAX
            };
            // Where each subscription ready has read an emitter's waves up
            // to: one that is ahead of another by more than a round's waves
            // of the same emitter waits for it this pass (the client fills
            // them in the order it reads, so the copies of one message stay
            // together however the subscriptions' shares of it differ).
            let fronts: Vec<(u32, u64)> = keys
                .iter()
                .filter(|_| subs_many)
                .filter_map(|key| subs.at.get(key).and_then(|&i| subs.list[i].front))
                .collect();
            let ahead = |front: Option<(u32, u64)>| {
                front.is_some_and(|(process, sequence)| {
                    fronts
                        .iter()
                        .any(|&(p, s)| p == process && s + (ROUND_WAVES as u64) < sequence)
                })
            };
            let mut rest = keys.into_iter();
            for key in rest.by_ref() {
                let Some(&i) = subs.at.get(&key) else {
                    continue;
                };
                let sub = &mut subs.list[i];
                sub.wakes.queued.store(false, Ordering::Release);
                if subs_many && ahead(sub.front) {
                    full = false;
                    sub.waker.wake_by_ref();
                    continue;
                }
                let mut cx = Context::from_waker(&sub.waker);
                let (mut took, mut took_waves) = (0, 0);
                loop {
                    if took >= share || took_waves >= wave_share {
                        // Its share taken: the others take theirs, and the
                        // round ends with this pass.
                        full = false;
                        sub.waker.wake_by_ref();
                        break;
                    }
                    match sub.subscriber.poll_next_unpin(&mut cx) {
                        Poll::Ready(Some(message)) => {
                            // Counted only where there is a merge to bound.
                            let waves = if subs_many {
                                crate::wave::wire::waves_in(&message.payload)
                            } else {
                                0
                            };
                            sub.messages.push((pass, message));
                            taken += 1;
                            took += 1;
                            taken_waves += waves;
                            took_waves += waves;
                        }
                        Poll::Ready(None) => {
                            sub.done = true;
                            break;
                        }
                        Poll::Pending => break,
                    }
                }
            }
            // Those not visited (the round's bound) stay ready.
            for key in rest {
                if let Some(&i) = subs.at.get(&key) {
                    subs.list[i].wakes.queued.store(false, Ordering::Release);
                    subs.list[i].waker.wake_by_ref();
                }
            }
            if full {
                last_full = Some(pass);
            } else {
                break;
            }
        }
        if subs.list.len() == 1 {
            // Nothing to merge with: everything goes, in order.
            let sub = &mut subs.list[0];
            // Any kept from a round with others (since removed) go first.
            batch.extend(sub.waves.drain(..).map(|(w, _)| w));
            sub.decode_into(&shared, &mut batch);
            if !batch.is_empty() && !sub.hand_out(&shared, &mut batch) {
                sub.done = true;
            }
            batch.clear();
        } else {
            // Waves kept from earlier rounds go now: after this round's full
            // pass they are complete; without one (more than a round's
            // bound came during the sweep) they go anyway, so that a
            // sustained flood delays waves by one round at most (in it,
            // across subscriptions, the order is the best known). What this
            // round took is complete if taken before its last full pass.
            let full = last_full.unwrap_or(0);
            for sub in subs.list.iter_mut() {
                if sub.messages.is_empty() && sub.waves.is_empty() {
                    continue;
                }
                for (_, complete) in sub.waves.iter_mut() {
                    *complete = true;
                }
                sub.decode(&shared, full);
            }
            merge_out(&shared, &mut subs.list, &mut batch);
        }
        subs.drop_done();
    }
}

/// A wave's emitting process and its emit sequence (`None`: no order to
/// keep), and whether it is complete.
type Slot = (Option<(u32, u64)>, bool);

/// The emitting process and its emit sequence, from a wave's id (`None`
/// for a wave without one: no order to keep).
fn order_of(wave: &Wave) -> Option<(u32, u64)> {
    let id = wave.id().as_u128();
    (id != 0).then_some(((id >> 48) as u32, (id & 0xFFFF_FFFF_FFFF) as u64))
}

/// Hands out the waves that may go, merged in emission order per process;
/// keeps the others for the next round.
fn merge_out(shared: &Shared, subs: &mut [Sub], batch: &mut VecDeque<Wave>) {
    let holding: Vec<usize> = (0..subs.len())
        .filter(|&i| !subs[i].waves.is_empty())
        .collect();
    let queues: Vec<Vec<Slot>> = holding
        .iter()
        .map(|&i| &subs[i])
        .map(|sub| {
            sub.waves
                .iter()
                .map(|(wave, complete)| (order_of(wave), *complete))
                .collect()
        })
        .collect();
    for (i, run) in plan(&queues) {
        let sub = &mut subs[holding[i]];
        batch.extend(sub.waves.drain(..run).map(|(wave, _)| wave));
        if !sub.hand_out(shared, batch) {
            sub.done = true;
        }
        batch.clear();
    }
}

/// The order to hand waves out in: runs of (queue, waves from its front).
/// Each queue holds, in arrival order, each wave's emitting process and
/// sequence (`None`: no order to keep) and whether it is complete.
///
/// A wave may go if it is complete, or if a complete wave of its process
/// has a sequence as high (it was read before that one); each queue gives
/// a prefix of those. Among the queues' next waves, the first that no wave
/// of its process with a lower sequence waits for in another queue goes
/// first, with the waves after it in its queue up to one that does wait.
/// When none can (emitters that emit from several tasks at once send out of
/// their own sequence), the first that may go does.
fn plan(queues: &[Vec<Slot>]) -> Vec<(usize, usize)> {
    let mut highest: HashMap<u32, u64> = HashMap::new();
    for &(order, complete) in queues.iter().flatten() {
        if let (Some((process, sequence)), true) = (order, complete) {
            let at = highest.entry(process).or_insert(sequence);
            *at = (*at).max(sequence);
        }
    }
    let may_go = |&(order, complete): &Slot| {
        complete
            || order.is_some_and(|(process, sequence)| highest.get(&process) >= Some(&sequence))
    };
    let mut front = vec![0usize; queues.len()];
    let mut ready: Vec<usize> = queues
        .iter()
        .map(|queue| queue.iter().take_while(|w| may_go(w)).count())
        .collect();
    // Whether a wave of `process` before `sequence` waits in a queue other
    // than `i` (its first wave of that process there is its earliest: one
    // emitter's waves come in order on one subscription).
    let earlier_elsewhere = |front: &[usize], i: usize, (process, sequence): (u32, u64)| {
        queues.iter().enumerate().any(|(j, queue)| {
            j != i
                && queue[front[j]..]
                    .iter()
                    .find_map(|(order, _)| order.filter(|(p, _)| *p == process))
                    .is_some_and(|(_, s)| s < sequence)
        })
    };
    let mut runs = Vec::new();
    while ready.iter().any(|&n| n > 0) {
        let pick = (0..queues.len())
            .find(|&i| {
                ready[i] > 0
                    && queues[i][front[i]]
                        .0
                        .is_none_or(|order| !earlier_elsewhere(&front, i, order))
            })
            .or_else(|| (0..queues.len()).find(|&i| ready[i] > 0))
            .expect("some queue has a wave that may go");
        let mut run = 1;
        while run < ready[pick]
            && queues[pick][front[pick] + run]
                .0
                .is_none_or(|order| !earlier_elsewhere(&front, pick, order))
        {
            run += 1;
        }
        front[pick] += run;
        ready[pick] -= run;
        runs.push((pick, run));
    }
    runs
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// Arrivals as the client makes them: up to 3 processes emit in
    /// sequence, each message read in one global order and put on one of up
    /// to 3 queues; each queue is taken up to its own point of the read
    /// order, and a message is complete when every queue was taken past it
    /// (all read before it is taken), as a full pass makes it.
    /// Also the messages not taken yet.
    fn arrivals() -> impl Strategy<Value = (Vec<Vec<Slot>>, Vec<(u32, u64)>)> {
        (1usize..4, 1usize..4, 1usize..60).prop_flat_map(|(processes, subs, messages)| {
            (
                proptest::collection::vec((0..processes as u32, 0..subs), messages),
                proptest::collection::vec(0..=messages, subs),
            )
                .prop_map(move |(picks, taken_to)| {
                    let complete_to = taken_to.iter().copied().min().unwrap_or(0);
                    let mut next = [0u64; 4];
                    let mut queues = vec![Vec::new(); subs];
                    let mut untaken = Vec::new();
                    for (at, (process, sub)) in picks.into_iter().enumerate() {
                        let sequence = next[process as usize];
                        next[process as usize] += 1;
                        if at < taken_to[sub] {
                            queues[sub].push((Some((process, sequence)), at < complete_to));
                        } else {
                            untaken.push((process, sequence));
                        }
                    }
                    (queues, untaken)
                })
        })
    }

    proptest! {
        /// Every wave handed out has none of its process's earlier waves
        /// left behind (kept, or not taken yet), each process's sequence
        /// goes up, each queue keeps its order, and every complete wave
        /// goes.
        #[test]
        fn the_plan_keeps_each_process_s_order((queues, untaken) in arrivals()) {
            let runs = plan(&queues);
            let mut front = vec![0usize; queues.len()];
            let mut last: HashMap<u32, u64> = HashMap::new();
            for (i, run) in runs {
                prop_assert!(run > 0);
                for wave in &queues[i][front[i]..front[i] + run] {
                    let (process, sequence) = wave.0.unwrap();
                    if let Some(before) = last.insert(process, sequence) {
                        prop_assert!(before < sequence, "{process}: {before} then {sequence}");
                    }
                }
                front[i] += run;
            }
            for &(process, sequence) in &untaken {
                if let Some(&handed) = last.get(&process) {
                    prop_assert!(sequence > handed, "{process}: {handed} went before {sequence}, not taken yet");
                }
            }
            for (queue, &taken) in queues.iter().zip(&front) {
                for &(order, complete) in &queue[taken..] {
                    let (process, sequence) = order.unwrap();
                    prop_assert!(!complete, "a complete wave was left");
                    if let Some(&handed) = last.get(&process) {
                        prop_assert!(sequence > handed, "{process}: {sequence} left behind {handed}");
                    }
                }
            }
        }
    }

    #[test]
    fn waves_without_an_order_go_in_their_queue_s_order() {
        let queues = vec![vec![(None, true), (None, true)], vec![(None, true)]];
        assert_eq!(plan(&queues), vec![(0, 2), (1, 1)]);
    }
}
