//! The emission clock: Unix time in nanoseconds, read on every emit.
//!
//! Every emit stamps its wave (id and emission time) from one reading, so
//! the reading is on the hot path. The system clock costs a `clock_gettime`
//! (about 20 ns here, a quarter of a whole `tokio::sync::mpsc` send); where
//! the CPU has an invariant time-stamp counter, this clock reads the counter
//! instead (`quanta`: a few ns) and adds the nanoseconds elapsed since an
//! anchor taken from the system clock. Each thread takes its anchor again
//! every [`REANCHOR_NS`], so the reading follows the system clock (NTP
//! slewing, a step) to within that period, and the counter's calibration
//! error never accumulates past it. Without such a counter quanta reads the
//! monotonic clock, and this costs what the system clock did.
//!
//! What it reads is the bus's time: the system clock plus this process's
//! offset from the bus ([`crate::bustime`] measures it; 0 until then). A
//! step of the system clock of more than [`JUMP_NS`] seen at a reanchor is
//! noted, for the offset to be measured again at once; while the offset
//! follows the bus's sources, the step is taken out of it at once (and
//! every thread anchors again), so the bus's time goes on as it was: a
//! machine whose clock is stepped (NTP arriving late, a clock set by
//! hand) neither stamps ahead of the bus nor goes back.

use std::{
    cell::Cell,
    sync::{
        Mutex, OnceLock,
        atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering},
    },
    time::{SystemTime, UNIX_EPOCH},
};

/// This process's offset from the bus's time, nanoseconds (bus time =
/// system clock + offset).
static OFFSET_NS: AtomicI64 = AtomicI64::new(0);

/// The system clock stepped since the offset was last measured.
static JUMPED: AtomicBool = AtomicBool::new(false);

/// A stamp from more than `max_drift` in this process's future was
/// refused since the offset was last measured: this clock may be the one
/// off.
static FUTURE: AtomicBool = AtomicBool::new(false);

/// The offset follows the bus's sources (their last measurement heard
/// one): a step of the system clock is taken out of it.
static MEASURED: AtomicBool = AtomicBool::new(false);

/// The latest physical time of a stamp this process made or kept in a
/// ledger: a source alone holds the bus's time at or past it
/// ([`crate::bustime`]), so the bus's time never goes back behind a write
/// it holds, across a restart on a clock set back too.
static STAMPED_NS: AtomicU64 = AtomicU64::new(0);

/// The latest physical time of a stamp this process took in from
/// elsewhere (within `max_drift` of its clock): what a keeper's `stamped`
/// file keeps past, beside [`STAMPED_NS`]. Not a floor of the bus's time
/// while running (one sender could push it on, `max_drift` at a time).
static SEEN_NS: AtomicU64 = AtomicU64::new(0);

/// This process is a time source that heard no other: the bus's time is
/// its own, held past the stamps it keeps as it reads them.
static ALONE: AtomicBool = AtomicBool::new(false);

/// Steps of the system clock seen (taken out of the offset once it is
/// measured): a thread whose anchor is of an earlier one anchors again,
/// and a measurement that straddled one is not taken.
static STEPS: AtomicU64 = AtomicU64::new(0);

/// The process's last reading of the system clock against the counter
/// (any thread's), to find steps by.
static LAST: Mutex<(u64, u64)> = Mutex::new((0, 0));

/// A step of the system clock larger than this (against the counter) is a
/// jump: NTP arriving late, a clock set by hand.
pub(crate) const JUMP_NS: u64 = 1_000_000_000;

/// Sets this process's offset from the bus's time, measured against its
/// sources from when [`steps`] read `since`: none if a step of the system
/// clock was seen meanwhile (the measurement straddled it; the next one
/// comes at once).
pub(crate) fn set_offset(ns: i64, since: u64) -> bool {
    let mut last = LAST.lock().unwrap_or_else(|e| e.into_inner());
    // A step not seen yet (no thread read the clock since) is seen now:
    // else it would be taken out of this new offset again.
    note_step(&mut last, counter());
    if STEPS.load(Ordering::Relaxed) != since {
        return false;
    }
    OFFSET_NS.store(ns, Ordering::Relaxed);
    MEASURED.store(true, Ordering::Relaxed);
    true
}

/// Steps of the system clock taken out of the offset so far, a step not
/// seen yet among them: a measurement starts from here.
pub(crate) fn steps() -> u64 {
    let mut last = LAST.lock().unwrap_or_else(|e| e.into_inner());
    note_step(&mut last, counter());
    STEPS.load(Ordering::Relaxed)
}

/// The last measurement heard no source: the system clock's steps are
/// followed as they come.
pub(crate) fn unmeasured() {
    MEASURED.store(false, Ordering::Relaxed);
}

/// This process's offset from the bus's time, nanoseconds.
pub(crate) fn offset() -> i64 {
    OFFSET_NS.load(Ordering::Relaxed)
}

/// Notes a stamp this process made, or kept in a ledger, at `ns`.
#[inline]
pub(crate) fn stamped(ns: u64) {
    if ns > STAMPED_NS.load(Ordering::Relaxed) {
        STAMPED_NS.fetch_max(ns, Ordering::Relaxed);
    }
}

/// The latest physical time of a stamp this process made or kept.
pub(crate) fn latest_stamped() -> u64 {
    STAMPED_NS.load(Ordering::Relaxed)
}

/// Notes a stamp taken in from elsewhere at `ns`, to the millisecond: a
/// replica taking in a stream of changes writes the shared value at most
/// once a millisecond, not once a change (the file it feeds says 2 s past
/// it).
#[inline]
pub(crate) fn seen(ns: u64) {
    if ns
        > SEEN_NS
            .load(Ordering::Relaxed)
            .saturating_add(SEEN_GRAIN_NS)
    {
        SEEN_NS.fetch_max(ns, Ordering::Relaxed);
    }
}

/// How far a stamp taken in must pass [`SEEN_NS`] to move it.
const SEEN_GRAIN_NS: u64 = 1_000_000;

/// The latest physical time of a stamp this process made, kept or took in.
pub(crate) fn latest_seen() -> u64 {
    SEEN_NS.load(Ordering::Relaxed).max(latest_stamped())
}

/// Whether this process is a time source that heard no other.
pub(crate) fn set_alone(alone: bool) {
    ALONE.store(alone, Ordering::Relaxed);
}

/// A stamp at `ns` this process kept (its ledger) is past the bus's time:
/// a source alone moves the bus's time past it at once (a source
/// restarted on a clock set back reads its ledgers before a writer that
/// follows it stamps). Said once.
pub(crate) fn hold_past(ns: u64) {
    if !ALONE.load(Ordering::Relaxed) {
        return;
    }
    // Under the lock the steps are taken out under.
    let _last = LAST.lock().unwrap_or_else(|e| e.into_inner());
    let least = (i128::from(ns) + 1 - i128::from(system_unix_nanos()))
        .clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64;
    let before = OFFSET_NS.fetch_max(least, Ordering::Relaxed);
    static SAID: AtomicBool = AtomicBool::new(false);
    if before < least && !SAID.swap(true, Ordering::Relaxed) {
        tracing::warn!(
            offset_ms = least / 1_000_000,
            before_ms = before / 1_000_000,
            "this time source, alone on the bus, holds the bus's time past the writes it \
             keeps: this machine's clock is behind them; set its clock right (NTP)"
        );
    }
}

/// Whether the system clock jumped since this was last asked.
pub(crate) fn take_jump() -> bool {
    JUMPED.swap(false, Ordering::Relaxed)
}

/// Notes a stamp refused as from this process's future, for the offset to
/// be measured again soon.
pub(crate) fn note_future() {
    if !FUTURE.load(Ordering::Relaxed) {
        FUTURE.store(true, Ordering::Relaxed);
    }
}

/// Whether a stamp from the future was refused since this was last asked.
pub(crate) fn take_future() -> bool {
    FUTURE.swap(false, Ordering::Relaxed)
}

/// How often (in nanoseconds of the counter) a thread reads the system
/// clock again.
const REANCHOR_NS: u64 = 50_000_000;

fn counter() -> &'static quanta::Clock {
    static CLOCK: OnceLock<quanta::Clock> = OnceLock::new();
    CLOCK.get_or_init(quanta::Clock::new)
}

thread_local! {
    /// `(counter reading, Unix ns, steps)` of this thread's last anchor;
    /// `(0, 0, 0)` before its first reading.
    static ANCHOR: Cell<(u64, u64, u64)> = const { Cell::new((0, 0, 0)) };
}

/// The bus's time: nanoseconds since the Unix epoch by the system clock
/// plus this process's offset from the bus (0 if before the epoch).
#[inline]
pub(crate) fn unix_nanos() -> u64 {
    system_nanos().saturating_add_signed(offset())
}

/// Nanoseconds since the Unix epoch by this machine's clock, read through
/// the counter.
#[inline]
fn system_nanos() -> u64 {
    let clock = counter();
    let raw = clock.raw();
    ANCHOR.with(|anchor| {
        let (raw0, unix0, steps) = anchor.get();
        // A counter behind the anchor (another core's, read after a
        // migration) takes the anchor again, as does a stale one, or one
        // from before a step taken out of the offset.
        if raw0 != 0 && raw >= raw0 && steps == STEPS.load(Ordering::Relaxed) {
            let elapsed = clock.delta_as_nanos(raw0, raw);
            if elapsed < REANCHOR_NS {
                return unix0 + elapsed;
            }
        }
        reanchor(anchor, clock)
    })
}

/// Nanoseconds since the Unix epoch (0 if the clock is before it), read
/// from the system clock itself.
pub(crate) fn system_unix_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() * 1_000_000_000 + u64::from(d.subsec_nanos()))
        .unwrap_or(0)
}

#[cold]
#[inline(never)]
fn reanchor(anchor: &Cell<(u64, u64, u64)>, clock: &quanta::Clock) -> u64 {
    let mut last = LAST.lock().unwrap_or_else(|e| e.into_inner());
    let (raw, unix) = note_step(&mut last, clock);
    anchor.set((raw, unix, STEPS.load(Ordering::Relaxed)));
    unix
}

/// Reads the system clock against the counter and compares with `last`
/// (the process's last reading): a step of more than [`JUMP_NS`] is noted
/// and, while the offset follows the bus's sources, taken out of it.
/// Returns the reading.
fn note_step(last: &mut (u64, u64), clock: &quanta::Clock) -> (u64, u64) {
    let unix = system_unix_nanos();
    let raw = clock.raw();
    let (raw0, unix0) = *last;
    if raw0 != 0 && raw >= raw0 {
        let expected = unix0 + clock.delta_as_nanos(raw0, raw);
        if let Some(step) = step_of(expected, unix) {
            JUMPED.store(true, Ordering::Relaxed);
            if MEASURED.load(Ordering::Relaxed) {
                OFFSET_NS.fetch_sub(step, Ordering::Relaxed);
            }
            // Counted either way: a measurement that straddled it (the
            // first one too) is not taken, and threads anchor again.
            STEPS.fetch_add(1, Ordering::Relaxed);
        }
    }
    if raw >= raw0 {
        *last = (raw, unix);
    }
    (raw, unix)
}

/// The step of a clock that reads `unix` where `expected` was due, if it
/// is more than [`JUMP_NS`] either way.
fn step_of(expected: u64, unix: u64) -> Option<i64> {
    (unix.abs_diff(expected) > JUMP_NS).then(|| {
        (i128::from(unix) - i128::from(expected)).clamp(i128::from(i64::MIN), i128::from(i64::MAX))
            as i64
    })
}

/// What this process knows of the bus's time.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClockStatus {
    /// Its offset from the bus's time, nanoseconds: the bus's time is this
    /// machine's clock plus it (0 before a measurement, or with no
    /// source).
    pub offset_ns: i64,
    /// How far the offset may be off, nanoseconds: half the round trip of
    /// the exchange it came from (0 before a measurement).
    pub uncertainty_ns: u64,
    /// Sources heard at the last measurement.
    pub sources: usize,
    /// Measurements made.
    pub measurements: u64,
}

pub(crate) fn status_cell() -> &'static Mutex<ClockStatus> {
    static STATUS: OnceLock<Mutex<ClockStatus>> = OnceLock::new();
    STATUS.get_or_init(|| Mutex::new(ClockStatus::default()))
}

/// The bus's time now: this machine's clock plus its offset from the bus.
pub fn bus_now() -> SystemTime {
    UNIX_EPOCH + std::time::Duration::from_nanos(unix_nanos())
}

/// What this process knows of the bus's time now.
pub fn status() -> ClockStatus {
    let mut status = status_cell()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    status.offset_ns = offset();
    status
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follows_the_system_clock() {
        for _ in 0..1000 {
            let before = system_unix_nanos();
            let ours = unix_nanos();
            let after = system_unix_nanos();
            // Within a millisecond of the system clock's reading, either side.
            assert!(ours + 1_000_000 >= before, "{ours} vs {before}");
            assert!(ours <= after + 1_000_000, "{ours} vs {after}");
        }
    }

    #[test]
    fn a_step_is_more_than_a_second_either_way() {
        let s = 1_000_000_000;
        assert_eq!(step_of(100 * s, 100 * s + s), None);
        assert_eq!(step_of(100 * s, 100 * s - s), None);
        assert_eq!(step_of(100 * s, 3700 * s), Some(3600 * s as i64));
        assert_eq!(step_of(3700 * s, 100 * s), Some(-3600 * s as i64));
    }

    #[test]
    fn never_goes_backwards_within_an_anchor() {
        let mut last = unix_nanos();
        for _ in 0..100_000 {
            let now = unix_nanos();
            // A new anchor may step back by the counter's calibration error
            // over one period (about a microsecond here), never by as much
            // as a millisecond.
            assert!(now + 1_000_000 >= last, "{now} after {last}");
            last = now;
        }
    }
}
