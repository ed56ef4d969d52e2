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

use std::{
    cell::Cell,
    sync::OnceLock,
    time::{SystemTime, UNIX_EPOCH},
};

/// How often (in nanoseconds of the counter) a thread reads the system
/// clock again.
const REANCHOR_NS: u64 = 50_000_000;

fn counter() -> &'static quanta::Clock {
    static CLOCK: OnceLock<quanta::Clock> = OnceLock::new();
    CLOCK.get_or_init(quanta::Clock::new)
}

thread_local! {
    /// `(counter reading, Unix ns)` of this thread's last anchor; `(0, 0)`
    /// before its first reading.
    static ANCHOR: Cell<(u64, u64)> = const { Cell::new((0, 0)) };
}

/// Nanoseconds since the Unix epoch (0 if the system clock is before it).
#[inline]
pub(crate) fn unix_nanos() -> u64 {
    let clock = counter();
    let raw = clock.raw();
    ANCHOR.with(|anchor| {
        let (raw0, unix0) = anchor.get();
        // A counter behind the anchor (another core's, read after a
        // migration) takes the anchor again, as does a stale one.
        if raw0 != 0 && raw >= raw0 {
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
fn reanchor(anchor: &Cell<(u64, u64)>, clock: &quanta::Clock) -> u64 {
    let unix = system_unix_nanos();
    anchor.set((clock.raw(), unix));
    unix
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
