//! Counters of what happened to waves, readable without locks.
//!
//! Every wave that is not delivered is counted under a [`DropReason`]; an
//! exporter reads a [`StatsSnapshot`] at any time.

use std::{
    fmt,
    sync::atomic::{AtomicU64, Ordering::Relaxed},
};

use crate::EmitErrorKind;

/// Why a wave was not delivered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum DropReason {
    /// Its effective amplitude fell below the aether's `min_amplitude`.
    Expired,
    /// It made more hops than `max_propagation` (loop protection).
    PropagationLimit,
    /// It arrived weaker than the receiving vibrator's noise floor.
    BelowNoiseFloor,
    /// The receiving vibrator's queue was full and this was the weakest wave.
    QueueFull,
    /// A hopping wave stamped outside the receiver's window of time slots,
    /// or on a wire channel that is not its slot's hop: a replay.
    Replay,
    /// It arrived without the valid signature its source's key requires
    /// (or unsigned where signatures are required): a forged source.
    Forged,
    /// Its source may not emit on its channel (the aether's ACL).
    Denied,
    /// Its channel's payloads are sealed (`[aether.security] encryption`)
    /// and it could not be opened here: no key, another key, tampered, or
    /// not sealed at all.
    Undecryptable,
    /// Emit took it, but the aether closed before it was handed to the
    /// connection (a batch still queued).
    Unsent,
    /// A copy of a durable wave the receiving vibrator handed out already:
    /// a redelivery after a lost acknowledgement, or a replayed copy.
    Duplicate,
}

impl DropReason {
    /// Every reason, in a fixed order.
    pub const ALL: [DropReason; 10] = [
        DropReason::Expired,
        DropReason::PropagationLimit,
        DropReason::BelowNoiseFloor,
        DropReason::QueueFull,
        DropReason::Replay,
        DropReason::Forged,
        DropReason::Denied,
        DropReason::Undecryptable,
        DropReason::Unsent,
        DropReason::Duplicate,
    ];

    /// A short snake_case name, fit for a metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::Expired => "expired",
            DropReason::PropagationLimit => "propagation_limit",
            DropReason::BelowNoiseFloor => "below_noise_floor",
            DropReason::QueueFull => "queue_full",
            DropReason::Replay => "replay",
            DropReason::Forged => "forged",
            DropReason::Denied => "denied",
            DropReason::Undecryptable => "undecryptable",
            DropReason::Unsent => "unsent",
            DropReason::Duplicate => "duplicate",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Lock-free counters, shared by an aether or held by one vibrator.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    emitted: AtomicU64,
    /// Of `emitted`, those that did not go out under this vibrator's
    /// origin (dropped at emit, or reflections it sent): counted on those
    /// rare paths, so that an emit pays for `emitted` alone.
    unpublished: AtomicU64,
    delivered: AtomicU64,
    unrouted: AtomicU64,
    diffracted: AtomicU64,
    reflected: AtomicU64,
    rate_limited: AtomicU64,
    rate_limit_waits: AtomicU64,
    retries: AtomicU64,
    timeouts: AtomicU64,
    breaker_opens: AtomicU64,
    breaker_rejections: AtomicU64,
    handler_panics: AtomicU64,
    dropped: [AtomicU64; DropReason::ALL.len()],
    refused: [AtomicU64; EmitErrorKind::ALL.len()],
}

impl Counters {
    pub(crate) fn emitted(&self) {
        self.emitted.fetch_add(1, Relaxed);
    }

    pub(crate) fn unpublished(&self) {
        self.unpublished.fetch_add(1, Relaxed);
    }

    pub(crate) fn delivered(&self) {
        self.delivered.fetch_add(1, Relaxed);
    }

    #[cfg_attr(not(feature = "nats"), allow(dead_code))]
    pub(crate) fn delivered_many(&self, n: u64) {
        self.delivered.fetch_add(n, Relaxed);
    }

    pub(crate) fn unrouted(&self) {
        self.unrouted.fetch_add(1, Relaxed);
    }

    pub(crate) fn diffracted(&self) {
        self.diffracted.fetch_add(1, Relaxed);
    }

    pub(crate) fn reflected(&self) {
        self.reflected.fetch_add(1, Relaxed);
    }

    pub(crate) fn rate_limited(&self) {
        self.rate_limited.fetch_add(1, Relaxed);
    }

    pub(crate) fn rate_limit_waited(&self) {
        self.rate_limit_waits.fetch_add(1, Relaxed);
    }

    #[cfg_attr(not(any(feature = "nats", feature = "reliability")), allow(dead_code))]
    pub(crate) fn retried(&self) {
        self.retries.fetch_add(1, Relaxed);
    }

    #[cfg_attr(not(any(feature = "nats", feature = "reliability")), allow(dead_code))]
    pub(crate) fn timed_out(&self) {
        self.timeouts.fetch_add(1, Relaxed);
    }

    #[cfg_attr(not(any(feature = "nats", feature = "reliability")), allow(dead_code))]
    pub(crate) fn breaker_opened(&self) {
        self.breaker_opens.fetch_add(1, Relaxed);
    }

    #[cfg_attr(not(any(feature = "nats", feature = "reliability")), allow(dead_code))]
    pub(crate) fn breaker_rejected(&self) {
        self.breaker_rejections.fetch_add(1, Relaxed);
    }

    pub(crate) fn handler_panicked(&self) {
        self.handler_panics.fetch_add(1, Relaxed);
    }

    pub(crate) fn handler_panics(&self) -> u64 {
        self.handler_panics.load(Relaxed)
    }

    pub(crate) fn dropped(&self, reason: DropReason) {
        self.dropped[reason.index()].fetch_add(1, Relaxed);
    }

    /// An emit refused (the caller told why).
    pub(crate) fn refused(&self, kind: EmitErrorKind) {
        self.refused[refusal_index(kind)].fetch_add(1, Relaxed);
    }

    /// Emits refused so far, for any reason.
    pub(crate) fn refused_total(&self) -> u64 {
        self.refused.iter().map(|n| n.load(Relaxed)).sum()
    }

    pub(crate) fn snapshot(&self) -> StatsSnapshot {
        let mut dropped = [0; DropReason::ALL.len()];
        for (slot, counter) in dropped.iter_mut().zip(&self.dropped) {
            *slot = counter.load(Relaxed);
        }
        let mut refused = [0; EmitErrorKind::ALL.len()];
        for (slot, counter) in refused.iter_mut().zip(&self.refused) {
            *slot = counter.load(Relaxed);
        }
        StatsSnapshot {
            emitted: self.emitted.load(Relaxed),
            published: self
                .emitted
                .load(Relaxed)
                .saturating_sub(self.unpublished.load(Relaxed)),
            delivered: self.delivered.load(Relaxed),
            unrouted: self.unrouted.load(Relaxed),
            diffracted: self.diffracted.load(Relaxed),
            reflected: self.reflected.load(Relaxed),
            rate_limited: self.rate_limited.load(Relaxed),
            rate_limit_waits: self.rate_limit_waits.load(Relaxed),
            retries: self.retries.load(Relaxed),
            timeouts: self.timeouts.load(Relaxed),
            breaker_opens: self.breaker_opens.load(Relaxed),
            breaker_rejections: self.breaker_rejections.load(Relaxed),
            handler_panics: self.handler_panics.load(Relaxed),
            dropped,
            refused,
        }
    }
}

/// What happened to waves so far, read at one moment.
///
/// For an aether, `emitted` counts waves accepted by `emit`, `delivered`
/// counts waves put in a receive queue (once per receiver), and `unrouted`
/// counts emitted waves no vibrator resonated on. A reflection is a wave too:
/// the aether that sends it counts it as emitted (and as `reflected`), so
/// that every emitted wave is still delivered, unrouted or dropped. For a
/// vibrator, `emitted` counts the waves it emitted (through it or its
/// emitters, reflections it sent included), `delivered` the waves put in its
/// queue, and the drops those it did not get.
#[derive(Clone, Copy, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// Waves accepted for emission.
    pub emitted: u64,
    /// For a vibrator: the waves it emitted that went out on the medium
    /// (not dropped by the checks at emit, reflections it sent excluded),
    /// which an observer of every channel sees. For an aether, its
    /// `emitted`.
    pub published: u64,
    /// Waves placed in receive queues.
    pub delivered: u64,
    /// Emitted waves that matched no resonator (for a diffracting wave: on
    /// its channel nor on any parent channel).
    pub unrouted: u64,
    /// Bends of diffracting waves to a parent channel, one per level: a wave
    /// that finds its resonator on its grandparent counts 2.
    pub diffracted: u64,
    /// Reflections sent back to their source: waves emitted with
    /// `reflect_on_failure` that could not be delivered, and waves a
    /// receiver refused with `Vibrator::reflect`.
    pub reflected: u64,
    /// Emits refused because the vibrator was over its rate limit
    /// ([`crate::RateLimit`]): not sent, so not counted as emitted.
    pub rate_limited: u64,
    /// Emits that waited for their turn under a rate limit that shapes
    /// ([`crate::RateLimit::waiting_up_to`]) and then went out.
    pub rate_limit_waits: u64,
    /// Retries made by [`crate::reliable::Reliable`] policies on this
    /// aether (after a retryable error).
    pub retries: u64,
    /// Tries of a `Reliable` policy that timed out.
    pub timeouts: u64,
    /// Times a `Reliable` policy's circuit breaker opened.
    pub breaker_opens: u64,
    /// Calls failed at once by an open circuit breaker.
    pub breaker_rejections: u64,
    /// Waves whose vibrator's handler ([`crate::VibratorBuilder::on_wave`])
    /// panicked on them (counted as delivered too).
    pub handler_panics: u64,
    dropped: [u64; DropReason::ALL.len()],
    refused: [u64; EmitErrorKind::ALL.len()],
}

/// Where `kind` is counted.
fn refusal_index(kind: EmitErrorKind) -> usize {
    EmitErrorKind::ALL
        .iter()
        .position(|k| *k == kind)
        .expect("every kind is in ALL")
}

impl StatsSnapshot {
    /// Waves dropped for `reason`.
    pub fn dropped(&self, reason: DropReason) -> u64 {
        self.dropped[reason.index()]
    }

    /// Waves dropped for any reason.
    pub fn dropped_total(&self) -> u64 {
        self.dropped.iter().sum()
    }

    /// `(reason, count)` for every reason.
    pub fn drops(&self) -> impl Iterator<Item = (DropReason, u64)> + '_ {
        DropReason::ALL.iter().map(|r| (*r, self.dropped(*r)))
    }

    /// Emits refused with `kind` (the caller told why; nothing was sent).
    /// A rate limit's refusals are [`StatsSnapshot::rate_limited`] too.
    pub fn refused(&self, kind: EmitErrorKind) -> u64 {
        self.refused[refusal_index(kind)]
    }

    /// Emits refused for any reason.
    pub fn refused_total(&self) -> u64 {
        self.refused.iter().sum()
    }

    /// `(kind, count)` for every kind of emit error.
    pub fn refusals(&self) -> impl Iterator<Item = (EmitErrorKind, u64)> + '_ {
        EmitErrorKind::ALL.iter().map(|k| (*k, self.refused(*k)))
    }
}

/// Every counter by name, the drops as a map by reason:
///
/// ```
/// let debug = format!("{:?}", aether_core::StatsSnapshot::default());
/// assert!(debug.contains("dropped: {\"expired\": 0, \"propagation_limit\": 0"));
/// ```
impl fmt::Debug for StatsSnapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // In the order of the reasons, by name.
        struct Drops<'a>(&'a StatsSnapshot);
        impl fmt::Debug for Drops<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_map()
                    .entries(self.0.drops().map(|(r, n)| (r.as_str(), n)))
                    .finish()
            }
        }
        struct Refusals<'a>(&'a StatsSnapshot);
        impl fmt::Debug for Refusals<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_map()
                    .entries(
                        self.0
                            .refusals()
                            .filter(|(_, n)| *n > 0)
                            .map(|(k, n)| (k.as_str(), n)),
                    )
                    .finish()
            }
        }
        f.debug_struct("StatsSnapshot")
            .field("emitted", &self.emitted)
            .field("published", &self.published)
            .field("delivered", &self.delivered)
            .field("unrouted", &self.unrouted)
            .field("diffracted", &self.diffracted)
            .field("reflected", &self.reflected)
            .field("rate_limited", &self.rate_limited)
            .field("rate_limit_waits", &self.rate_limit_waits)
            .field("retries", &self.retries)
            .field("timeouts", &self.timeouts)
            .field("breaker_opens", &self.breaker_opens)
            .field("breaker_rejections", &self.breaker_rejections)
            .field("handler_panics", &self.handler_panics)
            .field("dropped", &Drops(self))
            .field("refused", &Refusals(self))
            .finish()
    }
}

/// A table, one counter a line, every drop reason included.
///
/// ```
/// let table = aether_core::StatsSnapshot::default().to_string();
/// assert!(table.starts_with("emitted"));
/// assert!(table.contains("dropped below_noise_floor"));
/// ```
impl fmt::Display for StatsSnapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let totals = [
            ("emitted", self.emitted),
            ("published", self.published),
            ("delivered", self.delivered),
            ("unrouted", self.unrouted),
            ("diffracted", self.diffracted),
            ("reflected", self.reflected),
            ("rate_limited", self.rate_limited),
            ("rate_limit_waits", self.rate_limit_waits),
            ("retries", self.retries),
            ("timeouts", self.timeouts),
            ("breaker_opens", self.breaker_opens),
            ("breaker_rejections", self.breaker_rejections),
            ("handler_panics", self.handler_panics),
        ];
        for (name, n) in totals {
            writeln!(f, "{name:<26} {n:>8}")?;
        }
        for (i, (reason, n)) in self.drops().enumerate() {
            let name = format!("dropped {reason}");
            write!(f, "{name:<26} {n:>8}")?;
            if i + 1 < DropReason::ALL.len() {
                writeln!(f)?;
            }
        }
        // Refusals only where there were some.
        for (kind, n) in self.refusals().filter(|(_, n)| *n > 0) {
            let name = format!("refused {}", kind.as_str());
            write!(f, "\n{name:<26} {n:>8}")?;
        }
        Ok(())
    }
}
