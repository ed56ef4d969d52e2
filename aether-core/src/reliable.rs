//! Reliability around emits and requests, opt in: retries with exponential
//! backoff and jitter (the `backon` crate), a timeout per attempt
//! (`tokio::time::timeout`) and a circuit breaker (the `failsafe` crate).
//!
//! A [`Reliable`] holds a [`ReliabilityConfig`], one breaker and its
//! counters; share it (it is cheap to clone) among the calls that reach the
//! same thing. [`Reliable::emit`] and [`Reliable::request`] make each
//! attempt through the breaker, under the timeout, and retry only the
//! errors that a later attempt may not have:
//!
//! | call | retried | never retried |
//! | --- | --- | --- |
//! | `emit` | `OutboxFull`, `RateLimited`, `TimedOut` | an invalid channel or payload, a refused reflection, `Closed`, `Medium`, `CircuitOpen` |
//! | `request` | `NoResponders`, `TimedOut`, `RateLimited` | `Emit`, `BadReply`, `Closed`, `CircuitOpen` |
//!
//! Retry `i` (from 0) waits `d = min(base_backoff_ms · 2^i, max_backoff_ms)`
//! plus a random jitter in `[0, d)`, so less than `2 · max_backoff_ms`.
//! Only retryable errors count as breaker failures: after
//! `breaker_failures` of them in a row the breaker opens, and every call
//! fails at once with `CircuitOpen` (not retried) for `breaker_open_ms`;
//! then it half-opens: the next call is let through, and closes it if it
//! succeeds or opens it again if it fails. Retries, timeouts, breaker
//! openings and calls refused by an open breaker are counted in the
//! aether's statistics ([`crate::StatsSnapshot`]), which the gateway
//! exports.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use aether_core::{Aether, RequestErrorKind, Vibrator, Wave, reliable::{Reliable, ReliabilityConfig}};
//!
//! let aether = Aether::default();
//! let shop = Vibrator::create("shop", &aether).await?;
//! let reliable = Reliable::new(ReliabilityConfig { attempts: 3, ..Default::default() }, &aether)?;
//!
//! reliable.emit(&shop, Wave::builder("orders.created").build()?).await?;
//!
//! // Nobody answers pricing.quote: tried 3 times, with backoff between.
//! let err = reliable.request(&shop, Wave::builder("pricing.quote").build()?).await.unwrap_err();
//! assert_eq!(err.kind(), RequestErrorKind::NoResponders);
//! assert_eq!(aether.stats().retries, 2);
//! # Ok(()) }
//! ```

use std::{
    fmt,
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use backon::{ExponentialBuilder, Retryable};
use failsafe::{
    Config as BreakerConfig, Instrument, StateMachine,
    backoff::Constant,
    failure_policy::{ConsecutiveFailures, consecutive_failures},
};
use serde::{Deserialize, Serialize};

use crate::{
    Aether, ConfigError, EmitError, EmitErrorKind, RequestError, RequestErrorKind, Vibrator, Wave,
    WaveId, stats::Counters,
};

/// The `[service.reliability]` settings (or any table a program chooses):
/// how often and how patiently to try, and when to stop trying.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReliabilityConfig {
    /// Tries in all, the first included: 1 (no retry) to 100. Default 3.
    pub attempts: u32,
    /// Wait before the first retry, in ms (doubles at each retry, plus
    /// jitter): 1 to `max_backoff_ms`. Default 50.
    pub base_backoff_ms: u64,
    /// Longest wait between two tries before jitter, in ms, at most
    /// 3,600,000. Default 2,000.
    pub max_backoff_ms: u64,
    /// Time allowed to each try, in ms: 1 to 3,600,000. Default 5,000.
    pub timeout_ms: u64,
    /// Retryable failures in a row that open the breaker: 1 to 1,000.
    /// Default 5.
    pub breaker_failures: u32,
    /// How long the open breaker fails calls at once before letting one
    /// through, in ms: 1 to 3,600,000. Default 10,000.
    pub breaker_open_ms: u64,
}

impl Default for ReliabilityConfig {
    fn default() -> Self {
        Self {
            attempts: 3,
            base_backoff_ms: 50,
            max_backoff_ms: 2_000,
            timeout_ms: 5_000,
            breaker_failures: 5,
            breaker_open_ms: 10_000,
        }
    }
}

const HOUR_MS: u64 = 3_600_000;

impl ReliabilityConfig {
    /// `Ok` if every value is in range; else the error naming the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let refuse = |key, value: u64, rule| Err(ConfigError::new(key, value.to_string(), rule));
        if !(1..=100).contains(&self.attempts) {
            return refuse("attempts", self.attempts.into(), "must be 1 to 100");
        }
        if !(1..=HOUR_MS).contains(&self.max_backoff_ms) {
            return refuse(
                "max_backoff_ms",
                self.max_backoff_ms,
                "must be 1 to 3600000",
            );
        }
        if !(1..=self.max_backoff_ms).contains(&self.base_backoff_ms) {
            return refuse(
                "base_backoff_ms",
                self.base_backoff_ms,
                "must be at least 1 and at most max_backoff_ms",
            );
        }
        if !(1..=HOUR_MS).contains(&self.timeout_ms) {
            return refuse("timeout_ms", self.timeout_ms, "must be 1 to 3600000");
        }
        if !(1..=1_000).contains(&self.breaker_failures) {
            return refuse(
                "breaker_failures",
                self.breaker_failures.into(),
                "must be 1 to 1000",
            );
        }
        if !(1..=HOUR_MS).contains(&self.breaker_open_ms) {
            return refuse(
                "breaker_open_ms",
                self.breaker_open_ms,
                "must be 1 to 3600000",
            );
        }
        Ok(())
    }

    fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    /// The waits between tries.
    pub(crate) fn backoff(&self) -> ExponentialBuilder {
        ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(self.base_backoff_ms))
            .with_max_delay(Duration::from_millis(self.max_backoff_ms))
            .with_factor(2.0)
            .with_max_times(self.attempts as usize - 1)
            .with_jitter()
    }
}

/// Whether an emit error may go away by trying again.
pub fn retryable_emit(kind: EmitErrorKind) -> bool {
    matches!(
        kind,
        EmitErrorKind::OutboxFull | EmitErrorKind::RateLimited | EmitErrorKind::TimedOut
    )
}

/// Emits `wave` from `vibrator` through `policy` when there is one (the
/// policy a program's settings may or may not have), else once.
pub async fn emit_with(
    policy: Option<&Reliable>,
    vibrator: &Vibrator,
    wave: Wave,
) -> Result<WaveId, EmitError> {
    match policy {
        Some(policy) => policy.emit(vibrator, wave).await,
        None => vibrator.emit(wave).await,
    }
}

/// Whether an emit failed for now rather than because of the wave: what a
/// retry may cure ([`retryable_emit`]), or an open breaker. A program counts
/// such a failure and goes on.
pub fn failed_for_now(kind: EmitErrorKind) -> bool {
    retryable_emit(kind) || kind == EmitErrorKind::CircuitOpen
}

/// Whether a request error may go away by trying again.
pub fn retryable_request(kind: RequestErrorKind) -> bool {
    matches!(
        kind,
        RequestErrorKind::NoResponders | RequestErrorKind::TimedOut | RequestErrorKind::RateLimited
    )
}

/// The state of a breaker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BreakerState {
    /// Calls go through.
    Closed,
    /// Calls fail at once, until `breaker_open_ms` has passed.
    Open,
}

/// Counts the breaker's moves into the aether's statistics.
#[derive(Clone)]
struct Meter {
    counters: Arc<Counters>,
    open: Arc<AtomicBool>,
}

impl Instrument for Meter {
    fn on_call_rejected(&self) {
        self.counters.breaker_rejected();
    }

    fn on_open(&self) {
        self.open.store(true, Ordering::Relaxed);
        self.counters.breaker_opened();
    }

    fn on_half_open(&self) {}

    fn on_closed(&self) {
        self.open.store(false, Ordering::Relaxed);
    }
}

type Breaker = StateMachine<ConsecutiveFailures<Constant>, Meter>;

/// Retries, timeouts and a circuit breaker around a vibrator's emits and
/// requests; see the [module documentation](self). Cheap to clone: clones
/// share the breaker.
#[derive(Clone)]
pub struct Reliable {
    config: ReliabilityConfig,
    breaker: Breaker,
    counters: Arc<Counters>,
    open: Arc<AtomicBool>,
}

impl fmt::Debug for Reliable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reliable")
            .field("config", &self.config)
            .field("breaker", &self.state())
            .finish()
    }
}

/// One try's outcome, for the breaker.
enum Verdict {
    Success,
    Failure,
    TimedOut,
}

impl Reliable {
    /// A policy with its own breaker, counted in `aether`'s statistics.
    /// Refuses a bad `config`, naming the key.
    pub fn new(config: ReliabilityConfig, aether: &Aether) -> Result<Self, ConfigError> {
        config.validate()?;
        let counters = aether.counters().clone();
        let open = Arc::new(AtomicBool::new(false));
        let meter = Meter {
            counters: counters.clone(),
            open: open.clone(),
        };
        let policy = consecutive_failures(
            config.breaker_failures,
            failsafe::backoff::constant(Duration::from_millis(config.breaker_open_ms)),
        );
        let breaker = BreakerConfig::new()
            .failure_policy(policy)
            .instrument(meter)
            .build();
        Ok(Self {
            config,
            breaker,
            counters,
            open,
        })
    }

    /// Its settings.
    pub fn config(&self) -> &ReliabilityConfig {
        &self.config
    }

    /// Whether its breaker is open (it stays so until the next call after
    /// `breaker_open_ms`, which half-opens it).
    pub fn state(&self) -> BreakerState {
        if self.open.load(Ordering::Relaxed) {
            BreakerState::Open
        } else {
            BreakerState::Closed
        }
    }

    /// Emits `wave` from `vibrator`, retrying the retryable errors.
    pub async fn emit(&self, vibrator: &Vibrator, wave: Wave) -> Result<WaveId, EmitError> {
        self.retry(
            || self.attempt(vibrator.emit(wave.clone()), emit_verdict, emit_timed_out),
            |err: &EmitError| retryable_emit(err.kind()),
        )
        .await
    }

    /// Sends `wave` as a request from `vibrator` and waits for the reply,
    /// each try up to `timeout_ms`, retrying the retryable errors.
    pub async fn request(&self, vibrator: &Vibrator, wave: Wave) -> Result<Wave, RequestError> {
        let timeout = self.config.timeout();
        self.retry(
            || {
                self.attempt(
                    vibrator.request_with_timeout(wave.clone(), timeout),
                    request_verdict,
                    request_timed_out,
                )
            },
            |err: &RequestError| retryable_request(err.kind()),
        )
        .await
    }

    async fn retry<T, E, F, Fut>(&self, attempt: F, retryable: fn(&E) -> bool) -> Result<T, E>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        attempt
            .retry(self.config.backoff())
            .sleep(tokio::time::sleep)
            .when(retryable)
            .notify(|_, _| self.counters.retried())
            .await
    }

    /// One try: through the breaker, under the timeout.
    async fn attempt<T, E>(
        &self,
        call: impl Future<Output = Result<T, E>>,
        verdict: fn(&Result<T, E>) -> Verdict,
        timed_out: fn(Duration) -> E,
    ) -> Result<T, E>
    where
        E: From<CircuitOpen>,
    {
        if !self.breaker.is_call_permitted() {
            return Err(CircuitOpen(self.config.breaker_open_ms).into());
        }
        let timeout = self.config.timeout();
        let outcome = match tokio::time::timeout(timeout, call).await {
            Ok(outcome) => outcome,
            Err(_) => Err(timed_out(timeout)),
        };
        match verdict(&outcome) {
            Verdict::Success => self.breaker.on_success(),
            Verdict::Failure => self.breaker.on_error(),
            Verdict::TimedOut => {
                self.counters.timed_out();
                self.breaker.on_error();
            }
        }
        outcome
    }
}

/// A call refused by an open breaker.
#[derive(Clone, Copy, Debug)]
pub(crate) struct CircuitOpen(u64);

impl From<CircuitOpen> for EmitError {
    fn from(open: CircuitOpen) -> Self {
        EmitError::new(EmitErrorKind::CircuitOpen, open.message())
    }
}

impl From<CircuitOpen> for RequestError {
    fn from(open: CircuitOpen) -> Self {
        RequestError::new(RequestErrorKind::CircuitOpen, open.message())
    }
}

impl CircuitOpen {
    fn message(self) -> String {
        format!(
            "the circuit breaker is open after repeated failures; calls fail at once for {} ms \
             after it opened, then one is let through",
            self.0
        )
    }
}

fn emit_verdict<T>(outcome: &Result<T, EmitError>) -> Verdict {
    match outcome {
        Err(err) if err.kind() == EmitErrorKind::TimedOut => Verdict::TimedOut,
        Err(err) if retryable_emit(err.kind()) => Verdict::Failure,
        _ => Verdict::Success,
    }
}

fn request_verdict<T>(outcome: &Result<T, RequestError>) -> Verdict {
    match outcome {
        Err(err) if err.kind() == RequestErrorKind::TimedOut => Verdict::TimedOut,
        Err(err) if retryable_request(err.kind()) => Verdict::Failure,
        _ => Verdict::Success,
    }
}

fn emit_timed_out(timeout: Duration) -> EmitError {
    EmitError::new(
        EmitErrorKind::TimedOut,
        format!("the emit did not complete within {timeout:?}"),
    )
}

fn request_timed_out(timeout: Duration) -> RequestError {
    RequestError::new(
        RequestErrorKind::TimedOut,
        format!("no reply within {timeout:?}"),
    )
}

#[cfg(test)]
mod tests;
