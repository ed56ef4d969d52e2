use std::time::Duration;

use proptest::prelude::*;
use tokio::time::Instant;

use super::*;
use crate::{Aether, Vibrator, Wave};

fn config(attempts: u32, base: u64, max: u64) -> ReliabilityConfig {
    ReliabilityConfig {
        attempts,
        base_backoff_ms: base,
        max_backoff_ms: max,
        ..ReliabilityConfig::default()
    }
}

/// The wait before retry `i` without jitter.
fn step(config: &ReliabilityConfig, i: u32) -> Duration {
    let doubled = config
        .base_backoff_ms
        .saturating_mul(1u64.checked_shl(i).unwrap_or(u64::MAX));
    Duration::from_millis(doubled.min(config.max_backoff_ms))
}

proptest! {
    /// Retry `i` waits `d = min(base · 2^i, max)` plus a jitter in `[0, d)`:
    /// as many waits as retries, growing, and within bounds.
    #[test]
    fn waits_grow_with_jitter_within_bounds(
        attempts in 1u32..12,
        base in 1u64..500,
        extra in 0u64..5_000,
    ) {
        let config = config(attempts, base, base + extra);
        let waits: Vec<Duration> = backon::BackoffBuilder::build(config.backoff()).collect();
        prop_assert_eq!(waits.len(), attempts as usize - 1);
        for (i, wait) in waits.iter().enumerate() {
            let d = step(&config, i as u32);
            prop_assert!(*wait >= d && *wait < d * 2, "retry {}: {:?} not in [{:?}, {:?})", i, wait, d, d * 2);
        }
    }
}

#[test]
fn refuses_bad_settings_naming_the_key() {
    let cases = [
        (
            ReliabilityConfig {
                attempts: 0,
                ..Default::default()
            },
            "attempts",
        ),
        (config(3, 0, 10), "base_backoff_ms"),
        (config(3, 20, 10), "base_backoff_ms"),
        (config(3, 1, 0), "max_backoff_ms"),
        (
            ReliabilityConfig {
                timeout_ms: 0,
                ..Default::default()
            },
            "timeout_ms",
        ),
        (
            ReliabilityConfig {
                breaker_failures: 0,
                ..Default::default()
            },
            "breaker_failures",
        ),
        (
            ReliabilityConfig {
                breaker_open_ms: 0,
                ..Default::default()
            },
            "breaker_open_ms",
        ),
    ];
    for (config, key) in cases {
        assert_eq!(config.validate().unwrap_err().key(), key);
        assert!(Reliable::new(config, &Aether::default()).is_err());
    }
    ReliabilityConfig::default().validate().unwrap();
}

/// A retryable error (nobody answers) is tried `attempts` times, with the
/// backoff between; the time it takes is within the bounds of the waits.
#[tokio::test(start_paused = true)]
async fn retries_a_retryable_error_with_growing_waits() {
    let aether = Aether::default();
    let shop = Vibrator::create("shop", &aether).await.unwrap();
    let config = config(4, 100, 1_000);
    let reliable = Reliable::new(config, &aether).unwrap();
    let start = Instant::now();
    let err = reliable
        .request(&shop, Wave::builder("pricing.quote").build().unwrap())
        .await
        .unwrap_err();
    let took = start.elapsed();
    assert_eq!(err.kind(), RequestErrorKind::NoResponders);
    assert_eq!(aether.stats().retries, 3);
    let least: Duration = (0..3).map(|i| step(&config, i)).sum();
    assert!(
        took >= least && took < least * 2,
        "{took:?}, waits at least {least:?}"
    );
}

/// An error that another try cannot fix is returned at once.
#[tokio::test(start_paused = true)]
async fn never_retries_a_refused_wave() {
    let aether = Aether::default();
    let shop = Vibrator::create("shop", &aether).await.unwrap();
    let reliable = Reliable::new(config(5, 100, 1_000), &aether).unwrap();
    let start = Instant::now();
    let err = reliable
        .emit(&shop, Wave::new("orders.*", Vec::<u8>::new()))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), EmitErrorKind::InvalidChannel);
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert_eq!(aether.stats().retries, 0);
    assert_eq!(reliable.state(), BreakerState::Closed, "not a failure");

    // A closed aether is not retried either.
    aether.close();
    let err = reliable
        .emit(&shop, Wave::new("orders.created", Vec::<u8>::new()))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), EmitErrorKind::Closed);
    assert_eq!(aether.stats().retries, 0);
}

/// A rate-limited emit is retried, and goes through once the limit
/// allows. The limiter's clock is the system's: real time, 20 emits a
/// second.
#[tokio::test]
async fn retries_a_rate_limited_emit_until_it_passes() {
    assert!(retryable_emit(EmitErrorKind::RateLimited));
    let aether = Aether::default();
    let limit = crate::RateLimit::per_second(20.0)
        .unwrap()
        .with_burst(1)
        .unwrap();
    let shop = Vibrator::builder("shop")
        .rate_limit(limit)
        .create(&aether)
        .await
        .unwrap();
    let reliable = Reliable::new(config(50, 10, 20), &aether).unwrap();
    let start = std::time::Instant::now();
    for _ in 0..3 {
        reliable
            .emit(&shop, Wave::new("orders.created", Vec::<u8>::new()))
            .await
            .unwrap();
    }
    assert!(
        start.elapsed() >= Duration::from_millis(90),
        "{:?}",
        start.elapsed()
    );
    let stats = aether.stats();
    assert_eq!(stats.emitted, 3);
    assert!(
        stats.retries > 0 && stats.rate_limited == stats.retries,
        "{stats}"
    );
}

/// Each try is bounded by `timeout_ms`; a timeout is retryable.
#[tokio::test(start_paused = true)]
async fn a_try_times_out() {
    let aether = Aether::default();
    let mut silent = Vibrator::create("silent", &aether).await.unwrap();
    silent.resonate_on("pricing.quote").await.unwrap(); // hears, never answers
    let shop = Vibrator::create("shop", &aether).await.unwrap();
    let config = ReliabilityConfig {
        timeout_ms: 300,
        ..config(2, 100, 100)
    };
    let reliable = Reliable::new(config, &aether).unwrap();
    let start = Instant::now();
    let err = reliable
        .request(&shop, Wave::builder("pricing.quote").build().unwrap())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), RequestErrorKind::TimedOut);
    let took = start.elapsed();
    // Two tries of 300 ms and a wait of 100 to 200 ms: at least 700 ms;
    // the tries are counted below (a loaded machine stretches the rest).
    assert!(
        took >= Duration::from_millis(700) && took < Duration::from_secs(3),
        "{took:?}"
    );
    let stats = aether.stats();
    assert_eq!((stats.timeouts, stats.retries), (2, 1));
}

/// The breaker opens after `breaker_failures` failures in a row, fails
/// calls at once while open (without retrying them), and after
/// `breaker_open_ms` lets one through, which closes it when it succeeds.
/// The breaker's clock is the system's, so this test runs in real time,
/// with short durations.
#[tokio::test]
async fn the_breaker_opens_fails_fast_and_half_opens() {
    let aether = Aether::default();
    let shop = Vibrator::create("shop", &aether).await.unwrap();
    let config = ReliabilityConfig {
        breaker_failures: 3,
        breaker_open_ms: 100,
        ..config(1, 1, 1)
    };
    let reliable = Reliable::new(config, &aether).unwrap();
    let ask = || Wave::builder("pricing.quote").build().unwrap();
    for _ in 0..3 {
        let err = reliable.request(&shop, ask()).await.unwrap_err();
        assert_eq!(err.kind(), RequestErrorKind::NoResponders);
    }
    let opened = std::time::Instant::now();
    assert_eq!(reliable.state(), BreakerState::Open);
    assert_eq!(aether.stats().breaker_opens, 1);

    // Open: refused at once, even though a responder is there now.
    let mut pricing = Vibrator::create("pricing", &aether).await.unwrap();
    pricing.resonate_on("pricing.quote").await.unwrap();
    tokio::spawn(async move {
        while let Some(request) = pricing.receive().await {
            let _ = pricing
                .reply(&request, serde_json::json!({"cents": 1}))
                .await;
        }
    });
    let err = reliable.request(&shop, ask()).await.unwrap_err();
    assert_eq!(err.kind(), RequestErrorKind::CircuitOpen);
    assert!(err.to_string().contains("100 ms"), "{err}");
    let stats = aether.stats();
    assert_eq!((stats.breaker_rejections, stats.retries), (1, 0));

    // Half-open once the duration has passed: the call goes through and
    // closes the breaker.
    let reply = loop {
        match reliable.request(&shop, ask()).await {
            Ok(reply) => break reply,
            Err(err) => {
                assert_eq!(err.kind(), RequestErrorKind::CircuitOpen);
                assert!(
                    opened.elapsed() < Duration::from_secs(5),
                    "never half-opened"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    };
    assert!(opened.elapsed() >= Duration::from_millis(90));
    assert_eq!(reply.payload()["cents"], 1);
    assert_eq!(reliable.state(), BreakerState::Closed);
}
