//! What every peer's rounds share: sizes, the tally receivers count into,
//! liveness probes, the bounded wait for a round's end, the paced sender.

use std::{
    sync::{
        Arc, Mutex, OnceLock,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use bytes::Bytes;

pub const PAYLOAD: usize = 128;
pub const FAN_OUT: usize = 4;
/// Probe payloads are shorter than `PAYLOAD`: never counted as data.
pub const PROBE: &[u8] = b"probe";
/// Bound on a whole round: past it, what arrived is what is reported.
pub const ROUND_LIMIT: Duration = Duration::from_secs(60);
/// A round ends early once nothing has arrived for this long after the
/// sender finished (what is missing then is counted as lost).
pub const IDLE_LIMIT: Duration = Duration::from_secs(2);
/// Bound on subscriptions becoming live.
pub const PROBE_LIMIT: Duration = Duration::from_secs(10);
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
pub const STEADY_RATE: u64 = 10_000;

/// The sizes of one run (`AETHER_PEERS_QUICK=1`: small).
#[derive(Clone, Copy)]
pub struct Sizes {
    /// Messages per throughput round.
    pub n: usize,
    /// Measured rounds (after one warm-up round of each peer).
    pub rounds: usize,
    pub latency_rounds: usize,
    /// Timed requests per request/reply round, after `warm_up`.
    pub samples: usize,
    pub warm_up: usize,
    /// Messages per steady-latency round (the first `steady_skip` not
    /// counted).
    pub steady_n: usize,
    pub steady_skip: usize,
    /// Keys per state-throughput round; timed writes per state-latency
    /// round.
    pub state_n: usize,
    pub state_samples: usize,
}

impl Sizes {
    pub fn new(quick: bool) -> Self {
        if quick {
            Sizes {
                n: 20_000,
                rounds: 2,
                latency_rounds: 2,
                samples: 500,
                warm_up: 100,
                steady_n: 3_000,
                steady_skip: 1_000,
                state_n: 2_000,
                state_samples: 200,
            }
        } else {
            Sizes {
                n: 100_000,
                rounds: 5,
                latency_rounds: 5,
                samples: 5_000,
                warm_up: 500,
                steady_n: 11_000,
                steady_skip: 1_000,
                state_n: 20_000,
                state_samples: 1_000,
            }
        }
    }
}

pub fn payload() -> Bytes {
    Bytes::from(vec![0xAB; PAYLOAD])
}

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Nanoseconds since the process's epoch (monotonic, shared by every
/// thread: senders stamp it, receivers subtract it).
pub fn now_ns() -> u64 {
    epoch().elapsed().as_nanos() as u64
}

/// A payload carrying its send time in its first 8 bytes.
pub fn stamped() -> Bytes {
    let mut p = vec![0xAB; PAYLOAD];
    p[..8].copy_from_slice(&now_ns().to_le_bytes());
    Bytes::from(p)
}

/// What one receiver counted: data messages, probes, when the last data
/// message arrived, and (steady rounds) each one-way latency.
#[derive(Default)]
pub struct Tally {
    pub got: AtomicUsize,
    pub probes: AtomicUsize,
    pub last_ns: AtomicU64,
    pub latencies: Option<Mutex<Vec<u64>>>,
}

impl Tally {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    pub fn timing() -> Arc<Self> {
        Arc::new(Self {
            latencies: Some(Mutex::new(Vec::new())),
            ..Default::default()
        })
    }

    /// One message arrived.
    pub fn on(&self, payload: &[u8]) {
        if payload.len() != PAYLOAD {
            self.probes.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let now = now_ns();
        if let Some(latencies) = &self.latencies {
            let sent = u64::from_le_bytes(payload[..8].try_into().expect("8 bytes"));
            latencies
                .lock()
                .expect("latencies")
                .push(now.saturating_sub(sent));
        }
        self.last_ns.store(now, Ordering::Relaxed);
        self.got.fetch_add(1, Ordering::Relaxed);
    }
}

/// Whether every tally has seen a probe.
pub fn all_probed(tallies: &[Arc<Tally>]) -> bool {
    tallies.iter().all(|t| t.probes.load(Ordering::Relaxed) > 0)
}

/// Evaluates `$probe` (which sends one probe message: a
/// `Result<(), String>`, awaited inside) until every tally has seen a
/// probe, then lets stragglers drain. (A macro, not an async closure: the
/// round's future must be `Send` for any lifetime.)
#[macro_export]
macro_rules! live {
    ($label:expr, $tallies:expr, $probe:expr) => {{
        let deadline = std::time::Instant::now() + $crate::common::PROBE_LIMIT;
        let tallies: &[std::sync::Arc<$crate::common::Tally>] = $tallies;
        let mut result: Result<(), String> = Ok(());
        while !$crate::common::all_probed(tallies) {
            if std::time::Instant::now() > deadline {
                result = Err(format!(
                    "{}: subscriptions not live within {:?}",
                    $label,
                    $crate::common::PROBE_LIMIT
                ));
                break;
            }
            if let Err(error) = $probe {
                result = Err(error);
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        if result.is_ok() {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        result
    }};
}

/// `$warm` untimed then `$samples` timed evaluations of `$request` (one
/// sequential request, a `Result<(), String>`, awaited inside).
#[macro_export]
macro_rules! timed {
    ($warm:expr, $samples:expr, $request:expr) => {{
        let (warm, samples): (usize, usize) = ($warm, $samples);
        let mut out = Vec::with_capacity(samples);
        let mut result: Result<(), String> = Ok(());
        for i in 0..warm + samples {
            let start = std::time::Instant::now();
            if let Err(error) = $request {
                result = Err(error);
                break;
            }
            if i >= warm {
                out.push(start.elapsed());
            }
        }
        result.map(|()| out)
    }};
}

/// A throughput round's result: data messages delivered of those expected
/// (summed over receivers), from the first send to the last delivery.
#[derive(Clone, Copy, Debug)]
pub struct Outcome {
    pub delivered: usize,
    pub expected: usize,
    pub elapsed: Duration,
}

impl Outcome {
    pub fn rate(&self) -> f64 {
        self.delivered as f64 / self.elapsed.as_secs_f64()
    }
    pub fn lost(&self) -> usize {
        self.expected.saturating_sub(self.delivered)
    }
}

/// Waits until every tally has `each` data messages, or nothing more has
/// arrived for `IDLE_LIMIT`, or `ROUND_LIMIT` passed since `start_ns`.
pub async fn finish(tallies: &[Arc<Tally>], each: usize, start_ns: u64) -> Outcome {
    let total = || -> usize { tallies.iter().map(|t| t.got.load(Ordering::Relaxed)).sum() };
    let expected = each * tallies.len();
    let mut seen = total();
    let mut quiet_since = Instant::now();
    let round_end = Instant::now() + ROUND_LIMIT;
    loop {
        let now = total();
        if now >= expected || Instant::now() > round_end {
            break;
        }
        if now != seen {
            seen = now;
            quiet_since = Instant::now();
        } else if quiet_since.elapsed() > IDLE_LIMIT {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let last = tallies
        .iter()
        .map(|t| t.last_ns.load(Ordering::Relaxed))
        .max()
        .unwrap_or(start_ns);
    let delivered = total();
    if delivered > expected {
        eprintln!("warning: {delivered} delivered, more than the {expected} expected");
    }
    Outcome {
        delivered,
        expected,
        elapsed: Duration::from_nanos(last.saturating_sub(start_ns).max(1)),
    }
}

/// Sends `n` stamped messages at `STEADY_RATE` from a blocking thread paced
/// by `std::thread::sleep` (tokio's timer ticks in milliseconds and would
/// send bursts); `send` sends one.
pub async fn pace(
    n: usize,
    mut send: impl FnMut(Bytes) -> Result<(), String> + Send + 'static,
) -> Result<(), String> {
    tokio::task::spawn_blocking(move || {
        let gap = Duration::from_nanos(1_000_000_000 / STEADY_RATE);
        let start = Instant::now();
        for i in 0..n {
            let due = start + gap * i as u32;
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
            send(stamped())?;
        }
        Ok(())
    })
    .await
    .map_err(|e| format!("pacer: {e}"))?
}

/// A steady round's one-way latencies, the first `skip` (in arrival order)
/// left out, and how many of `n` never arrived.
pub async fn steady_outcome(tally: &Tally, n: usize, skip: usize) -> (Vec<Duration>, usize) {
    let deadline = Instant::now() + ROUND_LIMIT;
    let mut seen = tally.got.load(Ordering::Relaxed);
    let mut quiet_since = Instant::now();
    while tally.got.load(Ordering::Relaxed) < n && Instant::now() < deadline {
        let now = tally.got.load(Ordering::Relaxed);
        if now != seen {
            seen = now;
            quiet_since = Instant::now();
        } else if quiet_since.elapsed() > IDLE_LIMIT {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let latencies = tally
        .latencies
        .as_ref()
        .expect("a timing tally")
        .lock()
        .expect("latencies")
        .clone();
    let lost = n.saturating_sub(latencies.len());
    let kept = latencies
        .into_iter()
        .skip(skip)
        .map(Duration::from_nanos)
        .collect();
    (kept, lost)
}

/// Runs `f` on the runtime's workers with a bound; a panic or a timeout is
/// an error, not a crash of the whole run.
pub async fn bounded<T: Send + 'static>(
    limit: Duration,
    f: impl Future<Output = Result<T, String>> + Send + 'static,
) -> Result<T, String> {
    let task = tokio::spawn(f);
    let abort = task.abort_handle();
    match tokio::time::timeout(limit, task).await {
        Ok(Ok(result)) => result,
        Ok(Err(e)) if e.is_panic() => {
            let panic = e.into_panic();
            let text = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            Err(format!("panicked: {text}"))
        }
        Ok(Err(e)) => Err(format!("task: {e}")),
        Err(_) => {
            abort.abort();
            Err(format!("did not finish within {limit:?}"))
        }
    }
}

/// Aborts the receiving tasks of a round when dropped.
#[derive(Default)]
pub struct Tasks(pub Vec<tokio::task::JoinHandle<()>>);

impl Tasks {
    pub fn push(&mut self, t: tokio::task::JoinHandle<()>) {
        self.0.push(t);
    }
}

impl Drop for Tasks {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

/// The `p` quantile of `samples` (sorted in place), in microseconds; NaN
/// when there are none.
pub fn percentile(samples: &mut [Duration], p: f64) -> f64 {
    if samples.is_empty() {
        return f64::NAN;
    }
    samples.sort();
    samples[((samples.len() - 1) as f64 * p).round() as usize].as_secs_f64() * 1e6
}

pub fn e<E: std::fmt::Display>(label: &str) -> impl Fn(E) -> String + '_ {
    move |e| format!("{label}: {e}")
}
