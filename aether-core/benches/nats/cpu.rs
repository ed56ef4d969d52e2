//! The CPU time the benchmark's process and its nats-server spend during
//! the timed parts of the rounds (raw async-nats's `raw_run`, the
//! aether's `aether_run` with `receive()` and `aether_handler`), the set-up between rounds
//! left out: whether a stream is bound by the two cores or
//! waits on something. Read from `/proc` in clock ticks (1/100 s), so it
//! is meant for the sum of many rounds (the profile's 15). Beside it,
//! when the emitting loop returned within each timed part: a stream whose
//! receivers finish long after it is paced by its receiving side.

use aether_testkit::bench::cpu_of;

use std::{
    sync::{
        Mutex,
        atomic::{AtomicU32, Ordering},
    },
    time::{Duration, Instant},
};

/// The nats-server's process id, once known.
static SERVER: AtomicU32 = AtomicU32::new(0);

/// Spent so far: raw's side, then the aether's.
static SPENT: Mutex<[Spent; 2]> = Mutex::new([Spent::ZERO; 2]);

#[derive(Clone, Copy)]
struct Spent {
    process: Duration,
    server: Duration,
    wall: Duration,
    /// Until the emitting loop returned.
    emitting: Duration,
}

impl Spent {
    const ZERO: Spent = Spent {
        process: Duration::ZERO,
        server: Duration::ZERO,
        wall: Duration::ZERO,
        emitting: Duration::ZERO,
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
    process: Duration,
    server: Duration,
    at: Instant,
    emitted: Option<Duration>,
}

/// Starts a timed part.
pub(crate) fn start() -> Timed {
    Timed {
        process: cpu_of("self"),
        server: server_cpu(),
        at: Instant::now(),
        emitted: None,
    }
}

impl Timed {
    /// The emitting loop returned (its last message handed to the client).
    pub(crate) fn emitted(&mut self) {
        self.emitted = Some(self.at.elapsed());
    }

    /// Ends it, adding what it spent to `side`.
    pub(crate) fn end(self, side: Side) {
        let (process, server, wall) = (cpu_of("self"), server_cpu(), self.at.elapsed());
        let mut spent = SPENT.lock().unwrap_or_else(|e| e.into_inner());
        let spent = &mut spent[side as usize];
        spent.process += process.saturating_sub(self.process);
        spent.server += server.saturating_sub(self.server);
        spent.wall += wall;
        spent.emitting += self.emitted.unwrap_or(wall);
    }
}

/// What each side spent, as shares of one core over its timed parts: a
/// line for each side that ran.
pub(crate) fn report() -> Vec<String> {
    let spent = *SPENT.lock().unwrap_or_else(|e| e.into_inner());
    ["raw async-nats's rounds", "the aether's rounds"]
        .iter()
        .zip(spent)
        .filter(|(_, s)| !s.wall.is_zero())
        .map(|(side, s)| {
            let wall_s = s.wall.as_secs_f64();
            let share = |cpu: Duration| cpu.as_secs_f64() / wall_s * 100.0;
            format!(
                "CPU over the timed parts of {side}: the process {:.0} % of a core, nats-server \
                 {:.0} % ({:.0} ms timed; the emitting loop returned at {:.0} % of it)",
                share(s.process),
                share(s.server),
                wall_s * 1000.0,
                share(s.emitting)
            )
        })
        .collect()
}

fn server_cpu() -> Duration {
    match SERVER.load(Ordering::Relaxed) {
        0 => Duration::ZERO,
        pid => cpu_of(&pid.to_string()),
    }
}
