//! The embedded medium beside plain tokio channels, in the same run.
//!
//! - `one_to_one`: 1 emitter → 1 resonator, against `tokio::sync::mpsc`.
//! - `fan_out_4`: 1 emitter → 4 resonators on a wildcard, against
//!   `tokio::sync::broadcast` with 4 receivers.
//! - `physics`: 1 → 1 with the physics engine running (someone called
//!   `aether.physics()`, so every delivery is observed, within the engine's
//!   budget), against the same with the engine idle, in the same run.
//!
//! Payloads are 128 bytes. Queues are sized so nothing may be shed, and every
//! run checks that every message arrived (zero loss). After the criterion
//! groups, a summary measures each pair again and prints the ratios
//! (aether / tokio) and the one-way latency percentiles, then the same tokio
//! channels carrying the aether's `Wave` instead of `Bytes` beside the plain
//! ones: what the wave type alone costs a channel as fast as tokio's.
//!
//! `cargo bench -p aether-core --bench embedded`; set `AETHER_BENCH_QUICK=1`
//! to run only the summary, `AETHER_BENCH_PROFILE=one|fan|physics` for one
//! scenario round after round (`AETHER_BENCH_SIDE=tokio|aether` with `one`
//! or `fan`: that side only, for a profiler).

use std::{
    hint::black_box,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use aether_core::{Aether, AetherConfig, Channel, DropReason, PhysicsStats, Vibrator, Wave};
use bytes::Bytes;
use criterion::{Criterion, Throughput};
use tokio::{
    runtime::Runtime,
    sync::{broadcast, mpsc},
};

const PAYLOAD: usize = 128;
const BATCH: usize = 20_000;
const FAN_OUT: usize = 4;

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

fn payload() -> Bytes {
    Bytes::from(vec![0xAB; PAYLOAD])
}

fn aether_for(batch: usize) -> Aether {
    Aether::new(AetherConfig {
        channel_buffer_size: batch,
        ..Default::default()
    })
    .expect("config")
}

async fn mpsc_one_to_one(n: usize) -> Duration {
    let payload = payload();
    mpsc_carrying(n, move || payload.clone()).await
}

/// `mpsc` carrying a `Wave` (made per message, as the aether side makes
/// one per emit): what the aether's queue carries.
async fn mpsc_wave(n: usize) -> Duration {
    let (channel, payload) = (Channel::new("bench.one"), payload());
    mpsc_carrying(n, move || Wave::new(channel.clone(), payload.clone())).await
}

/// 1 -> 1 over `tokio::sync::mpsc`, sending what `message` makes.
async fn mpsc_carrying<M: Send + 'static>(n: usize, message: impl Fn() -> M) -> Duration {
    let (tx, mut rx) = mpsc::channel::<M>(n);
    let start = Instant::now();
    let consumer = tokio::spawn(async move {
        let mut got = 0;
        while got < n {
            black_box(rx.recv().await.expect("sender alive"));
            got += 1;
        }
    });
    for _ in 0..n {
        tx.send(message()).await.expect("receiver alive");
    }
    consumer.await.expect("consumer");
    start.elapsed()
}

async fn aether_one_to_one(n: usize) -> Duration {
    aether_one_to_one_physics(n, false).await.0
}

/// The seed's JSON value: an order of about 128 bytes of JSON text.
fn order(i: usize) -> serde_json::Value {
    serde_json::json!({
        "order_id": i,
        "customer": "c-1042",
        "items": [{"sku": "tea-green-100g", "qty": 2}, {"sku": "cup-white", "qty": 1}],
        "total_cents": 1890,
    })
}

/// `mpsc` carrying the same JSON value serialized per message.
async fn mpsc_json(n: usize) -> Duration {
    let (tx, mut rx) = mpsc::channel::<Bytes>(n);
    let start = Instant::now();
    let consumer = tokio::spawn(async move {
        for _ in 0..n {
            black_box(rx.recv().await.expect("sender alive"));
        }
    });
    for i in 0..n {
        let bytes = serde_json::to_vec(&order(i)).expect("json");
        tx.send(Bytes::from(bytes)).await.expect("receiver alive");
    }
    consumer.await.expect("consumer");
    start.elapsed()
}

/// `emit_wave(channel, json!(...))`, as users write it, 1 -> 1.
async fn aether_json(n: usize) -> Duration {
    let aether = aether_for(n);
    let mut rx = Vibrator::create("rx", &aether).await.expect("rx");
    rx.resonate_on("bench.json").await.expect("resonate");
    let tx = Vibrator::create("tx", &aether).await.expect("tx");
    let start = Instant::now();
    let consumer = tokio::spawn(async move {
        for _ in 0..n {
            black_box(rx.receive().await.expect("aether open"));
        }
        rx
    });
    for i in 0..n {
        tx.emit_wave("bench.json", order(i)).await.expect("emit");
    }
    let rx = consumer.await.expect("consumer");
    let elapsed = start.elapsed();
    assert_eq!(rx.stats().dropped_total(), 0, "no loss");
    elapsed
}

/// 1 → 1, with the physics engine running if `physics` (and what it did).
async fn aether_one_to_one_physics(n: usize, physics: bool) -> (Duration, Option<PhysicsStats>) {
    let aether = aether_for(n);
    let engine = physics.then(|| aether.physics());
    let mut rx = Vibrator::create("rx", &aether).await.expect("rx");
    rx.resonate_on("bench.one").await.expect("resonate");
    let tx = Vibrator::create("tx", &aether).await.expect("tx");
    let channel = Channel::new("bench.one");
    let payload = payload();
    let start = Instant::now();
    let consumer = tokio::spawn(async move {
        for _ in 0..n {
            black_box(rx.receive().await.expect("aether open"));
        }
        rx
    });
    for _ in 0..n {
        tx.emit(Wave::new(channel.clone(), payload.clone()))
            .await
            .expect("emit");
    }
    let rx = consumer.await.expect("consumer");
    let elapsed = start.elapsed();
    assert_eq!(rx.stats().dropped_total(), 0, "no loss");
    (elapsed, engine.map(|e| e.stats()))
}

async fn broadcast_fan_out(n: usize) -> Duration {
    let payload = payload();
    broadcast_carrying(n, move || payload.clone()).await
}

/// `broadcast` carrying a `Wave` made per message.
async fn broadcast_wave(n: usize) -> Duration {
    let (channel, payload) = (Channel::new("bench.fan"), payload());
    broadcast_carrying(n, move || Wave::new(channel.clone(), payload.clone())).await
}

/// 1 -> 4 over `tokio::sync::broadcast`, sending what `message` makes.
async fn broadcast_carrying<M: Clone + Send + 'static>(
    n: usize,
    message: impl Fn() -> M,
) -> Duration {
    let (tx, _) = broadcast::channel::<M>(n);
    let consumers: Vec<_> = (0..FAN_OUT)
        .map(|_| {
            let mut rx = tx.subscribe();
            tokio::spawn(async move {
                for _ in 0..n {
                    black_box(rx.recv().await.expect("no lag, no loss"));
                }
            })
        })
        .collect();
    let start = Instant::now();
    for _ in 0..n {
        assert!(tx.send(message()).is_ok(), "receivers alive");
    }
    for c in consumers {
        c.await.expect("consumer");
    }
    start.elapsed()
}

async fn aether_fan_out(n: usize) -> Duration {
    let aether = aether_for(n);
    let mut consumers = Vec::new();
    for i in 0..FAN_OUT {
        let mut rx = Vibrator::create(format!("rx{i}"), &aether)
            .await
            .expect("rx");
        rx.resonate_on("bench.*").await.expect("resonate");
        consumers.push(rx);
    }
    let tx = Vibrator::create("tx", &aether).await.expect("tx");
    let channel = Channel::new("bench.fan");
    let payload = payload();
    let start = Instant::now();
    let consumers: Vec<_> = consumers
        .into_iter()
        .map(|mut rx| {
            tokio::spawn(async move {
                for _ in 0..n {
                    black_box(rx.receive().await.expect("aether open"));
                }
            })
        })
        .collect();
    for _ in 0..n {
        tx.emit(Wave::new(channel.clone(), payload.clone()))
            .await
            .expect("emit");
    }
    for c in consumers {
        c.await.expect("consumer");
    }
    let elapsed = start.elapsed();
    assert_eq!(aether.stats().dropped(DropReason::QueueFull), 0, "no loss");
    assert_eq!(aether.stats().delivered, (n * FAN_OUT) as u64);
    elapsed
}

/// The sending side alone: `n` sends with nobody receiving meanwhile.
async fn mpsc_send_only(n: usize) -> Duration {
    let (tx, mut rx) = mpsc::channel::<Bytes>(n);
    let payload = payload();
    let mut elapsed = Duration::ZERO;
    // Two rounds, the second timed: the first warms up the code and the
    // allocator.
    for _ in 0..2 {
        let start = Instant::now();
        for _ in 0..n {
            tx.send(payload.clone()).await.expect("receiver alive");
        }
        elapsed = start.elapsed();
        for _ in 0..n {
            black_box(rx.recv().await.expect("sent"));
        }
    }
    elapsed
}

/// [`mpsc_send_only`] for the aether: `n` emits, nobody receiving meanwhile.
async fn aether_emit_only(n: usize) -> Duration {
    let aether = aether_for(n);
    let mut rx = Vibrator::create("rx", &aether).await.expect("rx");
    rx.resonate_on("bench.one").await.expect("resonate");
    let tx = Vibrator::create("tx", &aether).await.expect("tx");
    let channel = Channel::new("bench.one");
    let payload = payload();
    let mut elapsed = Duration::ZERO;
    // As in `mpsc_send_only`: the second of two rounds is timed.
    for _ in 0..2 {
        let start = Instant::now();
        for _ in 0..n {
            tx.emit(Wave::new(channel.clone(), payload.clone()))
                .await
                .expect("emit");
        }
        elapsed = start.elapsed();
        for _ in 0..n {
            black_box(rx.receive().await.expect("emitted"));
        }
    }
    elapsed
}

/// One-way latency: one message in flight at a time; the receiver notes how
/// long after the send it got it.
async fn aether_latency(samples: usize) -> Vec<Duration> {
    let aether = Aether::default();
    let mut rx = Vibrator::create("rx", &aether).await.expect("rx");
    rx.resonate_on("bench.lat").await.expect("resonate");
    let tx = Vibrator::create("tx", &aether).await.expect("tx");
    let base = Instant::now();
    let received = Arc::new(AtomicU64::new(0));
    let seen = received.clone();
    let consumer = tokio::spawn(async move {
        let mut out = Vec::with_capacity(samples);
        for _ in 0..samples {
            let wave = rx.receive().await.expect("open");
            let sent = u64::from_le_bytes(wave.payload_bytes()[..8].try_into().expect("8 bytes"));
            out.push(base.elapsed() - Duration::from_nanos(sent));
            seen.fetch_add(1, Ordering::Release);
        }
        out
    });
    let channel = Channel::new("bench.lat");
    for i in 0..samples {
        let mut body = vec![0u8; PAYLOAD];
        body[..8].copy_from_slice(&(base.elapsed().as_nanos() as u64).to_le_bytes());
        tx.emit(Wave::new(channel.clone(), body))
            .await
            .expect("emit");
        while received.load(Ordering::Acquire) <= i as u64 {
            tokio::task::yield_now().await;
        }
    }
    consumer.await.expect("consumer")
}

async fn mpsc_latency(samples: usize) -> Vec<Duration> {
    let (tx, mut rx) = mpsc::channel::<(Instant, Bytes)>(16);
    let received = Arc::new(AtomicU64::new(0));
    let seen = received.clone();
    let consumer = tokio::spawn(async move {
        let mut out = Vec::with_capacity(samples);
        for _ in 0..samples {
            let (sent, body) = rx.recv().await.expect("open");
            black_box(body);
            out.push(sent.elapsed());
            seen.fetch_add(1, Ordering::Release);
        }
        out
    });
    let payload = payload();
    for i in 0..samples {
        tx.send((Instant::now(), payload.clone()))
            .await
            .expect("send");
        while received.load(Ordering::Acquire) <= i as u64 {
            tokio::task::yield_now().await;
        }
    }
    consumer.await.expect("consumer")
}

fn criterion_groups(c: &mut Criterion, rt: &Runtime) {
    let mut group = c.benchmark_group("one_to_one");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.bench_function("tokio_mpsc", |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| rt.block_on(mpsc_one_to_one(BATCH)))
                .sum()
        })
    });
    group.bench_function("aether_embedded", |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| rt.block_on(aether_one_to_one(BATCH)))
                .sum()
        })
    });
    group.finish();

    let mut group = c.benchmark_group("fan_out_4");
    group.throughput(Throughput::Elements((BATCH * FAN_OUT) as u64));
    group.bench_function("tokio_broadcast", |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| rt.block_on(broadcast_fan_out(BATCH)))
                .sum()
        })
    });
    group.bench_function("aether_embedded", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| rt.block_on(aether_fan_out(BATCH))).sum())
    });
    group.finish();

    let mut group = c.benchmark_group("physics");
    group.throughput(Throughput::Elements(BATCH as u64));
    for (name, on) in [("off", false), ("on", true)] {
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|_| rt.block_on(aether_one_to_one_physics(BATCH, on)).0)
                    .sum()
            })
        });
    }
    group.finish();
}

/// Physics off and on, alternating round by round: the median rates and
/// what the engine did in its last round.
fn physics_rates(rt: &Runtime, rounds: usize, n: usize) -> (f64, f64, PhysicsStats) {
    let run = |on: bool| rt.block_on(aether_one_to_one_physics(n, on));
    run(false);
    run(true);
    let (mut off, mut on, mut last) = (Vec::new(), Vec::new(), PhysicsStats::default());
    for _ in 0..rounds {
        off.push(n as f64 / run(false).0.as_secs_f64());
        let (elapsed, stats) = run(true);
        on.push(n as f64 / elapsed.as_secs_f64());
        last = stats.expect("physics on");
    }
    (median(off), median(on), last)
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Rates of tokio and aether over `rounds` rounds, the two sides
/// alternating round by round (after one warm-up each), so that a drift of
/// the machine's speed moves both: (median tokio rate, median aether rate,
/// median of the per-round ratios, lowest and highest ratio).
fn paired_rates(
    rounds: usize,
    per_round: usize,
    tokio: impl Fn(usize) -> Duration,
    aether: impl Fn(usize) -> Duration,
) -> (f64, f64, f64, f64, f64) {
    tokio(per_round);
    aether(per_round);
    let (mut raw, mut ours, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        let r = per_round as f64 / tokio(per_round).as_secs_f64();
        let a = per_round as f64 / aether(per_round).as_secs_f64();
        raw.push(r);
        ours.push(a);
        ratios.push(a / r);
    }
    let lowest = ratios.iter().copied().fold(f64::INFINITY, f64::min);
    let highest = ratios.iter().copied().fold(0.0, f64::max);
    (median(raw), median(ours), median(ratios), lowest, highest)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn summary(rt: &Runtime) {
    let rounds = 9;
    let n = 100_000;
    let one = paired_rates(
        rounds,
        n,
        |n| rt.block_on(mpsc_one_to_one(n)),
        |n| rt.block_on(aether_one_to_one(n)),
    );
    let fan = paired_rates(
        rounds,
        n,
        |n| rt.block_on(broadcast_fan_out(n)),
        |n| rt.block_on(aether_fan_out(n)),
    );
    // tokio's channels carrying the aether's `Wave` instead of `Bytes`:
    // what the wave alone (making it, moving its 160 bytes, dropping it)
    // costs a channel as fast as tokio's.
    let wave_one = paired_rates(
        rounds,
        n,
        |n| rt.block_on(mpsc_one_to_one(n)),
        |n| rt.block_on(mpsc_wave(n)),
    );
    let wave_fan = paired_rates(
        rounds,
        n,
        |n| rt.block_on(broadcast_fan_out(n)),
        |n| rt.block_on(broadcast_wave(n)),
    );
    let json = paired_rates(
        rounds,
        n,
        |n| rt.block_on(mpsc_json(n)),
        |n| rt.block_on(aether_json(n)),
    );
    let deliveries = FAN_OUT as f64;
    let (physics_off, physics_on, physics) = physics_rates(rt, rounds, n);
    // Alternate and keep the last of three, so neither side runs cold.
    let (mut lat, mut raw_lat) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        // Senders run in spawned tasks, on the workers, like the receivers.
        raw_lat = rt.block_on(async { tokio::spawn(mpsc_latency(20_000)).await.expect("task") });
        lat = rt.block_on(async { tokio::spawn(aether_latency(20_000)).await.expect("task") });
    }
    lat.sort();
    raw_lat.sort();

    println!();
    println!(
        "summary (medians of {rounds} rounds of {n} messages, the two sides alternating; \
         {PAYLOAD}-byte payloads, 2 worker threads)"
    );
    println!("| scenario | tokio | aether embedded | ratio (min-max over rounds) |");
    println!("|---|---|---|---|");
    println!(
        "| 1 -> 1 (msg/s), vs mpsc | {:.0} | {:.0} | {:.2}x ({:.2}-{:.2}) |",
        one.0, one.1, one.2, one.3, one.4
    );
    println!(
        "| 1 -> 4 (deliveries/s), vs broadcast | {:.0} | {:.0} | {:.2}x ({:.2}-{:.2}) |",
        fan.0 * deliveries,
        fan.1 * deliveries,
        fan.2,
        fan.3,
        fan.4
    );
    println!(
        "| emit_wave(json!) 1 -> 1 (msg/s), vs mpsc of the value serialized per message | {:.0} | {:.0} | {:.2}x ({:.2}-{:.2}) |",
        json.0, json.1, json.2, json.3, json.4
    );
    println!(
        "| one-way latency p50 / p99 (us) | {:.2} / {:.2} | {:.2} / {:.2} | {:.2}x (p50) |",
        percentile(&raw_lat, 0.5).as_secs_f64() * 1e6,
        percentile(&raw_lat, 0.99).as_secs_f64() * 1e6,
        percentile(&lat, 0.5).as_secs_f64() * 1e6,
        percentile(&lat, 0.99).as_secs_f64() * 1e6,
        percentile(&lat, 0.5).as_secs_f64() / percentile(&raw_lat, 0.5).as_secs_f64()
    );
    println!("loss: 0 (checked in every round)");
    println!();
    println!(
        "| tokio carrying `Bytes`, then the aether's `Wave` | `Bytes` | `Wave` | ratio (min-max over rounds) |"
    );
    println!("|---|---|---|---|");
    println!(
        "| 1 -> 1 mpsc (msg/s) | {:.0} | {:.0} | {:.2}x ({:.2}-{:.2}) |",
        wave_one.0, wave_one.1, wave_one.2, wave_one.3, wave_one.4
    );
    println!(
        "| 1 -> 4 broadcast (deliveries/s) | {:.0} | {:.0} | {:.2}x ({:.2}-{:.2}) |",
        wave_fan.0 * deliveries,
        wave_fan.1 * deliveries,
        wave_fan.2,
        wave_fan.3,
        wave_fan.4
    );
    println!();
    println!("| physics engine, 1 -> 1 | off (msg/s) | on (msg/s) | on / off |");
    println!("|---|---|---|---|");
    println!(
        "| `aether.physics()` called or not | {:.0} | {:.0} | {:.2}x |",
        physics_off,
        physics_on,
        physics_on / physics_off
    );
    println!(
        "engine in its last round of {n}: observed {}, skipped over budget {}, dropped (buffers full) {}, busy {:?}",
        physics.observed, physics.skipped_over_budget, physics.dropped_buffer_full, physics.busy
    );
}

fn main() {
    // `cargo bench` measures; as a test, one small smoke run of each case.
    let testing = !aether_testkit::bench::measuring();
    let rt = runtime();
    let quick = std::env::var_os("AETHER_BENCH_QUICK").is_some();
    if testing {
        rt.block_on(async {
            mpsc_one_to_one(1000).await;
            aether_one_to_one(1000).await;
            broadcast_fan_out(1000).await;
            aether_fan_out(1000).await;
            mpsc_wave(1000).await;
            broadcast_wave(1000).await;
            mpsc_json(1000).await;
            aether_json(1000).await;
            let (_, stats) = aether_one_to_one_physics(1000, true).await;
            assert!(stats.expect("physics on").running);
            assert_eq!(aether_latency(100).await.len(), 100);
        });
        println!("embedded bench: smoke run ok");
        return;
    }
    // `AETHER_BENCH_PROFILE=one|fan`: that scenario only, aether and tokio
    // alternating, printing each round's ratio (for a profiler, or to try a
    // change quickly).
    if let Ok(which) = std::env::var("AETHER_BENCH_PROFILE") {
        let n = 100_000;
        if which == "emit" {
            // The sending side alone: n sends into a queue of n with nobody
            // receiving meanwhile (the receiver drains afterwards).
            for _ in 0..15 {
                let (raw, ours) =
                    rt.block_on(async { (mpsc_send_only(n).await, aether_emit_only(n).await) });
                println!(
                    "emit: mpsc send {:.0} ns, aether emit {:.0} ns, ratio {:.2}",
                    raw.as_nanos() as f64 / n as f64,
                    ours.as_nanos() as f64 / n as f64,
                    raw.as_secs_f64() / ours.as_secs_f64()
                );
            }
            return;
        }
        if which == "physics" {
            let mut ratios = Vec::new();
            for _ in 0..15 {
                let (off, on, stats) = physics_rates(&rt, 1, n);
                ratios.push(on / off);
                println!(
                    "physics: off {:.2} M/s, on {:.2} M/s, ratio {:.2}, engine busy {:.0} % of the run \
                     (observed {}, skipped {}, dropped {})",
                    off / 1e6,
                    on / 1e6,
                    on / off,
                    stats.busy.as_secs_f64() * on / n as f64 * 100.0,
                    stats.observed,
                    stats.skipped_over_budget,
                    stats.dropped_buffer_full
                );
            }
            println!("physics: median ratio {:.2}", median(ratios));
            return;
        }
        // `AETHER_BENCH_SIDE=tokio|aether`: one side only (for `perf stat`).
        let side = std::env::var("AETHER_BENCH_SIDE").ok();
        let (raw_on, ours_on) = match side.as_deref() {
            None => (true, true),
            Some("tokio") => (true, false),
            Some("aether") => (false, true),
            Some(other) => panic!("AETHER_BENCH_SIDE={other}: expected tokio or aether"),
        };
        let time = |on: bool, f: &dyn Fn() -> Duration| on.then(f);
        let rate = |d: Option<Duration>| {
            d.map_or("-".into(), |d| {
                format!("{:.2}", n as f64 / d.as_secs_f64() / 1e6)
            })
        };
        let mut ratios = Vec::new();
        for _ in 0..15 {
            let (raw, ours) = match which.as_str() {
                "fan" => (
                    time(raw_on, &|| rt.block_on(broadcast_fan_out(n))),
                    time(ours_on, &|| rt.block_on(aether_fan_out(n))),
                ),
                _ => (
                    time(raw_on, &|| rt.block_on(mpsc_one_to_one(n))),
                    time(ours_on, &|| rt.block_on(aether_one_to_one(n))),
                ),
            };
            let ratio = raw
                .zip(ours)
                .map(|(r, o)| r.as_secs_f64() / o.as_secs_f64());
            ratios.extend(ratio);
            println!(
                "{which}: tokio {} M/s, aether {} M/s, ratio {}",
                rate(raw),
                rate(ours),
                ratio.map_or("-".into(), |r| format!("{r:.2}"))
            );
        }
        if !ratios.is_empty() {
            println!("{which}: median ratio {:.2}", median(ratios));
        }
        return;
    }
    if !quick {
        let mut c = Criterion::default()
            .configure_from_args()
            .sample_size(20)
            .measurement_time(Duration::from_secs(4));
        criterion_groups(&mut c, &rt);
        c.final_summary();
    }
    summary(&rt);
}
