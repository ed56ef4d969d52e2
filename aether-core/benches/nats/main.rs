//! The NATS medium beside raw async-nats, on the same nats-server, in the
//! same run.
//!
//! - `1 -> 1`: one sender connection, one receiver connection. Raw: a
//!   `Client::subscribe` counting N messages, another client publishing N
//!   `Bytes`. Aether: a vibrator resonating on `bench.one` on one aether,
//!   another vibrator emitting N waves on a second aether.
//! - `1 -> 4`: one sender connection, one receiving connection with four
//!   subscriptions (raw: four subscribers on `bench.*` on one client; aether:
//!   four vibrators on one aether, on `bench.*`). Rates count deliveries
//!   (4 per message).
//! - request/reply: a responder on one connection echoes the payload, a
//!   requester on another makes sequential requests; p50 and p99.
//! - `1 -> 1` and `1 -> 4` with a handler (`VibratorBuilder::on_wave`):
//!   the receiving vibrators take each wave in a handler run where it
//!   arrives, instead of `receive()` (Zenoh's callback subscriber's
//!   equal), against raw 1 -> 1 and 1 -> 4 in the same rounds.
//!
//! Three more 1 -> 1 rows, each against raw 1 -> 1 in the same rounds, say
//! where the aether's cost lies:
//! - `aether emit -> raw receive`: a vibrator emits; a raw subscriber
//!   decodes each envelope (`wire::decode`). The emitting side's cost.
//! - `raw publish -> aether receive`: a raw client publishes an envelope
//!   encoded once; a vibrator receives. The receiving side's cost.
//! - `raw, envelope-sized bodies`: raw async-nats with a body as long as the
//!   aether's envelope (header, source name and payload). What the larger
//!   body alone costs the server and both clients.
//!
//! Payloads are 128 bytes. Every round starts only once the subscriptions are
//! live (probe messages until each receiver sees one, then a fence message
//! that drains them), and checks zero loss: every receiver gets exactly N,
//! no slow-consumer event (the client's subscription buffers hold the whole
//! batch), no drop counted by aether. The bench starts its own nats-server
//! (aether-testkit); both sides run on a multi-thread tokio runtime with 2
//! workers, raw and aether alternating round by round.
//!
//! `cargo bench -p aether-core --bench nats` prints the summary (median of 5
//! rounds each). `AETHER_BENCH_PROFILE=one|fan|handler|handler_fan|req|emit|receive|body` runs
//! only that scenario, repeated, printing each round (for a profiler);
//! `AETHER_BENCH_SIDE=raw|aether` then runs only that side (`aether` is the
//! scenario's other side: for `body`, raw with envelope-sized bodies), and
//! `AETHER_BENCH_ROUNDS` sets how many rounds (15; 2 under callgrind); it
//! ends with the CPU time the process and nats-server spent during the
//! rounds' timed parts ([`cpu`]).
//! Under `cargo test` (no `--bench` argument) it runs one small round of
//! each case and checks it.

use std::{
    hint::black_box,
    sync::{
        Arc,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use aether_core::{Aether, AetherConfig, Channel, Vibrator, Wave, config::NatsConfig, wire};
use aether_testkit::NatsServer;
use async_nats::{Client, ConnectOptions, Event, Subscriber};
use bytes::Bytes;
use futures_util::{FutureExt, StreamExt};
use tokio::{runtime::Runtime, task::JoinHandle, time::timeout};

mod aether;
mod cpu;
mod mixed;
mod raw;
mod steady;

use aether::*;
use mixed::*;
use raw::*;
use steady::*;

const PAYLOAD: usize = 128;
/// Messages per throughput round.
const N: usize = 200_000;
const FAN_OUT: usize = 4;
/// Measured rounds per side in the summary (after one warm-up round).
const ROUNDS: usize = 5;
/// Requests timed per request/reply round, after `WARM_UP_REQUESTS`.
const SAMPLES: usize = 5_000;
const WARM_UP_REQUESTS: usize = 500;
/// Commands queued for a connection before a publish waits: aether's
/// default, given to both sides.
const CLIENT_CAPACITY: usize = 65_536;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Bound on a whole round (and on the fence): past it, messages were lost.
const ROUND_LIMIT: Duration = Duration::from_secs(60);
/// Bound on subscriptions becoming live.
const PROBE_LIMIT: Duration = Duration::from_secs(10);
/// How long a receiver waits for a probe before another is sent.
const PROBE_WAIT: Duration = Duration::from_millis(20);
/// Probe and fence payloads: shorter than `PAYLOAD`, so never mistaken for
/// data.
const PROBE: &[u8] = b"probe";
const FENCE: &[u8] = b"fence";

const ONE_SUBJECT: &str = "bench.one";
const FAN_SUBJECT: &str = "bench.fan";
const FAN_PATTERN: &str = "bench.*";
const REQ_SUBJECT: &str = "bench.req";
/// The emitter's name: it travels in every envelope.
const EMITTER: &str = "tx";

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

fn payload() -> Bytes {
    body(PAYLOAD)
}

fn body(len: usize) -> Bytes {
    Bytes::from(vec![0xAB; len])
}

/// The length of the aether's envelope (`version`) around a
/// `PAYLOAD`-byte payload emitted by `EMITTER`, as an emit stamps it.
fn envelope_len_as(version: wire::WireVersion) -> usize {
    let mut wave = Wave::new(ONE_SUBJECT, payload());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_nanos() as u64;
    // As `Wave::stamp_emission` would: an id in the emission millisecond
    // whose node is the origin's high half.
    let origin = 0x5eed_2a4b_0000_0001u64;
    let id = (u128::from(now / 1_000_000) << 80) | (u128::from(origin >> 32) << 48) | 7;
    wave = wire::Parts {
        id,
        emitted_at_ns: now,
        origin,
        source: Some(EMITTER.into()),
        ..wire::Parts::of(&wave)
    }
    .into_wave(Channel::new(ONE_SUBJECT))
    .expect("a wave");
    wire::encoded_len_as(version, &wave)
}

/// The default envelope's length (version 2).
fn envelope_len() -> usize {
    envelope_len_as(wire::WireVersion::V2)
}

/// The subject a raw client uses for `channel` (the default prefix).
fn subject_of(channel: &str) -> String {
    let prefix = NatsConfig::default().subject_prefix;
    aether_core::subject::channel_subject(&prefix, &Channel::new(channel))
}

/// Subscription buffers (client and vibrator) that hold a whole batch.
fn capacity(n: usize) -> usize {
    n + 1000
}

/// Runs `f` as a task on the runtime's workers (not on the `block_on`
/// thread), so senders, receivers and the clients' connection tasks all
/// share the two workers.
fn on_workers<F>(rt: &Runtime, f: F) -> F::Output
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    rt.block_on(async {
        tokio::spawn(f)
            .await
            .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
    })
}

// --- shared ---------------------------------------------------------------

/// Spawns one consumer per receiver, each counting into its own progress
/// counter (read if the round times out).
fn consume<R, F, Fut>(receivers: Vec<R>, body: F) -> (Vec<JoinHandle<R>>, Vec<Arc<AtomicUsize>>)
where
    R: Send + 'static,
    F: Fn(R, Arc<AtomicUsize>) -> Fut,
    Fut: Future<Output = R> + Send + 'static,
{
    receivers
        .into_iter()
        .map(|receiver| {
            let got = Arc::new(AtomicUsize::new(0));
            (tokio::spawn(body(receiver, got.clone())), got)
        })
        .unzip()
}

/// Waits (bounded) for every consumer to have its `n` messages; fails loudly
/// with what arrived if one does not.
async fn finish<R>(
    label: &str,
    consumers: Vec<JoinHandle<R>>,
    progress: &[Arc<AtomicUsize>],
    n: usize,
) -> Vec<R> {
    let deadline = tokio::time::Instant::now() + ROUND_LIMIT;
    let mut out = Vec::with_capacity(consumers.len());
    for consumer in consumers {
        match tokio::time::timeout_at(deadline, consumer).await {
            Ok(result) => {
                out.push(result.unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic())))
            }
            Err(_) => {
                let got: Vec<usize> = progress.iter().map(|g| g.load(Ordering::Relaxed)).collect();
                panic!(
                    "{label}: messages lost: receivers got {got:?} of {n} within {ROUND_LIMIT:?}"
                );
            }
        }
    }
    out
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn spread(values: &[f64]) -> (f64, f64) {
    values
        .iter()
        .fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(*v), hi.max(*v)))
}

fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort();
    samples[((samples.len() - 1) as f64 * p).round() as usize]
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

#[derive(Clone, Copy, PartialEq)]
enum Scenario {
    One,
    /// 1 -> 1 with batch frames off (against raw 1 -> 1).
    OneUnbatched,
    /// One-way latency at a steady 10,000 messages/s.
    Steady,
    Fan,
    /// 1 -> 1 with a handler vibrator (against raw 1 -> 1).
    OneHandler,
    /// 1 -> 4 with handler vibrators (against raw 1 -> 4).
    FanHandler,
    Req,
    /// Aether emit -> raw receive (against raw 1 -> 1).
    Emit,
    /// Raw publish -> aether receive (against raw 1 -> 1).
    Receive,
    /// Raw 1 -> 1 with envelope-sized bodies (against raw 1 -> 1).
    Body,
}

/// One measurement: messages (deliveries) per second for throughput, p50
/// and p99 in microseconds for request/reply.
#[derive(Clone, Copy)]
enum Measure {
    Rate(f64),
    Latency { p50: f64, p99: f64 },
}

impl Measure {
    /// The headline figure: the rate, or p50.
    fn value(self) -> f64 {
        match self {
            Measure::Rate(r) => r,
            Measure::Latency { p50, .. } => p50,
        }
    }
}

/// One round of `scenario`: its raw side, or (`aether`) the other side.
fn measure(rt: &Runtime, url: &str, scenario: Scenario, aether: bool) -> Measure {
    let url = url.to_string();
    match (scenario, aether) {
        (
            Scenario::One
            | Scenario::OneUnbatched
            | Scenario::OneHandler
            | Scenario::Emit
            | Scenario::Receive
            | Scenario::Body,
            false,
        ) => one_to_one(rt, raw_one_to_one(url, N, PAYLOAD)),
        (Scenario::One, true) => one_to_one(rt, aether_one_to_one(url, N)),
        (Scenario::OneUnbatched, true) => one_to_one(rt, aether_one_to_one_with(url, N, false)),
        (Scenario::OneHandler, true) => one_to_one(rt, aether_handler(url, N, 1)),
        (Scenario::Steady, side) => {
            let mut samples = if side {
                on_workers(rt, aether_steady(url))
            } else {
                on_workers(rt, raw_steady(url))
            };
            Measure::Latency {
                p50: micros(percentile(&mut samples, 0.5)),
                p99: micros(percentile(&mut samples, 0.99)),
            }
        }
        (Scenario::Emit, true) => one_to_one(rt, emit_to_raw(url, N)),
        (Scenario::Receive, true) => one_to_one(rt, raw_to_receive(url, N)),
        (Scenario::Body, true) => one_to_one(rt, raw_one_to_one(url, N, envelope_len())),
        (Scenario::Fan | Scenario::FanHandler, false) => {
            Measure::Rate(rate(N * FAN_OUT, on_workers(rt, raw_fan_out(url, N))))
        }
        (Scenario::Fan, true) => {
            Measure::Rate(rate(N * FAN_OUT, on_workers(rt, aether_fan_out(url, N))))
        }
        (Scenario::FanHandler, true) => Measure::Rate(rate(
            N * FAN_OUT,
            on_workers(rt, aether_handler(url, N, FAN_OUT)),
        )),
        (Scenario::Req, side) => {
            let mut samples = if side {
                on_workers(rt, aether_request_reply(url, WARM_UP_REQUESTS, SAMPLES))
            } else {
                on_workers(rt, raw_request_reply(url, WARM_UP_REQUESTS, SAMPLES))
            };
            Measure::Latency {
                p50: micros(percentile(&mut samples, 0.5)),
                p99: micros(percentile(&mut samples, 0.99)),
            }
        }
    }
}

/// The rate of a 1 -> 1 round of `N` messages.
fn one_to_one(rt: &Runtime, round: impl Future<Output = Duration> + Send + 'static) -> Measure {
    Measure::Rate(rate(N, on_workers(rt, round)))
}

fn rate(messages: usize, elapsed: Duration) -> f64 {
    messages as f64 / elapsed.as_secs_f64()
}

/// Rounds of one scenario, raw and aether alternating after one warm-up
/// round of each: (raw, aether, aether/raw per round).
fn rounds(
    rt: &Runtime,
    url: &str,
    scenario: Scenario,
    rounds: usize,
) -> (Vec<Measure>, Vec<Measure>, Vec<f64>) {
    measure(rt, url, scenario, false);
    measure(rt, url, scenario, true);
    let (mut raw, mut ours, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        let r = measure(rt, url, scenario, false);
        let a = measure(rt, url, scenario, true);
        ratios.push(a.value() / r.value());
        raw.push(r);
        ours.push(a);
    }
    (raw, ours, ratios)
}

fn summary(rt: &Runtime, url: &str) {
    let one = rounds(rt, url, Scenario::One, ROUNDS);
    let unbatched = rounds(rt, url, Scenario::OneUnbatched, ROUNDS);
    let steady = rounds(rt, url, Scenario::Steady, ROUNDS);
    let fan = rounds(rt, url, Scenario::Fan, ROUNDS);
    let handler = rounds(rt, url, Scenario::OneHandler, ROUNDS);
    let handler_fan = rounds(rt, url, Scenario::FanHandler, ROUNDS);
    let req = rounds(rt, url, Scenario::Req, ROUNDS);
    let emit = rounds(rt, url, Scenario::Emit, ROUNDS);
    let receive = rounds(rt, url, Scenario::Receive, ROUNDS);
    let body = rounds(rt, url, Scenario::Body, ROUNDS);

    let rates = |m: &[Measure]| median(m.iter().map(|m| m.value()).collect());
    let p99s = |m: &[Measure]| {
        median(
            m.iter()
                .map(|m| match m {
                    Measure::Latency { p99, .. } => *p99,
                    Measure::Rate(_) => f64::NAN,
                })
                .collect(),
        )
    };
    let row = |name: &str, (raw, ours, ratios): &(Vec<Measure>, Vec<Measure>, Vec<f64>)| {
        let (lo, hi) = spread(ratios);
        println!(
            "| {name} | {:.0} | {:.0} | {:.2}x ({lo:.2}-{hi:.2}) |",
            rates(raw),
            rates(ours),
            rates(ours) / rates(raw),
        );
    };

    println!();
    println!(
        "summary (median of {ROUNDS} rounds, raw and aether alternating; {N} messages per \
         throughput round, {SAMPLES} requests per latency round; {PAYLOAD}-byte payloads, \
         2 worker threads, own nats-server on loopback)"
    );
    println!("| scenario | raw async-nats | aether nats | ratio (min-max over rounds) |");
    println!("|---|---|---|---|");
    row("1 -> 1, batch frames on (msg/s)", &one);
    row("1 -> 1, batch frames off, envelope v2 (msg/s)", &unbatched);
    row("1 -> 4 (deliveries/s)", &fan);
    row("1 -> 1, a handler (`on_wave`) (msg/s)", &handler);
    row("1 -> 4, handlers (`on_wave`) (deliveries/s)", &handler_fan);
    let latency = |name: &str, (raw, ours, ratios): &(Vec<Measure>, Vec<Measure>, Vec<f64>)| {
        let (lo, hi) = spread(ratios);
        let p99_ratios: Vec<f64> = raw
            .iter()
            .zip(ours)
            .map(|(r, o)| match (r, o) {
                (Measure::Latency { p99: r, .. }, Measure::Latency { p99: o, .. }) => o / r,
                _ => f64::NAN,
            })
            .collect();
        let (plo, phi) = spread(&p99_ratios);
        println!(
            "| {name} p50 / p99 (us) | {:.1} / {:.1} | {:.1} / {:.1} | {:.2}x ({lo:.2}-{hi:.2}) p50, {:.2}x ({plo:.2}-{phi:.2}) p99 |",
            rates(raw),
            p99s(raw),
            rates(ours),
            p99s(ours),
            rates(ours) / rates(raw),
            median(p99_ratios.clone()),
        );
    };
    latency("request/reply", &req);
    latency("one-way at a steady 10,000/s", &steady);
    let (frames, framed) = (
        FRAMES.load(Ordering::Relaxed),
        FRAMED.load(Ordering::Relaxed),
    );
    println!(
        "1 -> 1 with batch frames: {:.1} waves per frame on average, {:.0}% of waves in frames",
        framed as f64 / frames.max(1) as f64,
        100.0 * framed as f64 / ((ROUNDS + 1) * (N + 2)) as f64
    );
    let v1 = envelope_len_as(wire::WireVersion::V1);
    let v2 = envelope_len();
    // In a full frame of 256 waves: the frame's head shared, each envelope
    // with its length varint.
    let framed = (4 + 256 * (2 + v2)) as f64 / 256.0;
    println!(
        "bytes on the wire per {PAYLOAD}-byte wave from {EMITTER:?}: raw {PAYLOAD}, envelope v1 {v1}, v2 {v2}, v2 in a full frame {framed:.1} (NATS adds its own framing per message: `PUB <subject> <len>` and CRLFs, once per frame)"
    );
    println!();
    println!(
        "where the 1 -> 1 cost lies (each against raw 1 -> 1, {PAYLOAD}-byte bodies, in the same rounds)"
    );
    println!("| 1 -> 1 variant (msg/s) | raw async-nats | variant | ratio (min-max over rounds) |");
    println!("|---|---|---|---|");
    row("aether emit -> raw receive (decoding)", &emit);
    row("raw publish (an envelope) -> aether receive", &receive);
    row(&format!("raw, {}-byte bodies", envelope_len()), &body);
    println!(
        "loss: 0 (checked in every round: each receiver got exactly N, no slow-consumer event, no drop)"
    );
}

/// `AETHER_BENCH_PROFILE=one|fan|req|emit|receive|body`: that scenario
/// only, repeated, raw and aether alternating (or one side with
/// `AETHER_BENCH_SIDE`; `aether` is the scenario's other side), printing
/// each round.
fn profile(rt: &Runtime, url: &str, which: &str) {
    let scenario = match which {
        "one" => Scenario::One,
        "unbatched" => Scenario::OneUnbatched,
        "steady" => Scenario::Steady,
        "fan" => Scenario::Fan,
        "handler" => Scenario::OneHandler,
        "handler_fan" => Scenario::FanHandler,
        "req" => Scenario::Req,
        "emit" => Scenario::Emit,
        "receive" => Scenario::Receive,
        "body" => Scenario::Body,
        other => {
            panic!(
                "AETHER_BENCH_PROFILE={other}: expected one, unbatched, steady, fan, handler, \
                 handler_fan, req, emit, receive or body"
            )
        }
    };
    let side = std::env::var("AETHER_BENCH_SIDE").ok();
    let (raw_on, ours_on) = match side.as_deref() {
        None => (true, true),
        Some("raw") => (true, false),
        Some("aether") => (false, true),
        Some(other) => panic!("AETHER_BENCH_SIDE={other}: expected raw or aether"),
    };
    let show = |m: Measure| match m {
        Measure::Rate(r) => format!("{:.3} M/s", r / 1e6),
        Measure::Latency { p50, p99 } => format!("p50 {p50:.1} us, p99 {p99:.1} us"),
    };
    let mut ratios = Vec::new();
    // Fewer under an instruction counter (`AETHER_BENCH_ROUNDS=2` under
    // callgrind).
    let rounds = std::env::var("AETHER_BENCH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(15);
    for round in 0..rounds {
        let raw = raw_on.then(|| measure(rt, url, scenario, false));
        let ours = ours_on.then(|| measure(rt, url, scenario, true));
        let mut line = format!("{which} round {round}:");
        if let Some(r) = raw {
            line.push_str(&format!(" raw {}", show(r)));
        }
        if let Some(a) = ours {
            line.push_str(&format!(" aether {}", show(a)));
        }
        if let (Some(r), Some(a)) = (raw, ours) {
            ratios.push(a.value() / r.value());
            line.push_str(&format!(" ratio {:.2}", a.value() / r.value()));
        }
        println!("{line}");
    }
    if !ratios.is_empty() {
        println!("{which}: median ratio (aether / raw) {:.2}", median(ratios));
    }
    for line in cpu::report() {
        println!("{line}");
    }
}

fn main() {
    // `cargo bench` measures; as a test, one small smoke run of each case.
    let testing = !aether_testkit::bench::measuring();
    let rt = runtime();
    let server = rt.block_on(NatsServer::builder().start()).expect(
        "nats-server starts (install it with `apt-get install -y nats-server` or set NATS_SERVER_BIN)",
    );
    let url = server.url();
    cpu::watch_server(server.pid());
    if testing {
        on_workers(&rt, raw_one_to_one(url.clone(), 1000, PAYLOAD));
        on_workers(&rt, aether_one_to_one(url.clone(), 1000));
        on_workers(&rt, aether_one_to_one_with(url.clone(), 1000, false));
        on_workers(&rt, emit_to_raw(url.clone(), 1000));
        on_workers(&rt, raw_to_receive(url.clone(), 1000));
        on_workers(&rt, raw_one_to_one(url.clone(), 1000, envelope_len()));
        on_workers(&rt, raw_fan_out(url.clone(), 1000));
        on_workers(&rt, aether_fan_out(url.clone(), 1000));
        on_workers(&rt, aether_handler(url.clone(), 1000, 1));
        on_workers(&rt, aether_handler(url.clone(), 1000, FAN_OUT));
        assert_eq!(
            on_workers(&rt, raw_request_reply(url.clone(), 0, 50)).len(),
            50
        );
        assert_eq!(
            on_workers(&rt, aether_request_reply(url.clone(), 0, 50)).len(),
            50
        );
        println!("nats bench: smoke run ok");
    } else if let Ok(which) = std::env::var("AETHER_BENCH_PROFILE") {
        profile(&rt, &url, &which);
        let frames = FRAMES.load(Ordering::Relaxed);
        if frames > 0 {
            println!(
                "waves per frame: {:.1}",
                FRAMED.load(Ordering::Relaxed) as f64 / frames as f64
            );
        }
    } else {
        summary(&rt, &url);
    }
    let _guard = rt.enter();
    drop(server);
}
