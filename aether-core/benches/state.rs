//! Replicated state on the embedded medium, beside a tokio broadcast of the
//! same changes, in the same run, and the times the protocol promises:
//!
//! - `replicate`: one writer sets N keys (128-byte values); the time until
//!   both other replicas hold all N, against a `tokio::sync::broadcast` of
//!   the N encoded changes to 2 receivers applying them to a `BTreeMap`
//!   (what replication costs over shipping the bytes).
//! - `catch_up`: how long `open` of a late replica takes for a map of N
//!   keys (it returns holding them all).
//! - `repair`: a replica that refused a burst (a per-writer rate limit, as a
//!   partition or shedding would lose it) converges by anti-entropy: the
//!   time from the burst's end until it holds every key, against the
//!   `anti_entropy_interval` that bounds it.
//! - `one_way_loss` (`AETHER_BENCH_PROFILE=mute`): five replicas over NATS
//!   with the default settings, each on its own connection; one replica's
//!   publishes are denied by the server for 5 s (its user's permissions
//!   reloaded: it hears, nobody hears it) while it writes; the time from
//!   the end of the loss until every other replica holds all its writes.
//!
//! `cargo bench -p aether-core --bench state` (rounds alternate the sides;
//! medians and min-max); under `cargo test` each case runs once, small.
//! `AETHER_BENCH_PROFILE=replicate_embedded` runs the embedded `replicate`
//! rounds alone; for callgrind, with `AETHER_BENCH_SIDE=aether` (no
//! broadcast), `AETHER_BENCH_ROUNDS=2` and `AETHER_BENCH_ANTI_ENTROPY_MS=1000000`.
//! `AETHER_BENCH_KEY_PREFIX` puts a prefix of its own before the rounds'
//! key numbers (`k.` by default): `sensors/kitchen/` for keys alike in their
//! first eight bytes.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use aether_core::{
    Aether,
    state::{StateConfig, StateMap},
};
use bytes::Bytes;
use tokio::{runtime::Runtime, sync::broadcast};

const VALUE: usize = 128;

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

fn config() -> StateConfig {
    StateConfig {
        // `AETHER_BENCH_ANTI_ENTROPY_MS`: longer under callgrind, where a
        // round takes seconds and repairs would be counted with it.
        anti_entropy_interval: Duration::from_millis(
            std::env::var("AETHER_BENCH_ANTI_ENTROPY_MS").map_or(200, |ms| {
                ms.parse().expect("AETHER_BENCH_ANTI_ENTROPY_MS: a number")
            }),
        ),
        // Past the rate measured, as for a writer this fast: at the default
        // (10,000 a second per writer) the rest would come by repair.
        max_writes_per_s: 5_000_000,
        ..Default::default()
    }
}

/// An embedded aether whose queues hold `n` changes with room to spare.
fn aether_for(n: usize) -> Aether {
    Aether::new(aether_core::AetherConfig {
        channel_buffer_size: n * 2 + 1024,
        ..Default::default()
    })
    .expect("config")
}

async fn replica(aether: &Aether, node: &str, config: StateConfig) -> StateMap {
    replica_of("bench", aether, node, config).await
}

async fn replica_of(map: &str, aether: &Aether, node: &str, config: StateConfig) -> StateMap {
    StateMap::builder(map)
        .node(node)
        .config(config)
        .open(aether)
        .await
        .expect("open")
}

/// The replication rounds' keys: `k.0`, `k.1`, ... or, with
/// `AETHER_BENCH_KEY_PREFIX`, that prefix before the number (keys alike in
/// their first bytes, as under a common path: `sensors/kitchen/`).
fn key(i: usize) -> String {
    static PREFIX: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        std::env::var("AETHER_BENCH_KEY_PREFIX").unwrap_or_else(|_| "k.".to_string())
    });
    format!("{}{i}", *PREFIX)
}

async fn wait_until(mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(Instant::now() < deadline, "never converged");
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
}

/// Sets `n` keys on one replica; the time until both others hold them.
async fn aether_replicate(n: usize) -> Duration {
    let aether = aether_for(n);
    replicate("bench", [&aether, &aether, &aether], n).await
}

/// One writer and two replicas of `map`, on the aethers given; the time
/// from the first write until both replicas hold all `n` keys.
async fn replicate(map: &str, aethers: [&Aether; 3], n: usize) -> Duration {
    let writer = replica_of(map, aethers[0], "w", config()).await;
    let a = replica_of(map, aethers[1], "a", config()).await;
    let b = replica_of(map, aethers[2], "b", config()).await;
    let value = Bytes::from(vec![0xAB; VALUE]);
    let start = Instant::now();
    for i in 0..n {
        writer.set(&key(i), value.clone()).await.expect("set");
    }
    wait_until(|| a.len() == n && b.len() == n).await;
    let took = start.elapsed();
    // Every change came live: none refused and brought by repair.
    assert_eq!(a.stats().repaired + b.stats().repaired, 0);
    for map in [writer, a, b] {
        map.close().await;
    }
    took
}

/// The same changes as bytes through a broadcast to 2 receivers, each
/// applying them to a map.
async fn broadcast_replicate(n: usize) -> Duration {
    let (tx, _) = broadcast::channel::<(String, Bytes)>(n + 16);
    let receivers: Vec<_> = (0..2)
        .map(|_| {
            let mut rx = tx.subscribe();
            tokio::spawn(async move {
                let mut map = BTreeMap::new();
                while map.len() < n {
                    let (k, v) = rx.recv().await.expect("no lag");
                    map.insert(k, v);
                }
                map.len()
            })
        })
        .collect();
    let value = Bytes::from(vec![0xAB; VALUE]);
    let start = Instant::now();
    for i in 0..n {
        tx.send((key(i), value.clone())).expect("receivers");
    }
    for r in receivers {
        assert_eq!(r.await.expect("task"), n);
    }
    start.elapsed()
}

/// Over NATS: one writer and two replicas, each its own connection; the
/// time until both replicas hold all `n` keys.
async fn nats_aether_replicate(aethers: &[Aether], map: &str, n: usize) -> Duration {
    replicate(map, [&aethers[0], &aethers[1], &aethers[2]], n).await
}

/// Raw async-nats: the same pairs published one per message (the key, a
/// newline, the value) to two subscribers on their own connections, each
/// putting them in a `BTreeMap`.
async fn nats_raw_replicate(url: &str, subject: &str, n: usize) -> Duration {
    use futures_util::StreamExt;
    let publisher = async_nats::connect(url).await.expect("connect");
    let mut receivers = Vec::new();
    for _ in 0..2 {
        let client = async_nats::connect(url).await.expect("connect");
        let mut subscriber = client
            .subscribe(subject.to_string())
            .await
            .expect("subscribe");
        // The server has taken the subscription once a message this
        // connection sent after it comes back (a flush only writes it).
        let inbox = client.new_inbox();
        let mut echo = client.subscribe(inbox.clone()).await.expect("subscribe");
        client.publish(inbox, Bytes::new()).await.expect("publish");
        echo.next().await.expect("echo");
        receivers.push(tokio::spawn(async move {
            let _client = client;
            let mut map = BTreeMap::new();
            while map.len() < n {
                let message = subscriber.next().await.expect("open");
                let split = message
                    .payload
                    .iter()
                    .position(|b| *b == b'\n')
                    .expect("key");
                let key = String::from_utf8(message.payload[..split].to_vec()).expect("utf-8");
                map.insert(key, message.payload.slice(split + 1..));
            }
            map.len()
        }));
    }
    let value = vec![0xAB; VALUE];
    let start = Instant::now();
    for i in 0..n {
        let mut body = format!("{}\n", key(i)).into_bytes();
        body.extend_from_slice(&value);
        publisher
            .publish(subject.to_string(), body.into())
            .await
            .expect("publish");
    }
    publisher.flush().await.expect("flush");
    for r in receivers {
        assert_eq!(r.await.expect("task"), n);
    }
    start.elapsed()
}

/// How long a late replica's `open` takes for a map of `n` keys.
async fn catch_up(n: usize) -> Duration {
    let aether = aether_for(n);
    let writer = replica(&aether, "w", config()).await;
    let value = Bytes::from(vec![0xAB; VALUE]);
    for i in 0..n {
        writer
            .set(&format!("k.{i}"), value.clone())
            .await
            .expect("set");
    }
    let start = Instant::now();
    let late = replica(&aether, "late", config()).await;
    let took = start.elapsed();
    assert_eq!(late.len(), n, "open returned before it held every key");
    took
}

/// The time from the end of a burst a replica refused until it holds every
/// key, by anti-entropy alone.
async fn repair(n: usize) -> Duration {
    let aether = aether_for(n);
    let writer = replica(&aether, "w", config()).await;
    let starved = replica(
        &aether,
        "starved",
        StateConfig {
            max_writes_per_s: 1,
            ..config()
        },
    )
    .await;
    let value = Bytes::from(vec![0xAB; VALUE]);
    for i in 0..n {
        writer
            .set(&format!("k.{i}"), value.clone())
            .await
            .expect("set");
    }
    let end = Instant::now();
    wait_until(|| starved.len() == n).await;
    end.elapsed()
}

/// 100 writes on one of 5 replicas: the time until all 5 hold them.
async fn converge_five(aether_of: impl Fn() -> Aether, n: usize) -> Duration {
    // A map of its own each round: nothing left from another round.
    static ROUND: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let map = format!(
        "five{}",
        ROUND.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    let mut replicas = Vec::new();
    for i in 0..5 {
        replicas.push(replica_of(&map, &aether_of(), &format!("r{i}"), config()).await);
    }
    let value = Bytes::from(vec![0xAB; VALUE]);
    let start = Instant::now();
    for i in 0..n {
        replicas[0]
            .set(&format!("c.{i}"), value.clone())
            .await
            .expect("set");
    }
    wait_until(|| replicas.iter().all(|r| r.len() == n)).await;
    start.elapsed()
}

/// The five replicas' server: two users, `open` and `mute`, whose publish
/// permissions [`Muted::set`] changes with a reload.
struct Muted {
    server: aether_testkit::NatsServer,
}

const ALLOWED: &str = "permissions: { publish: { allow: [\">\"] } }";
const DENIED: &str = "permissions: { publish: { deny: [\">\"] } }";

impl Muted {
    async fn start() -> Muted {
        let user = |name: &str| aether_testkit::User {
            user: name.into(),
            password: format!("{name}-password"),
            extra: ALLOWED.into(),
        };
        let server = aether_testkit::NatsServer::builder()
            .auth(aether_testkit::Auth::Users(vec![
                user("open"),
                user("mute"),
            ]))
            .start()
            .await
            .expect("nats-server");
        Muted { server }
    }

    async fn connect(&self, user: &str) -> Aether {
        Aether::connect(aether_core::AetherConfig {
            nats: aether_core::config::NatsConfig {
                urls: vec![self.server.url()],
                auth: aether_core::config::NatsAuth {
                    user: Some(user.into()),
                    password: Some(aether_core::Secret::new(format!("{user}-password"))),
                    ..Default::default()
                },
                ..Default::default()
            },
            ..Default::default()
        })
        .await
        .expect("connect")
    }

    /// Denies (or allows again) every publish of the user `mute`: the
    /// server's settings rewritten, then reloaded (SIGHUP).
    async fn set(&self, muted: bool) {
        let path = self.server.config_path();
        let text = std::fs::read_to_string(path).expect("the server's settings");
        let line = |t: &str| format!("user: \"mute\", password: \"mute-password\", {t}");
        let (from, to) = if muted {
            (line(ALLOWED), line(DENIED))
        } else {
            (line(DENIED), line(ALLOWED))
        };
        assert!(text.contains(&from), "the mute user's line in {text}");
        std::fs::write(path, text.replace(&from, &to)).expect("rewrite");
        let pid = self.server.pid().expect("running");
        let status = std::process::Command::new("kill")
            .args(["-HUP", &pid.to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
        // The reload is the server's: a moment.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One round of [`Muted`]: five replicas of a map of their own, the mute
/// one writing a key every 100 ms while its publishes are denied for
/// `loss`; the time from the end of the loss until the four others hold
/// them all.
async fn one_way_loss(muted: &Muted, round: usize, loss: Duration) -> Duration {
    let map = format!("mute{round}");
    let mut others = Vec::new();
    for i in 0..4 {
        let aether = muted.connect("open").await;
        others.push(replica_of(&map, &aether, &format!("r{i}"), StateConfig::default()).await);
    }
    let mute_aether = muted.connect("mute").await;
    let mute = replica_of(&map, &mute_aether, "mute", StateConfig::default()).await;
    wait_until(|| others.iter().all(|o| o.peers().len() == 4) && mute.peers().len() == 4).await;
    muted.set(true).await;
    let mut written = 0;
    let started = Instant::now();
    while started.elapsed() < loss {
        mute.set(&format!("lost.{written}"), vec![0xAB; VALUE])
            .await
            .expect("a local write");
        written += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let lost = others.iter().map(|o| o.len()).max().unwrap_or(0);
    assert_eq!(lost, 0, "a write went out while the replica was muted");
    muted.set(false).await;
    let end = Instant::now();
    wait_until(|| others.iter().all(|o| o.len() == written)).await;
    let took = end.elapsed();
    // Zero loss: every write, as written, everywhere.
    for other in &others {
        for i in 0..written {
            assert_eq!(
                other.get(&format!("lost.{i}")).as_deref(),
                Some(&[0xAB; VALUE][..])
            );
        }
    }
    for other in others {
        other.close().await;
    }
    mute.close().await;
    took
}

/// Write on one replica to the watch of another: one-way latencies (us),
/// `n` writes spaced apart so each is alone on the bus.
async fn write_to_watch(x: &Aether, y: &Aether, n: usize) -> Vec<f64> {
    use futures_util::StreamExt;
    let writer = replica(x, "writer", config()).await;
    let reader = replica(y, "reader", config()).await;
    let mut watch = reader.watch("lat.*");
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let start = Instant::now();
        writer
            .set(&format!("lat.{}", i % 100), vec![0xAB; VALUE])
            .await
            .expect("set");
        let change = tokio::time::timeout(Duration::from_secs(5), watch.next())
            .await
            .expect("in time")
            .expect("open");
        assert!(change.key.starts_with("lat."));
        out.push(start.elapsed().as_secs_f64() * 1e6);
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
    out
}

/// With a state directory: `n` writes (writes/s, each handed to the
/// operating system before `set` returns), then the time a replica takes to
/// open on that directory alone (its ledger: snapshot and records).
async fn ledger(n: usize) -> (f64, Duration) {
    let run = ledger_with(n, 1, 10_000).await;
    (run.rate, run.closed)
}

/// What [`ledger_with`] measured.
struct Ledgered {
    /// Writes a second.
    rate: f64,
    /// The open after the map was closed.
    closed: Duration,
    /// The open of the directory as the last write left it (copied before
    /// the close): what a restart after a crash reads.
    crashed: Duration,
}

/// [`ledger`] over `keys` keys each written `times` times, with
/// `snapshot_every` (0: no snapshot, every record read).
async fn ledger_with(keys: usize, times: usize, snapshot_every: u64) -> Ledgered {
    // Up to a million keys: past the default caps.
    let config = || StateConfig {
        snapshot_every,
        max_keys: keys.max(100_000),
        max_map_bytes: 1 << 30,
        ..Default::default()
    };
    let dir = tempfile::tempdir().expect("dir");
    let crash = tempfile::tempdir().expect("dir");
    let aether = aether_for(0);
    let value = Bytes::from(vec![0xAB; VALUE]);
    let rate = {
        let map = StateMap::builder("bench")
            .node("d")
            .config(config())
            .state_dir(dir.path())
            .open(&aether)
            .await
            .expect("open");
        let start = Instant::now();
        for _ in 0..times {
            for i in 0..keys {
                map.set(&format!("k.{i}"), value.clone())
                    .await
                    .expect("set");
            }
        }
        let rate = (keys * times) as f64 / start.elapsed().as_secs_f64();
        // Each write is in the operating system once `set` returns: the
        // files now are what a SIGKILL would leave.
        for file in std::fs::read_dir(dir.path()).expect("read dir").flatten() {
            if file.file_type().is_ok_and(|t| t.is_file()) {
                std::fs::copy(file.path(), crash.path().join(file.file_name())).expect("copy");
            }
        }
        map.close().await;
        rate
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let boot = |dir: std::path::PathBuf| {
        let config = config();
        async move {
            let alone = Aether::default();
            let start = Instant::now();
            let map = StateMap::builder("bench")
                .node("d")
                .config(config)
                .state_dir(dir)
                .open(&alone)
                .await
                .expect("reopen");
            let boot = start.elapsed();
            assert_eq!(map.len(), keys);
            map.close().await;
            boot
        }
    };
    let closed = boot(dir.path().to_path_buf()).await;
    let crashed = boot(crash.path().to_path_buf()).await;
    Ledgered {
        rate,
        closed,
        crashed,
    }
}

/// With `sync_writes`: `writers` tasks write `each` keys at once, every
/// `set` returning once its record is fsynced; writes/s.
async fn synced_writes(writers: usize, each: usize) -> f64 {
    let dir = tempfile::tempdir().expect("dir");
    let aether = aether_for(0);
    let map = StateMap::builder("bench")
        .node("d")
        .config(StateConfig {
            sync_writes: true,
            max_keys: (writers * each).max(100_000),
            ..Default::default()
        })
        .state_dir(dir.path())
        .open(&aether)
        .await
        .expect("open");
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..writers {
        let map = map.clone();
        tasks.spawn(async move {
            let value = Bytes::from(vec![0xAB; VALUE]);
            for i in 0..each {
                map.set(&format!("k.{w}.{i}"), value.clone())
                    .await
                    .expect("set");
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("writer");
    }
    let rate = (writers * each) as f64 / start.elapsed().as_secs_f64();
    assert_eq!(map.stats().ledger_failed, 0);
    map.close().await;
    rate
}

/// A boot row: from snapshots after a close and after a crash, beside
/// the full replay's `records`.
fn boot_row(label: &str, snapshots: &Ledgered, records: Duration) {
    println!(
        "| open of {label}: from snapshots after a close / after a crash vs from every record (ms, one run each) | {:.0} / {:.0} vs {:.0}: {:.1}x / {:.1}x |",
        ms(snapshots.closed),
        ms(snapshots.crashed),
        ms(records),
        records.as_secs_f64() / snapshots.closed.as_secs_f64(),
        records.as_secs_f64() / snapshots.crashed.as_secs_f64()
    );
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn percentile(xs: &mut [f64], p: f64) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[((xs.len() - 1) as f64 * p) as usize]
}

fn summary(label: &str, xs: &mut [f64]) -> (f64, f64, f64) {
    xs.sort_by(f64::total_cmp);
    let _ = label;
    (xs[xs.len() / 2], xs[0], xs[xs.len() - 1])
}

fn main() {
    // `cargo bench` measures; as a test, one small smoke run of each case.
    let testing = !aether_testkit::bench::measuring();
    let rt = runtime();
    // `AETHER_BENCH_PROFILE=mute`: repair after a one-way loss, alone.
    if !testing && std::env::var("AETHER_BENCH_PROFILE").as_deref() == Ok("mute") {
        let muted = rt.block_on(Muted::start());
        let mut took = Vec::new();
        for round in 0..7 {
            let t = rt
                .block_on(one_way_loss(&muted, round, Duration::from_secs(5)))
                .as_secs_f64();
            println!(
                "one-way loss, round {}: every write of the muted replica at the four others {t:.2} s after the loss",
                round + 1
            );
            took.push(t);
        }
        let (m, min, max) = summary("one-way loss repair (s)", &mut took);
        println!(
            "one-way loss of 5 s, a map of five: repaired {m:.2} s after it ({min:.2}-{max:.2}), zero loss"
        );
        return;
    }
    // `AETHER_BENCH_PROFILE=boot`: the boot rows alone.
    if !testing && std::env::var("AETHER_BENCH_PROFILE").as_deref() == Ok("boot") {
        for (label, keys, times) in [
            ("1,000,000 keys", 1_000_000, 1),
            ("100,000 keys each written 10 times", 100_000, 10),
        ] {
            let snapshots = rt.block_on(ledger_with(keys, times, 10_000));
            let records = rt.block_on(ledger_with(keys, times, 0)).closed;
            boot_row(label, &snapshots, records);
        }
        return;
    }
    if testing {
        // Each step bounded: a smoke run that stops says where.
        async fn step<T>(name: &str, run: impl std::future::Future<Output = T>) -> T {
            match tokio::time::timeout(Duration::from_secs(60), run).await {
                Ok(out) => out,
                Err(_) => panic!("the smoke run's step {name} took over 60 s"),
            }
        }
        rt.block_on(async {
            step("aether_replicate", aether_replicate(200)).await;
            step("broadcast_replicate", broadcast_replicate(200)).await;
            step("catch_up", catch_up(200)).await;
            step("repair", repair(50)).await;
            let shared = Aether::default();
            step("converge_five", converge_five(|| shared.clone(), 20)).await;
            step("write_to_watch", write_to_watch(&shared, &shared, 10)).await;
            step("ledger", ledger(100)).await;
            step("ledger_with", ledger_with(100, 2, 0)).await;
            step("synced_writes", synced_writes(4, 10)).await;
            let muted = Muted::start().await;
            step(
                "one_way_loss",
                one_way_loss(&muted, 0, Duration::from_millis(500)),
            )
            .await;
            let server = aether_testkit::NatsServer::start()
                .await
                .expect("nats-server");
            let mut aethers = Vec::new();
            for _ in 0..3 {
                aethers.push(Aether::connect_url(&server.url()).await.expect("connect"));
            }
            step(
                "nats_aether_replicate",
                nats_aether_replicate(&aethers, "smoke", 200),
            )
            .await;
            step(
                "nats_raw_replicate",
                nats_raw_replicate(&server.url(), "raw.smoke", 200),
            )
            .await;
        });
        println!("state bench: smoke run ok");
        return;
    }
    let rounds = 7;
    let n = 20_000;
    let (mut ours, mut theirs, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    // `AETHER_BENCH_PROFILE=replicate_embedded`: the embedded replication
    // rounds alone, `AETHER_BENCH_SIDE=aether` without the broadcast (one
    // side to count under callgrind), `AETHER_BENCH_ROUNDS` of them.
    let embedded_only =
        std::env::var("AETHER_BENCH_PROFILE").as_deref() == Ok("replicate_embedded");
    let aether_only = std::env::var("AETHER_BENCH_SIDE").as_deref() == Ok("aether");
    let rounds = match std::env::var("AETHER_BENCH_ROUNDS") {
        Ok(r) if embedded_only => r.parse().expect("AETHER_BENCH_ROUNDS: a number"),
        _ => rounds,
    };
    for _ in 0..rounds {
        let t = if embedded_only && aether_only {
            f64::NAN
        } else {
            rt.block_on(broadcast_replicate(n)).as_secs_f64()
        };
        let o = rt.block_on(aether_replicate(n)).as_secs_f64();
        theirs.push(n as f64 / t);
        ours.push(n as f64 / o);
        ratios.push(t / o);
    }
    if embedded_only {
        let (o, _, _) = summary("aether", &mut ours);
        if aether_only {
            println!("replicate {n} keys, embedded: aether {o:.0}/s");
        } else {
            let (t, _, _) = summary("broadcast", &mut theirs);
            let (r, rmin, rmax) = summary("ratio", &mut ratios);
            println!(
                "replicate {n} keys, embedded: broadcast {t:.0}/s, aether {o:.0}/s, {r:.2}x ({rmin:.2}-{rmax:.2})"
            );
        }
        return;
    }
    // Over NATS (own nats-server), beside raw async-nats.
    let server = rt
        .block_on(aether_testkit::NatsServer::start())
        .expect("nats-server");
    let url = server.url();
    let connect = || {
        let url = url.clone();
        rt.block_on(async move { Aether::connect_url(&url).await.expect("connect") })
    };
    let nats_aethers: Vec<Aether> = (0..5).map(|_| connect()).collect();
    let (mut nats_ours, mut nats_raw, mut nats_ratios) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        let t = rt
            .block_on(nats_raw_replicate(&url, &format!("raw.{round}"), n))
            .as_secs_f64();
        let o = rt
            .block_on(nats_aether_replicate(
                &nats_aethers,
                &format!("bench{round}"),
                n,
            ))
            .as_secs_f64();
        nats_raw.push(n as f64 / t);
        nats_ours.push(n as f64 / o);
        nats_ratios.push(t / o);
    }
    let (no, _, _) = summary("aether over nats", &mut nats_ours);
    let (nt, _, _) = summary("raw nats", &mut nats_raw);
    let (nr, nrmin, nrmax) = summary("ratio nats", &mut nats_ratios);
    // `AETHER_BENCH_PROFILE=replicate`: the replication rounds alone.
    if std::env::var("AETHER_BENCH_PROFILE").as_deref() == Ok("replicate") {
        let (o, _, _) = summary("aether", &mut ours);
        let (t, _, _) = summary("broadcast", &mut theirs);
        let (r, rmin, rmax) = summary("ratio", &mut ratios);
        println!(
            "replicate {n} keys, embedded: broadcast {t:.0}/s, aether {o:.0}/s, {r:.2}x ({rmin:.2}-{rmax:.2})"
        );
        println!(
            "replicate {n} keys, NATS: raw {nt:.0}/s, aether {no:.0}/s, {nr:.2}x ({nrmin:.2}-{nrmax:.2})"
        );
        return;
    }
    let mut catch = Vec::new();
    let mut repaired = Vec::new();
    for _ in 0..rounds {
        catch.push(rt.block_on(catch_up(10_000)).as_secs_f64() * 1000.0);
        repaired.push(rt.block_on(repair(2_000)).as_secs_f64() * 1000.0);
    }
    // 100 writes across 5 replicas, and write-to-watch latency: embedded,
    // then over NATS (own nats-server, each replica its own connection).
    let shared = Aether::default();
    let mut five_embedded: Vec<f64> = (0..rounds)
        .map(|_| {
            rt.block_on(converge_five(|| shared.clone(), 100))
                .as_secs_f64()
                * 1000.0
        })
        .collect();
    let mut watch_embedded = rt.block_on(write_to_watch(&shared, &shared, 2000));
    let mut five_nats = Vec::new();
    for _ in 0..rounds {
        let next = std::sync::atomic::AtomicUsize::new(0);
        let pick =
            || nats_aethers[next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 5].clone();
        five_nats.push(rt.block_on(converge_five(pick, 100)).as_secs_f64() * 1000.0);
    }
    let mut watch_nats = rt.block_on(write_to_watch(&nats_aethers[0], &nats_aethers[1], 2000));
    let mut ledger_rates = Vec::new();
    let mut boots = Vec::new();
    for _ in 0..3 {
        let (rate, boot) = rt.block_on(ledger(200_000));
        ledger_rates.push(rate);
        boots.push(boot.as_secs_f64() * 1000.0);
    }

    // Boot at 1,000,000 keys: from snapshots, and from every record. Then
    // 100,000 keys written 10 times each (a history ten times the map).
    let from_snapshot = rt.block_on(ledger_with(1_000_000, 1, 10_000));
    let from_records = rt.block_on(ledger_with(1_000_000, 1, 0)).closed;
    let rewritten_snapshot = rt.block_on(ledger_with(100_000, 10, 10_000));
    let rewritten_records = rt.block_on(ledger_with(100_000, 10, 0)).closed;
    // Writes that return once fsynced: one writer (an fsync per write),
    // then 256 writers sharing fsyncs.
    let mut one_synced = Vec::new();
    let mut many_synced = Vec::new();
    for _ in 0..3 {
        one_synced.push(rt.block_on(synced_writes(1, 500)));
        many_synced.push(rt.block_on(synced_writes(256, 400)));
    }

    let (o, _, _) = summary("aether", &mut ours);
    let (t, _, _) = summary("broadcast", &mut theirs);
    let (r, rmin, rmax) = summary("ratio", &mut ratios);
    let (c, cmin, cmax) = summary("catch-up", &mut catch);
    let (p, pmin, pmax) = summary("repair", &mut repaired);
    println!(
        "\nsummary (medians of {rounds} rounds, the sides alternating; 128-byte values, 2 worker threads, embedded medium)"
    );
    println!("| scenario | tokio broadcast | aether state | ratio (min-max over rounds) |");
    println!("|---|---|---|---|");
    println!(
        "| 1 writer -> 2 replicas, {n} keys (changes/s until both hold all) | {t:.0} | {o:.0} | {r:.2}x ({rmin:.2}-{rmax:.2}) |"
    );
    println!(
        "| the same over NATS, beside raw async-nats one publish per pair | {nt:.0} | {no:.0} | {nr:.2}x ({nrmin:.2}-{nrmax:.2}) |"
    );
    println!("\n| promise | median (min-max) |");
    println!("|---|---|");
    println!(
        "| late replica's open, 10,000 keys (ms; it returns holding them all) | {c:.1} ({cmin:.1}-{cmax:.1}) |"
    );
    println!(
        "| repair of a refused burst of 2,000 keys by anti-entropy, interval 200 ms (ms from the burst's end) | {p:.1} ({pmin:.1}-{pmax:.1}) |"
    );
    let (e5, e5min, e5max) = summary("five", &mut five_embedded);
    let (n5, n5min, n5max) = summary("five nats", &mut five_nats);
    println!(
        "| 100 writes across 5 replicas, embedded (ms until all hold them) | {e5:.2} ({e5min:.2}-{e5max:.2}) |"
    );
    println!(
        "| 100 writes across 5 replicas, NATS, each its own connection (ms) | {n5:.2} ({n5min:.2}-{n5max:.2}) |"
    );
    println!(
        "| write to another replica's watch, embedded, p50 / p99 (us) | {:.1} / {:.1} |",
        percentile(&mut watch_embedded, 0.5),
        percentile(&mut watch_embedded, 0.99)
    );
    println!(
        "| write to another replica's watch, NATS, p50 / p99 (us) | {:.1} / {:.1} |",
        percentile(&mut watch_nats, 0.5),
        percentile(&mut watch_nats, 0.99)
    );
    let (lr, lrmin, lrmax) = summary("ledger", &mut ledger_rates);
    let (b, bmin, bmax) = summary("boot", &mut boots);
    println!(
        "| writes with a state directory (writes/s, each in the OS before set returns) | {lr:.0} ({lrmin:.0}-{lrmax:.0}) |"
    );
    println!(
        "| open of 200,000 keys from the ledger alone (ms; snapshot every 10,000 records) | {b:.1} ({bmin:.1}-{bmax:.1}), {:.0} keys/s |",
        200_000.0 / (b / 1000.0)
    );
    for (label, snapshots, records) in [
        ("1,000,000 keys", from_snapshot, from_records),
        (
            "100,000 keys each written 10 times",
            rewritten_snapshot,
            rewritten_records,
        ),
    ] {
        boot_row(label, &snapshots, records);
    }
    let (s1, s1min, s1max) = summary("one synced", &mut one_synced);
    let (sm, smmin, smmax) = summary("many synced", &mut many_synced);
    println!(
        "| sync_writes, 1 writer: an fsync per write (writes/s) | {s1:.0} ({s1min:.0}-{s1max:.0}) |"
    );
    println!(
        "| sync_writes, 256 writers sharing fsyncs (writes/s) | {sm:.0} ({smmin:.0}-{smmax:.0}) |"
    );
}
