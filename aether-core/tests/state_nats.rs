//! Replicated state over NATS: the suite both mediums run
//! (`state_suite/`), each replica on its own connection; then replicas in
//! separate aethers (as separate
//! processes would be) converge, a late one catches up before `open`
//! returns, one whose aether vanishes leaves after the presence timeout,
//! and hostile waves from a raw NATS client (written from ARCHITECTURE.md's
//! byte layout) are refused and counted without changing the map: a
//! node-owned key written by another, a stamp from the far future, a change
//! before the tombstone horizon, garbage. With signatures required, a
//! wave claiming a replica's name is dropped as forged. Bounded in time.

#![cfg(feature = "nats")]

mod state_suite;

use std::{
    future::Future,
    pin::Pin,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use aether_core::{
    Aether, AetherConfig, DropReason, Secret, Wave,
    config::{NatsConfig, SecurityConfig},
    state::{Keeper, NodeState, Presence, Refusal, StateConfig, StateMap},
    wire,
};
use aether_testkit::{LogBuffer, NatsServer, RawNats};
use futures_util::StreamExt;
use state_suite::{fast, until};
use tokio::time::timeout;

const LIMIT: Duration = Duration::from_secs(30);

/// Each replica its own connection to one server.
#[derive(Default)]
struct Nats {
    server: tokio::sync::OnceCell<NatsServer>,
}

impl state_suite::Bus for Nats {
    fn aether(&self) -> Pin<Box<dyn Future<Output = Aether> + Send + '_>> {
        Box::pin(async move {
            let server = self
                .server
                .get_or_try_init(NatsServer::start)
                .await
                .expect("nats-server starts");
            Aether::connect(over(&server.url()))
                .await
                .expect("connects to the test server")
        })
    }
}

state_suite!(Nats::default());

fn over(url: &str) -> AetherConfig {
    AetherConfig {
        nats: NatsConfig {
            urls: vec![url.into()],
            ping_interval: Duration::from_millis(200),
            reconnect_delay_max: Duration::from_millis(100),
            batch: aether_core::config::NatsBatch {
                enabled: aether_testkit::batch_frames(),
                ..Default::default()
            },
            ..Default::default()
        },
        ..Default::default()
    }
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

/// A state message of live changes, from ARCHITECTURE.md: `"AS" | 1 |
/// kind 1 | bucket 0xFF | last 0 | count u16 | entries`, an entry `key len
/// u16 | key | physical u64 | logical u32 | node u64 | writer len u8 |
/// writer | has value u8 | value len u32 | value`, little-endian.
fn changes(key: &str, physical_ns: u64, writer: &str, value: &[u8]) -> Vec<u8> {
    let mut out = b"AS\x02\x01\xFF\x00".to_vec();
    out.extend_from_slice(&1u16.to_le_bytes());
    out.extend_from_slice(&(key.len() as u16).to_le_bytes());
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(&physical_ns.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&0xBAD_u64.to_le_bytes());
    out.push(writer.len() as u8);
    out.extend_from_slice(writer.as_bytes());
    out.push(1);
    out.extend_from_slice(&(value.len() as u32).to_le_bytes());
    out.extend_from_slice(value);
    out
}

/// An envelope with `source` and `payload`, as a foreign client writes it
/// from the wire format: a fresh wave stamped now.
fn envelope(source: &str, payload: &[u8]) -> Vec<u8> {
    let plain = wire::encode_as(
        wire::WireVersion::V1,
        &Wave::builder("any.channel")
            .payload(payload.to_vec())
            .build()
            .unwrap(),
    );
    let mut header = plain[..wire::HEADER_LEN].to_vec();
    let id = now_ns() as u128 ^ ((payload.len() as u128) << 64);
    header[4..20].copy_from_slice(&id.to_be_bytes());
    header[20..28].copy_from_slice(&now_ns().to_le_bytes());
    header[28..36].copy_from_slice(&7u64.to_le_bytes());
    header[wire::HEADER_LEN - 1] = source.len() as u8;
    let mut body = header;
    body.extend_from_slice(source.as_bytes());
    body.extend_from_slice(payload);
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_in_separate_aethers_converge_and_a_late_one_catches_up() {
    timeout(LIMIT, async {
        let server = NatsServer::start().await.unwrap();
        let (x, y) = (
            Aether::connect(over(&server.url())).await.unwrap(),
            Aether::connect(over(&server.url())).await.unwrap(),
        );
        let a = StateMap::builder("home")
            .node("a")
            .config(fast())
            .open(&x)
            .await
            .unwrap();
        let b = StateMap::builder("home")
            .node("b")
            .config(fast())
            .open(&y)
            .await
            .unwrap();
        for n in 0..200 {
            a.set_json(&format!("k.{n}"), &n).await.unwrap();
            b.set_json(&format!("j.{n}"), &n).await.unwrap();
        }
        b.delete("k.3").await.unwrap();
        until("both hold everything", || a.len() == 399 && b.len() == 399).await;
        assert_eq!(a.entries(), b.entries());

        let z = Aether::connect(over(&server.url())).await.unwrap();
        let late = StateMap::builder("home")
            .node("late")
            .config(fast())
            .open(&z)
            .await
            .unwrap();
        assert_eq!(late.len(), 399, "caught up before open returned");
        assert_eq!(late.entries(), a.entries());
        until("late sees both peers", || late.peers() == ["a", "b"]).await;

        // b's aether goes without a goodbye: a sees b leave after the
        // presence timeout.
        let mut presence = a.presence();
        y.close();
        let left = timeout(Duration::from_secs(3), async {
            loop {
                if let Some(Presence::Left(name)) = presence.next().await {
                    return name;
                }
            }
        })
        .await
        .unwrap();
        assert_eq!(left, "b");
    })
    .await
    .expect("bounded");
}

/// A replica alone on the bus but for observers of every channel (a
/// gateway resonates on `*`) hears "no responders" to its catch-up at once:
/// observers are no responders. With a peer, the peer answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn observers_of_every_channel_do_not_hold_up_a_catch_up() {
    timeout(LIMIT, async {
        let server = NatsServer::start().await.unwrap();
        let observing = Aether::connect(over(&server.url())).await.unwrap();
        let mut observer = aether_core::Vibrator::create("observer", &observing)
            .await
            .unwrap();
        observer.resonate_on("*").await.unwrap();
        let config = StateConfig {
            ready_timeout: Duration::from_secs(20),
            ..fast()
        };
        let x = Aether::connect(over(&server.url())).await.unwrap();
        let started = std::time::Instant::now();
        let a = StateMap::builder("home")
            .node("a")
            .config(config.clone())
            .open(&x)
            .await
            .unwrap();
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "open waited {:?} for an observer to answer a catch-up",
            started.elapsed()
        );
        a.set_json("k", &1).await.unwrap();
        // A second replica catches up from the first, through the same
        // subjects.
        let y = Aether::connect(over(&server.url())).await.unwrap();
        let b = StateMap::builder("home")
            .node("b")
            .config(config)
            .open(&y)
            .await
            .unwrap();
        assert_eq!(
            b.get_json::<i32>("k").unwrap(),
            Some(1),
            "caught up before open returned"
        );
        drop(observer);
    })
    .await
    .expect("bounded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_waves_are_refused_counted_and_change_nothing() {
    // What the replicas log (each test is a process of its own under the
    // runner; no other test here sets a subscriber).
    let logs = LogBuffer::default();
    let _ = tracing::subscriber::set_global_default(
        tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(logs.clone())
            .finish(),
    );
    timeout(LIMIT, async {
        let server = NatsServer::start().await.unwrap();
        let aether = Aether::connect(over(&server.url())).await.unwrap();
        let sensor = NodeState::open_with(
            &aether,
            StateMap::builder("sensors")
                .node("sensor_kitchen")
                .config(fast()),
        )
        .await
        .unwrap();
        sensor.update("temperature", "72.5").await.unwrap();
        let other = Aether::connect(over(&server.url())).await.unwrap();
        let monitor = NodeState::open_with(
            &other,
            StateMap::builder("sensors").node("monitor").config(fast()),
        )
        .await
        .unwrap();
        assert!(monitor.read("sensor_kitchen", "temperature").is_some());

        // A keeper of every map on the bus, which garbage must not make
        // open one.
        let dir = tempfile::tempdir().unwrap();
        let mut keeping = StateConfig {
            dir: Some(dir.path().into()),
            ..fast()
        };
        keeping.keeper.maps = vec!["*".into()];
        let keeper = Keeper::start_with(&aether, "keeper", keeping)
            .await
            .unwrap();
        let mut raw = RawNats::connect(server.addr()).await.unwrap();
        let subject = "aether._state.sensors.c";
        // Another writes the kitchen's key, claiming the kitchen as writer.
        let forged = changes(
            "node/sensor_kitchen/temperature",
            now_ns(),
            "sensor_kitchen",
            b"-40",
        );
        raw.publish(subject, None, &envelope("mallory", &forged))
            .await
            .unwrap();
        // The far future, and before the horizon.
        let future = changes("weather", now_ns() + 3_600_000_000_000, "mallory", b"x");
        raw.publish(subject, None, &envelope("mallory", &future))
            .await
            .unwrap();
        let ancient = changes(
            "weather",
            now_ns() - 48 * 3_600_000_000_000,
            "mallory",
            b"x",
        );
        raw.publish(subject, None, &envelope("mallory", &ancient))
            .await
            .unwrap();
        // Garbage, a count larger than what follows, a value over the cap.
        raw.publish(subject, None, &envelope("mallory", b"not a state message"))
            .await
            .unwrap();
        let mut short = b"AS\x02\x01\xFF\x00".to_vec();
        short.extend_from_slice(&4000u16.to_le_bytes());
        raw.publish(subject, None, &envelope("mallory", &short))
            .await
            .unwrap();
        // A value whose length says more than any replica takes (the
        // protocol's bound, whatever a replica's own max_value_bytes).
        let mut huge = changes("big", now_ns(), "mallory", &[0; 8]);
        let at = huge.len() - 12;
        let most = u32::try_from(aether_core::config::MOST_VALUE_BYTES + 1).unwrap();
        huge[at..at + 4].copy_from_slice(&most.to_le_bytes());
        raw.publish(subject, None, &envelope("mallory", &huge))
            .await
            .unwrap();
        // A replica of another version of the payloads (its version byte):
        // refused, and said.
        let mut other_version = changes("weather", now_ns(), "mallory", b"old");
        other_version[2] = 1;
        raw.publish(subject, None, &envelope("mallory", &other_version))
            .await
            .unwrap();
        // A hold (what a flush sends) is taken by the same rules: the
        // kitchen's key from another is refused.
        let mut hold = b"AS\x02\x06".to_vec();
        hold.extend_from_slice(&7u64.to_le_bytes());
        hold.extend_from_slice(&9u64.to_le_bytes());
        hold.extend_from_slice(&forged[6..]);
        raw.publish("aether._state.sensors.k", None, &envelope("mallory", &hold))
            .await
            .unwrap();
        // Garbage on the hold and presence channels of made-up maps, and a
        // hold cut short.
        for (n, body) in [
            &b"not a state message"[..],
            b"AS\x02\x06\x01\x02",
            b"AS\x02\x09",
        ]
        .into_iter()
        .enumerate()
        {
            for kind in ["k", "p"] {
                raw.publish(
                    &format!("aether._state.junk{n}.{kind}"),
                    None,
                    &envelope("mallory", body),
                )
                .await
                .unwrap();
            }
        }
        raw.ping().await.unwrap();

        for map in [sensor.map(), monitor.map()] {
            until("every hostile wave refused", || {
                let s = map.stats();
                s.refused(Refusal::NotOwner) == 2
                    && s.refused(Refusal::Future) == 1
                    && s.refused(Refusal::TooOld) == 1
                    && s.refused(Refusal::Malformed) == 4
            })
            .await;
            assert_eq!(
                map.get("node/sensor_kitchen/temperature").as_deref(),
                Some(&b"72.5"[..])
            );
            assert!(map.get("weather").is_none() && map.get("big").is_none());
        }
        // The stamps refused are said once by each program's replica (the
        // keeper says them in its own summary), a clock off being the
        // likely cause.
        let said = logs.text();
        let warned = said
            .lines()
            .filter(|l| l.contains("refused for their stamps") && l.contains("map=sensors"))
            .count();
        assert_eq!(warned, 2, "{said}");
        let versions = said
            .lines()
            .filter(|l| {
                l.contains("another version of the state payloads")
                    && l.contains("map=sensors")
                    && l.contains("version=1")
            })
            .count();
        assert_eq!(versions, 2, "{said}");

        until("the keeper keeps the map its replicas hold", || {
            keeper.maps() == ["sensors"]
        })
        .await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(keeper.maps(), ["sensors"], "garbage opened no map");
        assert!(!dir.path().join("junk0").exists());
        // A well-formed change from a foreign client that names itself is
        // taken: the format is all a client needs.
        let honest = changes("weather", now_ns(), "mallory", b"sunny");
        raw.publish(subject, None, &envelope("mallory", &honest))
            .await
            .unwrap();
        until("the honest change arrives", || {
            monitor.map().get("weather").is_some()
        })
        .await;
    })
    .await
    .expect("bounded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_signatures_required_a_wave_claiming_a_replicas_name_is_forged() {
    timeout(LIMIT, async {
        let server = NatsServer::start().await.unwrap();
        let mut security = SecurityConfig::default();
        security.signing_keys.insert(
            "sensor_kitchen".into(),
            Secret::new("kitchen-key-0123456789abcdef"),
        );
        security.require_signatures = true;
        let config = AetherConfig {
            security,
            ..over(&server.url())
        };
        let aether = Aether::connect(config).await.unwrap();
        let kitchen = NodeState::open_with(
            &aether,
            StateMap::builder("sensors")
                .node("sensor_kitchen")
                .config(fast()),
        )
        .await
        .unwrap();
        kitchen.update("temperature", "72.5").await.unwrap();

        let mut raw = RawNats::connect(server.addr()).await.unwrap();
        let forged = changes(
            "node/sensor_kitchen/temperature",
            now_ns(),
            "sensor_kitchen",
            b"-40",
        );
        raw.publish(
            "aether._state.sensors.c",
            None,
            &envelope("sensor_kitchen", &forged),
        )
        .await
        .unwrap();
        raw.ping().await.unwrap();
        until("dropped as forged", || {
            aether.stats().dropped(DropReason::Forged) >= 1
        })
        .await;
        assert_eq!(
            kitchen.read("sensor_kitchen", "temperature").as_deref(),
            Some(&b"72.5"[..])
        );
    })
    .await
    .expect("bounded");
}

/// The node id in a hello payload off the wire (ARCHITECTURE.md: `"AS" | 1 |
/// kind 3 | node u64 | leaving u8 | owned u64`).
fn hello_node(subject: &str, body: &[u8]) -> Option<u64> {
    let channel = aether_core::Channel::new(subject.strip_prefix("aether.")?);
    let wave = wire::decode(channel, body.to_vec().into(), &wire::Limits::default()).ok()?;
    let payload = wave.payload_bytes();
    (payload.len() == 21 && payload[3] == 3)
        .then(|| u64::from_le_bytes(payload[4..12].try_into().unwrap()))
}

/// The kind of a state wave off the wire (1 changes, 5 ask, 8 ping...).
fn state_kind(body: &[u8]) -> Option<u8> {
    let channel = aether_core::Channel::new("_state.any.r");
    let wave = wire::decode(channel, body.to_vec().into(), &wire::Limits::default()).ok()?;
    wave.payload_bytes().get(3).copied()
}

/// Whether a state wave off the wire carries changes (kind 1).
fn repair_kind(body: &[u8]) -> bool {
    state_kind(body) == Some(1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_digests_repairs_and_hellos_cannot_make_replicas_flood() {
    timeout(LIMIT, async {
        let server = NatsServer::start().await.unwrap();
        let config = || StateConfig {
            heartbeat_interval: Duration::from_millis(200),
            presence_timeout: Duration::from_millis(1000),
            anti_entropy_interval: Duration::from_millis(200),
            ..Default::default()
        };
        let x = Aether::connect(over(&server.url())).await.unwrap();
        let alpha = StateMap::builder("lab")
            .node("alpha")
            .config(config())
            .open(&x)
            .await
            .unwrap();
        for i in 0..300 {
            alpha.set(&format!("k.{i}"), "v").await.unwrap();
        }
        let mut raw = RawNats::connect(server.addr()).await.unwrap();
        raw.subscribe("aether._state.lab.p", 1, None).await.unwrap();
        raw.subscribe("aether._state.lab.r.>", 2, None)
            .await
            .unwrap();
        raw.ping().await.unwrap();
        let alpha_id = loop {
            let m = raw
                .next_message(Duration::from_secs(5))
                .await
                .unwrap()
                .unwrap();
            if let Some(node) = hello_node(&m.subject, &m.payload) {
                break node;
            }
        };

        // A digest that claims every bucket differs, from nobody alpha
        // knows, naming an address: alpha sends no repair anywhere.
        let repair_subject = format!("aether._state.lab.r.{alpha_id:016x}");
        let mut digest = b"AS\x02\x02".to_vec();
        digest.extend_from_slice(&0x42u64.to_le_bytes());
        for i in 0..64u64 {
            digest.extend_from_slice(&(i * 7919 + 1).to_le_bytes());
        }
        for _ in 0..20 {
            raw.publish(&repair_subject, None, &envelope("mallory", &digest))
                .await
                .unwrap();
        }
        // A repair nobody asked for, its entry in another bucket than it says.
        let mut repair = b"AS\x02\x01\x00\x01".to_vec();
        let entry = changes("k.wrong", now_ns(), "mallory", b"x");
        repair.extend_from_slice(&entry[6..]);
        let bucket_of_wrong = {
            let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
            for byte in b"k.wrong" {
                hash ^= u64::from(*byte);
                hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
            }
            (hash % 64) as u8
        };
        if bucket_of_wrong == 0 {
            repair[4] = 1;
        }
        raw.publish(&repair_subject, None, &envelope("mallory", &repair))
            .await
            .unwrap();
        // 200 hellos from made-up names at once.
        for i in 0..200u64 {
            let mut hello = b"AS\x02\x03".to_vec();
            hello.extend_from_slice(&(1000 + i).to_le_bytes());
            hello.push(0);
            hello.extend_from_slice(&0u64.to_le_bytes());
            raw.publish(
                "aether._state.lab.p",
                None,
                &envelope(&format!("ghost{i}"), &hello),
            )
            .await
            .unwrap();
        }
        raw.ping().await.unwrap();

        let (mut hellos, mut repairs) = (0, 0);
        let until = tokio::time::Instant::now() + Duration::from_secs(1);
        while let Some(m) = raw
            .next_message(until.saturating_duration_since(tokio::time::Instant::now()))
            .await
            .unwrap()
        {
            if m.subject.ends_with(".p") && hello_node(&m.subject, &m.payload) == Some(alpha_id) {
                hellos += 1;
            }
            // Repairs (kind 1), not the probes of the members it was told
            // of (a ping each heartbeat, whoever they are).
            if m.subject.contains(".r.") && m.subject != repair_subject && repair_kind(&m.payload) {
                repairs += 1;
            }
        }
        assert_eq!(repairs, 0, "a forged digest made alpha send repairs");
        // Its heartbeats (5 a second) and at most a few hellos back, not 200.
        assert!(hellos <= 12, "{hellos} hellos from alpha in a second");
        until_refused(&alpha, Refusal::Malformed, 1).await;
        assert!(alpha.get("k.wrong").is_none());
    })
    .await
    .expect("bounded");
}

async fn until_refused(map: &StateMap, reason: Refusal, n: u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while map.stats().refused(reason) < n {
        assert!(tokio::time::Instant::now() < deadline, "{:?}", map.stats());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owners_missed_keys_come_from_it_and_a_departed_owner_leaves_no_repair_loop() {
    timeout(LIMIT, async {
        let server = NatsServer::start().await.unwrap();
        let config = || StateConfig {
            heartbeat_interval: Duration::from_millis(100),
            presence_timeout: Duration::from_millis(500),
            anti_entropy_interval: Duration::from_millis(100),
            ..Default::default()
        };
        let (x, y, z) = (
            Aether::connect(over(&server.url())).await.unwrap(),
            Aether::connect(over(&server.url())).await.unwrap(),
            Aether::connect(over(&server.url())).await.unwrap(),
        );
        let kitchen =
            NodeState::open_with(&x, StateMap::builder("s").node("kitchen").config(config()))
                .await
                .unwrap();
        // The monitor takes one live change a second from a writer: it
        // misses most of the kitchen's burst.
        let monitor = NodeState::open_with(
            &y,
            StateMap::builder("s").node("monitor").config(StateConfig {
                max_writes_per_s: 1,
                ..config()
            }),
        )
        .await
        .unwrap();
        for i in 0..30 {
            kitchen
                .update(&format!("t{i}"), format!("{i}"))
                .await
                .unwrap();
        }
        until("the monitor refused some", || {
            monitor.map().stats().refused(Refusal::RateLimited) > 0
        })
        .await;
        until("the monitor has all 30 from the kitchen", || {
            (0..30).all(|i| monitor.read("kitchen", &format!("t{i}")).is_some())
        })
        .await;

        // The kitchen goes; a newcomer does not get its keys (only an owner
        // sends them), and nobody repairs forever over it.
        kitchen.close().await;
        let late = NodeState::open_with(&z, StateMap::builder("s").node("late").config(config()))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(600)).await;
        let before = (monitor.map().stats().repaired, late.map().stats().repaired);
        tokio::time::sleep(Duration::from_millis(600)).await;
        let after = (monitor.map().stats().repaired, late.map().stats().repaired);
        assert_eq!(before, after, "repairs go on after the owner left");
        assert!(late.read("kitchen", "t0").is_none());
        assert!(monitor.read("kitchen", "t0").is_some());
    })
    .await
    .expect("bounded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owner_back_without_its_state_is_not_asked_forever() {
    timeout(LIMIT, async {
        let server = NatsServer::start().await.unwrap();
        let config = || StateConfig {
            heartbeat_interval: Duration::from_millis(100),
            presence_timeout: Duration::from_millis(500),
            anti_entropy_interval: Duration::from_millis(100),
            ..Default::default()
        };
        let (x, y) = (
            Aether::connect(over(&server.url())).await.unwrap(),
            Aether::connect(over(&server.url())).await.unwrap(),
        );
        let kitchen =
            NodeState::open_with(&x, StateMap::builder("s").node("kitchen").config(config()))
                .await
                .unwrap();
        let monitor =
            NodeState::open_with(&y, StateMap::builder("s").node("monitor").config(config()))
                .await
                .unwrap();
        kitchen.update("old", "1").await.unwrap();
        until("the monitor has it", || {
            monitor.read("kitchen", "old").is_some()
        })
        .await;
        kitchen.close().await;

        // The kitchen again, without its state.
        let z = Aether::connect(over(&server.url())).await.unwrap();
        let again =
            NodeState::open_with(&z, StateMap::builder("s").node("kitchen").config(config()))
                .await
                .unwrap();
        let mut raw = RawNats::connect(server.addr()).await.unwrap();
        raw.subscribe("aether._state.s.r.>", 1, None).await.unwrap();
        raw.ping().await.unwrap();
        let mut messages = 0;
        let until_at = tokio::time::Instant::now() + Duration::from_secs(2);
        while let Some(m) = raw
            .next_message(until_at.saturating_duration_since(tokio::time::Instant::now()))
            .await
            .unwrap()
        {
            // Asks (kind 5) and what answers them (changes, kind 1); not
            // the probes and digests every member sends each round.
            if matches!(state_kind(&m.payload), Some(1 | 5)) {
                messages += 1;
            }
        }
        // Twenty heartbeats: at most three asks (and their answers).
        assert!(messages <= 6, "{messages} asks and repairs in 2 s");
        assert!(again.read("kitchen", "old").is_none());
        assert!(
            monitor.read("kitchen", "old").is_some(),
            "kept, as a departed owner's keys are"
        );
    })
    .await
    .expect("bounded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_the_medium_will_not_take_say_so_are_kept_and_arrive_after_the_server_is_back() {
    timeout(LIMIT, async {
        let mut server = NatsServer::builder().start().await.unwrap();
        let mut cramped = over(&server.url());
        cramped.nats.outbox_capacity = 20;
        let writer_side = Aether::connect(cramped).await.unwrap();
        let reader_side = Aether::connect(over(&server.url())).await.unwrap();
        let open = |node: &str| StateMap::builder("down").node(node).config(fast());
        let writer = open("writer").open(&writer_side).await.unwrap();
        let reader = open("reader").open(&reader_side).await.unwrap();
        writer.set("first", "1").await.unwrap();
        until("the reader has the first write", || {
            reader.get("first").is_some()
        })
        .await;

        server.kill().await.unwrap();
        until("the writer sees the server gone", || {
            writer_side.connection().state == aether_core::ConnectionState::Disconnected
        })
        .await;
        // Past the outbox's room the medium refuses the changes: writes
        // say so, and every one is kept here.
        let mut refused = 0;
        for i in 0..300 {
            match writer.set(&format!("k.{i}"), format!("{i}")).await {
                Ok(_) => {}
                Err(e) => {
                    assert_eq!(e.kind(), aether_core::state::StateErrorKind::NotSent, "{e}");
                    refused += 1;
                }
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        assert!(
            refused > 0,
            "no write heard that its changes were not leaving"
        );
        assert!(writer.stats().unsent > 0);
        assert_eq!(writer.len(), 301, "every write is kept here");
        // A flush meanwhile names every write held here alone.
        let alone = writer.flush(Duration::from_millis(300)).await.unwrap_err();
        assert_eq!(alone.kind(), aether_core::state::StateErrorKind::NotHeld);
        let held_here = writer.unacknowledged();
        assert!(held_here >= 300, "{held_here}");
        assert!(
            alone.to_string().contains(&format!("{held_here} write(s)")),
            "{alone}"
        );

        // Back: the reader gets all of them (what the outbox held, and the
        // rest by anti-entropy), and writes succeed again.
        server.restart().await.unwrap();
        timeout(Duration::from_secs(20), async {
            while reader.len() < 301 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("the reader converges once the server is back");
        assert_eq!(reader.entries(), writer.entries());
        timeout(Duration::from_secs(10), async {
            while writer.set("after", "1").await.is_err() {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await
        .expect("writes succeed again");
    })
    .await
    .expect("bounded");
}

/// A keeper of many maps stops within seconds while its server is down:
/// its maps say goodbye together, each for a bounded while, not one after
/// another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keeper_of_many_maps_closes_soon_with_its_server_down() {
    timeout(LIMIT, async {
        let mut server = NatsServer::start().await.unwrap();
        let aether = Aether::connect(over(&server.url())).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut keeping = StateConfig {
            dir: Some(dir.path().into()),
            ..fast()
        };
        keeping.keeper.maps = vec!["*".into()];
        let keeper = Keeper::start_with(&aether, "keeper", keeping)
            .await
            .unwrap();
        let writers = Aether::connect(over(&server.url())).await.unwrap();
        for n in 0..12 {
            let map = StateMap::builder(format!("m{n}"))
                .node("writer")
                .config(fast())
                .open(&writers)
                .await
                .unwrap();
            map.set("k", "v").await.unwrap();
            map.flush_to(
                aether_core::state::HeldBy::keepers(1),
                Duration::from_secs(5),
            )
            .await
            .unwrap();
            map.close().await;
        }
        assert_eq!(keeper.maps().len(), 12);
        server.kill().await.unwrap();
        let started = std::time::Instant::now();
        keeper.close().await;
        assert!(
            started.elapsed() < Duration::from_secs(6),
            "closed in {:?}",
            started.elapsed()
        );
    })
    .await
    .expect("bounded");
}
