//! Aether beside the systems its users would pick instead: raw NATS
//! (async-nats), Zenoh (peer mode, in process), Redis (pub/sub, lists, a
//! hash) and MQTT (mosquitto), each on a server this program starts on a
//! free loopback port, all in one run with the peers alternating round by
//! round. Prints a Markdown table. `bash aether-core/peers/run`;
//! `AETHER_PEERS_QUICK=1` for a small run, `AETHER_PEERS_ONLY=state` (or
//! `bus`, `request`, `steady`) for one section; `AETHER_PEERS_WIRE=1` says
//! when the state section's writes reached nats-server.

#[macro_use]
mod common;
mod mqtt_peer;
mod nats;
mod redis_peer;
mod servers;
mod zenoh_peer;

use std::{
    fmt::Write as _,
    future::Future,
    time::{Duration, Instant},
};

use common::*;
use tokio::runtime::Runtime;

/// Bound on one peer's round, whatever it does.
const MEASURE_LIMIT: Duration = Duration::from_secs(150);

#[derive(Clone, Copy, PartialEq, Debug)]
enum Peer {
    RawNats,
    Aether,
    AetherHandler,
    ZenohCallback,
    ZenohFifo,
    Redis,
    Mqtt,
}

impl Peer {
    fn name(self) -> &'static str {
        match self {
            Peer::RawNats => "raw async-nats",
            Peer::Aether => "Aether over NATS (batch frames on)",
            Peer::AetherHandler => "Aether over NATS, a handler (`on_wave`)",
            Peer::ZenohCallback => "Zenoh, callback subscriber",
            Peer::ZenohFifo => "Zenoh, FIFO-channel subscriber (default)",
            Peer::Redis => "Redis pub/sub",
            Peer::Mqtt => "MQTT QoS 0 (mosquitto)",
        }
    }
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum StatePeer {
    /// The floor: a raw publish seen by a subscriber, no state.
    RawNats,
    /// Aether's own floor: a wave emitted and received, no state.
    AetherWave,
    /// The same with the sender hearing the channel too, as a writing
    /// replica does (the server sends the wave back to it).
    AetherWaveEcho,
    NatsKv,
    Aether,
    Redis,
    Zenoh,
}

impl StatePeer {
    /// A floor under a write: it keeps no state, so it has no rate row.
    fn is_floor(self) -> bool {
        matches!(
            self,
            StatePeer::RawNats | StatePeer::AetherWave | StatePeer::AetherWaveEcho
        )
    }

    fn name(self) -> &'static str {
        match self {
            StatePeer::RawNats => "raw async-nats (publish + subscriber; no state, the floor)",
            StatePeer::AetherWave => "Aether over NATS, a wave (emit + receive; no state)",
            StatePeer::AetherWaveEcho => {
                "Aether over NATS, a wave, the sender hearing it too (as a writing replica)"
            }
            StatePeer::NatsKv => "NATS KV (put + watch)",
            StatePeer::Aether => "Aether StateMap over NATS (set; the other replica)",
            StatePeer::Redis => "Redis hash (HSET + PUBLISH of the change, pipelined)",
            StatePeer::Zenoh => "Zenoh put + subscriber (no storage)",
        }
    }
}

struct Ctx {
    nats: Option<String>,
    redis: Option<String>,
    mqtt: Option<u16>,
}

impl Ctx {
    fn has(&self, p: Peer) -> bool {
        match p {
            Peer::RawNats | Peer::Aether | Peer::AetherHandler => self.nats.is_some(),
            Peer::ZenohCallback | Peer::ZenohFifo => true,
            Peer::Redis => self.redis.is_some(),
            Peer::Mqtt => self.mqtt.is_some(),
        }
    }
    fn has_state(&self, p: StatePeer) -> bool {
        match p {
            StatePeer::RawNats
            | StatePeer::AetherWave
            | StatePeer::AetherWaveEcho
            | StatePeer::NatsKv
            | StatePeer::Aether => self.nats.is_some(),
            StatePeer::Redis => self.redis.is_some(),
            StatePeer::Zenoh => true,
        }
    }
    fn nats(&self) -> String {
        self.nats.clone().expect("nats")
    }
    fn redis(&self) -> String {
        self.redis.clone().expect("redis")
    }
    fn mqtt(&self) -> u16 {
        self.mqtt.expect("mqtt")
    }
}

fn measure<T: Send + 'static>(
    rt: &Runtime,
    f: impl Future<Output = Result<T, String>> + Send + 'static,
) -> Result<T, String> {
    rt.block_on(bounded(MEASURE_LIMIT, f))
}

/// One warm-up round of each peer, then `rounds` rounds, the peers in
/// turn (the order rotated each round). A peer that fails is reported and
/// left out of later rounds.
struct Series<P, M> {
    peer: P,
    values: Vec<M>,
    /// The round index of each value (to pair it with the baseline's).
    round_of: Vec<usize>,
    error: Option<String>,
}

fn series<P: Copy + std::fmt::Debug, M>(
    label: &str,
    peers: &[P],
    rounds: usize,
    name: impl Fn(P) -> &'static str,
    mut run: impl FnMut(P, usize) -> Result<M, String>,
    show: impl Fn(&M) -> String,
) -> Vec<Series<P, M>> {
    let mut out: Vec<Series<P, M>> = peers
        .iter()
        .map(|&peer| Series {
            peer,
            values: Vec::new(),
            round_of: Vec::new(),
            error: None,
        })
        .collect();
    for round in 0..=rounds {
        for k in 0..out.len() {
            let i = (k + round) % out.len();
            if out[i].error.is_some() {
                continue;
            }
            let peer = out[i].peer;
            let started = Instant::now();
            match run(peer, round) {
                Ok(m) => {
                    eprintln!(
                        "{label} round {round}{}: {}: {} ({:.1} s)",
                        if round == 0 { " (warm-up)" } else { "" },
                        name(peer),
                        show(&m),
                        started.elapsed().as_secs_f64()
                    );
                    if round > 0 {
                        out[i].values.push(m);
                        out[i].round_of.push(round);
                    }
                }
                Err(error) => {
                    eprintln!("{label} round {round}: {}: FAILED: {error}", name(peer));
                    out[i].error = Some(error);
                }
            }
        }
    }
    out
}

fn median(mut xs: Vec<f64>) -> f64 {
    if xs.is_empty() {
        return f64::NAN;
    }
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

fn spread(xs: &[f64]) -> (f64, f64) {
    xs.iter()
        .fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(*v), hi.max(*v)))
}

fn rate(r: f64) -> String {
    if r >= 1e6 {
        format!("{:.2} M", r / 1e6)
    } else if r >= 1e4 {
        format!("{:.0} k", r / 1e3)
    } else {
        format!("{:.1} k", r / 1e3)
    }
}

fn us(x: f64) -> String {
    if x >= 100.0 {
        format!("{x:.0}")
    } else {
        format!("{x:.1}")
    }
}

/// Per-round ratios of `values` to the baseline's value in the same round.
fn ratios<P, M>(s: &Series<P, M>, base: Option<&Series<P, M>>, v: impl Fn(&M) -> f64) -> Vec<f64> {
    let Some(base) = base else { return Vec::new() };
    s.values
        .iter()
        .zip(&s.round_of)
        .filter_map(|(m, round)| {
            let j = base.round_of.iter().position(|r| r == round)?;
            Some(v(m) / v(&base.values[j]))
        })
        .collect()
}

fn ratio_cell(rs: &[f64]) -> String {
    if rs.is_empty() {
        return "n/a".into();
    }
    let (lo, hi) = spread(rs);
    format!("{:.2}x ({lo:.2}-{hi:.2})", median(rs.to_vec()))
}

fn loss_cell(lost: usize, expected: usize) -> String {
    if lost == 0 {
        "0".into()
    } else {
        format!(
            "**{lost} of {expected} ({:.2}%)**",
            100.0 * lost as f64 / expected as f64
        )
    }
}

/// A latency round: p50, p99 (us), lost of expected.
#[derive(Clone, Copy)]
struct Lat {
    p50: f64,
    p99: f64,
    lost: usize,
    expected: usize,
}

fn lat(mut samples: Vec<Duration>, lost: usize, expected: usize) -> Lat {
    Lat {
        p50: percentile(&mut samples, 0.5),
        p99: percentile(&mut samples, 0.99),
        lost,
        expected,
    }
}

fn lat_rows<P: Copy + PartialEq>(
    table: &mut String,
    scenario: &str,
    list: &[Series<P, Lat>],
    base: P,
    name: impl Fn(P) -> &'static str,
) {
    let b = list.iter().find(|s| s.peer == base && s.error.is_none());
    for s in list {
        if let Some(error) = &s.error {
            let _ = writeln!(
                table,
                "| {scenario} | {} | failed: {} | | | |",
                name(s.peer),
                error.replace('|', "/")
            );
            continue;
        }
        let p50s: Vec<f64> = s.values.iter().map(|l| l.p50).collect();
        let p99s: Vec<f64> = s.values.iter().map(|l| l.p99).collect();
        let (lo, hi) = spread(&p50s);
        let r50 = ratios(s, b, |l| l.p50);
        let r99 = ratios(s, b, |l| l.p99);
        let lost: usize = s.values.iter().map(|l| l.lost).sum();
        let expected: usize = s.values.iter().map(|l| l.expected).sum();
        let ratio = if s.peer == base {
            "1".into()
        } else {
            format!("{} p50, {} p99", ratio_cell(&r50), ratio_cell(&r99))
        };
        let _ = writeln!(
            table,
            "| {scenario} | {} | {} / {} us | p50 {}-{} | {} | {} |",
            name(s.peer),
            us(median(p50s)),
            us(median(p99s)),
            us(lo),
            us(hi),
            ratio,
            loss_cell(lost, expected)
        );
    }
}

/// The run's sections, as `AETHER_PEERS_ONLY` names them.
const SECTIONS: [&str; 4] = ["bus", "request", "steady", "state"];

/// `list`, if `section` is run (`only` names it, or names none).
fn part<P: Copy>(only: Option<&str>, section: &str, list: &[P]) -> Vec<P> {
    if only.is_none_or(|o| o == section) {
        list.to_vec()
    } else {
        Vec::new()
    }
}

fn main() {
    let quick = std::env::var("AETHER_PEERS_QUICK").is_ok_and(|v| !v.is_empty() && v != "0");
    // AETHER_PEERS_ONLY=bus|request|steady|state: that section alone.
    let only = std::env::var("AETHER_PEERS_ONLY")
        .ok()
        .filter(|v| !v.is_empty());
    if let Some(section) = &only
        && !SECTIONS.contains(&section.as_str())
    {
        eprintln!(
            "AETHER_PEERS_ONLY={section}: not one of {}",
            SECTIONS.join(", ")
        );
        std::process::exit(2);
    }
    let only = only.as_deref();
    let sizes = Sizes::new(quick);
    let began = Instant::now();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");

    let cpu = std::process::Command::new("lscpu")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .find(|l| l.starts_with("Model name:"))
                .map(|l| l["Model name:".len()..].trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let vcpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let builds = || {
        std::process::Command::new("pgrep")
            .arg("-c")
            .arg("rustc")
            .output()
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .trim()
                    .parse::<usize>()
                    .unwrap_or(0)
            })
            .unwrap_or(0)
    };
    let builds_at_start = builds();

    // Our own servers, killed when these guards drop (also on a panic).
    let skipped = std::cell::RefCell::new(Vec::<String>::new());
    let start_or_skip = |what: &str, r: Result<servers::Server, String>| match r {
        Ok(s) => Some(s),
        Err(error) => {
            eprintln!("SKIPPED {what}: {error}");
            println!("skipped {what}: {error}");
            skipped
                .borrow_mut()
                .push(format!("{what} skipped: {error}."));
            None
        }
    };
    let nats_server = start_or_skip("raw NATS, Aether, NATS KV", servers::nats());
    let redis_server = start_or_skip("Redis", servers::redis());
    let mqtt_server = start_or_skip("MQTT", servers::mosquitto());
    let ctx = std::sync::Arc::new(Ctx {
        nats: nats_server.as_ref().map(|s| s.url("nats")),
        redis: redis_server
            .as_ref()
            .map(|s| format!("{}/", s.url("redis"))),
        mqtt: mqtt_server.as_ref().map(|s| s.port),
    });

    let all = [
        Peer::RawNats,
        Peer::Aether,
        Peer::AetherHandler,
        Peer::ZenohCallback,
        Peer::ZenohFifo,
        Peer::Redis,
        Peer::Mqtt,
    ];
    let peers: Vec<Peer> = all.iter().copied().filter(|p| ctx.has(*p)).collect();
    let n = sizes.n;

    // 1 -> 1 and 1 -> 4 throughput.
    let throughput = |fan: usize| {
        let ctx = ctx.clone();
        series(
            &format!("1 -> {fan}"),
            &part(only, "bus", &peers),
            sizes.rounds,
            Peer::name,
            |peer, _| {
                let c = &ctx;
                match peer {
                    Peer::RawNats => measure(&rt, nats::raw_throughput(c.nats(), n, fan)),
                    Peer::Aether => measure(&rt, nats::aether_throughput(c.nats(), n, fan, false)),
                    Peer::AetherHandler => {
                        measure(&rt, nats::aether_throughput(c.nats(), n, fan, true))
                    }
                    Peer::ZenohCallback => measure(&rt, zenoh_peer::throughput(n, fan, true)),
                    Peer::ZenohFifo => measure(&rt, zenoh_peer::throughput(n, fan, false)),
                    Peer::Redis => measure(&rt, redis_peer::throughput(c.redis(), n, fan)),
                    Peer::Mqtt => measure(&rt, mqtt_peer::throughput(c.mqtt(), n, fan)),
                }
            },
            |o: &Outcome| format!("{}/s, {} lost of {}", rate(o.rate()), o.lost(), o.expected),
        )
    };
    let one = throughput(1);
    let fan = throughput(FAN_OUT);

    // Request/reply.
    let req_peers: Vec<Peer> = peers
        .iter()
        .copied()
        .filter(|p| *p != Peer::ZenohCallback && *p != Peer::AetherHandler)
        .collect();
    let req = series(
        "request/reply",
        &part(only, "request", &req_peers),
        sizes.latency_rounds,
        |p| match p {
            Peer::ZenohFifo => "Zenoh get -> queryable",
            Peer::Redis => "Redis list queue (LPUSH+BRPOP pipelined; BRPOP, LPUSH)",
            Peer::Mqtt => "MQTT QoS 0, request + response topics",
            Peer::Aether => "Aether over NATS",
            other => other.name(),
        },
        |peer, _| {
            let c = &ctx;
            let (w, s) = (sizes.warm_up, sizes.samples);
            let samples = match peer {
                Peer::RawNats => measure(&rt, nats::raw_request_reply(c.nats(), w, s)),
                Peer::Aether | Peer::AetherHandler => {
                    measure(&rt, nats::aether_request_reply(c.nats(), w, s))
                }
                Peer::ZenohFifo | Peer::ZenohCallback => {
                    measure(&rt, zenoh_peer::request_reply(w, s))
                }
                Peer::Redis => measure(&rt, redis_peer::request_reply(c.redis(), w, s)),
                Peer::Mqtt => measure(&rt, mqtt_peer::request_reply(c.mqtt(), w, s)),
            }?;
            Ok(lat(samples, 0, s))
        },
        |l: &Lat| format!("p50 {:.1} us, p99 {:.1} us", l.p50, l.p99),
    );

    // One-way latency at a steady 10,000 msgs/s.
    let (sn, skip) = (sizes.steady_n, sizes.steady_skip);
    let steady = series(
        "steady",
        &part(only, "steady", &peers),
        sizes.latency_rounds,
        Peer::name,
        |peer, _| {
            let c = &ctx;
            let (samples, lost) = match peer {
                Peer::RawNats => measure(&rt, nats::raw_steady(c.nats(), sn, skip)),
                Peer::Aether => measure(&rt, nats::aether_steady(c.nats(), sn, skip, false)),
                Peer::AetherHandler => measure(&rt, nats::aether_steady(c.nats(), sn, skip, true)),
                Peer::ZenohCallback => measure(&rt, zenoh_peer::steady(sn, skip, true)),
                Peer::ZenohFifo => measure(&rt, zenoh_peer::steady(sn, skip, false)),
                Peer::Redis => measure(&rt, redis_peer::steady(c.redis(), sn, skip)),
                Peer::Mqtt => measure(&rt, mqtt_peer::steady(c.mqtt(), sn, skip)),
            }?;
            Ok(lat(samples, lost, sn))
        },
        |l: &Lat| format!("p50 {:.1} us, p99 {:.1} us, {} lost", l.p50, l.p99, l.lost),
    );

    // State.
    let state_peers: Vec<StatePeer> = [
        StatePeer::RawNats,
        StatePeer::AetherWave,
        StatePeer::AetherWaveEcho,
        StatePeer::NatsKv,
        StatePeer::Aether,
        StatePeer::Redis,
        StatePeer::Zenoh,
    ]
    .into_iter()
    .filter(|p| ctx.has_state(*p))
    .collect();
    let (sw, ss) = (sizes.warm_up.min(100), sizes.state_samples);
    let state_lat = series(
        "state write -> seen",
        &part(only, "state", &state_peers),
        sizes.latency_rounds,
        StatePeer::name,
        |peer, round| {
            let c = &ctx;
            let samples = match peer {
                StatePeer::RawNats => {
                    measure(&rt, nats::raw_state_latency(c.nats(), round, sw, ss))
                }
                StatePeer::AetherWave => measure(
                    &rt,
                    nats::aether_wave_latency(c.nats(), round, sw, ss, false),
                ),
                StatePeer::AetherWaveEcho => measure(
                    &rt,
                    nats::aether_wave_latency(c.nats(), round, sw, ss, true),
                ),
                StatePeer::NatsKv => measure(&rt, nats::kv_state_latency(c.nats(), round, sw, ss)),
                StatePeer::Aether => {
                    measure(&rt, nats::aether_state_latency(c.nats(), round, sw, ss))
                }
                StatePeer::Redis => {
                    measure(&rt, redis_peer::state_latency(c.redis(), round, sw, ss))
                }
                StatePeer::Zenoh => measure(&rt, zenoh_peer::state_latency(round, sw, ss)),
            }?;
            Ok(lat(samples, 0, ss))
        },
        |l: &Lat| format!("p50 {:.1} us, p99 {:.1} us", l.p50, l.p99),
    );
    let sn = sizes.state_n;
    // The floors keep nothing to count: the rate rows are the maps'.
    let rate_peers: Vec<StatePeer> = state_peers
        .iter()
        .copied()
        .filter(|p| !p.is_floor())
        .collect();
    let state_rate = series(
        "state writes/s",
        &part(only, "state", &rate_peers),
        sizes.latency_rounds,
        StatePeer::name,
        |peer, round| {
            let c = &ctx;
            let (r, missing) = match peer {
                StatePeer::RawNats | StatePeer::AetherWave | StatePeer::AetherWaveEcho => {
                    Err("the floor keeps no state".into())
                }
                StatePeer::NatsKv => measure(&rt, nats::kv_state_rate(c.nats(), round, sn)),
                StatePeer::Aether => measure(&rt, nats::aether_state_rate(c.nats(), round, sn)),
                StatePeer::Redis => measure(&rt, redis_peer::state_rate(c.redis(), round, sn)),
                StatePeer::Zenoh => measure(&rt, zenoh_peer::state_rate(round, sn)),
            }?;
            Ok(Outcome {
                delivered: sn - missing,
                expected: sn,
                elapsed: Duration::from_secs_f64((sn - missing) as f64 / r),
            })
        },
        |o: &Outcome| format!("{}/s, {} missing", rate(o.rate()), o.lost()),
    );

    // --- the table ---------------------------------------------------------
    let nats_version = nats_server
        .as_ref()
        .map_or("none".into(), |s| s.version.clone());
    let redis_version = redis_server
        .as_ref()
        .map_or("none".into(), |s| s.version.clone());
    let mqtt_version = mqtt_server
        .as_ref()
        .map_or("none".into(), |s| s.version.clone());
    let builds_at_end = builds();
    let mut t = String::new();
    let _ = writeln!(
        t,
        "Machine: {cpu}, {vcpus} vCPUs; {nats_version}; {redis_version}; {mqtt_version}; zenoh 1.10 (peer mode, in process); \
         tokio runtime with 2 workers. {}{} msgs per throughput round, {} rounds after one warm-up each; \
         {} latency rounds. rustc processes running at start / end: {builds_at_start} / {builds_at_end}.",
        if quick {
            "QUICK RUN (AETHER_PEERS_QUICK): "
        } else {
            ""
        },
        n,
        sizes.rounds,
        sizes.latency_rounds,
    );
    for line in skipped.borrow().iter() {
        let _ = writeln!(t, "{line}");
    }
    let _ = writeln!(t);
    let _ = writeln!(
        t,
        "| scenario | peer | median | min-max over rounds | ratio to raw async-nats (state: to NATS KV), median (min-max) | loss |"
    );
    let _ = writeln!(t, "|---|---|---|---|---|---|");
    let rate_rows = |t: &mut String, scenario: &str, list: &[Series<Peer, Outcome>]| {
        let base = list
            .iter()
            .find(|s| s.peer == Peer::RawNats && s.error.is_none());
        for s in list {
            if let Some(error) = &s.error {
                let _ = writeln!(
                    t,
                    "| {scenario} | {} | failed: {} | | | |",
                    s.peer.name(),
                    error.replace('|', "/")
                );
                continue;
            }
            let rates: Vec<f64> = s.values.iter().map(Outcome::rate).collect();
            let (lo, hi) = spread(&rates);
            let rs = ratios(s, base, Outcome::rate);
            let lost: usize = s.values.iter().map(Outcome::lost).sum();
            let expected: usize = s.values.iter().map(|o| o.expected).sum();
            let _ = writeln!(
                t,
                "| {scenario} | {} | {}/s | {}-{} | {} | {} |",
                s.peer.name(),
                rate(median(rates.clone())),
                rate(lo),
                rate(hi),
                if s.peer == Peer::RawNats {
                    "1".into()
                } else {
                    ratio_cell(&rs)
                },
                loss_cell(lost, expected)
            );
        }
    };
    rate_rows(&mut t, "1 -> 1 (msgs/s)", &one);
    rate_rows(&mut t, "1 -> 4 (deliveries/s)", &fan);
    lat_rows(
        &mut t,
        "request/reply p50 / p99",
        &req,
        Peer::RawNats,
        |p| match p {
            Peer::ZenohFifo | Peer::ZenohCallback => "Zenoh get -> queryable",
            Peer::Redis => "Redis list queue (LPUSH + BRPOP)",
            Peer::Mqtt => "MQTT QoS 0, request + response topics",
            Peer::Aether => "Aether over NATS",
            other => other.name(),
        },
    );
    lat_rows(
        &mut t,
        "one-way at a steady 10,000/s, p50 / p99",
        &steady,
        Peer::RawNats,
        Peer::name,
    );
    lat_rows(
        &mut t,
        "state: a write seen by the other client, p50 / p99",
        &state_lat,
        StatePeer::NatsKv,
        StatePeer::name,
    );
    {
        let base = state_rate
            .iter()
            .find(|s| s.peer == StatePeer::NatsKv && s.error.is_none());
        for s in &state_rate {
            let scenario =
                format!("state: {sn} keys, one writer, until the other holds all (writes/s)");
            if let Some(error) = &s.error {
                let _ = writeln!(
                    t,
                    "| {scenario} | {} | failed: {} | | | |",
                    s.peer.name(),
                    error.replace('|', "/")
                );
                continue;
            }
            let rates: Vec<f64> = s.values.iter().map(Outcome::rate).collect();
            let (lo, hi) = spread(&rates);
            let rs = ratios(s, base, Outcome::rate);
            let lost: usize = s.values.iter().map(Outcome::lost).sum();
            let expected: usize = s.values.iter().map(|o| o.expected).sum();
            let _ = writeln!(
                t,
                "| {scenario} | {} | {}/s | {}-{} | {} | {} |",
                s.peer.name(),
                rate(median(rates.clone())),
                rate(lo),
                rate(hi),
                if s.peer == StatePeer::NatsKv {
                    "1".into()
                } else {
                    ratio_cell(&rs)
                },
                loss_cell(lost, expected)
            );
        }
    }
    println!();
    println!("{t}");
    println!("(whole run: {:.0} s)", began.elapsed().as_secs_f64());

    // Servers stop here (and on any panic above, by their guards).
    drop(rt);
    drop(mqtt_server);
    drop(redis_server);
    drop(nats_server);
}
