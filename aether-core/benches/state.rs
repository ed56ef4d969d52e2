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
//!
//! `cargo bench -p aether-core --bench state` (rounds alternate the sides;
//! medians and min-max); under `cargo test` each case runs once, small.

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
        anti_entropy_interval: Duration::from_millis(200),
        ..Default::default()
    }
}

async fn replica(aether: &Aether, node: &str, config: StateConfig) -> StateMap {
    StateMap::builder("bench")
        .node(node)
        .config(config)
        .open(aether)
        .await
        .expect("open")
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
    let aether = Aether::new(aether_core::AetherConfig {
        channel_buffer_size: n * 2 + 1024,
        ..Default::default()
    })
    .expect("config");
    let writer = replica(&aether, "w", config()).await;
    let a = replica(&aether, "a", config()).await;
    let b = replica(&aether, "b", config()).await;
    let value = Bytes::from(vec![0xAB; VALUE]);
    let start = Instant::now();
    for i in 0..n {
        writer
            .set(&format!("k.{i}"), value.clone())
            .await
            .expect("set");
    }
    wait_until(|| a.len() == n && b.len() == n).await;
    start.elapsed()
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
        tx.send((format!("k.{i}"), value.clone()))
            .expect("receivers");
    }
    for r in receivers {
        assert_eq!(r.await.expect("task"), n);
    }
    start.elapsed()
}

/// How long a late replica's `open` takes for a map of `n` keys.
async fn catch_up(n: usize) -> Duration {
    let aether = Aether::new(aether_core::AetherConfig {
        channel_buffer_size: n * 2 + 1024,
        ..Default::default()
    })
    .expect("config");
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
    let aether = Aether::new(aether_core::AetherConfig {
        channel_buffer_size: n * 2 + 1024,
        ..Default::default()
    })
    .expect("config");
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

fn summary(label: &str, xs: &mut [f64]) -> (f64, f64, f64) {
    xs.sort_by(f64::total_cmp);
    let _ = label;
    (xs[xs.len() / 2], xs[0], xs[xs.len() - 1])
}

fn main() {
    let rt = runtime();
    let testing = !std::env::args().any(|a| a == "--bench");
    if testing {
        rt.block_on(async {
            aether_replicate(200).await;
            broadcast_replicate(200).await;
            catch_up(200).await;
            repair(50).await;
        });
        println!("state bench: smoke run ok");
        return;
    }
    let rounds = 7;
    let n = 20_000;
    let (mut ours, mut theirs, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        let t = rt.block_on(broadcast_replicate(n)).as_secs_f64();
        let o = rt.block_on(aether_replicate(n)).as_secs_f64();
        theirs.push(n as f64 / t);
        ours.push(n as f64 / o);
        ratios.push(t / o);
    }
    let mut catch = Vec::new();
    let mut repaired = Vec::new();
    for _ in 0..rounds {
        catch.push(rt.block_on(catch_up(10_000)).as_secs_f64() * 1000.0);
        repaired.push(rt.block_on(repair(2_000)).as_secs_f64() * 1000.0);
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
    println!("\n| promise | median (min-max) |");
    println!("|---|---|");
    println!(
        "| late replica's open, 10,000 keys (ms; it returns holding them all) | {c:.1} ({cmin:.1}-{cmax:.1}) |"
    );
    println!(
        "| repair of a refused burst of 2,000 keys by anti-entropy, interval 200 ms (ms from the burst's end) | {p:.1} ({pmin:.1}-{pmax:.1}) |"
    );
}
