//! The CPU time the benchmark's process and its nats-server spend during
//! the timed parts of the queue-based rounds (raw async-nats's `raw_run`,
//! the aether's `aether_run` with `receive()`), the set-up between rounds
//! left out: whether a stream is bound by the two cores or
//! waits on something. Read from `/proc` in clock ticks (1/100 s), so it
//! is meant for the sum of many rounds (the profile's 15).

use std::{
    sync::{
        Mutex,
        atomic::{AtomicU32, Ordering},
    },
    time::Instant,
};

/// Clock ticks a second in `/proc/<pid>/stat` (Linux's `USER_HZ`).
const TICKS_PER_S: f64 = 100.0;

/// The nats-server's process id, once known.
static SERVER: AtomicU32 = AtomicU32::new(0);

/// Spent so far: raw's side, then the aether's.
static SPENT: Mutex<[Spent; 2]> = Mutex::new([Spent::ZERO; 2]);

#[derive(Clone, Copy)]
struct Spent {
    process: u64,
    server: u64,
    wall_ns: u128,
}

impl Spent {
    const ZERO: Spent = Spent {
        process: 0,
        server: 0,
        wall_ns: 0,
    };
}

/// Which side a timed part ran.
#[derive(Clone, Copy)]
pub(crate) enum Side {
    Raw = 0,
    Aether = 1,
}

/// The server whose CPU time is read beside the process's.
pub(crate) fn watch_server(pid: Option<u32>) {
    SERVER.store(pid.unwrap_or(0), Ordering::Relaxed);
}

/// A timed part's start.
pub(crate) struct Timed {
    process: u64,
    server: u64,
    at: Instant,
}

/// Starts a timed part.
pub(crate) fn start() -> Timed {
    Timed {
        process: ticks("self"),
        server: server_ticks(),
        at: Instant::now(),
    }
}

impl Timed {
    /// Ends it, adding what it spent to `side`.
    pub(crate) fn end(self, side: Side) {
        let (process, server, wall) = (ticks("self"), server_ticks(), self.at.elapsed());
        let mut spent = SPENT.lock().unwrap_or_else(|e| e.into_inner());
        let spent = &mut spent[side as usize];
        spent.process += process.saturating_sub(self.process);
        spent.server += server.saturating_sub(self.server);
        spent.wall_ns += wall.as_nanos();
    }
}

/// What each side spent, as shares of one core over its timed parts: a
/// line for each side that ran.
pub(crate) fn report() -> Vec<String> {
    let spent = *SPENT.lock().unwrap_or_else(|e| e.into_inner());
    ["raw async-nats's rounds", "the aether's rounds"]
        .iter()
        .zip(spent)
        .filter(|(_, s)| s.wall_ns > 0)
        .map(|(side, s)| {
            let wall_s = s.wall_ns as f64 / 1e9;
            let share = |ticks: u64| ticks as f64 / TICKS_PER_S / wall_s * 100.0;
            format!(
                "CPU over the timed parts of {side}: the process {:.0} % of a core, nats-server \
                 {:.0} % ({:.0} ms timed)",
                share(s.process),
                share(s.server),
                wall_s * 1000.0
            )
        })
        .collect()
}

fn server_ticks() -> u64 {
    match SERVER.load(Ordering::Relaxed) {
        0 => 0,
        pid => ticks(&pid.to_string()),
    }
}

/// User and system ticks of `pid` (`self` for this process).
fn ticks(pid: &str) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces): utime and
    // stime are the 12th and 13th.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let field = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    field(11) + field(12)
}
