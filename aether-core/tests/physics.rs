//! The physics engine: the interference rule (property tests), the patterns
//! it reports (examples), the resonance graph, and the bounds on its memory.
//!
//! Waves are built with explicit emission times (`wire::Parts`), so every
//! test is deterministic and nothing sleeps.

use std::{
    f64::consts::{PI, TAU},
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use aether_core::{
    Amplitude, Channel, InterferenceKind, InterferencePattern, Phase, PhysicsConfig, PhysicsEngine,
    Wave, WaveId, wire::Parts,
};
use proptest::prelude::*;

/// An arbitrary fixed instant (2023-11-14), in ms since the epoch.
const T0_MS: u64 = 1_700_000_000_000;

fn time(at_ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(T0_MS + at_ms)
}

/// A distinct, non-nil wave id each call.
fn next_id() -> u128 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    u128::from(NEXT.fetch_add(1, Ordering::Relaxed))
}

/// How a test wave differs from the default.
#[derive(Clone)]
struct W {
    channel: &'static str,
    key: Option<String>,
    phase: f64,
    amplitude: f64,
    payload: String,
    source: &'static str,
}

fn w(channel: &'static str) -> W {
    W {
        channel,
        key: None,
        phase: 0.0,
        amplitude: 1.0,
        payload: String::new(),
        source: "shop",
    }
}

impl W {
    fn key(mut self, key: impl Into<String>) -> Self {
        self.key = Some(key.into());
        self
    }
    fn phase(mut self, phase: f64) -> Self {
        self.phase = phase;
        self
    }
    fn amplitude(mut self, amplitude: f64) -> Self {
        self.amplitude = amplitude;
        self
    }
    fn payload(mut self, payload: impl Into<String>) -> Self {
        self.payload = payload.into();
        self
    }
    fn source(mut self, source: &'static str) -> Self {
        self.source = source;
        self
    }
    /// The wave, emitted `at_ms` after T0.
    fn at(&self, at_ms: u64) -> Wave {
        Parts {
            id: next_id(),
            emitted_at_ns: (T0_MS + at_ms) * 1_000_000,
            amplitude: self.amplitude,
            source_amplitude: self.amplitude,
            phase: Phase::new(self.phase).expect("finite").radians(),
            source: Some(self.source.to_string()),
            correlation_key: self.key.clone(),
            payload: self.payload.clone().into(),
            ..Parts::default()
        }
        .into_wave(Channel::new(self.channel))
        .expect("valid wave")
    }
}

fn patterns(engine: &mut PhysicsEngine, waves: &[Wave]) -> Vec<Option<InterferencePattern>> {
    waves
        .iter()
        .map(|wave| engine.detect(wave).map(|e| e.pattern))
        .collect()
}

// ------------------------------------------------------------ interference

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn interference_follows_superposition(
        a1 in 0.0..=1.0f64,
        a2 in 0.0..=1.0f64,
        p1 in 0.0..TAU,
        p2 in 0.0..TAU,
    ) {
        let engine = PhysicsEngine::new();
        let one = w("orders").amplitude(a1).phase(p1).at(0);
        let two = w("orders").amplitude(a2).phase(p2).at(10);
        let i = engine.calculate_interference(&one, &two);
        let back = engine.calculate_interference(&two, &one);

        // Within the bounds of superposition, and symmetric.
        prop_assert!(i.amplitude >= (a1 - a2).abs() && i.amplitude <= a1 + a2, "{i:?}");
        prop_assert_eq!(i, back);
        // The rule itself.
        let d = i.phase_difference;
        let expected = (a1 * a1 + a2 * a2 + 2.0 * a1 * a2 * (p1 - p2).cos()).max(0.0).sqrt();
        prop_assert!((i.amplitude - expected).abs() < 1e-7, "{} vs {}", i.amplitude, expected);
        // The phase difference is the short way round, in [0, π].
        prop_assert!((0.0..=PI).contains(&d));
        prop_assert!(((p1 - p2).cos() - d.cos()).abs() < 1e-9);
        // The kind agrees with it.
        let tol = engine.config().phase_tolerance;
        let kind = if d <= tol {
            InterferenceKind::Constructive
        } else if d >= PI - tol {
            InterferenceKind::Destructive
        } else {
            InterferenceKind::Partial
        };
        prop_assert_eq!(i.kind, kind);
        prop_assert!(i.coherent);
    }

    #[test]
    fn in_phase_adds_and_opposite_subtracts(
        a1 in 0.0..=1.0f64,
        a2 in 0.0..=1.0f64,
        p in 0.0..TAU,
    ) {
        let engine = PhysicsEngine::new();
        let one = w("orders").amplitude(a1).phase(p).at(0);
        let same = w("orders").amplitude(a2).phase(p).at(0);
        let opposite = w("orders").amplitude(a2).phase(p + PI).at(0);

        let i = engine.calculate_interference(&one, &same);
        prop_assert!((i.amplitude - (a1 + a2)).abs() < 1e-12);
        prop_assert_eq!(i.kind, InterferenceKind::Constructive);

        let i = engine.calculate_interference(&one, &opposite);
        prop_assert!((i.amplitude - (a1 - a2).abs()).abs() < 1e-7, "{i:?}");
        prop_assert_eq!(i.kind, InterferenceKind::Destructive);
    }

    /// Waves of distinct correlation keys and distinct payloads never make a
    /// pattern, whatever their phases and times.
    #[test]
    fn different_keys_never_interfere(
        waves in prop::collection::vec((0.0..TAU, 0u64..3000), 1..40),
    ) {
        let mut engine = PhysicsEngine::new();
        for (n, (phase, at)) in waves.into_iter().enumerate() {
            let wave = w("orders")
                .key(format!("order-{n}"))
                .payload(n.to_string())
                .phase(phase)
                .at(at);
            prop_assert_eq!(engine.detect(&wave), None);
        }
    }
}

#[test]
fn coherence_needs_channel_key_and_time() {
    let engine = PhysicsEngine::new();
    let approved = w("orders.review").key("order-1").at(0);
    let rejected = w("orders.review").key("order-1").phase(PI);
    let i = engine.calculate_interference(&approved, &rejected.at(1000));
    assert!(i.coherent && i.amplitude < 1e-12 && i.kind == InterferenceKind::Destructive);
    assert!(
        !engine
            .calculate_interference(&approved, &rejected.at(1001))
            .coherent
    );
    let other_key = w("orders.review").key("order-2").at(0);
    assert!(
        !engine
            .calculate_interference(&approved, &other_key)
            .coherent
    );
    let other_channel = w("orders.audit").key("order-1").at(0);
    assert!(
        !engine
            .calculate_interference(&approved, &other_channel)
            .coherent
    );
    // Not emitted yet: both count as now.
    let a = Wave::builder("a").build().unwrap();
    let b = Wave::builder("a").phase(Phase::RETRACT).build().unwrap();
    assert!(engine.calculate_interference(&a, &b).coherent);
}

// ------------------------------------------------------------- patterns

#[test]
fn approved_then_rejected_for_the_same_order_cancel() {
    let mut engine = PhysicsEngine::new();
    let approved = w("orders.review").key("order-42").source("risk").at(0);
    let rejected = w("orders.review")
        .key("order-42")
        .phase(PI)
        .amplitude(0.8)
        .source("fraud")
        .at(30);
    assert_eq!(engine.detect(&approved), None);
    let event = engine.detect(&rejected).expect("a cancellation");
    assert_eq!(event.pattern, InterferencePattern::Cancellation);
    assert_eq!(event.channel, "orders.review");
    assert_eq!(event.correlation_key, "order-42");
    let ids: Vec<WaveId> = event.waves.iter().map(|w| w.id()).collect();
    assert_eq!(ids, [approved.id(), rejected.id()]);
    assert_eq!(event.waves[0].source(), Some("risk"));
    assert_eq!(event.waves[1].source(), Some("fraud"));
    assert_eq!(event.waves[1].phase(), Phase::RETRACT);
    assert_eq!(event.waves[1].amplitude(), 0.8);
    assert_eq!(event.waves[0].at(), time(0));
    assert_eq!(event.waves[1].hops(), 0);
    assert!((event.resultant_amplitude - 0.2).abs() < 1e-9);
    assert_eq!(event.period, None);
    assert_eq!(event.at, time(30));
}

#[test]
fn a_duplicate_is_constructive() {
    let mut engine = PhysicsEngine::new();
    let first = w("payments.captured").key("pay-7").payload("a").at(0);
    let again = w("payments.captured").key("pay-7").payload("b").at(200);
    assert_eq!(engine.detect(&first), None);
    let event = engine.detect(&again).expect("constructive");
    assert_eq!(event.pattern, InterferencePattern::Constructive);
    assert_eq!(event.waves.len(), 2);
    assert!((event.resultant_amplitude - 2.0).abs() < 1e-9);
}

#[test]
fn nearly_in_phase_is_within_tolerance() {
    let mut engine = PhysicsEngine::new();
    engine.detect(&w("a").key("k").phase(0.05).at(0));
    let near = engine.detect(&w("a").key("k").phase(TAU - 0.04).at(1));
    assert_eq!(
        near.map(|e| e.pattern),
        Some(InterferencePattern::Constructive)
    );
    let mut engine = PhysicsEngine::new();
    engine.detect(&w("a").key("k").at(0));
    assert_eq!(engine.detect(&w("a").key("k").phase(PI / 2.0).at(1)), None);
    let near_pi = engine.detect(&w("a").key("k").phase(PI + 0.09).at(2));
    assert_eq!(
        near_pi.map(|e| e.pattern),
        Some(InterferencePattern::Cancellation)
    );
}

#[test]
fn a_producer_repeating_every_100ms_is_a_standing_wave() {
    let mut engine = PhysicsEngine::new();
    let stuck = w("inventory.sync").payload(r#"{"sku":"A-1"}"#);
    let waves: Vec<Wave> = (0..6).map(|n| stuck.at(n * 100)).collect();
    let seen = patterns(&mut engine, &waves[..5]);
    use InterferencePattern::*;
    // Repeats within the coherence window are duplicates until the period
    // is established by the fourth occurrence.
    assert_eq!(
        seen,
        [
            None,
            Some(Constructive),
            Some(Constructive),
            Some(StandingWave),
            Some(StandingWave)
        ]
    );
    let event = engine.detect(&waves[5]).expect("standing wave");
    assert_eq!(event.pattern, StandingWave);
    let period = event.period.expect("a period");
    assert!(period.abs_diff(Duration::from_millis(100)) < Duration::from_millis(1));
    let ids: Vec<WaveId> = event.waves.iter().map(|w| w.id()).collect();
    let last: Vec<WaveId> = waves[2..].iter().map(Wave::id).collect();
    assert_eq!(ids, last, "the last four repeats, oldest first");
}

#[test]
fn a_slow_loop_is_a_standing_wave_without_interference() {
    // Every 2 s: outside the coherence window, inside the standing window.
    let mut engine = PhysicsEngine::new();
    let echo = w("audit.replay").payload("same");
    let waves: Vec<Wave> = (0..4).map(|n| echo.at(n * 2000)).collect();
    use InterferencePattern::*;
    assert_eq!(
        patterns(&mut engine, &waves),
        [None, None, None, Some(StandingWave)]
    );
}

#[test]
fn irregular_repeats_are_not_a_standing_wave() {
    let mut engine = PhysicsEngine::new();
    let mut at = 0;
    for (n, gap) in [0, 100, 300, 50, 400, 120, 20, 700].into_iter().enumerate() {
        at += gap;
        // Distinct keys: only a standing wave could be reported.
        let wave = w("inventory.sync")
            .key(format!("k{n}"))
            .payload("same")
            .at(at);
        assert_eq!(engine.detect(&wave), None, "wave {n} at {at} ms");
    }
}

#[test]
fn a_burst_is_not_a_standing_wave() {
    let mut engine = PhysicsEngine::new();
    for n in 0..10 {
        let wave = w("burst").key(format!("k{n}")).payload("same").at(500);
        assert_eq!(engine.detect(&wave), None);
    }
}

#[test]
fn different_keys_do_not_interfere() {
    let mut engine = PhysicsEngine::new();
    engine.detect(&w("orders.review").key("order-1").at(0));
    let other = w("orders.review").key("order-2").phase(PI).at(10);
    assert_eq!(engine.detect(&other), None);
    let other_channel = w("orders.audit").key("order-1").phase(PI).at(20);
    assert_eq!(engine.detect(&other_channel), None);
}

#[test]
fn outside_the_coherence_window_nothing_interferes() {
    let mut engine = PhysicsEngine::new();
    engine.detect(&w("orders.review").key("order-1").at(0));
    let late = w("orders.review").key("order-1").phase(PI).at(1001);
    assert_eq!(engine.detect(&late), None);
    // The window's edge is inclusive.
    let mut engine = PhysicsEngine::new();
    engine.detect(&w("orders.review").key("order-1").at(0));
    let edge = w("orders.review").key("order-1").phase(PI).at(1000);
    assert_eq!(
        engine.detect(&edge).map(|e| e.pattern),
        Some(InterferencePattern::Cancellation)
    );
}

#[test]
fn cancellation_comes_before_standing_wave_and_standing_before_constructive() {
    let mut engine = PhysicsEngine::new();
    let approve = w("orders.review").key("order-9").payload("approve");
    for n in 0..3 {
        engine.detect(&approve.at(n * 100));
    }
    // The fourth repeat is a standing wave and constructive: standing wins.
    let fourth = engine.detect(&approve.at(300)).unwrap();
    assert_eq!(fourth.pattern, InterferencePattern::StandingWave);
    // A retraction that is also a steady repeat of its own payload: the
    // cancellation wins.
    let mut engine = PhysicsEngine::new();
    let reject = w("orders.review")
        .key("order-9")
        .payload("reject")
        .phase(PI);
    for n in 0..3 {
        engine.detect(&reject.at(n * 100));
    }
    engine.detect(&approve.at(310));
    let event = engine.detect(&reject.at(300 + 20)).unwrap();
    assert_eq!(event.pattern, InterferencePattern::Cancellation);
    assert_eq!(event.waves.len(), 2, "the approval and the new rejection");
}

#[test]
fn the_same_sighting_twice_is_observed_once_but_a_hop_is_new() {
    let mut engine = PhysicsEngine::new();
    let wave = w("orders.created").key("order-3").at(0);
    assert_eq!(engine.detect(&wave), None);
    // Heard again by another resonator: the same wave, nothing new.
    assert_eq!(engine.detect(&wave), None);
    // Relayed: one more hop, a duplicate on the channel.
    let mut relayed = wave.clone();
    relayed.propagate();
    assert_eq!(
        engine.detect(&relayed).map(|e| e.pattern),
        Some(InterferencePattern::Constructive)
    );
}

#[test]
fn a_common_channel_correlates_waves_of_several_channels() {
    let mut engine = PhysicsEngine::new();
    let approved = w("orders.approved").key("order-5").at(0);
    let rejected = w("orders.rejected").key("order-5").phase(PI).at(5);
    assert_eq!(engine.detect_patterns("orders", &approved), None);
    assert_eq!(
        engine.detect_patterns("orders", rejected),
        Some(InterferencePattern::Cancellation)
    );
    let mut engine = PhysicsEngine::new();
    engine.detect_on("orders", &approved);
    let event = engine.detect_on(
        "orders",
        &w("orders.rejected").key("order-5").phase(PI).at(6),
    );
    assert_eq!(event.unwrap().channel, "orders");
}

#[test]
fn waves_not_emitted_take_the_given_time() {
    let mut engine = PhysicsEngine::new();
    let a = Wave::builder("jobs").payload("tick").build().unwrap();
    let mut found = Vec::new();
    for n in 0..4 {
        let b = Wave::builder("jobs")
            .correlation_key(format!("run-{n}"))
            .payload("tick")
            .build()
            .unwrap();
        found.push(engine.detect_at("jobs", if n == 0 { &a } else { &b }, time(n * 250)));
    }
    assert_eq!(
        found[3].as_ref().map(|e| e.pattern),
        Some(InterferencePattern::StandingWave)
    );
    assert_eq!(
        found[3].as_ref().unwrap().period,
        Some(Duration::from_millis(250))
    );
}

#[test]
fn a_window_keeps_at_most_max_window_waves() {
    let config = PhysicsConfig {
        max_window_waves: 8,
        ..Default::default()
    };
    let mut engine = PhysicsEngine::with_config(config).unwrap();
    for n in 0..1000 {
        let wave = w("hot").key("k").payload(n.to_string()).at(n / 10);
        if let Some(event) = engine.detect(&wave) {
            assert!(event.waves.len() <= 9, "{}", event.waves.len());
        }
    }
    assert_eq!(engine.tracked_keys(), 1);
}

// ------------------------------------------------------------- correlation

fn correlating(patterns: &[&str]) -> PhysicsEngine {
    PhysicsEngine::with_config(PhysicsConfig {
        correlate: patterns.iter().map(|p| p.to_string()).collect(),
        ..Default::default()
    })
    .expect("valid settings")
}

/// Two deciders answering one order both ways, on two channels: nothing on
/// their own channels, a cancellation once the channels are correlated.
#[test]
fn correlated_channels_interfere_as_one() {
    let reserved = w("inventory.reserved").key("order-7").payload("r");
    let insufficient = w("inventory.insufficient")
        .key("order-7")
        .payload("i")
        .phase(PI);
    let waves = [reserved.at(0), insufficient.at(3)];

    assert_eq!(patterns(&mut PhysicsEngine::new(), &waves), [None, None]);

    let mut engine = correlating(&["inventory.*"]);
    assert_eq!(engine.detect(&waves[0]), None);
    let event = engine.detect(&waves[1]).expect("a cancellation");
    assert_eq!(event.pattern, InterferencePattern::Cancellation);
    assert_eq!(event.channel.as_str(), "inventory.*");
    assert_eq!(event.waves.len(), 2);
    // A channel no pattern matches stays on its own.
    let created = w("orders.created").key("order-7").payload("o");
    let mut engine = correlating(&["inventory.*"]);
    assert_eq!(engine.detect(&created.at(0)), None);
    assert_eq!(engine.detect(&insufficient.at(1)), None);
}

proptest! {
    /// Correlating channels on a pattern is renaming them: the engine finds
    /// the same patterns, in the same places, as when every wave of the
    /// matched channels is emitted on one channel.
    #[test]
    fn correlating_is_renaming(
        waves in prop::collection::vec(
            (0usize..3, 0u8..3, prop::bool::ANY, 0u8..3, 0u64..2000),
            1..60,
        ),
    ) {
        const CHANNELS: [&str; 3] = ["inventory.reserved", "inventory.insufficient", "orders.created"];
        let mut correlated = correlating(&["inventory.*"]);
        let mut renamed = PhysicsEngine::new();
        let mut sorted = waves;
        sorted.sort_by_key(|wave| wave.4);
        for (channel, key, retract, payload, at) in sorted {
            let phase = if retract { PI } else { 0.0 };
            let channel = CHANNELS[channel];
            let one = if channel.starts_with("inventory.") { "inventory.all" } else { channel };
            let make = |channel: &'static str| {
                w(channel)
                    .key(format!("k{key}"))
                    .payload(format!("p{payload}"))
                    .phase(phase)
                    .at(at)
            };
            prop_assert_eq!(
                correlated.detect(&make(channel)).map(|e| (e.pattern, e.waves.len())),
                renamed.detect(&make(one)).map(|e| (e.pattern, e.waves.len()))
            );
        }
    }
}

// ------------------------------------------------------------- memory

#[test]
fn memory_stays_bounded_under_a_flood_of_distinct_channels() {
    // 1,000,000 channels in release; 200,000 in debug builds (the engine is
    // not optimized there), which still passes the cap 20 times over.
    let flood: u64 = if cfg!(debug_assertions) {
        200_000
    } else {
        1_000_000
    };
    let cap = 10_000;
    let mut engine = PhysicsEngine::with_config(PhysicsConfig {
        max_tracked_keys: cap,
        ..Default::default()
    })
    .unwrap();
    let start = Instant::now();
    let mut channel = String::new();
    for n in 0..flood {
        use std::fmt::Write;
        channel.clear();
        write!(channel, "flood.c{n}").unwrap();
        let wave = Parts {
            id: u128::from(n) + 1,
            emitted_at_ns: (T0_MS + n / 100) * 1_000_000,
            ..Parts::default()
        }
        .into_wave(Channel::new(&channel))
        .unwrap();
        assert_eq!(engine.detect(&wave), None);
        assert!(engine.tracked_keys() <= cap);
        assert!(engine.tracked_payloads() <= cap);
    }
    assert!(
        engine.tracked_keys() >= cap / 2,
        "{}",
        engine.tracked_keys()
    );
    println!(
        "{flood} distinct channels in {:?}; tracked {} keys, {} payloads",
        start.elapsed(),
        engine.tracked_keys(),
        engine.tracked_payloads()
    );
}

#[test]
fn expired_windows_are_dropped() {
    let mut engine = PhysicsEngine::new();
    for n in 0..100 {
        engine.detect(&w("orders.created").key(format!("o{n}")).at(n));
    }
    assert_eq!(engine.tracked_keys(), 100);
    assert_eq!(engine.tracked_payloads(), 1);
    // As waves come, windows past the coherence window go (a few per wave).
    for n in 0..50 {
        engine.detect(
            &w("orders.paid")
                .key(format!("p{n}"))
                .payload("x")
                .at(5000 + n),
        );
    }
    assert_eq!(engine.tracked_keys(), 50, "only the fresh windows are left");
    // expire() drops everything past at once.
    engine.expire(time(5049 + 1001));
    assert_eq!(engine.tracked_keys(), 0);
    assert_eq!(
        engine.tracked_payloads(),
        2,
        "the standing window is longer"
    );
    engine.expire(time(5049 + 10_001));
    assert_eq!(engine.tracked_payloads(), 0);
    // A key that comes back starts afresh.
    assert_eq!(
        engine.detect(&w("orders.created").key("o1").phase(PI).at(20_000)),
        None
    );
}

// ------------------------------------------------------------- resonance

fn amp(a: f64) -> Amplitude {
    Amplitude::new(a).unwrap()
}

#[test]
fn resonance_edges_have_rate_and_mean_amplitude() {
    let mut engine = PhysicsEngine::new();
    let created = Channel::new("orders.created");
    let paid = Channel::new("orders.paid");
    // 10 waves/s for 60 s from shop to inventory, amplitudes 0.4 and 0.6.
    for n in 0..600u64 {
        let a = if n % 2 == 0 { 0.4 } else { 0.6 };
        engine.observe_delivery("shop", "inventory", &created, amp(a), time(n * 100));
    }
    // 1 wave/s from billing to shop.
    for n in 0..60u64 {
        engine.observe_delivery("billing", "shop", &paid, amp(1.0), time(n * 1000 + 5));
    }
    let edges = engine.edges();
    assert_eq!(edges.len(), 2);
    let busy = &edges[0];
    assert_eq!(
        (busy.emitter.as_str(), busy.resonator.as_str()),
        ("shop", "inventory")
    );
    assert_eq!(busy.channel, created);
    assert!((busy.rate_per_s - 10.0).abs() < 0.5, "{}", busy.rate_per_s);
    assert!(
        (busy.mean_amplitude - 0.5).abs() < 0.01,
        "{}",
        busy.mean_amplitude
    );
    assert_eq!(busy.deliveries, 600);
    assert_eq!(busy.first_seen, time(0));
    assert_eq!(busy.last_seen, time(59_900));
    let quiet = &edges[1];
    assert_eq!(quiet.emitter, "billing");
    assert!((quiet.rate_per_s - 1.0).abs() < 0.1, "{}", quiet.rate_per_s);
    assert!((quiet.mean_amplitude - 1.0).abs() < 1e-9);
    // Ten seconds of silence (one time constant) later, the rate has decayed
    // by e.
    let later = engine.resonance().edges_at(time(59_900 + 10_000));
    assert!((later[0].rate_per_s - busy.rate_per_s / std::f64::consts::E).abs() < 1e-6);
}

#[test]
fn the_resonance_graph_is_bounded_and_drops_idle_edges() {
    let mut engine = PhysicsEngine::with_config(PhysicsConfig {
        max_edges: 100,
        ..Default::default()
    })
    .unwrap();
    let channel = Channel::new("metrics.tick");
    for n in 0..10_000u64 {
        let emitter = format!("svc-{n}");
        engine.observe_delivery(&emitter, "gateway", &channel, amp(0.5), time(n));
        assert!(engine.resonance().len() <= 100);
    }
    let edges = engine.edges();
    assert_eq!(edges.len(), 100);
    assert!(
        edges
            .iter()
            .all(|e| e.emitter["svc-".len()..].parse::<u64>().unwrap() >= 9_900),
        "the most recently seen are kept"
    );
    engine.expire(time(9_999 + 60_001));
    assert!(engine.resonance().is_empty());
}
