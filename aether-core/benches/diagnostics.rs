//! Physics as diagnostics, on a flood: the embedded bus carries the sample
//! flow's waves (orders.created, inventory.reserved, orders.confirmed per
//! order) at a steady rate, with 1 % of the orders carrying each fault:
//!
//! - a retry storm: the order sent again every 10 ms, 8 times (50 ms under
//!   `cargo test`);
//! - a duplicate: the order sent twice at once;
//! - a conflict: `inventory.reserved`, then `inventory.insufficient` (phase
//!   π) for the same order (`physics.correlate = ["inventory.*"]`).
//!
//! It reports, per fault, how long after its first wave the engine reported
//! the pattern expected of it (in ms, and in waves emitted meanwhile), how
//! many faults went unfound, and the false alarms: events about healthy
//! orders. Then the cost to throughput of the engine on the same mix
//! (physics on vs off, alternating rounds), and amplitude-aware shedding:
//! a receive queue of 1,000 flooded with 10,000 waves of mixed amplitude,
//! beside a FIFO queue of the same size that refuses what comes when full.
//!
//! `cargo bench -p aether-core --bench diagnostics`; under `cargo test` (no
//! `--bench` argument) each part runs once, small, and checks its result.

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    time::{Duration, Instant},
};

use aether_core::{
    Aether, AetherConfig, InterferencePattern, Phase, PhysicsConfig, Vibrator, Wave,
};

/// The faults, and the pattern each one should make.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Fault {
    RetryStorm,
    Duplicate,
    Conflict,
}

impl Fault {
    const ALL: [Fault; 3] = [Fault::RetryStorm, Fault::Duplicate, Fault::Conflict];

    fn expects(self) -> InterferencePattern {
        match self {
            Fault::RetryStorm => InterferencePattern::StandingWave,
            Fault::Duplicate => InterferencePattern::Constructive,
            Fault::Conflict => InterferencePattern::Cancellation,
        }
    }
}

fn aether() -> Aether {
    Aether::new(AetherConfig {
        physics: PhysicsConfig {
            correlate: vec!["inventory.*".into()],
            ..Default::default()
        },
        ..Default::default()
    })
    .expect("valid settings")
}

fn order(channel: &str, key: &str, phase: Phase, body: String) -> Wave {
    Wave::builder(channel)
        .correlation_key(key)
        .phase(phase)
        .payload(body.into_bytes())
        .build()
        .expect("a valid wave")
}

/// The three waves of a healthy order `n`, in order.
fn healthy(n: u64) -> [Wave; 3] {
    let key = format!("o-{n}");
    [
        order(
            "orders.created",
            &key,
            Phase::ASSERT,
            format!("{{\"order_id\":\"{key}\",\"item\":\"widget\",\"qty\":1}}"),
        ),
        order(
            "inventory.reserved",
            &key,
            Phase::ASSERT,
            format!("{{\"order_id\":\"{key}\",\"left\":{n}}}"),
        ),
        order(
            "orders.confirmed",
            &key,
            Phase::ASSERT,
            format!("{{\"order_id\":\"{key}\"}}"),
        ),
    ]
}

/// What a detection run found.
#[derive(Default)]
struct Detection {
    /// Per fault: ms and waves from its first wave to its event.
    found: BTreeMap<Fault, Vec<(f64, u64)>>,
    made: BTreeMap<Fault, u64>,
    /// Events about healthy orders, by pattern.
    false_alarms: BTreeMap<String, u64>,
    /// Events about faulty orders of another pattern than expected (a
    /// retry storm is also a duplicate until it is steady).
    other: BTreeMap<String, u64>,
    waves: u64,
    elapsed: Duration,
}

/// A vibrator that hears every wave on `patterns`, with a queue of
/// `capacity` waves (none shed while the run is measured).
async fn sink(aether: &Aether, capacity: usize, patterns: &[&str]) -> Vibrator {
    let mut sink = Vibrator::builder("sink")
        .queue_capacity(capacity)
        .create(aether)
        .await
        .unwrap();
    for pattern in patterns {
        sink.resonate_on(*pattern).await.unwrap();
    }
    sink
}

/// Emits `orders` orders at `per_ms` orders a millisecond, 1 % of them with
/// each fault, and follows the engine's events.
async fn detect(orders: u64, per_ms: u64, retry_every: Duration) -> Detection {
    let aether = aether();
    let mut sink = sink(&aether, 1 << 20, &["*", "*.*"]).await;
    let drain = tokio::spawn(async move { while sink.receive().await.is_some() {} });
    let mut follower = Vibrator::create("operator", &aether)
        .await
        .unwrap()
        .follow_interference("*.*")
        .unwrap();
    let shop = Vibrator::create("shop", &aether).await.unwrap();
    let shadow = Vibrator::create("shadow", &aether).await.unwrap();
    let start = Instant::now();
    let mut emitted = 0u64;
    // Per faulty key: its fault, when and after how many waves it began.
    let mut faulty: HashMap<String, (Fault, Instant, u64)> = HashMap::new();
    let mut storms: VecDeque<(Instant, Wave, u32)> = VecDeque::new();
    let mut result = Detection::default();
    let mut ticks = tokio::time::interval(Duration::from_millis(1));
    let mut n = 0u64;
    let fault_of = |n: u64| match n % 100 {
        17 => Some(Fault::RetryStorm),
        50 => Some(Fault::Duplicate),
        83 => Some(Fault::Conflict),
        _ => None,
    };
    let record = |event: aether_core::InterferenceEvent,
                  faulty: &HashMap<String, (Fault, Instant, u64)>,
                  emitted: u64,
                  result: &mut Detection| {
        let pattern = format!("{:?}", event.pattern);
        match faulty.get(&event.correlation_key) {
            None => *result.false_alarms.entry(pattern).or_default() += 1,
            Some(&(fault, began, at)) if fault.expects() == event.pattern => {
                result
                    .found
                    .entry(fault)
                    .or_default()
                    .push((began.elapsed().as_secs_f64() * 1e3, emitted - at));
            }
            Some(_) => *result.other.entry(pattern).or_default() += 1,
        }
    };
    let mut seen_keys: std::collections::HashSet<(String, String)> = Default::default();
    while n < orders || !storms.is_empty() {
        ticks.tick().await;
        for _ in 0..per_ms {
            if n >= orders {
                break;
            }
            n += 1;
            let waves = healthy(n);
            let key = waves[0].correlation_key().to_string();
            let fault = fault_of(n);
            if let Some(fault) = fault {
                faulty.insert(key.clone(), (fault, Instant::now(), emitted));
                *result.made.entry(fault).or_default() += 1;
            }
            let [created, reserved, confirmed] = waves;
            shop.emit(created.clone()).await.unwrap();
            emitted += 1;
            match fault {
                Some(Fault::Duplicate) => {
                    shop.emit(created.clone()).await.unwrap();
                    emitted += 1;
                }
                Some(Fault::RetryStorm) => {
                    storms.push_back((Instant::now() + retry_every, created, 8));
                }
                _ => {}
            }
            shop.emit(reserved).await.unwrap();
            emitted += 1;
            if fault == Some(Fault::Conflict) {
                let no = order(
                    "inventory.insufficient",
                    &key,
                    Phase::RETRACT,
                    format!("{{\"order_id\":\"{key}\",\"available\":0}}"),
                );
                shadow.emit(no).await.unwrap();
                emitted += 1;
            }
            shop.emit(confirmed).await.unwrap();
            emitted += 1;
        }
        // The retrying clients, each every `retry_every`.
        let now = Instant::now();
        for _ in 0..storms.len() {
            let (due, wave, left) = storms.pop_front().unwrap();
            if due > now {
                storms.push_back((due, wave, left));
                continue;
            }
            shop.emit(wave.clone()).await.unwrap();
            emitted += 1;
            if left > 1 {
                storms.push_back((due + retry_every, wave, left - 1));
            }
        }
        while let Some(event) = follower.try_next() {
            let first = seen_keys.insert((
                event.correlation_key.clone(),
                format!("{:?}", event.pattern),
            ));
            if first {
                record(event, &faulty, emitted, &mut result);
            }
        }
    }
    // The engine looks every 10 ms: let it finish.
    let settle = Instant::now() + Duration::from_millis(300);
    while Instant::now() < settle {
        while let Some(event) = follower.try_next() {
            let first = seen_keys.insert((
                event.correlation_key.clone(),
                format!("{:?}", event.pattern),
            ));
            if first {
                record(event, &faulty, emitted, &mut result);
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    result.waves = emitted;
    result.elapsed = start.elapsed();
    let stats = aether.physics().stats();
    assert_eq!(
        stats.skipped_over_budget, 0,
        "the run stays within the engine's budget"
    );
    aether.close();
    let _ = drain.await;
    result
}

/// Emits `orders` orders of the faulty mix as fast as it can, with the
/// engine on (followed) or off; returns waves per second received.
async fn throughput(orders: u64, physics: bool) -> f64 {
    let aether = aether();
    let mut sink = sink(&aether, 1 << 22, &["*.*"]).await;
    let _follower = physics.then(|| aether.physics().events());
    let shop = Vibrator::create("shop", &aether).await.unwrap();
    let waves: Vec<Wave> = (1..=orders).flat_map(healthy).collect();
    let total = waves.len();
    let start = Instant::now();
    for wave in waves {
        shop.emit(wave).await.unwrap();
    }
    let mut received = 0;
    while received < total {
        sink.receive().await.unwrap();
        received += 1;
    }
    let rate = total as f64 / start.elapsed().as_secs_f64();
    aether.close();
    rate
}

/// A queue of `capacity` flooded with `n` waves whose amplitudes cycle
/// through 0.1, 0.2, ... 1.0, nobody receiving: what the aether's queue
/// keeps by amplitude, and what a FIFO of the same size that refuses
/// arrivals when full keeps.
async fn shedding(capacity: usize, n: usize) -> (BTreeMap<u32, usize>, BTreeMap<u32, usize>) {
    let aether = Aether::default();
    let mut rx = Vibrator::builder("rx")
        .queue_capacity(capacity)
        .create(&aether)
        .await
        .unwrap();
    rx.resonate_on("load").await.unwrap();
    let tx = Vibrator::create("tx", &aether).await.unwrap();
    let tenth = |i: usize| (i % 10 + 1) as u32;
    let mut fifo = VecDeque::with_capacity(capacity);
    for i in 0..n {
        let wave = Wave::builder("load")
            .amplitude(f64::from(tenth(i)) / 10.0)
            .build()
            .unwrap();
        tx.emit(wave).await.unwrap();
        if fifo.len() < capacity {
            fifo.push_back(tenth(i));
        }
    }
    let mut kept = BTreeMap::new();
    while let Some(wave) = rx.try_receive() {
        *kept
            .entry((wave.amplitude().value() * 10.0).round() as u32)
            .or_default() += 1;
    }
    let mut fifo_kept = BTreeMap::new();
    for a in fifo {
        *fifo_kept.entry(a).or_default() += 1;
    }
    aether.close();
    (kept, fifo_kept)
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

fn percentile(mut xs: Vec<f64>, p: f64) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[((xs.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    // `cargo bench` measures; as a test, one small smoke run of each case.
    let testing = !aether_testkit::bench::measuring();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // Under test, on a machine busy with other tests, retries 50 ms apart
    // (a standing wave allows 20 % of jitter).
    let (orders, per_ms, rounds, flood, retry_every) = if testing {
        (600, 3, 1, 2_000, Duration::from_millis(50))
    } else {
        (12_000, 4, 5, 100_000, Duration::from_millis(10))
    };
    let found = rt.block_on(detect(orders, per_ms, retry_every));
    println!(
        "flood: {} waves in {:.2} s ({:.0} waves/s), 1 % of the orders with each fault",
        found.waves,
        found.elapsed.as_secs_f64(),
        found.waves as f64 / found.elapsed.as_secs_f64()
    );
    println!("| fault | made | found | median ms (p99) | median waves after it began (p99) |");
    println!("| --- | --- | --- | --- | --- |");
    for fault in Fault::ALL {
        let made = found.made.get(&fault).copied().unwrap_or(0);
        let times = found.found.get(&fault).cloned().unwrap_or_default();
        let ms: Vec<f64> = times.iter().map(|t| t.0).collect();
        let waves: Vec<f64> = times.iter().map(|t| t.1 as f64).collect();
        if ms.is_empty() {
            println!("| {fault:?} | {made} | 0 | - | - |");
        } else {
            println!(
                "| {fault:?} | {made} | {} | {:.1} ({:.1}) | {:.0} ({:.0}) |",
                ms.len(),
                median(ms.clone()),
                percentile(ms, 0.99),
                median(waves.clone()),
                percentile(waves, 0.99)
            );
        }
        assert!(made > 0);
        assert!(!times.is_empty(), "{fault:?}: found");
    }
    println!(
        "false alarms (events about healthy orders): {:?}; other patterns on faulty orders: {:?}",
        found.false_alarms, found.other
    );
    assert!(found.false_alarms.is_empty(), "no false alarm");

    let mut ratios = Vec::new();
    let (mut ons, mut offs) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        // Alternating which goes first.
        let (off, on) = if round % 2 == 0 {
            let off = rt.block_on(throughput(flood / 3, false));
            (off, rt.block_on(throughput(flood / 3, true)))
        } else {
            let on = rt.block_on(throughput(flood / 3, true));
            (rt.block_on(throughput(flood / 3, false)), on)
        };
        ratios.push(on / off);
        ons.push(on);
        offs.push(off);
    }
    let spread = |xs: &[f64]| {
        let (lo, hi) = xs
            .iter()
            .fold((f64::MAX, f64::MIN), |(lo, hi), &x| (lo.min(x), hi.max(x)));
        format!("{lo:.2}-{hi:.2}")
    };
    println!(
        "throughput on the mix, {rounds} alternating rounds: physics off {:.2} M waves/s, on {:.2} M waves/s, on/off {:.2}x ({})",
        median(offs) / 1e6,
        median(ons) / 1e6,
        median(ratios.clone()),
        spread(&ratios)
    );

    let (kept, fifo) = rt.block_on(shedding(1_000, 10_000));
    println!("shedding: a queue of 1,000, 10,000 waves arriving, amplitudes 0.1 to 1.0 in turn");
    println!("| amplitude | kept by the aether's queue | kept by a FIFO of 1,000 |");
    println!("| --- | --- | --- |");
    for tenth in 1..=10u32 {
        println!(
            "| {:.1} | {} | {} |",
            f64::from(tenth) / 10.0,
            kept.get(&tenth).copied().unwrap_or(0),
            fifo.get(&tenth).copied().unwrap_or(0)
        );
    }
    assert_eq!(kept.values().sum::<usize>(), 1_000);
    assert_eq!(kept.get(&10), Some(&1_000), "the strongest are kept");
    assert_eq!(fifo.get(&10), Some(&100));
}
