//! Replicated state with real processes over NATS: three replicas in three
//! processes, one cut off behind a proxy while both sides write, healed:
//! all converge within the documented bound (a reconnect, then one
//! anti-entropy interval). A replica with a state directory SIGKILLed
//! mid-write recovers every write whose `set` returned from its ledger
//! alone, then converges with its peers. Bounded in time.
//!
//! The replicas are this test binary run again: the test
//! `state_replica_process` is that program, and it does nothing unless
//! `AETHER_STATE_REPLICA` is set.

#![cfg(feature = "nats")]

mod durable_support;

use std::{ffi::OsString, path::Path, time::Duration};

use aether_core::{
    Aether, AetherConfig,
    config::NatsConfig,
    state::{StateConfig, StateMap},
};
use aether_testkit::{NatsServer, TcpProxy};
use durable_support::Process;
use tokio::time::{Instant, sleep, timeout};

const LIMIT: Duration = Duration::from_secs(90);
/// Anti-entropy interval of these replicas: the bound after a reconnect.
const ANTI_ENTROPY: Duration = Duration::from_millis(300);

fn config() -> StateConfig {
    StateConfig {
        heartbeat_interval: Duration::from_millis(100),
        presence_timeout: Duration::from_millis(1000),
        anti_entropy_interval: ANTI_ENTROPY,
        ready_timeout: Duration::from_secs(2),
        ..Default::default()
    }
}

fn over(url: &str) -> AetherConfig {
    AetherConfig {
        nats: NatsConfig {
            urls: vec![url.into()],
            ping_interval: Duration::from_millis(200),
            reconnect_delay_max: Duration::from_millis(100),
            retry_on_initial_connect: true,
            ..Default::default()
        },
        ..Default::default()
    }
}

/// A fingerprint of a map's contents, the same in every process: FNV-1a
/// over the sorted entries.
fn fingerprint(map: &StateMap) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for (key, value) in map.entries() {
        for byte in key
            .bytes()
            .chain([0])
            .chain(value.iter().copied())
            .chain([0])
        {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    hash
}

/// The replica program: opens `node`'s replica of map `lab` on `URL` (with
/// `DIR` as its state directory if set), writes `COUNT` keys `<node>.<i>`
/// `EVERY_MS` apart printing `wrote i` after each `set` returned, then
/// prints `state <len> <fingerprint>` every 50 ms until killed. With
/// `CHECK` = n it first prints how many of `<node>.0` to `<node>.<n>` it
/// lacks right after `open`.
#[test]
fn state_replica_process() {
    if std::env::var_os("AETHER_STATE_REPLICA").is_none() {
        return;
    }
    let var = |name: &str| std::env::var(name).unwrap_or_default();
    let url = var("URL");
    let node = var("NODE");
    let count: u64 = var("COUNT").parse().unwrap_or(0);
    let every = Duration::from_millis(var("EVERY_MS").parse().unwrap_or(10));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        if let Ok(writers) = var("SYNC_WRITERS").parse::<u64>() {
            return synced_writers(writers).await;
        }
        let aether = Aether::connect(over(&url)).await.unwrap();
        let mut builder = StateMap::builder("lab").node(&node).config(config());
        if let Some(dir) = std::env::var_os("DIR") {
            builder = builder.state_dir(dir);
        }
        let map = builder.open(&aether).await.unwrap();
        if std::env::var_os("CLOSE_AND_EXIT").is_some() {
            // Seen by its peers, then gone: close, and exit at once.
            sleep(Duration::from_millis(500)).await;
            println!("\nclosing");
            map.close().await;
            std::process::exit(0);
        }
        if let Ok(upto) = var("CHECK").parse::<u64>() {
            let missing = (0..=upto)
                .filter(|i| map.get(&format!("{node}.{i}")).is_none())
                .count();
            println!("\nmissing {missing}");
        }
        for i in 0..count {
            // Kept here if it cannot be sent now; anti-entropy sends it.
            match map.set(&format!("{node}.{i}"), format!("{i}")).await {
                Ok(_) => {}
                Err(e) if e.kind() == aether_core::state::StateErrorKind::NotSent => {}
                Err(e) => panic!("{e}"),
            }
            println!("\nwrote {i}");
            sleep(every).await;
        }
        loop {
            println!("\nstate {} {}", map.len(), fingerprint(&map));
            sleep(Duration::from_millis(50)).await;
        }
    });
}

/// `SYNC_WRITERS` = n: n writers write keys `w<writer>.<i>` to map `lab`
/// in `DIR` with `sync_writes` (embedded), each printing `emitted <writer *
/// 1,000,000 + i>` once its `set` returned, until killed.
async fn synced_writers(writers: u64) {
    let aether = Aether::default();
    let map = StateMap::builder("lab")
        .node("writer")
        .config(StateConfig {
            sync_writes: true,
            ..config()
        })
        .state_dir(std::env::var_os("DIR").expect("DIR"))
        .open(&aether)
        .await
        .unwrap();
    println!("\nwriting");
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..writers {
        let map = map.clone();
        tasks.spawn(async move {
            for i in 0.. {
                map.set(&format!("w{w}.{i}"), format!("{i}")).await.unwrap();
                println!("\nemitted {}", w * 1_000_000 + i);
            }
        });
    }
    while tasks.join_next().await.is_some() {}
}

fn start(
    url: &str,
    node: &str,
    count: u64,
    every_ms: u64,
    dir: Option<&Path>,
    check: Option<u64>,
) -> Process {
    let mut env: Vec<(&str, OsString)> = vec![
        ("AETHER_STATE_REPLICA", "1".into()),
        ("URL", url.into()),
        ("NODE", node.into()),
        ("COUNT", count.to_string().into()),
        ("EVERY_MS", every_ms.to_string().into()),
    ];
    if let Some(dir) = dir {
        env.push(("DIR", dir.into()));
    }
    if let Some(check) = check {
        env.push(("CHECK", check.to_string().into()));
    }
    Process::start("state_replica_process", &env)
}

/// Waits until every process reports `state <len> <fingerprint>` equal to
/// `want`.
async fn until_converged(processes: &mut [&mut Process], want: &str, within: Duration) {
    timeout(within, async {
        for process in processes.iter_mut() {
            process.wait_for(want).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("not converged on {want:?} within {within:?}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_cut_off_while_both_sides_write_converges_after_the_heal() {
    timeout(LIMIT, async {
        let server = NatsServer::start().await.unwrap();
        let proxy = TcpProxy::start(server.addr()).await.unwrap();
        let here = Aether::connect(over(&server.url())).await.unwrap();
        let p = StateMap::builder("lab")
            .node("p")
            .config(config())
            .open(&here)
            .await
            .unwrap();
        let mut a = start(&server.url(), "a", 100, 20, None, None);
        let mut b = start(&proxy.url(), "b", 100, 20, None, None);
        a.wait_for("wrote 10").await;
        b.wait_for("wrote 10").await;

        // b is cut off; both sides go on writing.
        proxy.refuse(true);
        proxy.cut();
        for i in 0..50 {
            p.set(&format!("p.{i}"), format!("{i}")).await.unwrap();
            sleep(Duration::from_millis(10)).await;
        }
        a.wait_for("wrote 99").await;
        b.wait_for("wrote 99").await;
        let healed = Instant::now();
        proxy.refuse(false);

        // Everyone ends with the 250 keys, the same contents.
        let deadline = Instant::now() + Duration::from_secs(20);
        while p.len() < 250 {
            assert!(Instant::now() < deadline, "p holds {} of 250", p.len());
            sleep(Duration::from_millis(10)).await;
        }
        let want = format!("state 250 {}", fingerprint(&p));
        until_converged(&mut [&mut a, &mut b], &want, Duration::from_secs(20)).await;
        let took = healed.elapsed();
        eprintln!("converged {took:?} after the heal");
        // A reconnect (a reconnect delay of at most 100 ms, a ping interval
        // of 200 ms), then one anti-entropy interval, with room for a busy
        // machine.
        assert!(took < Duration::from_secs(5), "{took:?}");
    })
    .await
    .expect("bounded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_durable_replica_killed_mid_write_recovers_from_its_ledger_and_converges() {
    timeout(LIMIT, async {
        let server = NatsServer::start().await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let here = Aether::connect(over(&server.url())).await.unwrap();
        let p = StateMap::builder("lab")
            .node("p")
            .config(config())
            .open(&here)
            .await
            .unwrap();
        let mut c = start(&server.url(), "c", 100_000, 1, Some(dir.path()), None);
        // Killed right after `set` of key 300 returned (and maybe a few
        // more): every one of 0 to 300 must be in its ledger.
        c.wait_for("wrote 300").await;
        c.kill();
        let last: u64 = 300;

        // Alone on another server: what it holds is its ledger's.
        let lonely = NatsServer::start().await.unwrap();
        let mut alone = start(&lonely.url(), "c", 0, 1, Some(dir.path()), Some(last));
        alone.wait_for("missing 0").await;
        alone.kill();

        // Back with its peers: the same contents as p.
        let mut back = start(&server.url(), "c", 0, 1, Some(dir.path()), None);
        let deadline = Instant::now() + Duration::from_secs(20);
        while p.len() <= last as usize {
            assert!(Instant::now() < deadline, "p holds {}", p.len());
            sleep(Duration::from_millis(10)).await;
        }
        // p may hold a write or two more than c's last printed one (made
        // before the kill, printed after): wait for the contents to settle.
        sleep(ANTI_ENTROPY * 3).await;
        let want = format!("state {} {}", p.len(), fingerprint(&p));
        until_converged(&mut [&mut back], &want, Duration::from_secs(20)).await;
    })
    .await
    .expect("bounded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_closes_and_exits_at_once_is_seen_leaving_at_once() {
    timeout(LIMIT, async {
        use futures_util::StreamExt;
        let server = NatsServer::start().await.unwrap();
        let here = Aether::connect(over(&server.url())).await.unwrap();
        let p = StateMap::builder("lab")
            .node("p")
            .config(config())
            .open(&here)
            .await
            .unwrap();
        let mut presence = p.presence();
        for _ in 0..3 {
            let mut q = Process::start(
                "state_replica_process",
                &[
                    ("AETHER_STATE_REPLICA", OsString::from("1")),
                    ("URL", server.url().into()),
                    ("NODE", "q".into()),
                    ("CLOSE_AND_EXIT", "1".into()),
                ],
            );
            q.wait_for("closing").await;
            let closing = Instant::now();
            let left = timeout(Duration::from_secs(3), async {
                loop {
                    if let Some(aether_core::state::Presence::Left(name)) = presence.next().await {
                        return name;
                    }
                }
            })
            .await
            .unwrap();
            assert_eq!(left, "q");
            // Well before the presence timeout (1 s): its goodbye came.
            assert!(
                closing.elapsed() < Duration::from_millis(700),
                "{:?}",
                closing.elapsed()
            );
        }
    })
    .await
    .expect("bounded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_with_synced_writes_killed_mid_write_keeps_every_acknowledged_write() {
    timeout(LIMIT, async {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = Process::start(
            "state_replica_process",
            &[
                ("AETHER_STATE_REPLICA", OsString::from("1")),
                ("SYNC_WRITERS", "16".into()),
                ("DIR", dir.path().into()),
            ],
        );
        writer.wait_for("writing").await;
        sleep(Duration::from_millis(700)).await;
        writer.kill();
        // Every write whose `set` returned before the kill said so.
        let acknowledged = writer.rest().await;
        assert!(acknowledged.len() > 100, "{} writes", acknowledged.len());

        let aether = Aether::default();
        let map = StateMap::builder("lab")
            .node("writer")
            .config(config())
            .state_dir(dir.path())
            .open(&aether)
            .await
            .unwrap();
        let lost: Vec<_> = acknowledged
            .iter()
            .filter(|n| {
                let (w, i) = (*n / 1_000_000, *n % 1_000_000);
                map.get(&format!("w{w}.{i}")).as_deref() != Some(i.to_string().as_bytes())
            })
            .collect();
        assert!(lost.is_empty(), "acknowledged and lost: {lost:?}");
    })
    .await
    .expect("bounded");
}
