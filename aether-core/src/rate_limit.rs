//! Per-vibrator emit rate limits, with the `governor` crate (GCRA: a token
//! bucket without a timer task).
//!
//! A vibrator with a [`RateLimit`] refuses an emit over its limit with
//! [`EmitErrorKind::RateLimited`] at
//! once, and nothing is sent: the caller chooses to drop, to wait (the
//! error says how long) or to retry ([`crate::reliable`] retries it with
//! backoff). A limit [`RateLimit::waiting_up_to`] a time shapes instead: an
//! emit over it waits for its turn (the emits of one task stay in order)
//! and is refused only if its turn is further away than that. Refusals are
//! counted in the vibrator's and the aether's statistics (`rate_limited`),
//! and in the instance report the gateway exports. Without a limit, an emit
//! costs one relaxed atomic load and a branch.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use aether_core::{Aether, EmitErrorKind, RateLimit, Vibrator};
//! use serde_json::json;
//!
//! let aether = Aether::default();
//! let limit = RateLimit::per_second(0.1)?.with_burst(2)?; // 2 at once, then one per 10 s
//! let shop = Vibrator::builder("shop").rate_limit(limit).create(&aether).await?;
//! shop.emit_wave("orders.created", json!(1)).await?;
//! shop.emit_wave("orders.created", json!(2)).await?;
//! let err = shop.emit_wave("orders.created", json!(3)).await.unwrap_err();
//! assert_eq!(err.kind(), EmitErrorKind::RateLimited);
//! assert_eq!(aether.stats().rate_limited, 1);
//!
//! shop.set_rate_limit(None); // lifted at once
//! shop.emit_wave("orders.created", json!(4)).await?;
//!
//! // Shaped: 20 a second, an emit over it waits up to 1 s for its turn.
//! let paced = RateLimit::per_second(20.0)?.with_burst(1)?.waiting_up_to(Duration::from_secs(1));
//! shop.set_rate_limit(Some(paced));
//! let start = std::time::Instant::now();
//! for n in 0..3 {
//!     shop.emit_wave("orders.created", json!(n)).await?;
//! }
//! assert!(start.elapsed() >= Duration::from_millis(90)); // two waits of 50 ms
//! assert_eq!(aether.stats().rate_limited, 1); // none refused
//! # Ok(()) }
//! ```

use std::{
    fmt,
    num::NonZeroU32,
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

use arc_swap::ArcSwapOption;
use governor::{
    Quota, RateLimiter,
    clock::{Clock, DefaultClock},
    state::{InMemoryState, NotKeyed},
};

use crate::{EmitError, EmitErrorKind, VibratorError, VibratorErrorKind};

/// The highest rate a limit may have, per second (one emit a nanosecond).
pub const MAX_RATE_PER_S: f64 = 1e9;

/// How many emits a second a vibrator may make, and how many at once.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RateLimit {
    per_second: f64,
    burst: u32,
    max_wait: Duration,
}

impl RateLimit {
    /// `rate` emits a second on average, in (0, 10⁹]; the burst (emits
    /// allowed at once after a quiet time) is one second's worth, at least 1.
    pub fn per_second(rate: f64) -> Result<Self, VibratorError> {
        if !(rate.is_finite() && rate > 0.0 && rate <= MAX_RATE_PER_S) {
            return Err(VibratorError::new(
                VibratorErrorKind::InvalidSetting,
                format!(
                    "rate_limit_per_s {rate} is out of range: it must be above 0 and at most 1e9"
                ),
            ));
        }
        // At most 10⁹, so the cast is exact enough and in range.
        let burst = (rate.ceil() as u32).max(1);
        Ok(Self {
            per_second: rate,
            burst,
            max_wait: Duration::ZERO,
        })
    }

    /// Shapes instead of refusing: an emit over the limit waits for its
    /// turn, and is refused only if that turn is more than `max_wait` away
    /// (zero, the default: refused at once).
    pub fn waiting_up_to(mut self, max_wait: Duration) -> Self {
        self.max_wait = max_wait;
        self
    }

    /// How long an emit over the limit may wait for its turn.
    pub fn max_wait(&self) -> Duration {
        self.max_wait
    }

    /// Allows `burst` emits at once (at least 1).
    pub fn with_burst(mut self, burst: u32) -> Result<Self, VibratorError> {
        if burst == 0 {
            return Err(VibratorError::new(
                VibratorErrorKind::InvalidSetting,
                "rate limit burst must be at least 1",
            ));
        }
        self.burst = burst;
        Ok(self)
    }

    /// Emits a second, on average.
    pub fn rate_per_s(&self) -> f64 {
        self.per_second
    }

    /// Emits allowed at once.
    pub fn burst(&self) -> u32 {
        self.burst
    }

    fn quota(&self) -> Quota {
        let period = Duration::from_secs_f64(1.0 / self.per_second).max(Duration::from_nanos(1));
        let burst = NonZeroU32::new(self.burst).unwrap_or(NonZeroU32::MIN);
        Quota::with_period(period)
            .expect("the period is at least 1 ns")
            .allow_burst(burst)
    }
}

impl fmt::Display for RateLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/s (burst {})", self.per_second, self.burst)?;
        if !self.max_wait.is_zero() {
            write!(f, " waiting up to {:?}", self.max_wait)?;
        }
        Ok(())
    }
}

struct Limiter {
    limit: RateLimit,
    bucket: RateLimiter<NotKeyed, InMemoryState, DefaultClock>,
}

/// A vibrator's limit, shared with its emitters and changed while they run.
#[derive(Default)]
pub(crate) struct LimitSlot {
    /// Whether a limit is set: the only thing an unlimited emit reads.
    on: AtomicBool,
    limiter: ArcSwapOption<Limiter>,
}

impl LimitSlot {
    pub(crate) fn set(&self, limit: Option<RateLimit>) {
        let limiter = limit.map(|limit| Limiter {
            limit,
            bucket: RateLimiter::direct(limit.quota()),
        });
        self.on.store(limiter.is_some(), Ordering::Release);
        self.limiter.store(limiter.map(std::sync::Arc::new));
    }

    pub(crate) fn get(&self) -> Option<RateLimit> {
        self.limiter.load().as_ref().map(|limiter| limiter.limit)
    }

    /// `Ok` if the emit is within the limit (or there is none).
    #[inline]
    pub(crate) fn check(&self, name: &str) -> Result<(), EmitError> {
        if !self.on.load(Ordering::Relaxed) {
            return Ok(());
        }
        self.check_limited(name)
    }

    /// The time until the next emit is allowed, if it is not now; and the
    /// limit.
    fn turn(&self) -> Result<(), (Duration, RateLimit)> {
        let guard = self.limiter.load();
        let Some(limiter) = guard.as_ref() else {
            return Ok(());
        };
        limiter.bucket.check().map_err(|not_until| {
            (
                not_until.wait_time_from(limiter.bucket.clock().now()),
                limiter.limit,
            )
        })
    }

    #[cold]
    fn check_limited(&self, name: &str) -> Result<(), EmitError> {
        self.turn()
            .map_err(|(wait, limit)| refusal(name, limit, wait))
    }

    /// Waits for the emit's turn, up to the limit's `max_wait` from now
    /// (`true` if it waited); refused if the turn is further away.
    #[cold]
    pub(crate) async fn wait_turn(&self, name: &str) -> Result<bool, EmitError> {
        let start = tokio::time::Instant::now();
        let mut waited = false;
        loop {
            let Err((wait, limit)) = self.turn() else {
                return Ok(waited);
            };
            if start.elapsed() + wait > limit.max_wait {
                return Err(refusal(name, limit, wait));
            }
            tokio::time::sleep(wait).await;
            waited = true;
        }
    }
}

fn refusal(name: &str, limit: RateLimit, wait: Duration) -> EmitError {
    EmitError::new(
        EmitErrorKind::RateLimited,
        format!(
            "vibrator {name:?} is over its rate limit of {limit}; the next emit is allowed in \
             {wait:?}"
        ),
    )
}

impl fmt::Debug for LimitSlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("LimitSlot").field(&self.get()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_bad_limits() {
        for rate in [0.0, -1.0, f64::NAN, f64::INFINITY, 2e9] {
            let err = RateLimit::per_second(rate).unwrap_err();
            assert_eq!(err.kind(), VibratorErrorKind::InvalidSetting);
            assert!(err.to_string().contains("rate_limit_per_s"), "{err}");
        }
        assert!(RateLimit::per_second(1.0).unwrap().with_burst(0).is_err());
        assert_eq!(RateLimit::per_second(2.5).unwrap().burst(), 3);
        assert_eq!(RateLimit::per_second(0.1).unwrap().burst(), 1);
        assert_eq!(RateLimit::per_second(1e9).unwrap().burst(), 1_000_000_000);
    }

    #[test]
    fn allows_the_burst_then_refuses_saying_how_long_to_wait() {
        let slot = LimitSlot::default();
        assert!(slot.check("svc").is_ok(), "no limit");
        slot.set(Some(
            RateLimit::per_second(0.01).unwrap().with_burst(3).unwrap(),
        ));
        for _ in 0..3 {
            slot.check("svc").unwrap();
        }
        let err = slot.check("svc").unwrap_err();
        assert_eq!(err.kind(), EmitErrorKind::RateLimited);
        let text = err.to_string();
        assert!(
            text.contains("\"svc\"") && text.contains("0.01/s"),
            "{text}"
        );
        slot.set(None);
        assert!(slot.check("svc").is_ok());
        assert_eq!(slot.get(), None);
    }

    #[tokio::test]
    async fn a_shaping_limit_waits_for_the_turn_and_refuses_beyond_its_wait() {
        let slot = LimitSlot::default();
        let limit = RateLimit::per_second(10.0).unwrap().with_burst(1).unwrap();
        slot.set(Some(limit.waiting_up_to(Duration::from_millis(250))));
        let start = tokio::time::Instant::now();
        for _ in 0..3 {
            slot.wait_turn("svc").await.unwrap();
        }
        // The first at once, then one every 100 ms.
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(190), "{took:?}");
        // A turn further than the wait allows: refused, saying so.
        slot.set(Some(
            RateLimit::per_second(1.0)
                .unwrap()
                .with_burst(1)
                .unwrap()
                .waiting_up_to(Duration::from_millis(250)),
        ));
        slot.wait_turn("svc").await.unwrap();
        let err = slot.wait_turn("svc").await.unwrap_err();
        assert_eq!(err.kind(), EmitErrorKind::RateLimited);
        assert!(err.to_string().contains("waiting up to 250ms"), "{err}");
    }
}
