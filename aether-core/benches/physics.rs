//! The physics engine's cost per wave: `PhysicsEngine::detect` (the event
//! with the waves involved) and `detect_patterns` (the pattern only), over
//! pre-built waves with emission times 10 µs apart (100,000 waves/s):
//!
//! - `orders`: a realistic spread: 8 channels, each wave about one of the
//!   1,000 most recent orders (so a (channel, order) pair recurs now and
//!   then, within the coherence window), 2 % retractions (phase π), JSON
//!   payloads of about 100 bytes.
//! - `distinct`: every wave on a new channel: the table is always full and
//!   every wave evicts (the flood case).
//! - `hot`: one channel and one key: every window full (64 waves), every
//!   wave constructive with all of them (the worst case per wave).
//!
//! Also `calculate_interference` per pair and `observe_delivery` per
//! delivery. `cargo bench -p aether-core --bench physics` prints the table
//! (`AETHER_BENCH_CASE=orders` runs one case, for a profiler); under
//! `cargo test` (no `--bench` argument) each case runs once, small.

use std::{
    hint::black_box,
    time::{Duration, Instant},
};

use aether_core::{Amplitude, Channel, PhysicsEngine, Wave, wire::Parts};

const T0_NS: u64 = 1_700_000_000_000_000_000;
const CHANNELS: [&str; 8] = [
    "orders.created",
    "orders.paid",
    "orders.packed",
    "orders.shipped",
    "orders.delivered",
    "orders.review",
    "inventory.reserved",
    "payments.captured",
];

/// A small deterministic generator (xorshift), so every run feeds the same
/// waves.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn wave(n: u64, channel: &str, key: Option<String>, phase: f64, payload: String) -> Wave {
    Parts {
        id: u128::from(n) + 1,
        emitted_at_ns: T0_NS + n * 10_000,
        phase,
        source: Some("bench".to_string()),
        correlation_key: key,
        payload: payload.into(),
        ..Parts::default()
    }
    .into_wave(Channel::new(channel))
    .expect("valid wave")
}

fn orders(n: usize) -> Vec<Wave> {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    (0..n as u64)
        .map(|i| {
            // One new order every 4 waves; each wave is about a recent one.
            let newest = i / 4 + 1000;
            let order = newest - rng.next() % 1000;
            let channel = CHANNELS[(rng.next() % CHANNELS.len() as u64) as usize];
            let retract = rng.next().is_multiple_of(50);
            let payload = format!(
                r#"{{"order_id":{order},"channel":"{channel}","amount":{},"currency":"EUR","items":["A","B"]}}"#,
                rng.next() % 10_000
            );
            let phase = if retract { std::f64::consts::PI } else { 0.0 };
            wave(i, channel, Some(format!("order-{order}")), phase, payload)
        })
        .collect()
}

fn distinct(n: usize) -> Vec<Wave> {
    (0..n as u64)
        .map(|i| wave(i, &format!("flood.c{i}"), None, 0.0, String::new()))
        .collect()
}

fn hot(n: usize) -> Vec<Wave> {
    (0..n as u64)
        .map(|i| wave(i, "hot.channel", None, 0.0, i.to_string()))
        .collect()
}

/// Runs `detect` (or `detect_patterns`) over `waves` in a fresh engine:
/// the time per wave and how many waves made a pattern.
fn run(waves: &[Wave], detail: bool) -> (Duration, usize) {
    let mut engine = PhysicsEngine::new();
    let start = Instant::now();
    let mut events = 0;
    for wave in waves {
        let found = if detail {
            black_box(engine.detect(wave)).is_some()
        } else {
            black_box(engine.detect_patterns(wave.channel(), wave)).is_some()
        };
        events += usize::from(found);
    }
    (start.elapsed() / waves.len() as u32, events)
}

fn best_of(rounds: usize, waves: &[Wave], detail: bool) -> (Duration, usize) {
    (0..rounds)
        .map(|_| run(waves, detail))
        .min_by_key(|(t, _)| *t)
        .expect("at least one round")
}

fn interference_ns(n: usize) -> Duration {
    let engine = PhysicsEngine::new();
    let a = wave(
        1,
        "orders.review",
        Some("order-1".into()),
        0.0,
        String::new(),
    );
    let b = wave(
        2,
        "orders.review",
        Some("order-1".into()),
        3.0,
        String::new(),
    );
    let start = Instant::now();
    for _ in 0..n {
        black_box(engine.calculate_interference(black_box(&a), black_box(&b)));
    }
    start.elapsed() / n as u32
}

fn delivery_ns(n: usize) -> Duration {
    let mut engine = PhysicsEngine::new();
    let channels: Vec<Channel> = CHANNELS.iter().map(Channel::new).collect();
    let services = ["shop", "billing", "inventory", "mailer", "audit", "gateway"];
    let amplitude = Amplitude::new(0.8).expect("in range");
    let start = Instant::now();
    for i in 0..n {
        engine.observe_delivery(
            services[i % 6],
            services[(i / 6) % 6],
            &channels[i % 8],
            amplitude,
            std::time::UNIX_EPOCH + Duration::from_nanos(T0_NS + i as u64 * 10_000),
        );
    }
    let per = start.elapsed() / n as u32;
    black_box(engine.edges());
    per
}

fn main() {
    // `cargo bench` measures; as a test, one small smoke run of each case.
    let testing = !aether_testkit::bench::measuring();
    let (n, rounds) = if testing { (2_000, 1) } else { (200_000, 5) };
    let cases = [
        ("orders", orders(n)),
        ("distinct", distinct(n)),
        ("hot", hot(n)),
    ];
    if testing {
        for (name, waves) in &cases {
            let (_, events) = run(waves, true);
            let (_, patterns) = run(waves, false);
            assert_eq!(events, patterns, "{name}: detect and detect_patterns agree");
        }
        interference_ns(1000);
        delivery_ns(1000);
        println!("physics bench: smoke run ok");
        return;
    }
    // `AETHER_BENCH_CASE=orders|distinct|hot`: that case only (for a
    // profiler).
    let only = std::env::var("AETHER_BENCH_CASE").ok();
    println!(
        "| case ({n} waves) | detect (ns/wave) | detect_patterns (ns/wave) | waves with a pattern |"
    );
    println!("| --- | --- | --- | --- |");
    for (name, waves) in &cases {
        if only.as_deref().is_some_and(|only| only != *name) {
            continue;
        }
        let (detect, events) = best_of(rounds, waves, true);
        let (patterns, _) = best_of(rounds, waves, false);
        println!(
            "| {name} | {} | {} | {:.1} % |",
            detect.as_nanos(),
            patterns.as_nanos(),
            100.0 * events as f64 / n as f64
        );
    }
    if only.is_some() {
        return;
    }
    println!(
        "calculate_interference: {} ns/pair; observe_delivery: {} ns/delivery",
        interference_ns(1_000_000).as_nanos(),
        delivery_ns(1_000_000).as_nanos()
    );
}
