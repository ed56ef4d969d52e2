//! Replicated state at scale: N replicas of one map, each on its own
//! connection to one nats-server of the benchmark's own (as N devices or
//! service instances would be), all in this process, with the default
//! settings (heartbeat 1 s, presence timeout 3 s, anti-entropy 2 s).
//!
//! For 10, 100 and 1,000 replicas it measures:
//! - the idle CPU of the N connections alone, before any map opens (what
//!   the replicas cost is the difference);
//! - the time to open the N replicas, one after another (their connections
//!   made before);
//! - idle, over 10 s with no writes: the CPU of all replicas together and
//!   of the nats-server (percent of one core), and the messages the server
//!   sends out a second (its `/varz` `out_msgs`);
//! - 20 writes one at a time: the time until every replica has each, p50
//!   and max;
//! - a replica in a child process killed with SIGKILL: the time until every
//!   replica has seen it leave (`Presence::Left`), the slowest.
//!
//! `cargo bench -p aether-core --bench state_scale` (`-- 10 100` for some
//! sizes only); under `cargo test` it runs once with 10 replicas and short
//! windows.

use std::{
    io::{Read, Write},
    net::TcpStream,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use aether_core::{
    Aether,
    state::{Presence, StateMap},
};
use aether_testkit::{NatsServer, bench::cpu_of, free_port};
use futures_util::StreamExt;

/// The child process's replica, killed with SIGKILL.
const VICTIM: &str = "victim";

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// The server's `out_msgs` from its monitoring endpoint.
fn out_msgs(monitor: u16) -> u64 {
    let mut stream = TcpStream::connect(("127.0.0.1", monitor)).expect("monitor");
    stream
        .write_all(b"GET /varz HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .expect("ask");
    let mut body = String::new();
    stream.read_to_string(&mut body).expect("read");
    let at = body.find("\"out_msgs\":").expect("out_msgs") + "\"out_msgs\":".len();
    body[at..]
        .trim_start()
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .and_then(|n| n.parse().ok())
        .expect("a number")
}

fn percentile(values: &mut [f64], p: f64) -> f64 {
    values.sort_by(f64::total_cmp);
    let at = ((values.len() - 1) as f64 * p).round() as usize;
    values[at]
}

struct Row {
    replicas: usize,
    bare_cpu: f64,
    flaps: u64,
    open_s: f64,
    idle_cpu: f64,
    server_cpu: f64,
    out_per_s: f64,
    write_p50_ms: f64,
    write_max_ms: f64,
    killed_s: f64,
}

/// Waits until `done` (polled every 20 ms), at most `limit`.
async fn until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits (at most two minutes) for every task, each of which notes when
/// its replica saw what it waits for: the last of those times.
async fn last_of(
    waiting: Vec<tokio::task::JoinHandle<()>>,
    times: &Mutex<Vec<Instant>>,
    what: &str,
) -> Instant {
    for task in waiting {
        tokio::time::timeout(Duration::from_secs(120), task)
            .await
            .unwrap_or_else(|_| panic!("{what}: not within two minutes"))
            .expect("task");
    }
    *times
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .max()
        .expect("times")
}

async fn measure(n: usize, idle: Duration, writes: usize) -> Row {
    let monitor = free_port().expect("port");
    let server = NatsServer::builder()
        .extra_config(format!("http_port: {monitor}"))
        .extra_config("max_payload: 8MB")
        .start()
        .await
        .expect("nats-server");
    let url = server.url();
    let server_pid = server.pid().expect("pid").to_string();

    let mut aethers = Vec::with_capacity(n);
    for _ in 0..n {
        aethers.push(Aether::connect_url(&url).await.expect("connect"));
    }
    let me = std::process::id().to_string();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (cpu0, t0) = (cpu_of(&me), Instant::now());
    tokio::time::sleep(idle).await;
    let bare_cpu = (cpu_of(&me) - cpu0).as_secs_f64() / t0.elapsed().as_secs_f64() * 100.0;

    let started = Instant::now();
    let mut maps = Vec::with_capacity(n);
    for (i, aether) in aethers.iter().enumerate() {
        let map = StateMap::builder("fleet")
            .node(format!("r{i}"))
            .open(aether)
            .await
            .expect("open");
        maps.push(map);
    }
    let open_s = started.elapsed().as_secs_f64();
    until(
        "every replica knows every other",
        Duration::from_secs(120),
        || maps.iter().all(|m| m.stats().peers == n - 1),
    )
    .await;
    // Past the opening's own traffic.
    tokio::time::sleep(Duration::from_secs(3)).await;

    // Replicas seen leaving while every one is there: none should be.
    let flaps = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let watching: Vec<_> = maps
        .iter()
        .map(|map| {
            let mut presence = map.presence();
            let flaps = flaps.clone();
            tokio::spawn(async move {
                while let Some(event) = presence.next().await {
                    if matches!(event, Presence::Left(_)) {
                        flaps.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    let (cpu0, server0, out0, t0) = (
        cpu_of(&me),
        cpu_of(&server_pid),
        out_msgs(monitor),
        Instant::now(),
    );
    tokio::time::sleep(idle).await;
    let elapsed = t0.elapsed().as_secs_f64();
    let idle_cpu = (cpu_of(&me) - cpu0).as_secs_f64() / elapsed * 100.0;
    let server_cpu = (cpu_of(&server_pid) - server0).as_secs_f64() / elapsed * 100.0;
    let out_per_s = (out_msgs(monitor) - out0) as f64 / elapsed;
    for task in watching {
        task.abort();
    }
    let flaps = flaps.load(std::sync::atomic::Ordering::Relaxed);

    // One write at a time: the time until every replica has it.
    let mut reach = Vec::with_capacity(writes);
    for w in 0..writes {
        let key = format!("config.{w}");
        let arrived = Arc::new(Mutex::new(Vec::with_capacity(n)));
        let mut waiting = Vec::with_capacity(n);
        for map in &maps[1..] {
            let mut watch = map.watch(&key);
            let arrived = arrived.clone();
            waiting.push(tokio::spawn(async move {
                if watch.next().await.is_some() {
                    arrived
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(Instant::now());
                }
            }));
        }
        let sent = Instant::now();
        maps[0].set(&key, "on").await.expect("set");
        let last = last_of(waiting, &arrived, "every replica has the write").await;
        reach.push(last.duration_since(sent).as_secs_f64() * 1000.0);
    }
    let write_p50_ms = percentile(&mut reach, 0.5);
    let write_max_ms = percentile(&mut reach, 1.0);

    // A replica in another process, killed without a goodbye.
    let mut child = std::process::Command::new(std::env::current_exe().expect("exe"))
        .env("AETHER_SCALE_VICTIM", &url)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("child");
    let mut ready = [0u8; 6];
    child
        .stdout
        .as_mut()
        .expect("stdout")
        .read_exact(&mut ready)
        .expect("the child says ready");
    until(
        "every replica knows the victim",
        Duration::from_secs(120),
        || maps.iter().all(|m| m.stats().peers == n),
    )
    .await;
    let left = Arc::new(Mutex::new(Vec::with_capacity(n)));
    let mut waiting = Vec::with_capacity(n);
    for map in &maps {
        let mut presence = map.presence();
        let left = left.clone();
        waiting.push(tokio::spawn(async move {
            while let Some(event) = presence.next().await {
                if event == Presence::Left(VICTIM.into()) {
                    left.lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(Instant::now());
                    return;
                }
            }
        }));
    }
    let killed = Instant::now();
    child.kill().expect("SIGKILL");
    let _ = child.wait();
    let last = last_of(waiting, &left, "every replica sees the victim leave").await;
    let killed_s = last.duration_since(killed).as_secs_f64();

    for map in maps {
        map.close().await;
    }
    drop(aethers);
    Row {
        replicas: n,
        bare_cpu,
        flaps,
        open_s,
        idle_cpu,
        server_cpu,
        out_per_s,
        write_p50_ms,
        write_max_ms,
        killed_s,
    }
}

/// The child: one replica named [`VICTIM`], until it is killed.
fn victim(url: &str) {
    runtime().block_on(async {
        let aether = Aether::connect_url(url).await.expect("connect");
        let _map = StateMap::builder("fleet")
            .node(VICTIM)
            .open(&aether)
            .await
            .expect("open");
        println!("ready");
        std::io::stdout().flush().expect("flush");
        std::future::pending::<()>().await;
    });
}

fn main() {
    if let Ok(url) = std::env::var("AETHER_SCALE_VICTIM") {
        victim(&url);
        return;
    }
    // `cargo bench` measures; as a test, one small smoke run of each case.
    let testing = !aether_testkit::bench::measuring();
    let args: Vec<String> = std::env::args().collect();
    let rt = runtime();
    if testing {
        let row = rt.block_on(measure(10, Duration::from_secs(2), 3));
        assert!(row.killed_s < 30.0);
        assert_eq!(row.flaps, 0, "no live replica seen leaving at rest");
        println!("state_scale bench: smoke run ok");
        return;
    }
    let mut sizes: Vec<usize> = args.iter().filter_map(|a| a.parse().ok()).collect();
    if sizes.is_empty() {
        sizes = vec![10, 100, 1000];
    }
    println!(
        "| replicas | open all (s) | idle CPU, all replicas (% of a core) | of which their connections alone | nats-server CPU (%) | server messages out/s | one write reaches all, p50 / max (ms) | SIGKILL noticed by all (s) | live replicas seen leaving at rest |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    for n in sizes {
        let row = rt.block_on(measure(n, Duration::from_secs(10), 20));
        println!(
            "| {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.0} | {:.1} / {:.1} | {:.1} | {} |",
            row.replicas,
            row.open_s,
            row.idle_cpu,
            row.bare_cpu,
            row.server_cpu,
            row.out_per_s,
            row.write_p50_ms,
            row.write_max_ms,
            row.killed_s,
            row.flaps
        );
    }
}
