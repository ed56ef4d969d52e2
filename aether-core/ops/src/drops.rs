//! A service's own drops: what its vibrator did not get, by reason, for its
//! summary, and a warning when it sheds, at most once per interval.
//!
//! A receive queue that fills sheds its weakest waves and counts them
//! (`DropReason::QueueFull`); a service that never looks would shed in
//! silence. [`DropWatch::check`], called now and then (each loop turn is
//! fine: it reads a few atomics), logs a warning with the count since the
//! last warning, at most once per interval.
//!
//! ```
//! use std::time::Duration;
//! use aether_core::{DropReason, StatsSnapshot};
//! use aether_ops::drops::{DropWatch, by_reason};
//!
//! let mut watch = DropWatch::new("service-beta", Duration::from_secs(10));
//! assert_eq!(watch.check(&StatsSnapshot::default()), None);
//! assert!(by_reason(&StatsSnapshot::default()).is_empty());
//! ```

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use aether_core::{DropReason, StatsSnapshot};

/// The drops of `stats` that happened, by reason.
pub fn by_reason(stats: &StatsSnapshot) -> BTreeMap<&'static str, u64> {
    stats
        .drops()
        .filter(|(_, n)| *n > 0)
        .map(|(reason, n)| (reason.as_str(), n))
        .collect()
}

/// The drops a service suffered: its vibrator's own (noise floor, full
/// queue, hopping replays), and those its aether counted before any
/// vibrator could be told, on arrival: forged, denied and replayed waves.
pub fn of_service(vibrator: &StatsSnapshot, aether: &StatsSnapshot) -> BTreeMap<&'static str, u64> {
    let mut drops = by_reason(vibrator);
    for reason in [DropReason::Forged, DropReason::Denied, DropReason::Replay] {
        let n = aether.dropped(reason);
        if n > 0 {
            let own = drops.entry(reason.as_str()).or_default();
            *own = (*own).max(n);
        }
    }
    drops
}

/// What a program leaves behind when it ends with waves it accepted and
/// could not send (the server unreachable).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LeftAtExit {
    /// Waves lost with the process: in the outbox in memory (and the
    /// durable one, when it keeps no directory).
    pub unsent: u64,
    /// Waves of durable channels safe in the durable outbox on disk: sent
    /// by the program's next start.
    pub kept: u64,
}

/// What `aether` leaves behind if it ends now: see [`LeftAtExit`].
pub fn left_at_exit(aether: &aether_core::Aether) -> LeftAtExit {
    let status = aether.connection();
    let durable = status.durable_outbox_len as u64;
    if aether.config().durability.outbox_dir.is_some() {
        LeftAtExit {
            unsent: status.outbox_len as u64,
            kept: durable,
        }
    } else {
        LeftAtExit {
            unsent: status.unsent() as u64,
            kept: 0,
        }
    }
}

/// `reason n, reason n` or `none`, for a summary line.
pub fn summary(drops: &BTreeMap<&'static str, u64>) -> String {
    if drops.is_empty() {
        return "none".to_string();
    }
    drops
        .iter()
        .map(|(reason, n)| format!("{reason} {n}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Warns about a service's drops at most once per interval.
#[derive(Debug)]
pub struct DropWatch {
    who: &'static str,
    every: Duration,
    warned: u64,
    last: Option<Instant>,
}

impl DropWatch {
    /// A watch for the service `who`, warning at most once per `every`.
    pub fn new(who: &'static str, every: Duration) -> Self {
        Self {
            who,
            every,
            warned: 0,
            last: None,
        }
    }

    /// Looks at `stats`: if waves were dropped since the last warning and
    /// the interval has passed, warns with their count and returns it.
    pub fn check(&mut self, stats: &StatsSnapshot) -> Option<u64> {
        let total = stats.dropped_total();
        let new = total.saturating_sub(self.warned);
        if new == 0 || self.last.is_some_and(|last| last.elapsed() < self.every) {
            return None;
        }
        self.warned = total;
        self.last = Some(Instant::now());
        let since_start = summary(&by_reason(stats));
        tracing::warn!(
            service = self.who,
            dropped = new,
            "{}: {new} waves dropped since the last warning; since start, by reason: \
             {since_start}",
            self.who
        );
        Some(new)
    }
}
