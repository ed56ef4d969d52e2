//! Acknowledged writes: a map's `set` followed by `flush_to(keepers(1))`,
//! the keeper in another connection with its ledger on disk, beside the
//! writes their users compare it with, each acknowledged by its server, in
//! the same run on the same machine:
//!
//! - a Redis `SET` (the server on 127.0.0.1:6379, if one runs; a plain
//!   RESP exchange on one connection);
//! - a NATS KV `put` (async-nats, a bucket on a JetStream nats-server of
//!   the benchmark's own);
//! - a raw async-nats request answered by a responder on another
//!   connection that stores nothing: the path a keeper's acknowledgement
//!   takes (writer, server, keeper, server, writer) with no work on it, the
//!   floor for a keeper in another connection.
//!
//! One writer, one write at a time, 128-byte values: latency p50 and p99
//! of each write, and writes a second. The keeper hands each change to the
//! operating system before it acknowledges (on disk within 200 ms), as
//! JetStream and Redis with their defaults do; `sync_writes` (an fsync
//! before the acknowledgement) is measured too.
//!
//! Then what holding costs: a keeper in a process of its own (this
//! benchmark run again) fed 48 MiB of 32 KiB values in three maps, its
//! resident memory grown per byte held, beside Redis's `used_memory`
//! grown per byte for the same keys and values.
//!
//! `cargo bench -p aether-core --bench keepers` (rounds alternate the
//! sides; medians and min-max); under `cargo test` each side runs once,
//! small, Redis left out. `AETHER_BENCH_PROFILE=writers` measures many
//! writers in flight instead: [`WRITERS`] tasks, each writing and waiting
//! for its acknowledgement in turn, on one map (its writes flushed to the
//! keeper) beside as many on one NATS KV bucket, alternating rounds
//! (`AETHER_BENCH_SIDE=aether`: Aether's rounds alone, for a profiler;
//! `AETHER_BENCH_EACH`: writes a writer makes, 200 by default).
//! `AETHER_BENCH_PROFILE=held_keys`: one writer's flushed writes after it
//! wrote (and had held) [`HELD_KEYS`] other keys, beside none
//! (`AETHER_BENCH_ROUNDS` of them, 5 by default).

use std::time::{Duration, Instant};

use aether_core::{
    Aether,
    state::{HeldBy, Keeper, StateConfig, StateMap},
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    runtime::Runtime,
};

const VALUE: usize = 128;
const REDIS: &str = "127.0.0.1:6379";

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// Each write's latency, in microseconds, and the writes a second.
struct Run {
    latencies: Vec<f64>,
    rate: f64,
}

fn timed(latencies: Vec<f64>, total: Duration) -> Run {
    let rate = latencies.len() as f64 / total.as_secs_f64();
    Run { latencies, rate }
}

/// A keeper of every map (`config`, its ledger in the returned directory)
/// on one connection, and map `bench` opened by node `writer` (with
/// `config`'s `max_writes_per_s`) on another, its first write held by the
/// keeper (which opens the map at the first flush).
async fn keeper_and_writer(
    url: &str,
    mut config: StateConfig,
) -> (tempfile::TempDir, Keeper, StateMap) {
    let dir = tempfile::tempdir().expect("tempdir");
    config.dir = Some(dir.path().into());
    config.keeper.maps = vec!["*".into()];
    let max_writes_per_s = config.max_writes_per_s;
    let keeping = Aether::connect_url(url).await.expect("connect");
    let keeper = Keeper::start_with(&keeping, "keeper", config)
        .await
        .expect("keeper");
    let writing = Aether::connect_url(url).await.expect("connect");
    let map = StateMap::builder("bench")
        .node("writer")
        .config(StateConfig {
            max_writes_per_s,
            ..Default::default()
        })
        .open(&writing)
        .await
        .expect("map");
    map.set("warm", vec![b'v'; VALUE]).await.expect("set");
    map.flush_to(HeldBy::keepers(1), Duration::from_secs(5))
        .await
        .expect("held");
    (dir, keeper, map)
}

/// `n` writes of a map, each flushed to one keeper, after the writer
/// wrote `held` other keys and the keeper held them.
async fn aether(url: &str, n: usize, sync_writes: bool, held: usize) -> Run {
    let mut config = StateConfig {
        sync_writes,
        ..Default::default()
    };
    if held > 0 {
        // Written at once before the timed writes.
        config.max_writes_per_s = 1_000_000;
    }
    let (_dir, keeper, map) = keeper_and_writer(url, config).await;
    let value = vec![b'v'; VALUE];
    for i in 0..held {
        map.set(&format!("held.{i}"), value.clone())
            .await
            .expect("set");
    }
    if held > 0 {
        let all = map
            .flush_to(HeldBy::keepers(1), Duration::from_secs(60))
            .await
            .expect("held");
        assert_eq!(all.writes, held);
    }
    let flush = |map: &StateMap| {
        let map = map.clone();
        async move {
            map.flush_to(HeldBy::keepers(1), Duration::from_secs(5))
                .await
                .expect("held")
        }
    };
    let run = one_at_a_time(n, |i| {
        let (map, value) = (&map, value.clone());
        async move {
            map.set(&format!("k{}", i % 1000), value)
                .await
                .expect("set");
            let held = flush(map).await;
            assert_eq!(held.keepers, 1);
        }
    })
    .await;
    map.close().await;
    keeper.close().await;
    run
}

/// Keys the writer wrote and had held before the timed writes, in the
/// `held_keys` profile.
const HELD_KEYS: usize = 50_000;

/// The `held_keys` profile: one writer, one write at a time, each flushed
/// to the keeper, after it wrote and had held [`HELD_KEYS`] other keys,
/// beside the same writes with none before, alternating rounds: what a
/// flush costs a writer that wrote many keys.
fn held_keys(rt: &Runtime, url: &str) {
    let rounds = std::env::var("AETHER_BENCH_ROUNDS").map_or(5, |r| {
        r.parse().expect("AETHER_BENCH_ROUNDS: a number of rounds")
    });
    let n = 2_000;
    let (mut few, mut many, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        let (f, m) = if round % 2 == 0 {
            let f = rt.block_on(aether(url, n, false, 0));
            (f, rt.block_on(aether(url, n, false, HELD_KEYS)))
        } else {
            let m = rt.block_on(aether(url, n, false, HELD_KEYS));
            (rt.block_on(aether(url, n, false, 0)), m)
        };
        let (mut f, mut m) = (f.latencies, m.latencies);
        let (f, m) = (percentile(&mut f, 0.5), percentile(&mut m, 0.5));
        println!(
            "held keys round {round}: p50 {f:.0} us after none, {m:.0} us after {HELD_KEYS}, ratio {:.2}",
            m / f
        );
        few.push(f);
        many.push(m);
        ratios.push(m / f);
    }
    let (r, rmin, rmax) = median(&mut ratios);
    println!(
        "\none writer, one write at a time, flushed to a keeper, {rounds} rounds of {n}: p50 {:.0} us \
         after no other key, {:.0} us after {HELD_KEYS} keys written and held; {r:.2}x ({rmin:.2}-{rmax:.2})",
        median(&mut few).0,
        median(&mut many).0,
    );
}

/// Writers in flight in the `writers` profile.
const WRITERS: usize = 64;

/// `max_writes_per_s`'s default: a keeper takes at most this many writes a
/// second from one writer (`AETHER_BENCH_WRITES_PER_S` sets another).
const DEFAULT_RATE: u32 = 10_000;

/// [`WRITERS`] tasks on one map, each writing `each` keys of its own, one
/// at a time, each flushed to one keeper before the next: writes a second
/// over all, and each write's latency.
async fn aether_writers(url: &str, each: usize, max_writes_per_s: u32) -> Run {
    let config = StateConfig {
        max_writes_per_s,
        ..Default::default()
    };
    let (_dir, keeper, map) = keeper_and_writer(url, config).await;
    let value = vec![b'v'; VALUE];
    let writer = map.clone();
    let run = in_flight(each, move |w, i| {
        let (map, value) = (writer.clone(), value.clone());
        async move {
            map.set(&format!("w{w}.k{}", i % 100), value)
                .await
                .expect("set");
            let held = map
                .flush_to(HeldBy::keepers(1), Duration::from_secs(10))
                .await
                .expect("held");
            assert_eq!(held.keepers, 1);
        }
    })
    .await;
    map.close().await;
    keeper.close().await;
    run
}

/// [`WRITERS`] tasks on one NATS KV bucket (one client), each putting
/// `each` keys of its own, one at a time, each acknowledged before the
/// next.
async fn nats_kv_writers(url: &str, each: usize) -> Option<Run> {
    let client = async_nats::connect(url).await.expect("connect");
    let js = async_nats::jetstream::new(client);
    let kv = js
        .create_key_value(async_nats::jetstream::kv::Config {
            bucket: format!("writers{}", std::process::id()),
            history: 1,
            ..Default::default()
        })
        .await
        .map_err(|error| eprintln!("NATS KV left out: {error}"))
        .ok()?;
    let value = bytes::Bytes::from(vec![b'v'; VALUE]);
    kv.put("warm", value.clone()).await.expect("put");
    let run = in_flight(each, move |w, i| {
        let (kv, value) = (kv.clone(), value.clone());
        async move {
            kv.put(format!("w{w}.k{}", i % 100), value)
                .await
                .expect("put");
        }
    })
    .await;
    Some(run)
}

/// [`WRITERS`] tasks, each making `each` writes one after the other,
/// `write(writer, i)` returning once its write is acknowledged: each
/// write's latency and the time for all.
async fn in_flight<F, W>(each: usize, write: F) -> Run
where
    F: Fn(usize, usize) -> W + Clone + Send + 'static,
    W: std::future::Future<Output = ()> + Send,
{
    let start = Instant::now();
    let tasks: Vec<_> = (0..WRITERS)
        .map(|w| {
            let write = write.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(each);
                for i in 0..each {
                    let t = Instant::now();
                    write(w, i).await;
                    latencies.push(t.elapsed().as_secs_f64() * 1e6);
                }
                latencies
            })
        })
        .collect();
    let mut latencies = Vec::with_capacity(WRITERS * each);
    for task in tasks {
        latencies.extend(task.await.expect("writer"));
    }
    timed(latencies, start.elapsed())
}

/// The `writers` profile: rounds of [`aether_writers`] and
/// [`nats_kv_writers`], alternating, a ratio each.
fn writers(rt: &Runtime, url: &str) {
    let rounds = std::env::var("AETHER_BENCH_ROUNDS").map_or(7, |r| {
        r.parse().expect("AETHER_BENCH_ROUNDS: a number of rounds")
    });
    let each = std::env::var("AETHER_BENCH_EACH").map_or(200, |r| {
        r.parse().expect("AETHER_BENCH_EACH: writes a writer makes")
    });
    let rate: u32 = std::env::var("AETHER_BENCH_WRITES_PER_S")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(DEFAULT_RATE);
    println!("max_writes_per_s {rate} (the keeper's, for the writer)");
    if std::env::var("AETHER_BENCH_SIDE").as_deref() == Ok("aether") {
        // Aether's rounds alone, for a profiler.
        for round in 0..rounds {
            let a = rt.block_on(aether_writers(url, each, rate));
            println!("writers round {round}: aether {:.0}/s", a.rate);
        }
        return;
    }
    let (mut ours, mut kv, mut ratios) = (Side::default(), Side::default(), Vec::new());
    for round in 0..rounds {
        let (a, k) = if round % 2 == 0 {
            let a = rt.block_on(aether_writers(url, each, rate));
            (a, rt.block_on(nats_kv_writers(url, each)))
        } else {
            let k = rt.block_on(nats_kv_writers(url, each));
            (rt.block_on(aether_writers(url, each, rate)), k)
        };
        let Some(k) = k else {
            return;
        };
        println!(
            "writers round {round}: aether {:.0}/s, NATS KV {:.0}/s, ratio {:.2}",
            a.rate,
            k.rate,
            a.rate / k.rate
        );
        ratios.push(a.rate / k.rate);
        ours.add(a);
        kv.add(k);
    }
    let (m, lo, hi) = median(&mut ratios);
    let show = |side: &mut Side| {
        let (p50, _, _) = median(&mut side.p50);
        let (p99, _, _) = median(&mut side.p99);
        let (rate, _, _) = median(&mut side.rate);
        format!("{rate:.0} writes/s, p50 {p50:.0} us, p99 {p99:.0} us")
    };
    println!(
        "\n{WRITERS} writers in flight, {each} writes each, {rounds} rounds: aether {}; NATS KV {}; \
         aether / NATS KV {m:.2}x ({lo:.2}-{hi:.2})",
        show(&mut ours),
        show(&mut kv)
    );
}

/// `n` NATS KV puts, each acknowledged by the stream; none if the server
/// cannot make the bucket (async-nats's KV needs nats-server 2.10 or
/// later: set NATS_SERVER_BIN to one).
async fn nats_kv(url: &str, n: usize) -> Option<Run> {
    let client = async_nats::connect(url).await.expect("connect");
    let js = async_nats::jetstream::new(client);
    let kv = match js
        .create_key_value(async_nats::jetstream::kv::Config {
            bucket: format!("bench{}", std::process::id()),
            history: 1,
            ..Default::default()
        })
        .await
    {
        Ok(kv) => kv,
        Err(error) => {
            eprintln!(
                "NATS KV left out: the bucket was not made ({error}); async-nats's KV needs \
                 nats-server 2.10 or later (NATS_SERVER_BIN names one)"
            );
            return None;
        }
    };
    let value = bytes::Bytes::from(vec![b'v'; VALUE]);
    kv.put("warm", value.clone()).await.expect("put");
    let run = one_at_a_time(n, |i| {
        let (kv, value) = (&kv, value.clone());
        async move {
            kv.put(format!("k{}", i % 1000), value).await.expect("put");
        }
    })
    .await;
    Some(run)
}

/// `n` writes one after the other, `write(i)` returning once the `i`th is
/// acknowledged: each write's latency and the time for all.
async fn one_at_a_time<F, W>(n: usize, mut write: F) -> Run
where
    F: FnMut(usize) -> W,
    W: std::future::Future<Output = ()>,
{
    let mut latencies = Vec::with_capacity(n);
    let start = Instant::now();
    for i in 0..n {
        let t = Instant::now();
        write(i).await;
        latencies.push(t.elapsed().as_secs_f64() * 1e6);
    }
    timed(latencies, start.elapsed())
}

/// `n` requests of a raw async-nats client, each answered by a responder
/// on a connection of its own (it stores nothing): the path a keeper's
/// acknowledgement takes, the writer to the server to the keeper and back,
/// with nothing done on the way.
async fn raw_request(url: &str, n: usize) -> Run {
    use futures_util::StreamExt;
    let subject = format!("bench.request.{}", std::process::id());
    let responder = async_nats::connect(url).await.expect("connect");
    let mut requests = responder
        .subscribe(subject.clone())
        .await
        .expect("subscribe");
    responder.flush().await.expect("flush");
    let answering = tokio::spawn(async move {
        while let Some(request) = requests.next().await {
            if let Some(reply) = request.reply {
                let _ = responder.publish(reply, bytes::Bytes::new()).await;
            }
        }
    });
    let client = async_nats::connect(url).await.expect("connect");
    let value = bytes::Bytes::from(vec![b'v'; VALUE]);
    client
        .request(subject.clone(), value.clone())
        .await
        .expect("request");
    let run = one_at_a_time(n, |_| {
        let (client, subject, value) = (&client, subject.clone(), value.clone());
        async move {
            client.request(subject, value).await.expect("request");
        }
    })
    .await;
    answering.abort();
    run
}

/// `n` Redis `SET`s on one connection, each answered `+OK` before the
/// next; none if no Redis answers at [`REDIS`].
async fn redis(n: usize) -> Option<Run> {
    let mut stream = tokio::time::timeout(Duration::from_secs(1), TcpStream::connect(REDIS))
        .await
        .ok()?
        .ok()?;
    stream.set_nodelay(true).ok()?;
    let value = vec![b'v'; VALUE];
    let mut answer = [0u8; 5];
    let set = |key: &str| {
        let mut out = format!(
            "*3\r\n$3\r\nSET\r\n${}\r\n{key}\r\n${}\r\n",
            key.len(),
            value.len()
        )
        .into_bytes();
        out.extend_from_slice(&value);
        out.extend_from_slice(b"\r\n");
        out
    };
    let prefix = format!("aether-bench-{}-", std::process::id());
    let warm = set(&format!("{prefix}warm"));
    stream.write_all(&warm).await.ok()?;
    stream.read_exact(&mut answer).await.ok()?;
    if &answer != b"+OK\r\n" {
        return None;
    }
    let mut latencies = Vec::with_capacity(n);
    let start = Instant::now();
    for i in 0..n {
        let request = set(&format!("{prefix}k{}", i % 1000));
        let t = Instant::now();
        stream.write_all(&request).await.ok()?;
        stream.read_exact(&mut answer).await.ok()?;
        assert_eq!(&answer, b"+OK\r\n");
        latencies.push(t.elapsed().as_secs_f64() * 1e6);
    }
    let run = timed(latencies, start.elapsed());
    // Leave nothing behind on the machine's Redis.
    for i in 0..1000.min(n) {
        let key = format!("{prefix}k{i}");
        let del = format!("*2\r\n$3\r\nDEL\r\n${}\r\n{key}\r\n", key.len());
        stream.write_all(del.as_bytes()).await.ok()?;
        let mut reply = [0u8; 4];
        stream.read_exact(&mut reply).await.ok()?;
    }
    Some(run)
}

fn percentile(xs: &mut [f64], p: f64) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[((xs.len() - 1) as f64 * p) as usize]
}

fn median(xs: &mut [f64]) -> (f64, f64, f64) {
    xs.sort_by(f64::total_cmp);
    (xs[xs.len() / 2], xs[0], xs[xs.len() - 1])
}

/// Per round: p50, p99 and rate.
#[derive(Default)]
struct Side {
    p50: Vec<f64>,
    p99: Vec<f64>,
    rate: Vec<f64>,
}

impl Side {
    fn add(&mut self, mut run: Run) {
        self.p50.push(percentile(&mut run.latencies, 0.5));
        self.p99.push(percentile(&mut run.latencies, 0.99));
        self.rate.push(run.rate);
    }
}

/// The keeper process of [`memory`]: a keeper of every map in the
/// directory named, on the server named, until its stdin closes.
const CHILD: &str = "AETHER_BENCH_KEEPER_CHILD";

fn keeper_child(spec: &str) {
    let (url, dir) = spec.split_once('|').expect("url|dir");
    let rt = runtime();
    rt.block_on(async {
        let aether = Aether::connect(aether_core::AetherConfig {
            nats: aether_core::config::NatsConfig {
                urls: vec![url.to_string()],
                ..Default::default()
            },
            ..Default::default()
        })
        .await
        .expect("connects");
        let mut config = StateConfig {
            dir: Some(dir.into()),
            ..Default::default()
        };
        config.keeper.maps = vec!["*".into()];
        config.keeper.max_bytes = 256 << 20;
        let keeper = Keeper::start_with(&aether, "keeper", config)
            .await
            .expect("keeper");
        println!("ready");
        let _ = tokio::task::spawn_blocking(|| {
            let mut buf = [0u8; 16];
            while std::io::Read::read(&mut std::io::stdin(), &mut buf).is_ok_and(|n| n > 0) {}
        })
        .await;
        keeper.close().await;
    });
}

/// Resident memory of process `pid`, bytes.
fn rss(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .expect("status")
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .expect("VmRSS")
        * 1024
}

const BIG: usize = 32 * 1024 - 64;

/// Memory grown per byte of keys and values held: a keeper's (its
/// process's resident memory) for `n` values of [`BIG`] bytes in three
/// maps, each flushed to it.
async fn keeper_memory(url: &str, n: usize) -> f64 {
    use std::io::BufRead;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut child = std::process::Command::new(std::env::current_exe().expect("exe"))
        .env(CHILD, format!("{url}|{}", dir.path().display()))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("the keeper process");
    let mut out = std::io::BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    out.read_line(&mut line).expect("ready");
    assert_eq!(line.trim(), "ready");
    let pid = child.id();
    let before = rss(pid);
    let writer = Aether::connect(aether_core::AetherConfig {
        nats: aether_core::config::NatsConfig {
            urls: vec![url.to_string()],
            ..Default::default()
        },
        ..Default::default()
    })
    .await
    .expect("connects");
    let value = vec![b'v'; BIG];
    let mut held = 0u64;
    for map in ["kitchen", "garden", "garage"] {
        let replica = StateMap::open(&writer, map).await.expect("opens");
        for i in 0..n / 3 {
            let key = format!("k{i}");
            replica.set(&key, value.clone()).await.expect("set");
            replica
                .flush_to(HeldBy::keepers(1), Duration::from_secs(10))
                .await
                .expect("held");
            held += (key.len() + BIG) as u64;
        }
        replica.close().await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = rss(pid);
    writer.close();
    drop(child.stdin.take());
    let _ = child.wait();
    (after.saturating_sub(before)) as f64 / held as f64
}

/// The same for Redis: `used_memory` grown per byte, for the same keys
/// and values (deleted after). None without a Redis.
async fn redis_memory(n: usize) -> Option<f64> {
    let mut stream = tokio::time::timeout(Duration::from_secs(1), TcpStream::connect(REDIS))
        .await
        .ok()?
        .ok()?;
    async fn used(stream: &mut TcpStream) -> Option<u64> {
        stream
            .write_all(b"*2\r\n$4\r\nINFO\r\n$6\r\nmemory\r\n")
            .await
            .ok()?;
        let mut text = Vec::new();
        let mut buf = [0u8; 8192];
        loop {
            let got = stream.read(&mut buf).await.ok()?;
            text.extend_from_slice(&buf[..got]);
            let s = String::from_utf8_lossy(&text);
            if let Some((head, _)) = s.split_once("\r\n")
                && let Ok(len) = head.trim_start_matches('$').parse::<usize>()
                && text.len() >= head.len() + 2 + len + 2
            {
                return s
                    .lines()
                    .find_map(|l| l.strip_prefix("used_memory:"))
                    .and_then(|v| v.trim().parse().ok());
            }
            if got == 0 {
                return None;
            }
        }
    }
    let prefix = format!("aether-bench-mem-{}-", std::process::id());
    let before = used(&mut stream).await?;
    let value = vec![b'v'; BIG];
    let mut held = 0u64;
    let mut answer = [0u8; 5];
    for map in ["kitchen", "garden", "garage"] {
        for i in 0..n / 3 {
            let key = format!("{prefix}{map}.k{i}");
            let mut out = format!(
                "*3\r\n$3\r\nSET\r\n${}\r\n{key}\r\n${}\r\n",
                key.len(),
                value.len()
            )
            .into_bytes();
            out.extend_from_slice(&value);
            out.extend_from_slice(b"\r\n");
            stream.write_all(&out).await.ok()?;
            stream.read_exact(&mut answer).await.ok()?;
            held += (format!("k{i}").len() + BIG) as u64;
        }
    }
    let after = used(&mut stream).await?;
    for map in ["kitchen", "garden", "garage"] {
        for i in 0..n / 3 {
            let key = format!("{prefix}{map}.k{i}");
            let del = format!("*2\r\n$3\r\nDEL\r\n${}\r\n{key}\r\n", key.len());
            stream.write_all(del.as_bytes()).await.ok()?;
            let mut reply = [0u8; 4];
            stream.read_exact(&mut reply).await.ok()?;
        }
    }
    Some(after.saturating_sub(before) as f64 / held as f64)
}

fn main() {
    if let Ok(spec) = std::env::var(CHILD) {
        keeper_child(&spec);
        return;
    }
    // `cargo bench` measures; as a test, one small smoke run of each case.
    let testing = !aether_testkit::bench::measuring();
    let rt = runtime();
    let server = rt
        .block_on(
            aether_testkit::NatsServer::builder()
                .jetstream(true)
                .start(),
        )
        .expect("nats-server");
    let url = server.url();
    if testing {
        rt.block_on(async {
            let run = aether(&url, 20, false, 100).await;
            assert_eq!(run.latencies.len(), 20);
            let run = aether_writers(&url, 2, DEFAULT_RATE).await;
            assert_eq!(run.latencies.len(), 2 * WRITERS);
            if let Some(run) = nats_kv(&url, 20).await {
                assert_eq!(run.latencies.len(), 20);
            }
            assert_eq!(raw_request(&url, 20).await.latencies.len(), 20);
            let per_byte = keeper_memory(&url, 30).await;
            assert!(per_byte.is_finite());
        });
        println!("keepers bench: smoke run ok");
        return;
    }
    if std::env::var("AETHER_BENCH_PROFILE").as_deref() == Ok("writers") {
        writers(&rt, &url);
        return;
    }
    if std::env::var("AETHER_BENCH_PROFILE").as_deref() == Ok("held_keys") {
        held_keys(&rt, &url);
        return;
    }
    let rounds = 5;
    let n = 2_000;
    let (mut ours, mut synced, mut kv, mut red, mut raw) = (
        Side::default(),
        Side::default(),
        Side::default(),
        Side::default(),
        Side::default(),
    );
    let (mut vs_kv, mut vs_redis, mut vs_raw) = (Vec::new(), Vec::new(), Vec::new());
    let mut have_redis = true;
    for round in 0..rounds {
        let (a, k) = if round % 2 == 0 {
            let a = rt.block_on(aether(&url, n, false, 0));
            (a, rt.block_on(nats_kv(&url, n)))
        } else {
            let k = rt.block_on(nats_kv(&url, n));
            (rt.block_on(aether(&url, n, false, 0)), k)
        };
        let r = if have_redis {
            rt.block_on(redis(n))
        } else {
            None
        };
        have_redis = r.is_some();
        let rate = |run: &Option<Run>| {
            run.as_ref()
                .map_or("left out".to_string(), |r| format!("{:.0}/s", r.rate))
        };
        println!(
            "round {round}: aether {:.0}/s, NATS KV {}, Redis {}",
            a.rate,
            rate(&k),
            rate(&r)
        );
        if let Some(k) = k {
            vs_kv.push(a.rate / k.rate);
            kv.add(k);
        }
        if let Some(r) = r {
            vs_redis.push(a.rate / r.rate);
            red.add(r);
        }
        let q = rt.block_on(raw_request(&url, n));
        vs_raw.push(a.rate / q.rate);
        raw.add(q);
        ours.add(a);
        synced.add(rt.block_on(aether(&url, n / 4, true, 0)));
    }
    println!(
        "\nsummary (medians of {rounds} rounds of {n} writes, one writer, one write at a time, {VALUE}-byte values, 2 worker threads)"
    );
    println!("| write, acknowledged by | p50 us | p99 us | writes/s | aether / it (min-max) |");
    println!("|---|---|---|---|---|");
    let row = |label: &str, side: &mut Side, ratio: Option<&mut Vec<f64>>| {
        if side.rate.is_empty() {
            println!("| {label} | - | - | - | left out |");
            return;
        }
        let (p50, _, _) = median(&mut side.p50);
        let (p99, _, _) = median(&mut side.p99);
        let (rate, _, _) = median(&mut side.rate);
        let ratio = ratio.map_or(String::new(), |r| {
            let (m, lo, hi) = median(r);
            format!("{m:.2}x ({lo:.2}-{hi:.2})")
        });
        println!("| {label} | {p50:.0} | {p99:.0} | {rate:.0} | {ratio} |");
    };
    row(
        "aether `set` + `flush_to(keepers(1))` (keeper's ledger in the OS)",
        &mut ours,
        None,
    );
    row(
        "aether, the keeper with `sync_writes` (fsync)",
        &mut synced,
        None,
    );
    row(
        "NATS KV `put` (JetStream file store)",
        &mut kv,
        Some(&mut vs_kv),
    );
    row("Redis `SET`", &mut red, Some(&mut vs_redis));
    row(
        "raw async-nats request, a responder on another connection answering (nothing stored)",
        &mut raw,
        Some(&mut vs_raw),
    );
    // What holding costs: 48 MiB of 32 KiB values.
    let n = 1_536;
    let mut ours = Vec::new();
    let mut theirs = Vec::new();
    for _ in 0..3 {
        ours.push(rt.block_on(keeper_memory(&url, n)));
        if let Some(r) = rt.block_on(redis_memory(n)) {
            theirs.push(r);
        }
    }
    let (m, lo, hi) = median(&mut ours);
    println!(
        "\nmemory per byte held ({n} values of {BIG} bytes in three maps, 3 rounds): a keeper \
         {m:.2} ({lo:.2}-{hi:.2})"
    );
    if theirs.is_empty() {
        println!("Redis: left out (none at {REDIS})");
    } else {
        let (r, rlo, rhi) = median(&mut theirs);
        println!(
            "Redis used_memory {r:.2} ({rlo:.2}-{rhi:.2}); keeper / Redis {:.2}x",
            m / r
        );
    }
}
