//! The replicated-state suite, run on both mediums: on the embedded medium
//! every replica shares one aether; over NATS each has its own connection
//! to one server, as separate processes would.

#![allow(dead_code)]

use std::{future::Future, pin::Pin, time::Duration};

use aether_core::{
    Aether,
    state::{
        Held, HeldBy, Keeper, NodeState, Presence, Refusal, StateConfig, StateErrorKind, StateMap,
    },
};
use futures_util::StreamExt;
use tokio::time::timeout;

pub const LIMIT: Duration = Duration::from_secs(20);

/// Where replicas live: an aether for each new replica.
pub trait Bus: Send + Sync {
    fn aether(&self) -> Pin<Box<dyn Future<Output = Aether> + Send + '_>>;
}

pub fn fast() -> StateConfig {
    StateConfig {
        heartbeat_interval: Duration::from_millis(50),
        presence_timeout: Duration::from_millis(300),
        anti_entropy_interval: Duration::from_millis(100),
        ready_timeout: Duration::from_secs(2),
        ..Default::default()
    }
}

pub async fn open(aether: &Aether, node: &str) -> StateMap {
    StateMap::builder("home")
        .node(node)
        .config(fast())
        .open(aether)
        .await
        .unwrap()
}

/// Waits (bounded) until `done` holds.
pub async fn until(what: &str, mut done: impl FnMut() -> bool) {
    timeout(Duration::from_secs(5), async {
        while !done() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("never: {what}"));
}

pub async fn a_write_is_seen_here_at_once_and_by_every_replica_soon(m: &dyn Bus) {
    timeout(LIMIT, async {
        let a = open(&m.aether().await, "a").await;
        let b = open(&m.aether().await, "b").await;
        let c = open(&m.aether().await, "c").await;
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

pub async fn a_late_replica_has_the_whole_state_when_open_returns(m: &dyn Bus) {
    timeout(LIMIT, async {
        let a = open(&m.aether().await, "a").await;
        for n in 0..500 {
            a.set_json(&format!("k.{n}"), &n).await.unwrap();
        }
        a.delete("k.7").await.unwrap();
        let late = open(&m.aether().await, "late").await;
        assert_eq!(late.len(), 499, "caught up before open returned");
        assert_eq!(late.entries(), a.entries());
        assert_eq!(late.get_json::<u32>("k.42").unwrap(), Some(42));
        assert!(late.get("k.7").is_none());
        assert_eq!(late.stats().tombstones, 1, "the tombstone came too");
    })
    .await
    .expect("bounded");
}

pub async fn a_replica_closed_just_before_a_late_one_opens_leaves_the_answering_to_others(
    m: &dyn Bus,
) {
    timeout(LIMIT, async {
        let a = open(&m.aether().await, "a").await;
        a.set("hall.light", "on").await.unwrap();
        // One replica of those ready answers a catch-up: never one that
        // closed before the late one asked.
        for round in 0..6 {
            let b = open(&m.aether().await, &format!("b{round}")).await;
            b.close().await;
            let late = open(&m.aether().await, &format!("late{round}")).await;
            assert_eq!(
                late.get("hall.light").as_deref(),
                Some(&b"on"[..]),
                "round {round}: caught up before open returned"
            );
            late.close().await;
        }
    })
    .await
    .expect("bounded");
}

pub async fn watchers_get_each_change_with_old_and_new_values_and_losers_hear_superseded(
    m: &dyn Bus,
) {
    timeout(LIMIT, async {
        let a = open(&m.aether().await, "a").await;
        let b = open(&m.aether().await, "b").await;
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

pub async fn concurrent_writes_of_one_key_settle_on_the_same_value_everywhere(m: &dyn Bus) {
    timeout(LIMIT, async {
        let replicas = [
            open(&m.aether().await, "a").await,
            open(&m.aether().await, "b").await,
            open(&m.aether().await, "c").await,
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

pub async fn changes_a_replica_missed_are_repaired_by_anti_entropy(m: &dyn Bus) {
    timeout(LIMIT, async {
        let a = open(&m.aether().await, "a").await;
        // b takes at most 2 live changes a second from one writer: it
        // refuses most of a burst, and anti-entropy brings them.
        let b = StateMap::builder("home")
            .node("b")
            .config(StateConfig {
                max_writes_per_s: 2,
                ..fast()
            })
            .open(&m.aether().await)
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

pub async fn bad_writes_are_typed_errors_and_change_nothing(m: &dyn Bus) {
    timeout(LIMIT, async {
        let a = open(&m.aether().await, "a").await;
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
        let mut changes = a.watch("text");
        a.set("text", "not json").await.unwrap();
        let error = a.get_json::<u32>("text").unwrap_err();
        assert_eq!(error.kind(), StateErrorKind::Payload);
        // It says which value, where, and what it is not.
        let message = error.to_string();
        for part in ["\"text\"", "\"home\"", "u32"] {
            assert!(message.contains(part), "{part} in {message}");
        }
        let change = timeout(LIMIT, changes.next()).await.unwrap().unwrap();
        let error = change.new_json::<u32>().unwrap_err();
        assert_eq!(error.kind(), StateErrorKind::Payload);
        let message = error.to_string();
        for part in ["\"text\"", "\"a\"", "u32"] {
            assert!(message.contains(part), "{part} in {message}");
        }
        assert_eq!(a.len(), 1);
        let bad_name = StateMap::builder("two.tokens")
            .open(&m.aether().await)
            .await
            .unwrap_err();
        assert_eq!(bad_name.kind(), StateErrorKind::InvalidName);
        let bad_config = StateMap::builder("m")
            .config(StateConfig {
                presence_timeout: Duration::from_millis(10),
                ..fast()
            })
            .open(&m.aether().await)
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

/// A replica's `max_key_bytes` and `max_value_bytes` bound the writes made
/// through it; what other replicas wrote comes whatever they were set to,
/// live and by catch-up, so that replicas set apart still converge.
pub async fn replicas_with_other_limits_converge(m: &dyn Bus) {
    timeout(LIMIT, async {
        let with = |key, value| StateConfig {
            max_key_bytes: key,
            max_value_bytes: value,
            ..fast()
        };
        let open_with = |aether: Aether, node: &'static str, config: StateConfig| async move {
            StateMap::builder("limits")
                .node(node)
                .config(config)
                .open(&aether)
                .await
                .unwrap()
        };
        let small = open_with(m.aether().await, "small", with(16, 1024)).await;
        let large = open_with(m.aether().await, "large", with(64, 8192)).await;
        let long_key = "k".repeat(40);
        large.set(&long_key, vec![b'x'; 6000]).await.unwrap();
        until("the small replica has the large one's write", || {
            small.get(&long_key).is_some_and(|v| v.len() == 6000)
        })
        .await;
        // Through the small replica, its own limits hold.
        assert_eq!(
            small.set("big", vec![b'x'; 2000]).await.unwrap_err().kind(),
            StateErrorKind::TooLarge
        );
        assert_eq!(
            small.set(&long_key, "v").await.unwrap_err().kind(),
            StateErrorKind::InvalidKey
        );
        // A replica set apart that comes late catches up on all of it.
        let late = open_with(m.aether().await, "late", with(16, 1024)).await;
        assert_eq!(late.entries(), large.entries());
        assert_eq!(
            small.stats().refused(Refusal::Malformed),
            0,
            "nothing refused"
        );
    })
    .await
    .expect("bounded");
}

pub async fn nodes_own_their_keys_and_see_who_is_there(m: &dyn Bus) {
    timeout(LIMIT, async {
        let config = || StateMap::builder("sensors").config(fast());
        let kitchen = NodeState::open_with(&m.aether().await, config().node("sensor_kitchen"))
            .await
            .unwrap();
        let monitor = NodeState::open_with(&m.aether().await, config().node("monitor"))
            .await
            .unwrap();
        until("monitor sees the kitchen", || {
            monitor.peers() == ["sensor_kitchen"]
        })
        .await;
        let mut presence = monitor.presence();
        let hall = NodeState::open_with(&m.aether().await, config().node("sensor_hall"))
            .await
            .unwrap();
        // The hall joins. (Under load the kitchen's own join can come first
        // on the stream, told after the monitor already listed it; it never
        // leaves.)
        let joined = timeout(Duration::from_secs(5), async {
            loop {
                match presence.next().await {
                    Some(Presence::Joined(name)) if name == "sensor_hall" => return,
                    Some(Presence::Joined(name)) if name == "sensor_kitchen" => {}
                    other => panic!("not the hall's join: {other:?}"),
                }
            }
        })
        .await;
        assert!(joined.is_ok(), "the monitor did not see the hall join");
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

pub async fn writes_stamped_elsewhere_merge_by_the_same_rules(m: &dyn Bus) {
    use aether_core::state::Stamp;
    timeout(LIMIT, async {
        let bridge = open(&m.aether().await, "bridge").await;
        let other = open(&m.aether().await, "other").await;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64;
        let offline = Stamp {
            physical_ns: now - 5_000_000_000,
            logical: 0,
            node: 0xb0,
        };
        // A write made elsewhere, earlier: it wins where nothing is newer,
        // and spreads as the bridge's write with its own stamp.
        assert!(
            bridge
                .merge("tab.note", Some("\"first\"".into()), offline)
                .await
                .unwrap()
        );
        until("other has it", || other.get("tab.note").is_some()).await;
        assert_eq!(other.stamped("tab.note").unwrap().stamp, offline);
        assert_eq!(other.stamped("tab.note").unwrap().writer, "bridge");
        // A newer write of another replica, then an older one from
        // elsewhere: the older loses everywhere.
        let newer = other.set("tab.note", "\"newer\"").await.unwrap();
        until("bridge has the newer", || {
            bridge.stamp_of("tab.note").map(|s| s.0) == Some(newer)
        })
        .await;
        let late = Stamp {
            physical_ns: now - 1_000_000_000,
            logical: 0,
            node: 0xb0,
        };
        assert!(
            !bridge
                .merge("tab.note", Some("\"late\"".into()), late)
                .await
                .unwrap()
        );
        assert_eq!(bridge.get("tab.note").as_deref(), Some(&b"\"newer\""[..]));
        // The same write twice changes nothing.
        assert!(
            !bridge
                .merge("tab.note", Some("\"newer\"".into()), newer)
                .await
                .unwrap()
        );
        // A delete from elsewhere is a tombstone everywhere.
        let gone = Stamp {
            physical_ns: newer.physical_ns,
            logical: newer.logical + 1,
            node: 0xb0,
        };
        assert!(bridge.merge("tab.note", None, gone).await.unwrap());
        until("other deleted it", || other.get("tab.note").is_none()).await;
        // Stamps out of range, keys and values over the caps, other
        // nodes' keys: typed errors, nothing applied.
        let ahead = Stamp {
            physical_ns: now + 3_600_000_000_000,
            logical: 0,
            node: 0xb0,
        };
        let refused = bridge
            .merge("tab.x", Some("1".into()), ahead)
            .await
            .unwrap_err();
        assert_eq!(refused.kind(), StateErrorKind::Stamp);
        let ancient = Stamp {
            physical_ns: 1,
            logical: 0,
            node: 0xb0,
        };
        let refused = bridge
            .merge("tab.x", Some("1".into()), ancient)
            .await
            .unwrap_err();
        assert_eq!(refused.kind(), StateErrorKind::Stamp);
        let now_stamp = Stamp {
            physical_ns: now,
            logical: 9,
            node: 0xb0,
        };
        let refused = bridge
            .merge("node/other/x", Some("1".into()), now_stamp)
            .await
            .unwrap_err();
        assert_eq!(refused.kind(), StateErrorKind::NotOwner);
        let refused = bridge
            .merge("tab.big", Some(vec![b'1'; 64 * 1024].into()), now_stamp)
            .await
            .unwrap_err();
        assert_eq!(refused.kind(), StateErrorKind::TooLarge);
        assert!(bridge.get("tab.x").is_none() && bridge.get("tab.big").is_none());
        // Every entry with its stamp, the tombstone too.
        let held = bridge.stamped_entries();
        assert!(
            held.iter()
                .any(|e| e.key == "tab.note" && e.value.is_none() && e.stamp == gone)
        );
    })
    .await
    .expect("within the limit");
}

/// Two replicas, two writer tasks on each, on the same two keys: the
/// watch of one streams each key's changes strictly in stamp order, each
/// `old` the previous change's `new`, the last one the key's entry.
pub async fn watch_streams_each_key_in_stamp_order_under_concurrent_writers(m: &dyn Bus) {
    timeout(Duration::from_secs(60), async {
        let config = StateConfig {
            watch_buffer: 1_000_000,
            max_writes_per_s: 1_000_000,
            ..fast()
        };
        let open = |aether: Aether, node: &'static str| {
            let config = config.clone();
            async move {
                StateMap::builder("home")
                    .node(node)
                    .config(config)
                    .open(&aether)
                    .await
                    .unwrap()
            }
        };
        let a = open(m.aether().await, "a").await;
        let b = open(m.aether().await, "b").await;
        let mut watch = a.watch(">");
        let mut a_lost = a.superseded();
        const WRITES: u32 = 2_000;
        let mut writers = Vec::new();
        for (n, map) in [a.clone(), a.clone(), b.clone(), b.clone()]
            .into_iter()
            .enumerate()
        {
            writers.push(tokio::spawn(async move {
                let mut stamps = Vec::new();
                for i in 0..WRITES {
                    let key = if i % 2 == 0 { "k0" } else { "k1" };
                    stamps.push(map.set(key, format!("{n}-{i}")).await.unwrap());
                    if i % 64 == 0 {
                        tokio::task::yield_now().await;
                    }
                }
                stamps
            }));
        }
        // The stamps `set` returned to a's two writers.
        let mut a_wrote = Vec::new();
        for (n, writer) in writers.into_iter().enumerate() {
            let stamps = writer.await.unwrap();
            if n < 2 {
                a_wrote.extend(stamps);
            }
        }
        until("a and b agree", || a.entries() == b.entries()).await;
        let mut last: std::collections::HashMap<String, aether_core::state::Change> =
            Default::default();
        let mut applied = std::collections::HashSet::new();
        let settled = |last: &std::collections::HashMap<String, aether_core::state::Change>| {
            ["k0", "k1"]
                .iter()
                .all(|k| last.get(*k).map(|c| c.stamp) == a.stamp_of(k).map(|(s, _)| s))
        };
        while !settled(&last) {
            let change = timeout(Duration::from_secs(5), watch.next())
                .await
                .expect("the watch streams the rest")
                .expect("open");
            if let Some(previous) = last.get(&change.key) {
                assert!(
                    change.stamp > previous.stamp,
                    "{}: {} after {}",
                    change.key,
                    change.stamp,
                    previous.stamp
                );
                assert_eq!(
                    change.old, previous.new,
                    "{}: old is the previous new",
                    change.key
                );
            } else {
                assert_eq!(change.old, None, "{}: the first change", change.key);
            }
            applied.insert(change.stamp);
            last.insert(change.key.clone(), change);
        }
        assert_eq!(watch.missed(), 0);
        // Every write of a's that returned a stamp was applied on a, or a
        // hears that a higher stamp reached first.
        // Read until quiet (not `now_or_never`: tokio's cooperative budget
        // makes a ready stream say pending now and then).
        let mut lost = std::collections::HashSet::new();
        while let Ok(Some(superseded)) = timeout(Duration::from_millis(300), a_lost.next()).await {
            lost.insert(superseded.mine);
        }
        let unheard: Vec<_> = a_wrote
            .iter()
            .filter(|stamp| !applied.contains(*stamp) && !lost.contains(*stamp))
            .collect();
        assert!(
            unheard.is_empty(),
            "{} of a's {} writes were neither applied nor superseded: {:?}",
            unheard.len(),
            a_wrote.len(),
            &unheard[..unheard.len().min(5)]
        );
        for key in ["k0", "k1"] {
            assert_eq!(last[key].new.as_deref(), a.get(key).as_deref(), "{key}");
        }
    })
    .await
    .expect("within the limit");
}

/// A keeper of every map in `dir`, with the fast settings and `caps`.
pub async fn keeper(
    aether: &Aether,
    dir: &std::path::Path,
    caps: impl FnOnce(&mut StateConfig),
) -> Keeper {
    let mut config = StateConfig {
        dir: Some(dir.into()),
        ..fast()
    };
    config.keeper.maps = vec!["*".into()];
    caps(&mut config);
    Keeper::start_with(aether, "keeper", config)
        .await
        .expect("the keeper starts")
}

pub async fn a_flush_waits_for_another_replica_and_says_when_none_holds_the_writes(m: &dyn Bus) {
    timeout(LIMIT, async {
        let a = open(&m.aether().await, "a").await;
        assert_eq!(
            a.flush(Duration::from_millis(100)).await.unwrap(),
            Held::default(),
            "nothing to wait for"
        );
        a.set("hall.light", "on").await.unwrap();
        a.delete("hall.fan").await.unwrap();
        let started = std::time::Instant::now();
        let alone = a.flush(Duration::from_millis(400)).await.unwrap_err();
        assert_eq!(alone.kind(), StateErrorKind::NotHeld, "{alone}");
        assert!(started.elapsed() >= Duration::from_millis(400));
        assert!(
            alone.to_string().contains("aether node"),
            "says what to run: {alone}"
        );
        assert_eq!(a.unacknowledged(), 2, "still waiting");
        // A replica that acknowledges nothing (a one-shot command's) takes
        // the writes and vouches for none.
        let passing = StateMap::builder("home")
            .node("passing")
            .config(fast())
            .acknowledges(false)
            .open(&m.aether().await)
            .await
            .unwrap();
        let unvouched = a.flush(Duration::from_millis(300)).await.unwrap_err();
        assert_eq!(unvouched.kind(), StateErrorKind::NotHeld, "{unvouched}");
        assert_eq!(passing.get("hall.light").as_deref(), Some(&b"on"[..]));

        let b = open(&m.aether().await, "b").await;
        let held = a.flush(Duration::from_secs(5)).await.unwrap();
        assert_eq!(
            (held.writes, held.by.as_slice(), held.keepers),
            (2, &["b".to_string()][..], 0)
        );
        assert_eq!(b.get("hall.light").as_deref(), Some(&b"on"[..]));
        assert_eq!(a.unacknowledged(), 0);
        // Two replicas asked for, one there: not held; then a third.
        a.set("hall.light", "off").await.unwrap();
        let one = a
            .flush_to(HeldBy::replicas(2), Duration::from_millis(300))
            .await
            .unwrap_err();
        assert_eq!(one.kind(), StateErrorKind::NotHeld);
        let _c = open(&m.aether().await, "c").await;
        let held = a
            .flush_to(HeldBy::replicas(2), Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(held.by, ["b", "c"]);
        // Held by two replicas, none a keeper: a flush that asks for a
        // keeper sends the write again, and fails.
        let none = a
            .flush_to(HeldBy::keepers(1), Duration::from_millis(300))
            .await
            .unwrap_err();
        assert_eq!(none.kind(), StateErrorKind::NotHeld, "{none}");
        assert!(
            none.to_string().contains("2 replica(s), 0 keeper(s)"),
            "{none}"
        );
        let nobody = a
            .flush_to(HeldBy::replicas(0), Duration::from_millis(300))
            .await
            .unwrap_err();
        assert_eq!(nobody.kind(), StateErrorKind::Config);
        // No keeper among them.
        a.set("hall.light", "on").await.unwrap();
        let none = a
            .flush_to(HeldBy::keepers(1), Duration::from_millis(300))
            .await
            .unwrap_err();
        assert_eq!(none.kind(), StateErrorKind::NotHeld);
        // A writer that waits after every write, faster than the 512
        // repair messages a second taken from one source: neither its
        // holds nor their acknowledgements are refused.
        for n in 0..1200 {
            a.set_json("count", &n).await.unwrap();
            a.flush(Duration::from_secs(5)).await.unwrap();
        }
        for map in [&a, &b] {
            assert_eq!(map.stats().refused(Refusal::RateLimited), 0);
        }
    })
    .await
    .expect("bounded");
}

/// Many writers in flight on one replica, each waiting for its write to
/// be held: every flush ends held by the other replica, which holds every
/// write, and the flushes share their holds (a turn takes every write
/// waiting) rather than sending one each.
pub async fn writers_in_flight_are_acknowledged_together(m: &dyn Bus) {
    timeout(LIMIT, async {
        let a = open(&m.aether().await, "a").await;
        let b = open(&m.aether().await, "b").await;
        let (writers, each) = (32, 20);
        let started = std::time::Instant::now();
        let tasks: Vec<_> = (0..writers)
            .map(|w| {
                let a = a.clone();
                tokio::spawn(async move {
                    let mut shared = 0;
                    for n in 0..each {
                        a.set_json(&format!("w{w}.{n}"), &n).await.unwrap();
                        let held = a.flush(Duration::from_secs(10)).await.unwrap();
                        assert_eq!(held.by, ["b"], "writer {w}, write {n}");
                        // Another's turn may have sent this write and had
                        // it held before this flush began: then nothing of
                        // its own waits, and it says writes 0 (`Held`).
                        shared += usize::from(held.writes > 1);
                    }
                    shared
                })
            })
            .collect();
        let mut shared = 0;
        for task in tasks {
            shared += task.await.unwrap();
        }
        for w in 0..writers {
            for n in 0..each {
                assert_eq!(
                    b.get_json::<i32>(&format!("w{w}.{n}")).unwrap(),
                    Some(n),
                    "b holds w{w}.{n}"
                );
            }
        }
        assert_eq!(a.unacknowledged(), 0);
        assert!(
            shared > 0,
            "some flushes were told of holds that took other writers' writes too"
        );
        eprintln!(
            "{} writes by {writers} writers in flight, each held before the next, in {:?}",
            writers * each,
            started.elapsed()
        );
    })
    .await
    .expect("bounded");
}

/// Flushes that ask for other acknowledgements do not wait for each
/// other: with no keeper, writers that ask for a replica are held at once
/// while another waits in vain for a keeper; and a flush waiting when its
/// map closes ends, `Closed`.
pub async fn flushes_for_a_replica_do_not_wait_for_one_for_a_keeper(m: &dyn Bus) {
    timeout(LIMIT, async {
        let a = open(&m.aether().await, "a").await;
        let _b = open(&m.aether().await, "b").await;
        a.set("first", "1").await.unwrap();
        let keeper_wanted = {
            let a = a.clone();
            tokio::spawn(
                async move { a.flush_to(HeldBy::keepers(1), Duration::from_secs(3)).await },
            )
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        let started = std::time::Instant::now();
        let tasks: Vec<_> = (0..8)
            .map(|w| {
                let a = a.clone();
                tokio::spawn(async move {
                    for n in 0..5 {
                        a.set_json(&format!("r{w}.{n}"), &n).await.unwrap();
                        let held = a.flush(Duration::from_secs(2)).await.unwrap();
                        assert_eq!(held.by, ["b"]);
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "replica flushes waited {:?} behind a keeper flush",
            started.elapsed()
        );
        let none = keeper_wanted.await.unwrap().unwrap_err();
        assert_eq!(none.kind(), StateErrorKind::NotHeld, "{none}");
        // Closed while a flush waits: it ends at once.
        a.set("last", "1").await.unwrap();
        let waiting = {
            let a = a.clone();
            tokio::spawn(async move {
                let started = std::time::Instant::now();
                let ended = a
                    .flush_to(HeldBy::keepers(1), Duration::from_secs(10))
                    .await;
                (ended, started.elapsed())
            })
        };
        tokio::time::sleep(Duration::from_millis(200)).await;
        a.close().await;
        let (ended, took) = waiting.await.unwrap();
        assert_eq!(ended.unwrap_err().kind(), StateErrorKind::Closed);
        assert!(took < Duration::from_secs(2), "ended after {took:?}");
    })
    .await
    .expect("bounded");
}

pub async fn a_keeper_holds_a_map_its_writers_left_and_again_after_its_restart(m: &dyn Bus) {
    timeout(LIMIT, async {
        let dir = tempfile::tempdir().unwrap();
        let aether = m.aether().await;
        let kept = keeper(&aether, dir.path(), |_| {}).await;
        // One keeper a directory.
        let mut again = StateConfig {
            dir: Some(dir.path().into()),
            ..fast()
        };
        again.keeper.maps = vec!["*".into()];
        let second = Keeper::start_with(&aether, "second", again)
            .await
            .unwrap_err();
        assert!(
            second.to_string().contains("another keeper keeps"),
            "{second}"
        );
        // A one-shot writer: writes, waits for the keeper, goes.
        for n in 0..3 {
            let writer = open(&m.aether().await, &format!("script-{n}")).await;
            writer.set_json(&format!("k.{n}"), &n).await.unwrap();
            writer.delete("gone").await.unwrap();
            let held = writer
                .flush_to(HeldBy::keepers(1), Duration::from_secs(5))
                .await
                .unwrap();
            assert_eq!(
                (held.keepers, held.by.as_slice()),
                (1, &["keeper".to_string()][..])
            );
            writer.close().await;
        }
        assert_eq!(kept.maps(), ["home"]);
        assert_eq!(kept.stats().maps, 1);
        let late = open(&m.aether().await, "late").await;
        assert_eq!(late.len(), 3, "caught up from the keeper");
        late.close().await;
        // The keeper stops and starts again on its directory: it opens what
        // it kept before anyone asks.
        kept.close().await;
        drop(kept);
        let again = keeper(&aether, dir.path(), |_| {}).await;
        assert_eq!(again.maps(), ["home"], "{:?}", again.stats());
        let late = open(&m.aether().await, "later").await;
        assert_eq!(late.get_json::<u32>("k.2").unwrap(), Some(2));
        assert_eq!(late.len(), 3);
        again.close().await;
    })
    .await
    .expect("bounded");
}

pub async fn a_full_keeper_refuses_with_its_reason_and_keeps_running(m: &dyn Bus) {
    timeout(LIMIT, async {
        let dir = tempfile::tempdir().unwrap();
        let aether = m.aether().await;
        let kept = keeper(&aether, dir.path(), |c| {
            c.max_keys = 2;
            c.keeper.max_maps = 1;
        })
        .await;
        let writer = open(&m.aether().await, "writer").await;
        for n in 0..3 {
            writer.set_json(&format!("k.{n}"), &n).await.unwrap();
        }
        let full = writer
            .flush_to(HeldBy::keepers(1), Duration::from_secs(5))
            .await
            .unwrap_err();
        assert_eq!(full.kind(), StateErrorKind::Full, "{full}");
        assert!(full.to_string().contains("keeper \"keeper\""), "{full}");
        // (Its replica answers while its `open` still catches up.)
        until("the keeper lists the map", || kept.map("home").is_some()).await;
        let map = kept.map("home").unwrap();
        assert_eq!(map.len(), 2);
        assert!(map.stats().refused(Refusal::Full) >= 1);
        // A second map is past max_maps: counted, not kept.
        let other = StateMap::builder("garage")
            .node("writer")
            .config(fast())
            .open(&m.aether().await)
            .await
            .unwrap();
        other.set("door", "shut").await.unwrap();
        let none = other
            .flush_to(HeldBy::keepers(1), Duration::from_secs(5))
            .await
            .unwrap_err();
        // Told at once why, not left to time out.
        assert_eq!(none.kind(), StateErrorKind::Full, "{none}");
        assert!(none.to_string().contains("max_maps"), "{none}");
        until("the refused map is counted", || {
            kept.stats().refused_maps == 1
        })
        .await;
        assert_eq!(kept.maps(), ["home"]);
        // Still keeping: a write that fits is held (deletes of the two keys
        // it holds, whichever two came first).
        let held: Vec<String> = map.entries().into_iter().map(|(k, _)| k).collect();
        writer.delete(&held[0]).await.unwrap();
        let fits = StateMap::builder("home")
            .node("second")
            .config(fast())
            .open(&m.aether().await)
            .await
            .unwrap();
        fits.delete(&held[1]).await.unwrap();
        fits.flush_to(HeldBy::keepers(1), Duration::from_secs(5))
            .await
            .unwrap();
        kept.close().await;
    })
    .await
    .expect("bounded");
}

/// Two keepers, one of them full: a write the full one refused is held by
/// the other (the writer's flush succeeds, held by the keeper with room),
/// and a replica that opens later has it whichever keeper its
/// catch-up asked first (the full one says it lacks writes, and the
/// replica asks another).
pub async fn a_late_replica_has_a_write_a_full_keeper_refused(m: &dyn Bus) {
    timeout(LIMIT, async {
        let (full_dir, roomy_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let mut config = StateConfig {
            dir: Some(full_dir.path().into()),
            max_keys: 1,
            ..fast()
        };
        config.keeper.maps = vec!["*".into()];
        let full = Keeper::start_with(&m.aether().await, "full", config)
            .await
            .unwrap();
        let mut config = StateConfig {
            dir: Some(roomy_dir.path().into()),
            ..fast()
        };
        config.keeper.maps = vec!["*".into()];
        let roomy = Keeper::start_with(&m.aether().await, "roomy", config)
            .await
            .unwrap();
        let writer = open(&m.aether().await, "writer").await;
        writer.set("first", "1").await.unwrap();
        until("both keepers keep the map", || {
            full.map("home").is_some_and(|m| m.get("first").is_some())
                && roomy.map("home").is_some_and(|m| m.get("first").is_some())
        })
        .await;
        writer.set("second", "2").await.unwrap();
        // Held by a keeper: the roomy one, though the full one refused it.
        let held = writer
            .flush_to(HeldBy::keepers(1), Duration::from_secs(5))
            .await
            .expect("held by the keeper with room");
        assert_eq!(held.by, ["roomy"]);
        let refused = full.map("home").unwrap();
        until("the full keeper refused the second write", || {
            refused.stats().refused(Refusal::Full) >= 1
        })
        .await;
        assert!(refused.get("second").is_none());
        writer.close().await;
        for n in 0..6 {
            let late = open(&m.aether().await, &format!("late-{n}")).await;
            assert_eq!(
                late.get("second").as_deref(),
                Some(&b"2"[..]),
                "late replica {n} lacks the write the full keeper refused"
            );
            late.close().await;
        }
        full.close().await;
        roomy.close().await;
    })
    .await
    .expect("bounded");
}

pub async fn presence_values_reach_every_replica_and_go_with_it(m: &dyn Bus) {
    timeout(LIMIT, async {
        let a = open(&m.aether().await, "a").await;
        let b = open(&m.aether().await, "b").await;
        let shown = |map: &StateMap| {
            map.presences()
                .into_iter()
                .map(|p| (p.node, p.slot, String::from_utf8(p.value.to_vec()).unwrap()))
                .collect::<Vec<_>>()
        };
        let one = |node: &str, slot: &str, value: &str| {
            (node.to_string(), slot.to_string(), value.to_string())
        };
        a.set_presence("user", r#"{"name":"Ada"}"#).unwrap();
        a.set_presence_json("cursor", &serde_json::json!({"x": 1}))
            .unwrap();
        until("b sees a's values", || {
            shown(&b)
                == [
                    one("a", "cursor", r#"{"x":1}"#),
                    one("a", "user", r#"{"name":"Ada"}"#),
                ]
        })
        .await;
        assert!(
            a.presences().is_empty(),
            "a replica shows its own values in own_presence"
        );
        assert_eq!(a.own_presence().len(), 2);
        // Only the latest of a burst matters; a clear goes too.
        for x in 0..200 {
            a.set_presence_json("cursor", &serde_json::json!({ "x": x }))
                .unwrap();
        }
        a.clear_presence("user").unwrap();
        until("b sees the last move and the clear", || {
            shown(&b) == [one("a", "cursor", r#"{"x":199}"#)]
        })
        .await;
        // A replica that comes later is given the whole set when it meets a.
        let c = open(&m.aether().await, "c").await;
        until("c sees a's value", || {
            shown(&c) == [one("a", "cursor", r#"{"x":199}"#)]
        })
        .await;
        // Values are never the map's.
        assert!(c.is_empty() && b.is_empty());
        // Bad slots and values are typed errors.
        for slot in ["", "with space", "a/b", &"s".repeat(65)] {
            assert_eq!(
                a.set_presence(slot, "1").unwrap_err().kind(),
                StateErrorKind::InvalidName,
                "{slot:?}"
            );
        }
        let big = vec![b'1'; aether_core::config::MAX_PRESENCE_BYTES + 1];
        assert_eq!(
            a.set_presence("user", big).unwrap_err().kind(),
            StateErrorKind::TooLarge
        );
        // Its values go with a replica that leaves.
        let mut changed = b.presences_changed();
        a.close().await;
        timeout(Duration::from_secs(2), async {
            while !b.presences().is_empty() {
                changed.changed().await.unwrap();
            }
        })
        .await
        .expect("a's values gone from b as it says goodbye");
        until("c drops a's values", || c.presences().is_empty()).await;
        assert_eq!(
            a.set_presence("user", "1").unwrap_err().kind(),
            StateErrorKind::Closed
        );
    })
    .await
    .expect("bounded");
}

#[macro_export]
macro_rules! state_suite {
    ($factory:expr) => {
        $crate::state_suite!(@cases $factory; a_write_is_seen_here_at_once_and_by_every_replica_soon, a_late_replica_has_the_whole_state_when_open_returns, a_replica_closed_just_before_a_late_one_opens_leaves_the_answering_to_others, watchers_get_each_change_with_old_and_new_values_and_losers_hear_superseded, concurrent_writes_of_one_key_settle_on_the_same_value_everywhere, changes_a_replica_missed_are_repaired_by_anti_entropy, bad_writes_are_typed_errors_and_change_nothing, replicas_with_other_limits_converge, nodes_own_their_keys_and_see_who_is_there, writes_stamped_elsewhere_merge_by_the_same_rules, watch_streams_each_key_in_stamp_order_under_concurrent_writers, a_flush_waits_for_another_replica_and_says_when_none_holds_the_writes, writers_in_flight_are_acknowledged_together, flushes_for_a_replica_do_not_wait_for_one_for_a_keeper, a_keeper_holds_a_map_its_writers_left_and_again_after_its_restart, a_full_keeper_refuses_with_its_reason_and_keeps_running, a_late_replica_has_a_write_a_full_keeper_refused, presence_values_reach_every_replica_and_go_with_it);
    };
    (@cases $factory:expr; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let bus = $factory;
                state_suite::$case(&bus).await;
            }
        )*
    };
}
