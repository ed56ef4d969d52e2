//! Hybrid logical clocks: stamps that order every write of a map.
//!
//! A [`Stamp`] is `(physical ns, logical counter, node id)`, compared in
//! that order: a strict total order, since no two replicas share a node id
//! and one replica never stamps twice alike. A `Clock` never goes back
//! (a wall clock that jumps back leaves it where it was and counts on with
//! the logical counter), and moves past every stamp it observes, so a write
//! made after seeing another is stamped above it.

use std::{fmt, sync::Mutex, time::Duration};

/// When a write was made, as a hybrid logical clock reads it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Stamp {
    /// Physical time, Unix nanoseconds (the largest the writer had seen).
    pub physical_ns: u64,
    /// Counts writes within one physical reading.
    pub logical: u32,
    /// The replica that stamped it.
    pub node: u64,
}

impl Stamp {
    /// Its physical time as a duration since the Unix epoch.
    pub fn time(&self) -> Duration {
        Duration::from_nanos(self.physical_ns)
    }
}

/// A stamp's text, the one every side writes and reads (the CLI, Python,
/// the bridge and its pages): `<physical>-<logical>-<node>`, fixed-width
/// lower case hex (16, 8 and 16 digits), so that texts sort as their stamps
/// do. The node is never zero.
impl fmt::Display for Stamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:016x}-{:08x}-{:016x}",
            self.physical_ns, self.logical, self.node
        )
    }
}

/// A text that is not a stamp as [`Stamp`]'s `Display` writes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NotAStamp;

impl fmt::Display for NotAStamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(
            "not a stamp: <16 hex physical ns>-<8 hex logical>-<16 hex node>, lower case, node not zero",
        )
    }
}

impl std::error::Error for NotAStamp {}

impl std::str::FromStr for Stamp {
    type Err = NotAStamp;

    /// Exactly the text `Display` writes: nothing else is taken.
    fn from_str(text: &str) -> Result<Self, NotAStamp> {
        let b = text.as_bytes();
        if b.len() != 42 || !text.is_ascii() || b[16] != b'-' || b[25] != b'-' {
            return Err(NotAStamp);
        }
        Ok(Stamp {
            physical_ns: hex(&text[..16]).ok_or(NotAStamp)?,
            logical: u32::try_from(hex(&text[17..25]).ok_or(NotAStamp)?).map_err(|_| NotAStamp)?,
            node: parse_node(&text[26..]).ok_or(NotAStamp)?,
        })
    }
}

/// A node (replica) id as stamps write it: 16 lower case hex digits, not
/// all zero.
pub fn parse_node(text: &str) -> Option<u64> {
    if text.len() != 16 {
        return None;
    }
    hex(text).filter(|&id| id != 0)
}

fn hex(text: &str) -> Option<u64> {
    if text.is_empty()
        || !text
            .bytes()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
    {
        return None;
    }
    u64::from_str_radix(text, 16).ok()
}

/// Why a stamp from elsewhere was not taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TooFarAhead {
    /// How far ahead of this replica's clock it was.
    pub(crate) ahead: Duration,
}

/// One replica's hybrid logical clock.
#[derive(Debug)]
pub(crate) struct Clock {
    node: u64,
    max_drift: Duration,
    last: Mutex<(u64, u32)>,
    wall: fn() -> u64,
}

/// The bus's time ([`crate::bustime`]: this machine's clock corrected by
/// its offset from the bus), Unix nanoseconds: the physical part of a
/// stamp made now.
pub fn wall_ns() -> u64 {
    crate::wave::unix_nanos()
}

impl Clock {
    /// The clock of replica `node`, refusing stamps more than `max_drift`
    /// ahead of the wall clock.
    pub(crate) fn new(node: u64, max_drift: Duration) -> Self {
        Self::with_wall(node, max_drift, wall_ns)
    }

    /// A clock reading `wall` as its physical time (tests turn it back).
    pub(crate) fn with_wall(node: u64, max_drift: Duration, wall: fn() -> u64) -> Self {
        Self {
            node,
            max_drift,
            last: Mutex::new((0, 0)),
            wall,
        }
    }

    /// The node id its stamps carry.
    pub(crate) fn node(&self) -> u64 {
        self.node
    }

    /// A fresh stamp, above every stamp this clock made or observed.
    pub(crate) fn now(&self) -> Stamp {
        let wall = (self.wall)();
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        let (physical, logical) = if wall > last.0 {
            (wall, 0)
        } else {
            // The wall clock stood still or went back: count on.
            match last.1.checked_add(1) {
                Some(logical) => (last.0, logical),
                None => (last.0 + 1, 0),
            }
        };
        *last = (physical, logical);
        crate::wave::clock::stamped(physical);
        Stamp {
            physical_ns: physical,
            logical,
            node: self.node,
        }
    }

    /// Takes in a stamp from elsewhere: refused if it is more than
    /// `max_drift` ahead of the wall clock; otherwise the clock moves past
    /// it, so the next local stamp is higher.
    pub(crate) fn observe(&self, stamp: Stamp) -> Result<(), TooFarAhead> {
        let wall = (self.wall)();
        let limit =
            wall.saturating_add(u64::try_from(self.max_drift.as_nanos()).unwrap_or(u64::MAX));
        if stamp.physical_ns > limit {
            // This process's clock may be the one off: measured again soon.
            crate::wave::clock::note_future();
            return Err(TooFarAhead {
                ahead: Duration::from_nanos(stamp.physical_ns - wall),
            });
        }
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        if (stamp.physical_ns, stamp.logical) > *last {
            *last = (stamp.physical_ns, stamp.logical);
        }
        drop(last);
        crate::wave::clock::seen(stamp.physical_ns);
        Ok(())
    }

    /// Takes in the stamps of one message at once: the wall clock read once,
    /// the clock moved past the highest of them no more than `max_drift`
    /// ahead of it. Returns that bound: a stamp past it is refused (as
    /// [`Clock::observe`] refuses it), and the caller refuses its entry.
    pub(crate) fn observe_all(&self, stamps: impl Iterator<Item = Stamp>) -> u64 {
        let limit = (self.wall)()
            .saturating_add(u64::try_from(self.max_drift.as_nanos()).unwrap_or(u64::MAX));
        let mut highest = None;
        let mut ahead = false;
        for stamp in stamps {
            if stamp.physical_ns > limit {
                ahead = true;
            } else if highest.is_none_or(|h: (u64, u32)| (stamp.physical_ns, stamp.logical) > h) {
                highest = Some((stamp.physical_ns, stamp.logical));
            }
        }
        if ahead {
            // This process's clock may be the one off: measured again soon.
            crate::wave::clock::note_future();
        }
        if let Some(highest) = highest {
            let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
            if highest > *last {
                *last = highest;
            }
            drop(last);
            crate::wave::clock::seen(highest.0);
        }
        limit
    }

    /// Moves the clock past `stamp` whatever its drift: for stamps this
    /// replica itself kept (its ledger), which it trusts. A kept stamp
    /// past the bus's time has the time measured again soon (a source
    /// alone then holds the bus's time past it).
    pub(crate) fn advance(&self, stamp: Stamp) {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        if (stamp.physical_ns, stamp.logical) > *last {
            *last = (stamp.physical_ns, stamp.logical);
        }
        drop(last);
        crate::wave::clock::stamped(stamp.physical_ns);
        if stamp.physical_ns > (self.wall)() {
            crate::wave::clock::note_future();
            crate::wave::clock::hold_past(stamp.physical_ns);
        }
    }

    /// The wall clock's reading now, Unix nanoseconds.
    pub(crate) fn wall(&self) -> u64 {
        (self.wall)()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    use proptest::prelude::*;

    use super::*;

    static WALL: AtomicU64 = AtomicU64::new(1_000_000_000_000);

    fn test_wall() -> u64 {
        WALL.load(Ordering::SeqCst)
    }

    proptest! {
        /// Whatever the wall clock does (forward, still, back), every stamp
        /// is above the one before, and above every stamp observed.
        #[test]
        fn stamps_only_go_up(steps in prop::collection::vec((-5_000i64..5_000, any::<bool>(), 0u64..2_000, 0u32..4), 1..200)) {
            let clock = Clock::with_wall(7, Duration::from_millis(500), test_wall);
            let mut wall: i64 = 1_000_000_000;
            let mut last = Stamp::default();
            for (jump, observe, ahead, logical) in steps {
                wall = (wall + jump).max(0);
                WALL.store(wall as u64, Ordering::SeqCst);
                if observe {
                    let seen = Stamp { physical_ns: wall as u64 + ahead, logical, node: 9 };
                    clock.observe(seen).unwrap();
                    let next = clock.now();
                    prop_assert!(next > seen, "{next} not above observed {seen}");
                    prop_assert!(next > last);
                    last = next;
                } else {
                    let next = clock.now();
                    prop_assert!(next > last, "{next} not above {last}");
                    last = next;
                }
            }
        }

        /// A message's stamps taken in at once move the clock as taking them
        /// one by one does, and refuse the same ones.
        #[test]
        fn a_message_is_taken_in_as_its_stamps_one_by_one(
            stamps in prop::collection::vec((0u64..2_000_000_000, 0u32..4), 0..50),
        ) {
            WALL.store(1_000_000_000, Ordering::SeqCst);
            let at_once = Clock::with_wall(7, Duration::from_millis(500), test_wall);
            let one_by_one = Clock::with_wall(7, Duration::from_millis(500), test_wall);
            let stamps: Vec<Stamp> = stamps
                .into_iter()
                .map(|(physical_ns, logical)| Stamp { physical_ns, logical, node: 9 })
                .collect();
            let latest = at_once.observe_all(stamps.iter().copied());
            for stamp in &stamps {
                let refused = one_by_one.observe(*stamp).is_err();
                prop_assert_eq!(stamp.physical_ns > latest, refused, "{}", stamp);
            }
            prop_assert_eq!(at_once.now(), one_by_one.now());
        }

        /// A stamp survives its text, and the texts sort as the stamps do.
        #[test]
        fn stamp_text_round_trips_and_sorts_as_stamps(
            a in (any::<u64>(), any::<u32>(), 1u64..),
            b in (any::<u64>(), any::<u32>(), 1u64..),
        ) {
            let x = Stamp { physical_ns: a.0, logical: a.1, node: a.2 };
            let y = Stamp { physical_ns: b.0, logical: b.1, node: b.2 };
            prop_assert_eq!(x.to_string().parse::<Stamp>(), Ok(x));
            prop_assert_eq!(x.to_string().cmp(&y.to_string()), x.cmp(&y));
        }

        /// Any other text is refused, never mistaken for a stamp.
        #[test]
        fn other_texts_are_no_stamps(text in ".{0,50}") {
            if let Ok(stamp) = text.parse::<Stamp>() {
                prop_assert_eq!(stamp.to_string(), text);
            }
        }

        /// Stamps of different nodes never compare equal.
        #[test]
        fn stamps_are_a_strict_total_order(a in any::<(u64, u32)>(), b in any::<(u64, u32)>(), na in 1u64..1000, nb in 1000u64..2000) {
            let x = Stamp { physical_ns: a.0, logical: a.1, node: na };
            let y = Stamp { physical_ns: b.0, logical: b.1, node: nb };
            prop_assert_ne!(x, y);
            prop_assert!((x < y) ^ (y < x));
        }
    }

    /// The examples every side tests itself against (`stamps.json`, read
    /// by the browser client's tests too).
    pub(crate) fn vectors() -> serde_json::Value {
        serde_json::from_str(include_str!("stamps.json")).expect("stamps.json is JSON")
    }

    #[test]
    fn stamp_texts_are_as_the_shared_examples_say() {
        let vectors = vectors();
        for case in vectors["texts"].as_array().unwrap() {
            let text = case["text"].as_str().unwrap();
            let stamp = Stamp {
                physical_ns: case["physical_ns"].as_str().unwrap().parse().unwrap(),
                logical: u32::try_from(case["logical"].as_u64().unwrap()).unwrap(),
                node: parse_node(case["node"].as_str().unwrap()).unwrap(),
            };
            assert_eq!(stamp.to_string(), text);
            assert_eq!(text.parse::<Stamp>(), Ok(stamp));
        }
        for text in vectors["not_stamps"].as_array().unwrap() {
            let text = text.as_str().unwrap();
            assert_eq!(text.parse::<Stamp>(), Err(NotAStamp), "{text:?}");
        }
        let ascending: Vec<Stamp> = vectors["ascending"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap().parse().unwrap())
            .collect();
        assert!(ascending.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn the_far_future_is_refused_and_leaves_the_clock_alone() {
        let clock = Clock::new(1, Duration::from_millis(500));
        let now = wall_ns();
        let far = Stamp {
            physical_ns: now + 60_000_000_000,
            logical: 0,
            node: 2,
        };
        let err = clock.observe(far).unwrap_err();
        assert!(err.ahead > Duration::from_secs(59));
        assert!(
            clock.now() < far,
            "the refused stamp did not move the clock"
        );
        let near = Stamp {
            physical_ns: now + 100_000_000,
            logical: 3,
            node: 2,
        };
        clock.observe(near).unwrap();
        assert!(clock.now() > near);
    }
}
