//! The acknowledged writes' unit tests.

use std::collections::{BTreeSet, HashMap};

use proptest::prelude::*;

use super::{Acked, Held, HeldBy, LaneState, Unacked};
use crate::state::Stamp;

#[derive(Clone, Debug)]
enum Step {
    Write(u8),
    Ack {
        key: u8,
        current: bool,
        replicas: usize,
        keepers: usize,
    },
    Remove(u8),
    Retain(u8),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => (0u8..6).prop_map(Step::Write),
        4 => (0u8..6, any::<bool>(), 0usize..4, 0usize..3).prop_map(
            |(key, current, replicas, keepers)| Step::Ack {
                key,
                current,
                replicas,
                keepers: keepers.min(replicas),
            }
        ),
        1 => (0u8..6).prop_map(Step::Remove),
        1 => (0u8..6).prop_map(Step::Retain),
    ]
}

fn stamp(n: u64) -> Stamp {
    Stamp {
        physical_ns: n,
        logical: 0,
        node: 1,
    }
}

/// A replica that writes keys of its own and does not flush again
/// after a first count of its unacknowledged writes (a script that
/// adds jobs and deletes them) keeps a bounded count of writes to
/// send, however many keys it wrote over its life: those that left the
/// map (tombstones collected) are forgotten.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_that_stops_flushing_forgets_the_keys_that_left() {
    use std::time::Duration;

    use crate::{
        Aether,
        state::{StateConfig, StateMap},
    };

    let aether = Aether::default();
    let config = StateConfig {
        anti_entropy_interval: Duration::from_millis(20),
        tombstone_horizon: Duration::from_millis(60),
        ..Default::default()
    };
    let map = StateMap::builder("jobs")
        .config(config)
        .open(&aether)
        .await
        .expect("open");
    // Its writes are kept from its first flush, or count, on.
    assert_eq!(map.unacknowledged(), 0);
    let (rounds, per_round) = (8, 1_000);
    for round in 0..rounds {
        for i in 0..per_round {
            let key = format!("job.{round}.{i}");
            map.set(&key, "queued").await.expect("set");
            map.delete(&key).await.expect("delete");
        }
        // Gone from the map once the tombstones are collected.
        let collected = tokio::time::timeout(Duration::from_secs(10), async {
            while map.stats().tombstones > 0 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
        assert!(collected.is_ok(), "round {round}: tombstones not collected");
    }
    let kept = map.shared.lock_unacked().len();
    assert!(
        kept <= 2 * per_round + super::FORGET_AFTER + super::LOOK_EVERY as usize,
        "{kept} writes kept for {} keys written, none left in the map",
        rounds * per_round
    );
    map.close().await;
}

/// Until its first flush a replica keeps no list of its writes (a
/// script that never flushes pays nothing a write for it); the first
/// flush finds them in the map, those another replica overwrote since
/// left out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_flush_finds_the_writes_made_before_it_in_the_map() {
    use std::time::Duration;

    use crate::{Aether, state::StateMap};

    let aether = Aether::default();
    let a = StateMap::builder("jobs")
        .node("a")
        .open(&aether)
        .await
        .expect("open");
    let b = StateMap::builder("jobs")
        .node("b")
        .open(&aether)
        .await
        .expect("open");
    let n = 500;
    for i in 0..n {
        a.set(&format!("job.{i}"), "queued").await.expect("set");
    }
    a.delete("job.0").await.expect("delete");
    assert_eq!(
        a.shared.lock_unacked().len(),
        0,
        "nothing kept before a flush"
    );
    for i in n - 10..n {
        b.set(&format!("job.{i}"), "taken").await.expect("set");
    }
    tokio::time::timeout(Duration::from_secs(10), async {
        while (n - 10..n).any(|i| a.get(&format!("job.{i}")).as_deref() != Some(&b"taken"[..])) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("b's writes reach a");
    let held = a.flush(Duration::from_secs(10)).await.expect("held");
    assert_eq!(
        held.writes,
        n - 10,
        "a's writes still a's, the delete among them"
    );
    assert_eq!(held.by, vec!["b".to_string()]);
    assert_eq!(a.unacknowledged(), 0);
    // Kept from now on: a write after it waits for the next flush.
    a.set("job.new", "queued").await.expect("set");
    assert_eq!(a.unacknowledged(), 1);
    assert_eq!(
        a.flush(Duration::from_secs(10)).await.expect("held").writes,
        1
    );
    a.close().await;
    b.close().await;
}

/// A flush whose writes came after another flush's hold went out
/// sends its own without waiting for that one's answer, and a third
/// waits while two are under way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_turn_starts_while_another_waits_for_its_answer() {
    use std::time::Duration;

    use crate::{
        Aether, Vibrator,
        state::{
            StateErrorKind, StateMap,
            codec::{KNOCK_TOKEN, Limits, Message},
        },
    };

    let aether = Aether::default();
    let mut spy = Vibrator::create("spy", &aether).await.expect("spy");
    spy.resonate_on("_state.turns.k").await.expect("resonate");
    // Alone on the bus: no hold is answered, each is sent again.
    let map = StateMap::open(&aether, "turns").await.expect("open");
    // The next hold of a token not seen yet, with its keys.
    let mut seen = std::collections::HashSet::new();
    let mut next_hold = async |within: Duration| {
        tokio::time::timeout(within, async {
            loop {
                let wave = spy.receive().await.expect("spy open");
                let Ok(Message::Hold { token, entries, .. }) =
                    Message::decode(wave.payload_bytes().clone(), &Limits::WIRE)
                else {
                    panic!("not a hold: {wave:?}");
                };
                // A knock (for keepers not keeping the map) is not a turn's.
                if token != KNOCK_TOKEN && seen.insert(token) {
                    let mut keys: Vec<String> =
                        entries.iter().map(|(k, _)| k.to_string()).collect();
                    keys.sort();
                    return keys;
                }
            }
        })
        .await
    };
    let flush = |map: &StateMap| {
        let map = map.clone();
        tokio::spawn(async move { map.flush(Duration::from_secs(3)).await })
    };
    map.set("a", "1").await.expect("set");
    let first = flush(&map);
    assert_eq!(
        next_hold(Duration::from_secs(2)).await.expect("first hold"),
        ["a"]
    );
    map.set("b", "1").await.expect("set");
    let second = flush(&map);
    // Well before the first hold's deadline: the second turn is
    // under way beside it, with every write no one acknowledged.
    assert_eq!(
        next_hold(Duration::from_millis(1_000))
            .await
            .expect("a second turn at once"),
        ["a", "b"]
    );
    map.set("c", "1").await.expect("set");
    let third = flush(&map);
    assert!(
        next_hold(Duration::from_millis(500)).await.is_err(),
        "a third turn while two are under way"
    );
    for flush in [first, second, third] {
        let error = flush
            .await
            .expect("flush task")
            .expect_err("no one to hold them");
        assert_eq!(error.kind(), StateErrorKind::NotHeld);
    }
    map.close().await;
}

/// How turns of a lane end, in any order.
#[derive(Clone, Debug)]
enum Ending {
    /// A turn that took the writes up to this count was held.
    Held(u64),
    /// One that took them was refused.
    Refused(u64),
    /// A turn ended (after its outcome was noted).
    Ended,
}

proptest! {
    /// Whatever order turns under way together end in, a flush waiting
    /// for its writes up to `mine` is told held only by the turn that
    /// took the most writes (and at least its), and refused only by the
    /// last refusal, if it took them, ended while the flush waited, and
    /// no turn held as many writes after it.
    #[test]
    fn turns_ending_in_any_order_tell_each_flush_its_own(
        endings in proptest::collection::vec(
            prop_oneof![
                (0u64..20).prop_map(Ending::Held),
                (0u64..20).prop_map(Ending::Refused),
                Just(Ending::Ended),
            ],
            0..40,
        )
    ) {
        let error = crate::state::StateError::new(
            crate::state::StateErrorKind::Full,
            "full",
        );
        let mut state = LaneState::default();
        let (mut most_held, mut refusal): (Option<u64>, Option<(u64, u64)>) = (None, None);
        for ending in endings {
            match ending {
                Ending::Held(upto) => {
                    let held = Held { writes: upto as usize, ..Held::default() };
                    state.held(HeldBy::ONE, upto, &held);
                    most_held = most_held.max(Some(upto));
                    refusal = refusal.filter(|&(_, refused)| refused > upto);
                }
                Ending::Refused(upto) => {
                    state.refused(upto, &error);
                    refusal = Some((state.turns, upto));
                }
                Ending::Ended => state.turns += 1,
            }
            for mine in 0..21 {
                let covered = state.covers(HeldBy::ONE, mine);
                prop_assert_eq!(
                    covered.map(|held| held.writes as u64),
                    most_held.filter(|&most| most >= mine)
                );
                for since in 0..=state.turns {
                    let told = state.refusal_of(since, mine);
                    let expected = refusal
                        .is_some_and(|(turn, upto)| turn >= since && upto >= mine);
                    prop_assert_eq!(told.is_some(), expected);
                }
            }
        }
    }

    /// The writes a flush looks over are those of one map of every
    /// write with its most acknowledgements, short of what it asks:
    /// whatever the writes, acknowledgements (of a write overwritten
    /// since too) and forgetting came before.
    #[test]
    fn a_flush_finds_the_writes_short_of_what_it_asks(
        steps in proptest::collection::vec(step(), 0..60)
    ) {
        let mut unacked = Unacked::default();
        let mut model: HashMap<String, Acked> = HashMap::new();
        let mut clock = 0;
        for step in steps {
            match step {
                Step::Write(key) => {
                    clock += 1;
                    let key = format!("k{key}");
                    unacked.wrote(key.as_str().into(), stamp(clock));
                    model.insert(key, Acked { stamp: stamp(clock), replicas: 0, keepers: 0 });
                }
                Step::Ack { key, current, replicas, keepers } => {
                    let key = format!("k{key}");
                    let Some(now) = model.get(&key).map(|a| a.stamp) else { continue };
                    let acked_stamp = if current { now } else { stamp(now.physical_ns - 1) };
                    unacked.acknowledged(&key, acked_stamp, replicas, keepers);
                    let acked = model.get_mut(&key).expect("held");
                    if acked.stamp == acked_stamp {
                        acked.replicas = acked.replicas.max(replicas);
                        acked.keepers = acked.keepers.max(keepers);
                    }
                }
                Step::Remove(key) => {
                    let key = format!("k{key}");
                    unacked.remove(&key);
                    model.remove(&key);
                }
                Step::Retain(key) => {
                    let key = format!("k{key}");
                    unacked.retain(|k, _| k != key);
                    model.remove(&key);
                }
            }
            prop_assert_eq!(unacked.len(), model.len());
            let levels: usize = unacked.levels.iter().map(|(_, n)| n).sum();
            prop_assert_eq!(levels, unacked.some.len());
            for want in [HeldBy::ONE, HeldBy::keepers(1), HeldBy::replicas(2), HeldBy::keepers(3)] {
                let found: BTreeSet<(String, Stamp)> = unacked
                    .short_of(want)
                    .map(|(k, a)| (k.to_string(), a.stamp))
                    .collect();
                let expected: BTreeSet<(String, Stamp)> = model
                    .iter()
                    .filter(|(_, a)| a.replicas < want.replicas || a.keepers < want.keepers)
                    .map(|(k, a)| (k.clone(), a.stamp))
                    .collect();
                prop_assert_eq!(found, expected, "asked {:?}", want);
            }
        }
    }
}
