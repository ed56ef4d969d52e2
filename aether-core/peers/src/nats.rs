//! Raw async-nats and Aether over NATS, on the benchmark's own nats-server
//! (the API shapes of `aether-core/benches/nats/` and `state.rs`).

use std::{
    collections::HashSet,
    sync::Arc,
    time::{Duration, Instant},
};

use aether_core::{
    Aether, AetherConfig, Channel, Vibrator, Wave,
    config::NatsConfig,
    state::{StateConfig, StateMap},
};
use async_nats::{Client, ConnectOptions};
use bytes::Bytes;
use futures_util::StreamExt;

use crate::common::*;

/// Commands queued for a connection before a publish waits: aether's
/// default, given to both sides.
const CLIENT_CAPACITY: usize = 65_536;

fn capacity(n: usize) -> usize {
    n + 1000
}

// --- raw async-nats -------------------------------------------------------

async fn raw_connect(url: &str, capacity: usize) -> Result<Client, String> {
    ConnectOptions::new()
        .subscription_capacity(capacity)
        .client_capacity(CLIENT_CAPACITY)
        .request_timeout(Some(REQUEST_TIMEOUT))
        .connect(url)
        .await
        .map_err(e("raw connect"))
}

/// Subscribers of `fan` tallies on one receiving client (subject `pattern`),
/// each counting in its own task.
async fn raw_subscribers(
    rx: &Client,
    pattern: &'static str,
    tallies: &[Arc<Tally>],
    tasks: &mut Tasks,
) -> Result<(), String> {
    for tally in tallies {
        let mut sub = rx.subscribe(pattern).await.map_err(e("subscribe"))?;
        let tally = tally.clone();
        tasks.push(tokio::spawn(async move {
            while let Some(m) = sub.next().await {
                tally.on(&m.payload);
            }
        }));
    }
    Ok(())
}

/// 1 -> `fan`: a publish per message; `fan` subscriptions on one client.
pub async fn raw_throughput(url: String, n: usize, fan: usize) -> Result<Outcome, String> {
    let rx = raw_connect(&url, capacity(n)).await?;
    let tx = raw_connect(&url, capacity(n)).await?;
    let (pattern, subject) = if fan == 1 {
        ("bench.one", "bench.one")
    } else {
        ("bench.*", "bench.fan")
    };
    let tallies: Vec<_> = (0..fan).map(|_| Tally::new()).collect();
    let mut tasks = Tasks::default();
    raw_subscribers(&rx, pattern, &tallies, &mut tasks).await?;
    live!(
        "raw nats",
        &tallies,
        async {
            tx.publish(subject, Bytes::from_static(PROBE))
                .await
                .map_err(e("probe"))?;
            tx.flush().await.map_err(e("flush"))
        }
        .await
    )?;
    let payload = payload();
    let start = now_ns();
    for _ in 0..n {
        tx.publish(subject, payload.clone())
            .await
            .map_err(e("publish"))?;
    }
    tx.flush().await.map_err(e("flush"))?;
    Ok(finish(&tallies, n, start).await)
}

pub async fn raw_request_reply(
    url: String,
    warm_up: usize,
    samples: usize,
) -> Result<Vec<Duration>, String> {
    let responder = raw_connect(&url, capacity(0)).await?;
    let requester = raw_connect(&url, capacity(0)).await?;
    let mut sub = responder
        .subscribe("bench.req")
        .await
        .map_err(e("subscribe"))?;
    let mut tasks = Tasks::default();
    tasks.push(tokio::spawn(async move {
        while let Some(message) = sub.next().await {
            if let Some(reply) = message.reply {
                let _ = responder.publish(reply, message.payload).await;
            }
        }
    }));
    let payload = payload();
    macro_rules! request {
        () => {{
            let r: Result<(), String> = async {
                let reply = requester
                    .request("bench.req", payload.clone())
                    .await
                    .map_err(e("raw request"))?;
                if reply.payload != payload {
                    return Err("raw: the reply is not the request".into());
                }
                Ok(())
            }
            .await;
            r
        }};
    }
    let deadline = Instant::now() + PROBE_LIMIT;
    while let Err(error) = request!() {
        if Instant::now() > deadline {
            return Err(format!("raw: responder not live: {error}"));
        }
    }
    timed!(warm_up, samples, request!())
}

pub async fn raw_steady(
    url: String,
    n: usize,
    skip: usize,
) -> Result<(Vec<Duration>, usize), String> {
    let rx = raw_connect(&url, capacity(n)).await?;
    let tx = raw_connect(&url, capacity(n)).await?;
    let tally = Tally::timing();
    let mut tasks = Tasks::default();
    raw_subscribers(
        &rx,
        "bench.steady",
        std::slice::from_ref(&tally),
        &mut tasks,
    )
    .await?;
    live!(
        "raw nats",
        std::slice::from_ref(&tally),
        async {
            tx.publish("bench.steady", Bytes::from_static(PROBE))
                .await
                .map_err(e("probe"))?;
            tx.flush().await.map_err(e("flush"))
        }
        .await
    )?;
    let handle = tokio::runtime::Handle::current();
    let sender = tx.clone();
    pace(n, move |p| {
        handle
            .block_on(sender.publish("bench.steady", p))
            .map_err(e("publish"))
    })
    .await?;
    tx.flush().await.map_err(e("flush"))?;
    Ok(steady_outcome(&tally, n, skip).await)
}

// --- aether over NATS -----------------------------------------------------

pub async fn aether_connect(url: &str, capacity: usize) -> Result<Aether, String> {
    let nats = NatsConfig {
        urls: vec![url.to_string()],
        subscription_capacity: capacity,
        client_capacity: CLIENT_CAPACITY,
        ..Default::default()
    };
    Aether::connect(AetherConfig {
        channel_buffer_size: capacity,
        request_timeout: REQUEST_TIMEOUT,
        nats,
        ..Default::default()
    })
    .await
    .map_err(e("aether connect"))
}

/// `tallies.len()` vibrators on `pattern`, each counting into its tally:
/// taking waves with `receive()` in a task each, or (`handler`) in a
/// handler run where they arrive (`on_wave`: no queue, no task woken, as
/// Zenoh's callback subscriber). The handlers' vibrators are returned, to
/// be kept while they count.
async fn aether_receivers(
    rx_aether: &Aether,
    pattern: &'static str,
    tallies: &[Arc<Tally>],
    tasks: &mut Tasks,
    handler: bool,
) -> Result<Vec<Vibrator>, String> {
    let mut kept = Vec::new();
    for (i, tally) in tallies.iter().enumerate() {
        let tally = tally.clone();
        let builder = Vibrator::builder(format!("rx{i}"));
        if handler {
            let mut rx = builder
                .on_wave(move |wave: Wave| tally.on(wave.payload_bytes()))
                .create(rx_aether)
                .await
                .map_err(e("rx"))?;
            rx.resonate_on(pattern).await.map_err(e("resonate"))?;
            kept.push(rx);
        } else {
            let mut rx = builder.create(rx_aether).await.map_err(e("rx"))?;
            rx.resonate_on(pattern).await.map_err(e("resonate"))?;
            tasks.push(tokio::spawn(async move {
                while let Some(wave) = rx.receive().await {
                    tally.on(wave.payload_bytes());
                }
            }));
        }
    }
    Ok(kept)
}

/// 1 -> `fan`, batch frames on (the default): `fan` vibrators on one
/// aether, taking waves with `receive()` or in handlers
/// ([`aether_receivers`]), a vibrator emitting on another.
pub async fn aether_throughput(
    url: String,
    n: usize,
    fan: usize,
    handler: bool,
) -> Result<Outcome, String> {
    let rx_aether = aether_connect(&url, capacity(n)).await?;
    let tx_aether = aether_connect(&url, capacity(n)).await?;
    let (pattern, subject) = if fan == 1 {
        ("bench.one", "bench.one")
    } else {
        ("bench.*", "bench.fan")
    };
    let tallies: Vec<_> = (0..fan).map(|_| Tally::new()).collect();
    let mut tasks = Tasks::default();
    let receivers = aether_receivers(&rx_aether, pattern, &tallies, &mut tasks, handler).await?;
    let tx = Vibrator::create("tx", &tx_aether).await.map_err(e("tx"))?;
    let channel = Channel::new(subject);
    live!(
        "aether",
        &tallies,
        async {
            tx.emit(Wave::new(channel.clone(), Bytes::from_static(PROBE)))
                .await
                .map_err(e("probe"))
        }
        .await
    )?;
    let payload = payload();
    let start = now_ns();
    for _ in 0..n {
        tx.emit(Wave::new(channel.clone(), payload.clone()))
            .await
            .map_err(e("emit"))?;
    }
    let outcome = finish(&tallies, n, start).await;
    let dropped = rx_aether.stats().dropped_total();
    if dropped > 0 {
        eprintln!("aether: {dropped} waves dropped");
    }
    drop(receivers);
    Ok(outcome)
}

pub async fn aether_request_reply(
    url: String,
    warm_up: usize,
    samples: usize,
) -> Result<Vec<Duration>, String> {
    let responder_aether = aether_connect(&url, capacity(0)).await?;
    let requester_aether = aether_connect(&url, capacity(0)).await?;
    let mut responder = Vibrator::create("responder", &responder_aether)
        .await
        .map_err(e("responder"))?;
    responder
        .resonate_on("bench.req")
        .await
        .map_err(e("resonate"))?;
    let mut tasks = Tasks::default();
    tasks.push(tokio::spawn(async move {
        while let Some(wave) = responder.receive().await {
            let _ = responder.reply(&wave, wave.payload_bytes().clone()).await;
        }
    }));
    let requester = Vibrator::create("requester", &requester_aether)
        .await
        .map_err(e("requester"))?;
    let channel = Channel::new("bench.req");
    let payload = payload();
    macro_rules! request {
        () => {{
            let r: Result<(), String> = async {
                let reply = requester
                    .request_with_timeout(
                        Wave::new(channel.clone(), payload.clone()),
                        REQUEST_TIMEOUT,
                    )
                    .await
                    .map_err(e("aether request"))?;
                if reply.payload_bytes() != &payload {
                    return Err("aether: the reply is not the request".into());
                }
                Ok(())
            }
            .await;
            r
        }};
    }
    let deadline = Instant::now() + PROBE_LIMIT;
    while let Err(error) = request!() {
        if Instant::now() > deadline {
            return Err(format!("aether: responder not live: {error}"));
        }
    }
    timed!(warm_up, samples, request!())
}

/// One-way latency at a steady rate; the receiving vibrator takes the
/// waves from its queue, or (`handler`) in a handler run where they arrive.
pub async fn aether_steady(
    url: String,
    n: usize,
    skip: usize,
    handler: bool,
) -> Result<(Vec<Duration>, usize), String> {
    let rx_aether = aether_connect(&url, capacity(n)).await?;
    let tx_aether = aether_connect(&url, capacity(n)).await?;
    let tally = Tally::timing();
    let mut tasks = Tasks::default();
    let receivers = aether_receivers(
        &rx_aether,
        "bench.steady",
        std::slice::from_ref(&tally),
        &mut tasks,
        handler,
    )
    .await?;
    let tx = Vibrator::create("tx", &tx_aether).await.map_err(e("tx"))?;
    let channel = Channel::new("bench.steady");
    live!(
        "aether",
        std::slice::from_ref(&tally),
        async {
            tx.emit(Wave::new(channel.clone(), Bytes::from_static(PROBE)))
                .await
                .map_err(e("probe"))
        }
        .await
    )?;
    let handle = tokio::runtime::Handle::current();
    let emitter = tx.emitter();
    pace(n, move |p| {
        handle
            .block_on(emitter.emit(Wave::new(channel.clone(), p)))
            .map(|_| ())
            .map_err(e("emit"))
    })
    .await?;
    tx_aether
        .flush(Duration::from_secs(5))
        .await
        .map_err(e("flush"))?;
    let out = steady_outcome(&tally, n, skip).await;
    drop(tx);
    drop(receivers);
    Ok(out)
}

// --- state: aether StateMap over NATS, NATS KV ------------------------------

const STATE_VALUE: usize = 128;

fn state_config() -> StateConfig {
    StateConfig {
        // The default 10,000 writes/s from one writer would refuse part of
        // the burst (anti-entropy brings it later); raised so the burst is
        // replicated live, as the other peers' are.
        max_writes_per_s: 1_000_000,
        max_keys: 1_000_000,
        max_map_bytes: 1 << 30,
        ..Default::default()
    }
}

/// Two replicas of map `name`, each on its own aether (connection).
async fn replicas(url: &str, name: &str) -> Result<(StateMap, StateMap, Aether, Aether), String> {
    let x = aether_connect(url, 1 << 17).await?;
    let y = aether_connect(url, 1 << 17).await?;
    let open = |aether: Aether, node: &'static str| {
        let name = name.to_string();
        async move {
            StateMap::builder(name)
                .node(node)
                .config(state_config())
                .open(&aether)
                .await
                .map_err(e("open"))
        }
    };
    let writer = open(x.clone(), "writer").await?;
    let reader = open(y.clone(), "reader").await?;
    // Live once the reader holds a write of the writer's.
    let deadline = Instant::now() + PROBE_LIMIT;
    writer.set("probe", vec![1u8]).await.map_err(e("set"))?;
    while reader.get("probe").is_none() {
        if Instant::now() > deadline {
            return Err("aether state: replicas not joined".into());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok((writer, reader, x, y))
}

pub async fn aether_state_latency(
    url: String,
    round: usize,
    warm: usize,
    samples: usize,
) -> Result<Vec<Duration>, String> {
    let (writer, reader, _x, _y) = replicas(&url, &format!("lat{round}")).await?;
    let mut wire = Wire::open(&url, format!("_state.lat{round}.c")).await?;
    let mut watch = reader.watch("lat.*");
    let value = Bytes::from(vec![0xAB; STATE_VALUE]);
    let mut out = Vec::with_capacity(samples);
    for i in 0..warm + samples {
        let start = Instant::now();
        let key = format!("lat.{}", i % 100);
        let (set, seen, ()) = tokio::join!(
            async {
                let set = writer.set(&key, value.clone()).await;
                (set, start.elapsed())
            },
            async {
                let change = tokio::time::timeout(REQUEST_TIMEOUT, watch.next()).await;
                (start.elapsed(), change)
            },
            Wire::hear(wire.as_mut(), start)
        );
        set.0.map_err(e("set"))?;
        match seen.1 {
            Ok(Some(change)) if change.key == key => {}
            other => {
                return Err(format!(
                    "aether state: watch gave {:?}",
                    other.map(|c| c.map(|c| c.key))
                ));
            }
        }
        if i >= warm {
            out.push(seen.0);
            if let Some(wire) = &mut wire {
                wire.returned.push(set.1);
            }
        }
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
    if let Some(wire) = wire {
        wire.report(&format!("Aether state, round {round}"), &out);
    }
    writer.close().await;
    reader.close().await;
    Ok(out)
}

/// With `AETHER_PEERS_WIRE=1`: a third client subscribed to every subject,
/// which tells when each write reached nats-server (as it hears it there),
/// beside when the writer's call returned and when the other client saw
/// the write: the time before the server and after it. Every message is
/// copied to it, so such a run's latencies are not the table's.
struct Wire {
    _client: Client,
    sub: async_nats::Subscriber,
    /// The end of the writes' subject.
    subject: String,
    heard: Vec<Duration>,
    returned: Vec<Duration>,
}

impl Wire {
    async fn open(url: &str, subject: String) -> Result<Option<Wire>, String> {
        if !std::env::var("AETHER_PEERS_WIRE").is_ok_and(|v| v == "1") {
            return Ok(None);
        }
        let client = raw_connect(url, 1 << 17).await?;
        let sub = client.subscribe(">").await.map_err(e("wire subscribe"))?;
        client.flush().await.map_err(e("wire flush"))?;
        Ok(Some(Wire {
            _client: client,
            sub,
            subject,
            heard: Vec::new(),
            returned: Vec::new(),
        }))
    }

    /// Waits for the next message on the subject (a bounded wait).
    async fn hear(wire: Option<&mut Wire>, start: Instant) {
        let Some(wire) = wire else { return };
        while let Ok(Some(msg)) =
            tokio::time::timeout(Duration::from_millis(100), wire.sub.next()).await
        {
            // (Aether's subjects carry its prefix before the channel.)
            if msg.subject.ends_with(wire.subject.as_str()) {
                wire.heard.push(start.elapsed());
                return;
            }
        }
    }

    fn report(mut self, label: &str, seen: &[Duration]) {
        let mut seen = seen.to_vec();
        eprintln!(
            "wire: {label}: p50 returned {:.1} us, at the server {:.1} us ({} heard), seen {:.1} us",
            percentile(&mut self.returned, 0.5),
            percentile(&mut self.heard, 0.5),
            self.heard.len(),
            percentile(&mut seen, 0.5)
        );
    }
}

/// The rounds of a floor under a map's write (no state kept): `$probe`
/// (a `Result<(), String>`, awaited inside) until `$next` (the next
/// body to arrive, an `Option<Bytes>`, awaited inside) brings one, the
/// other probes drained; then `$warm` untimed and `$samples` timed writes
/// of [`keyed`] payloads, one at a time 200 us apart, each sent by
/// `$send` and timed until its body arrives; `$wire` (when on) hears each.
/// (A macro, as `live!`: the round's future must be `Send`.)
macro_rules! floor_rounds {
    ($label:expr, $round:expr, $wire:expr, $warm:expr, $samples:expr, $probe:expr,
     |$payload:ident| $send:expr, $next:expr) => {{
        // Live once a probe comes through (as the other peers' rounds begin).
        let deadline = Instant::now() + PROBE_LIMIT;
        loop {
            $probe.await?;
            if let Ok(Some(_)) =
                tokio::time::timeout(Duration::from_millis(20), async { $next }).await
            {
                break;
            }
            if Instant::now() > deadline {
                return Err(format!("{}: not live within {PROBE_LIMIT:?}", $label));
            }
        }
        while let Ok(Some(_)) =
            tokio::time::timeout(Duration::from_millis(50), async { $next }).await
        {}
        let mut wire = $wire;
        let mut out = Vec::with_capacity($samples);
        for i in 0..$warm + $samples {
            let body = keyed(i);
            let key_len = body.len() - STATE_VALUE;
            let start = Instant::now();
            let (sent, seen, ()) = tokio::join!(
                async {
                    let $payload = body.clone();
                    let sent: Result<(), String> = $send;
                    (sent, start.elapsed())
                },
                async {
                    let arrived = tokio::time::timeout(REQUEST_TIMEOUT, async { $next }).await;
                    (start.elapsed(), arrived)
                },
                Wire::hear(wire.as_mut(), start)
            );
            sent.0?;
            match seen.1 {
                Ok(Some(arrived)) if arrived.starts_with(&body[..key_len]) => {}
                _ => return Err(format!("{}: write {i} was not seen", $label)),
            }
            if i >= $warm {
                out.push(seen.0);
                if let Some(wire) = &mut wire {
                    wire.returned.push(sent.1);
                }
            }
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        if let Some(wire) = wire {
            wire.report(&format!("{}, round {}", $label, $round), &out);
        }
        Ok(out)
    }};
}

/// The floor under a state write over NATS: the same key and 128-byte
/// value published on one connection and taken by a subscriber on
/// another, one at a time as the maps' writes are (no state, no stamp).
pub async fn raw_state_latency(
    url: String,
    round: usize,
    warm: usize,
    samples: usize,
) -> Result<Vec<Duration>, String> {
    let rx = raw_connect(&url, 1 << 17).await?;
    let tx = raw_connect(&url, 1 << 17).await?;
    let subject = format!("bench.state{round}");
    let mut sub = rx
        .subscribe(subject.clone())
        .await
        .map_err(e("subscribe"))?;
    floor_rounds!(
        "raw async-nats",
        round,
        Wire::open(&url, subject.clone()).await?,
        warm,
        samples,
        async {
            tx.publish(subject.clone(), Bytes::from_static(PROBE))
                .await
                .map_err(e("probe"))?;
            tx.flush().await.map_err(e("flush"))
        },
        |payload| tx
            .publish(subject.clone(), payload)
            .await
            .map_err(e("publish")),
        sub.next().await.map(|msg| msg.payload)
    )
}

/// Write `i`'s payload for the peers without a map: its key (one of 100)
/// and a 128-byte value.
fn keyed(i: usize) -> Bytes {
    let key = format!("lat.{}", i % 100);
    let mut payload = Vec::with_capacity(key.len() + STATE_VALUE);
    payload.extend_from_slice(key.as_bytes());
    payload.resize(key.len() + STATE_VALUE, 0xAB);
    payload.into()
}

/// Aether's own floor under a map's write: the same payload as a wave,
/// emitted on one aether and taken by `receive()` on another, one at a
/// time (no state, no stamp, no merge). With `echo`, the sending aether
/// resonates on the channel too (skipping its own waves), as a writing
/// replica does: the server then sends each wave back to it as well.
pub async fn aether_wave_latency(
    url: String,
    round: usize,
    warm: usize,
    samples: usize,
    echo: bool,
) -> Result<Vec<Duration>, String> {
    let rx_aether = aether_connect(&url, 1 << 17).await?;
    let tx_aether = aether_connect(&url, 1 << 17).await?;
    let name = format!("bench.wave{round}");
    let channel = Channel::new(name.as_str());
    let mut rx = Vibrator::create("rx", &rx_aether).await.map_err(e("rx"))?;
    rx.resonate_on(channel.clone())
        .await
        .map_err(e("resonate"))?;
    let tx = Vibrator::create("tx", &tx_aether).await.map_err(e("tx"))?;
    let mut _echo = None;
    if echo {
        let mut own = Vibrator::builder("echo")
            .skip_own_waves(true)
            .create(&tx_aether)
            .await
            .map_err(e("echo"))?;
        own.resonate_on(channel.clone()).await.map_err(e("echo"))?;
        _echo = Some(own);
    }
    floor_rounds!(
        if echo {
            "Aether wave, its sender hearing it"
        } else {
            "Aether wave"
        },
        round,
        Wire::open(&url, name.clone()).await?,
        warm,
        samples,
        async {
            tx.emit(Wave::new(channel.clone(), Bytes::from_static(PROBE)))
                .await
                .map(|_| ())
                .map_err(e("probe"))
        },
        |payload| tx
            .emit(Wave::new(channel.clone(), payload))
            .await
            .map(|_| ())
            .map_err(e("emit")),
        rx.receive().await.map(|wave| wave.payload_bytes().clone())
    )
}

/// `n` keys set one after another on the writer; keys a second until the
/// reader holds them all (and how many it lacks at the bound).
pub async fn aether_state_rate(
    url: String,
    round: usize,
    n: usize,
) -> Result<(f64, usize), String> {
    let (writer, reader, _x, _y) = replicas(&url, &format!("rate{round}")).await?;
    let value = Bytes::from(vec![0xAB; STATE_VALUE]);
    let base = reader.len();
    let start = Instant::now();
    for i in 0..n {
        writer
            .set(&format!("k.{i}"), value.clone())
            .await
            .map_err(e("set"))?;
    }
    let held = wait_held(start, n, || reader.len() - base).await;
    writer.close().await;
    reader.close().await;
    Ok(held)
}

/// Polls `held` until it reaches `n` (or nothing new for `IDLE_LIMIT`):
/// the rate, and what is missing.
pub async fn wait_held(start: Instant, n: usize, held: impl Fn() -> usize) -> (f64, usize) {
    let mut seen = held();
    let mut quiet = Instant::now();
    let mut done = start.elapsed();
    while held() < n && start.elapsed() < ROUND_LIMIT {
        let now = held();
        if now != seen {
            seen = now;
            quiet = Instant::now();
            done = start.elapsed();
        } else if quiet.elapsed() > IDLE_LIMIT {
            break;
        }
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
    let h = held();
    if h >= n {
        done = start.elapsed();
    }
    (h.min(n) as f64 / done.as_secs_f64(), n.saturating_sub(h))
}

async fn kv_bucket(
    url: &str,
    name: &str,
) -> Result<
    (
        async_nats::jetstream::kv::Store,
        async_nats::jetstream::kv::Store,
        async_nats::jetstream::Context,
    ),
    String,
> {
    let wc = async_nats::connect(url).await.map_err(e("connect"))?;
    let rc = async_nats::connect(url).await.map_err(e("connect"))?;
    let wjs = async_nats::jetstream::new(wc);
    let rjs = async_nats::jetstream::new(rc);
    let writer = wjs
        .create_key_value(async_nats::jetstream::kv::Config {
            bucket: name.to_string(),
            history: 1,
            ..Default::default()
        })
        .await
        .map_err(e(
            "NATS KV bucket (async-nats's KV needs nats-server 2.10 or later)",
        ))?;
    let reader = rjs.get_key_value(name).await.map_err(e("kv"))?;
    Ok((writer, reader, wjs))
}

pub async fn kv_state_latency(
    url: String,
    round: usize,
    warm: usize,
    samples: usize,
) -> Result<Vec<Duration>, String> {
    let name = format!("lat{round}");
    let (writer, reader, js) = kv_bucket(&url, &name).await?;
    let mut watch = reader.watch_all().await.map_err(e("watch"))?;
    let value = Bytes::from(vec![0xAB; STATE_VALUE]);
    let mut out = Vec::with_capacity(samples);
    for i in 0..warm + samples {
        let start = Instant::now();
        let key = format!("lat.{}", i % 100);
        let (put, seen) = tokio::join!(writer.put(&key, value.clone()), async {
            let entry = tokio::time::timeout(REQUEST_TIMEOUT, watch.next()).await;
            (start.elapsed(), entry)
        });
        put.map_err(e("put"))?;
        match seen.1 {
            Ok(Some(Ok(entry))) if entry.key == key => {}
            Ok(Some(Ok(entry))) => return Err(format!("kv: watch gave {}", entry.key)),
            other => {
                return Err(format!(
                    "kv: watch ended: {:?}",
                    other.map(|o| o.map(|r| r.is_ok()))
                ));
            }
        }
        if i >= warm {
            out.push(seen.0);
        }
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
    let _ = js.delete_key_value(&name).await;
    Ok(out)
}

pub async fn kv_state_rate(url: String, round: usize, n: usize) -> Result<(f64, usize), String> {
    let name = format!("rate{round}");
    let (writer, reader, js) = kv_bucket(&url, &name).await?;
    let mut watch = reader.watch_all().await.map_err(e("watch"))?;
    let held = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = held.clone();
    let mut tasks = Tasks::default();
    tasks.push(tokio::spawn(async move {
        let mut keys = HashSet::new();
        while let Some(Ok(entry)) = watch.next().await {
            keys.insert(entry.key);
            counter.store(keys.len(), std::sync::atomic::Ordering::Relaxed);
        }
    }));
    let value = Bytes::from(vec![0xAB; STATE_VALUE]);
    let start = Instant::now();
    for i in 0..n {
        writer
            .put(format!("k.{i}"), value.clone())
            .await
            .map_err(e("put"))?;
    }
    let out = wait_held(start, n, || held.load(std::sync::atomic::Ordering::Relaxed)).await;
    drop(tasks);
    let _ = js.delete_key_value(&name).await;
    Ok(out)
}
