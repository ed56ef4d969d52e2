//! Replicated state on the embedded medium: local first, convergence,
//! catch-up before `open` returns, watches with old and new values,
//! superseded writes, deletes, node-owned keys, presence, and repair of
//! missed changes by anti-entropy. Every test is bounded in time. (Over
//! NATS, with hostile clients: `state_nats.rs`.)

use std::time::Duration;

use aether_core::{
    Aether,
    state::{NodeState, Presence, Refusal, StateConfig, StateErrorKind, StateMap},
};
use futures_util::StreamExt;
use tokio::time::timeout;

const LIMIT: Duration = Duration::from_secs(20);

fn fast() -> StateConfig {
    StateConfig {
        heartbeat_interval: Duration::from_millis(50),
        presence_timeout: Duration::from_millis(300),
        anti_entropy_interval: Duration::from_millis(100),
        ready_timeout: Duration::from_secs(2),
        ..Default::default()
    }
}

async fn open(aether: &Aether, node: &str) -> StateMap {
    StateMap::builder("home")
        .node(node)
        .config(fast())
        .open(aether)
        .await
        .unwrap()
}

/// Waits (bounded) until `done` holds.
async fn until(what: &str, mut done: impl FnMut() -> bool) {
    timeout(Duration::from_secs(5), async {
        while !done() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("never: {what}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_is_seen_here_at_once_and_by_every_replica_soon() {
    timeout(LIMIT, async {
        let aether = Aether::default();
        let a = open(&aether, "a").await;
        let b = open(&aether, "b").await;
        let c = open(&aether, "c").await;
        a.set("living.temp", "21.5").await.unwrap();
        assert_eq!(a.get("living.temp").as_deref(), Some(&b"21.5"[..]));
        until("b and c have it", || {
            b.get("living.temp").is_some() && c.get("living.temp").is_some()
        })
        .await;
        assert_eq!(b.entries(), a.entries());
        let (stamp, writer) = c.stamp_of("living.temp").unwrap();
        assert_eq!(writer, "a");
        assert_eq!(Some(stamp), a.stamp_of("living.temp").map(|s| s.0));

        b.delete("living.temp").await.unwrap();
        until("deleted everywhere", || {
            a.get("living.temp").is_none() && c.get("living.temp").is_none()
        })
        .await;
        assert_eq!(a.stats().tombstones, 1);
        assert!(a.is_empty());
    })
    .await
    .expect("bounded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_replica_has_the_whole_state_when_open_returns() {
    timeout(LIMIT, async {
        let aether = Aether::default();
        let a = open(&aether, "a").await;
        for n in 0..500 {
            a.set_json(&format!("k.{n}"), &n).await.unwrap();
        }
        a.delete("k.7").await.unwrap();
        let late = open(&aether, "late").await;
        assert_eq!(late.len(), 499, "caught up before open returned");
        assert_eq!(late.entries(), a.entries());
        assert_eq!(late.get_json::<u32>("k.42").unwrap(), Some(42));
        assert!(late.get("k.7").is_none());
        assert_eq!(late.stats().tombstones, 1, "the tombstone came too");
    })
    .await
    .expect("bounded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watchers_get_each_change_with_old_and_new_values_and_losers_hear_superseded() {
    timeout(LIMIT, async {
        let aether = Aether::default();
        let a = open(&aether, "a").await;
        let b = open(&aether, "b").await;
        let mut watch = b.watch("living.*");
        let mut lost = a.superseded();
        a.set("living.lamp", "off").await.unwrap();
        let first = watch.next().await.unwrap();
        assert_eq!(
            (
                first.key.as_str(),
                first.old,
                first.new.as_deref(),
                first.writer.as_str()
            ),
            ("living.lamp", None, Some(&b"off"[..]), "a")
        );
        a.set("hall.lamp", "on").await.unwrap(); // not watched
        b.set("living.lamp", "on").await.unwrap();
        let second = watch.next().await.unwrap();
        assert_eq!(second.old.as_deref(), Some(&b"off"[..]));
        assert_eq!(second.new.as_deref(), Some(&b"on"[..]));
        assert_eq!(second.writer, "b");
        assert!(second.stamp > first.stamp);
        // b wrote after seeing a's write: a's write lost, and a hears it.
        let superseded = timeout(Duration::from_secs(5), lost.next())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(superseded.key, "living.lamp");
        assert_eq!(superseded.mine, first.stamp);
        assert_eq!(superseded.by.writer, "b");
        until("a has b's value", || {
            a.get("living.lamp").as_deref() == Some(b"on")
        })
        .await;
    })
    .await
    .expect("bounded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_of_one_key_settle_on_the_same_value_everywhere() {
    timeout(LIMIT, async {
        let aether = Aether::default();
        let replicas = [
            open(&aether, "a").await,
            open(&aether, "b").await,
            open(&aether, "c").await,
        ];
        let writes = replicas.iter().enumerate().map(|(i, r)| {
            let r = r.clone();
            tokio::spawn(async move {
                for n in 0..50 {
                    r.set("shared", format!("{i}-{n}")).await.unwrap();
                }
            })
        });
        for w in writes.collect::<Vec<_>>() {
            w.await.unwrap();
        }
        until("all agree", || {
            let v = replicas[0].stamp_of("shared");
            replicas.iter().all(|r| r.stamp_of("shared") == v)
        })
        .await;
        let value = replicas[0].get("shared");
        assert!(replicas.iter().all(|r| r.get("shared") == value));
    })
    .await
    .expect("bounded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_a_replica_missed_are_repaired_by_anti_entropy() {
    timeout(LIMIT, async {
        let aether = Aether::default();
        let a = open(&aether, "a").await;
        // b takes at most 2 live changes a second from one writer: it
        // refuses most of a burst, and anti-entropy brings them.
        let b = StateMap::builder("home")
            .node("b")
            .config(StateConfig {
                max_writes_per_s: 2,
                ..fast()
            })
            .open(&aether)
            .await
            .unwrap();
        for n in 0..100 {
            a.set_json(&format!("burst.{n}"), &n).await.unwrap();
        }
        until("b refused some", || {
            b.stats().refused(Refusal::RateLimited) > 0
        })
        .await;
        until("b repaired", || b.len() == 100).await;
        assert_eq!(b.entries(), a.entries());
        assert!(b.stats().repaired > 0);
    })
    .await
    .expect("bounded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_writes_are_typed_errors_and_change_nothing() {
    timeout(LIMIT, async {
        let aether = Aether::default();
        let a = open(&aether, "a").await;
        let long_key = "k".repeat(257);
        assert_eq!(
            a.set(&long_key, "v").await.unwrap_err().kind(),
            StateErrorKind::InvalidKey
        );
        assert_eq!(
            a.set("", "v").await.unwrap_err().kind(),
            StateErrorKind::InvalidKey
        );
        assert_eq!(
            a.set("big", vec![0u8; 33 * 1024]).await.unwrap_err().kind(),
            StateErrorKind::TooLarge
        );
        assert_eq!(
            a.set("node/b/t", "1").await.unwrap_err().kind(),
            StateErrorKind::NotOwner
        );
        a.set("text", "not json").await.unwrap();
        assert_eq!(
            a.get_json::<u32>("text").unwrap_err().kind(),
            StateErrorKind::Payload
        );
        assert_eq!(a.len(), 1);
        let bad_name = StateMap::builder("two.tokens")
            .open(&aether)
            .await
            .unwrap_err();
        assert_eq!(bad_name.kind(), StateErrorKind::InvalidName);
        let bad_config = StateMap::builder("m")
            .config(StateConfig {
                presence_timeout: Duration::from_millis(10),
                ..fast()
            })
            .open(&aether)
            .await
            .unwrap_err();
        assert_eq!(bad_config.kind(), StateErrorKind::Config);
        a.close().await;
        assert_eq!(
            a.set("x", "1").await.unwrap_err().kind(),
            StateErrorKind::Closed
        );
    })
    .await
    .expect("bounded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_own_their_keys_and_see_who_is_there() {
    timeout(LIMIT, async {
        let aether = Aether::default();
        let config = || StateMap::builder("sensors").config(fast());
        let kitchen = NodeState::open_with(&aether, config().node("sensor_kitchen"))
            .await
            .unwrap();
        let monitor = NodeState::open_with(&aether, config().node("monitor"))
            .await
            .unwrap();
        until("monitor sees the kitchen", || {
            monitor.peers() == ["sensor_kitchen"]
        })
        .await;
        let mut presence = monitor.presence();
        let hall = NodeState::open_with(&aether, config().node("sensor_hall"))
            .await
            .unwrap();
        assert_eq!(
            timeout(Duration::from_secs(5), presence.next())
                .await
                .unwrap(),
            Some(Presence::Joined("sensor_hall".into()))
        );
        kitchen.update("temperature", "72.5").await.unwrap();
        hall.update("temperature", "68.0").await.unwrap();
        until("monitor reads both", || {
            monitor.read("sensor_kitchen", "temperature").is_some()
                && monitor.read("sensor_hall", "temperature").is_some()
        })
        .await;
        until("both peers listed", || monitor.peers().len() == 2).await;
        assert_eq!(monitor.peers(), ["sensor_hall", "sensor_kitchen"]);
        assert_eq!(
            monitor
                .map()
                .set("node/sensor_kitchen/temperature", "0")
                .await
                .unwrap_err()
                .kind(),
            StateErrorKind::NotOwner
        );

        // Closing leaves at once; dropping says goodbye too.
        hall.close().await;
        assert_eq!(
            timeout(Duration::from_millis(250), presence.next())
                .await
                .unwrap(),
            Some(Presence::Left("sensor_hall".into())),
            "well before the presence timeout"
        );
        drop(kitchen);
        assert_eq!(
            timeout(Duration::from_secs(5), presence.next())
                .await
                .unwrap(),
            Some(Presence::Left("sensor_kitchen".into()))
        );
        assert!(monitor.peers().is_empty());
        // What a node wrote stays readable after it left.
        assert!(monitor.read("sensor_kitchen", "temperature").is_some());
    })
    .await
    .expect("bounded");
}

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
                interval_ms: 100,
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
