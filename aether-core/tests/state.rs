//! Replicated state on the embedded medium: the suite both mediums run
//! (`state_suite/`: local first, convergence, catch-up before `open`
//! returns, watches with old and new values, superseded writes, deletes,
//! node-owned keys, presence, repair by anti-entropy), then what only
//! needs one process: the ledger of a state directory and instance
//! reports. Every test is bounded in time. (Over NATS: `state_nats.rs`,
//! with real processes: `state_processes.rs`.)

mod state_suite;

use std::{future::Future, pin::Pin, time::Duration};

use aether_core::{
    Aether,
    state::{Refusal, StateMap},
};
use state_suite::{LIMIT, fast, open, until};
use tokio::time::timeout;

/// Every replica on one embedded aether.
struct Embedded(Aether);

impl state_suite::Bus for Embedded {
    fn aether(&self) -> Pin<Box<dyn Future<Output = Aether> + Send + '_>> {
        Box::pin(async move { self.0.clone() })
    }
}

state_suite!(Embedded(Aether::default()));

fn durable(
    aether: &Aether,
    node: &str,
    dir: &std::path::Path,
) -> aether_core::state::StateMapBuilder {
    let _ = aether;
    StateMap::builder("home")
        .node(node)
        .config(fast())
        .state_dir(dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_with_a_state_dir_restarts_with_its_state_then_catches_up() {
    timeout(LIMIT, async {
        let dir = tempfile::tempdir().unwrap();
        let aether = Aether::default();
        let a = durable(&aether, "a", dir.path())
            .open(&aether)
            .await
            .unwrap();
        for n in 0..50 {
            a.set_json(&format!("k.{n}"), &n).await.unwrap();
        }
        a.delete("k.0").await.unwrap();
        let old = a.stamp_of("k.1").unwrap().0;
        let b = open(&aether, "b").await;
        assert_eq!(b.len(), 49, "b caught up from a");
        // Dropped without close, as a killed process would be: every change
        // was handed to the operating system as it was applied.
        drop(a);
        tokio::time::sleep(Duration::from_millis(100)).await;
        b.set("new", "while a was away").await.unwrap();

        let again = Aether::default();
        let alone = durable(&again, "a", dir.path()).open(&again).await.unwrap();
        assert_eq!(alone.len(), 49, "from the ledger alone");
        assert!(alone.get("k.0").is_none());
        assert_eq!(alone.stats().tombstones, 1);
        drop(alone);
        tokio::time::sleep(Duration::from_millis(100)).await;

        let back = durable(&aether, "a", dir.path())
            .open(&aether)
            .await
            .unwrap();
        assert_eq!(back.len(), 50, "its ledger, then what it missed");
        assert_eq!(back.entries(), b.entries());
        // Its clock moved past what it had written: its next write wins.
        let stamp = back.set("k.1", "again").await.unwrap();
        assert!(stamp > old);
        until("b has it", || b.get("k.1").as_deref() == Some(b"again")).await;
    })
    .await
    .expect("bounded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torn_ledger_keeps_what_is_whole_and_snapshots_bound_it() {
    timeout(Duration::from_secs(60), async {
        let dir = tempfile::tempdir().unwrap();
        let aether = Aether::default();
        {
            let a = durable(&aether, "a", dir.path())
                .open(&aether)
                .await
                .unwrap();
            for n in 0..10_050u32 {
                a.set_json(&format!("k.{}", n % 500), &n).await.unwrap();
            }
            assert_eq!(a.stats().ledger_failed, 0);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(
            dir.path().join("snapshot.bin").exists(),
            "a snapshot was written"
        );
        // A torn tail: half a record at the end of the last segment.
        let mut segments: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "log"))
            .collect();
        segments.sort();
        assert!(segments.len() <= 2, "compacted: {segments:?}");
        let last = segments.last().unwrap();
        let mut bytes = std::fs::read(last).unwrap();
        bytes.extend_from_slice(&[0x55; 13]);
        std::fs::write(last, &bytes).unwrap();

        let again = Aether::default();
        let a = durable(&again, "a", dir.path()).open(&again).await.unwrap();
        assert_eq!(a.len(), 500);
        // The last value of each key is the last written.
        assert_eq!(a.get_json::<u32>("k.49").unwrap(), Some(10_049));
        assert_eq!(a.get_json::<u32>("k.50").unwrap(), Some(9_550));
    })
    .await
    .expect("bounded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instance_reports_carry_each_replica() {
    timeout(LIMIT, async {
        let aether = Aether::new(aether_core::AetherConfig {
            report: aether_core::config::ReportConfig {
                interval: Duration::from_millis(100),
                instance: Some("home-1".into()),
            },
            ..Default::default()
        })
        .unwrap();
        let mut operator = aether_core::Vibrator::create("operator", &aether)
            .await
            .unwrap();
        operator.resonate_on("_report.*").await.unwrap();
        let lights = open(&aether, "lights").await;
        let _sensors = open(&aether, "sensors").await;
        lights.set("living.light", "on").await.unwrap();
        loop {
            let wave = operator.receive().await.unwrap();
            let report = aether_core::report::InstanceReport::parse(&wave).unwrap();
            let Some(map) = report.maps.iter().find(|m| m.node == "lights") else {
                continue;
            };
            if map.keys == 1 && map.peers == 1 {
                assert_eq!(map.map, "home");
                assert!(report.maps.iter().any(|m| m.node == "sensors"));
                break;
            }
        }
        drop(lights);
        // Gone from the next reports.
        loop {
            let wave = operator.receive().await.unwrap();
            let report = aether_core::report::InstanceReport::parse(&wave).unwrap();
            if report.maps.iter().all(|m| m.node != "lights") {
                break;
            }
        }
    })
    .await
    .expect("bounded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_settings_give_maps_a_directory_and_synced_writes_from_many_writers_all_come_back() {
    timeout(LIMIT, async {
        let root = tempfile::tempdir().unwrap();
        let settings = || aether_core::AetherConfig {
            state: aether_core::state::StateConfig {
                dir: Some(root.path().into()),
                sync_writes: true,
                ..fast()
            },
            ..Default::default()
        };
        let aether = Aether::new(settings()).unwrap();
        // No directory and no settings given to the builder: the aether's.
        let map = StateMap::builder("home")
            .node("a")
            .open(&aether)
            .await
            .unwrap();
        // 32 writers at once, each `set` returning once its record is on
        // the disk (they share fsyncs).
        let mut writers = tokio::task::JoinSet::new();
        for w in 0..32 {
            let map = map.clone();
            writers.spawn(async move {
                for i in 0..20 {
                    map.set(&format!("w{w}.{i}"), format!("{i}")).await.unwrap();
                }
            });
        }
        while let Some(done) = writers.join_next().await {
            done.unwrap();
        }
        assert_eq!(map.stats().ledger_failed, 0);
        assert!(root.path().join("home").is_dir(), "map home in <dir>/home");
        drop(map);
        tokio::time::sleep(Duration::from_millis(100)).await;

        let again = Aether::new(settings()).unwrap();
        let back = StateMap::builder("home")
            .node("a")
            .open(&again)
            .await
            .unwrap();
        assert_eq!(back.len(), 640, "every acknowledged write, from the ledger");
        assert_eq!(back.get("w31.19").as_deref(), Some(&b"19"[..]));
    })
    .await
    .expect("bounded");
}

/// A map holds at most `max_keys` keys (tombstones count until collected)
/// and `max_map_bytes` bytes: a local write or a merge past either is
/// refused with `Full`, naming the setting, and a change from another
/// replica past them is refused and counted (`full`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_map_holds_at_most_max_keys_and_max_map_bytes() {
    use aether_core::state::{Stamp, StateErrorKind};
    timeout(LIMIT, async {
        let aether = Aether::default();
        let small = StateMap::builder("home")
            .node("small")
            .config(aether_core::state::StateConfig {
                max_keys: 3,
                max_value_bytes: 3000,
                max_map_bytes: 4096,
                ..fast()
            })
            .open(&aether)
            .await
            .unwrap();
        let big = open(&aether, "big").await;
        small.set("a", "1").await.unwrap();
        small.set("b", "2").await.unwrap();
        small.delete("b").await.unwrap();
        small.set("c", "3").await.unwrap();
        // Three keys, one a tombstone: a fourth is refused, whatever way.
        let full = small.set("d", "4").await.unwrap_err();
        assert_eq!(full.kind(), StateErrorKind::Full);
        assert!(full.to_string().contains("max_keys"), "{full}");
        let far = Stamp {
            physical_ns: small.stamp_of("c").unwrap().0.physical_ns,
            logical: 9,
            node: 0xabc,
        };
        let merged = small.merge("e", Some("5".into()), far).await.unwrap_err();
        assert_eq!(merged.kind(), StateErrorKind::Full);
        assert!(small.get("d").is_none() && small.get("e").is_none());
        // A key held is written again, and deleted.
        small.set("a", "again").await.unwrap();
        small.delete("c").await.unwrap();
        // Bytes: a value that would take the map past max_map_bytes.
        let large = vec![b'x'; 3000];
        small.set("a", large.clone()).await.unwrap();
        let over = small.set("b", large.clone()).await.unwrap_err();
        assert_eq!(over.kind(), StateErrorKind::Full);
        assert!(over.to_string().contains("max_map_bytes"), "{over}");
        // Another replica's new key: refused here, and counted.
        big.set("z", "from big").await.unwrap();
        until("small refused z", || {
            small.stats().refused(Refusal::Full) > 0
        })
        .await;
        assert!(small.get("z").is_none());
        assert_eq!(Refusal::Full.as_str(), "full");
    })
    .await
    .unwrap();
}

/// A message's changes are applied a run at a time under the store's lock,
/// let go at each refusal as full: of a stream of new keys past
/// `max_keys`, the first keys held, every other refused once and
/// counted, and the replica takes writes and reads through it all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_past_max_keys_in_long_messages_are_held_to_the_cap_each_refusal_counted_once() {
    timeout(LIMIT, async {
        let aether = Aether::default();
        let cap = 150;
        let small = StateMap::builder("home")
            .node("small")
            .config(aether_core::state::StateConfig {
                max_keys: cap,
                ..fast()
            })
            .open(&aether)
            .await
            .unwrap();
        let big = open(&aether, "big").await;
        let n = 400;
        for i in 0..n {
            big.set(&format!("k.{i:03}"), "v").await.unwrap();
        }
        until("the small replica is full", || small.len() == cap).await;
        until("every key past the cap refused", || {
            small.stats().refused(Refusal::Full) == (n - cap) as u64
        })
        .await;
        // The first keys to arrive are those held: the writer's order.
        for i in 0..cap {
            assert!(small.get(&format!("k.{i:03}")).is_some(), "k.{i:03}");
        }
        assert!(small.get(&format!("k.{n:03}")).is_none());
        // Repairs offer the refused keys again: not counted twice.
        tokio::time::sleep(fast().anti_entropy_interval * 5).await;
        assert_eq!(small.stats().refused(Refusal::Full), (n - cap) as u64);
        assert_eq!(small.len(), cap);
        small.set("k.000", "again").await.unwrap();
        assert_eq!(small.get("k.000").as_deref(), Some(&b"again"[..]));
    })
    .await
    .unwrap();
}

/// A writer in a tight loop on a one-thread runtime leaves the replicas'
/// tasks their turn: the changes flow while it writes, not after.
#[tokio::test(flavor = "current_thread")]
async fn a_writer_in_a_loop_on_one_thread_lets_its_changes_flow_while_it_writes() {
    timeout(Duration::from_secs(30), async {
        let aether = Aether::default();
        let writer = open(&aether, "writer").await;
        let reader = open(&aether, "reader").await;
        let n = 30_000;
        let mut seen_during = 0;
        for i in 0..n {
            writer.set(&format!("k.{i}"), "v").await.unwrap();
            if i == n - 1 {
                seen_during = reader.len();
            }
        }
        assert!(
            seen_during > 0,
            "the reader got nothing while the writer wrote {n} keys"
        );
        until("the reader holds every key", || reader.len() == n).await;
    })
    .await
    .expect("bounded");
}

/// A writer allowed more a second than a reader allows it: a message of
/// its changes larger than the reader's limit gives the reader what the
/// limit allows (not nothing), the rest refused (counted) and brought by
/// anti-entropy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_of_more_changes_than_a_reader_allows_gives_it_its_limit_and_the_rest_by_repair()
{
    timeout(Duration::from_secs(30), async {
        let aether = Aether::default();
        let builder = |node: &str, max_writes_per_s: u32| {
            StateMap::builder("home")
                .node(node)
                .config(aether_core::state::StateConfig {
                    max_writes_per_s,
                    ..fast()
                })
        };
        let writer = builder("writer", 1_000_000).open(&aether).await.unwrap();
        let reader = builder("reader", 1_000).open(&aether).await.unwrap();
        let n = 5_000;
        for i in 0..n {
            writer.set(&format!("k.{i}"), "v").await.unwrap();
        }
        until("the reader holds every key", || reader.len() == n).await;
        let stats = reader.stats();
        assert!(
            stats.refused(Refusal::RateLimited) > 0,
            "the burst was past the reader's limit: {stats:?}"
        );
        assert!(stats.repaired > 0, "the rest came by repair: {stats:?}");
        // Live: what its limit allowed (the first messages may take part of
        // it, and a message past what is left then waits for repair).
        let live = stats.applied - stats.repaired;
        assert!(
            live > 0 && live < n as u64,
            "the reader took part live, within its limit: {stats:?}"
        );
    })
    .await
    .expect("bounded");
}
