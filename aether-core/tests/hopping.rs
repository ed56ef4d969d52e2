//! Time-synchronized frequency hopping: the hop sequence as properties (time
//! given as an argument, never the wall clock), then hopping vibrators on the
//! embedded medium and over NATS (real `nats-server` processes), with a raw
//! NATS client as the observer on the wire.

#![cfg(feature = "nats")]

use std::{
    collections::{BTreeSet, HashSet},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use aether_core::{
    Aether, AetherConfig, Channel, DropReason, EmitErrorKind, ResonateErrorKind, Secret, Vibrator,
    VibratorErrorKind, Wave,
    config::{HoppingConfig, NatsConfig},
    hopping::{self, HopKey, HopSequence, Refusal},
};
use aether_testkit::{NatsServer, RawNats};
use proptest::prelude::*;
use serde_json::json;
use tokio::time::{sleep, timeout};

const SECRET: &str = "the shared hopping secret";
const OTHER_SECRET: &str = "another team's hopping secret";
/// Short slots, so that a test crosses many of them quickly.
const FAST_MS: u64 = 20;
/// Slots over NATS: still short, but long enough that a wave's way through
/// a server and two busy test processes (on a loaded 2-core machine) stays
/// well within one slot, as the slot length must be in production.
const NATS_MS: u64 = 50;

// ---------------------------------------------------------------------------
// The sequence: properties, with the time as an argument.

fn key(secret: &str) -> HopKey {
    HopKey::new(Some(&Secret::new(secret)))
}

fn sequence(secret: &str, base: &str, hop_count: u32, interval_ms: u64) -> HopSequence {
    HopSequence::new(key(secret), Channel::new(base), hop_count, interval_ms).unwrap()
}

/// Base channels that start with a letter outside the hex digits, so no
/// hex token can contain them by chance.
fn base_channel() -> impl Strategy<Value = String> {
    "[g-z][a-z0-9_-]{2,12}(\\.[a-z0-9_-]{1,12}){0,3}"
}

fn secret() -> impl Strategy<Value = String> {
    "[ -~]{16,40}"
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// For any time and any clock skew up to one slot either way, the
    /// receiver's window holds the sender's wire channel and accepts the wave.
    #[test]
    fn sender_and_receiver_agree_within_one_slot_of_skew(
        secret in secret(),
        base in base_channel(),
        hop_count in 1u32..=64,
        interval in 10u64..=60_000,
        sent_at in 0u64..(1u64 << 50),
        skew_per_mille in -1000i64..=1000,
    ) {
        let seq = sequence(&secret, &base, hop_count, interval);
        let skew = skew_per_mille * interval as i64 / 1000;
        let receiver_now = sent_at.saturating_add_signed(skew);
        let wire = seq.channel_at(sent_at);
        prop_assert!(seq.window(receiver_now).contains(&wire));
        prop_assert_eq!(seq.check(&wire, Some(sent_at), receiver_now), Ok(()));
        // The same wave two slots away is a replay.
        let late = sent_at + 2 * interval;
        let refused = seq.check(&wire, Some(sent_at), late);
        let is_outside_window = matches!(refused, Err(Refusal::OutsideWindow { .. }));
        prop_assert!(is_outside_window);
    }

    /// A receiver with another secret shares no wire channel with the
    /// sender (tokens are 128 bits: an overlap would be a 2^-100 chance),
    /// and refuses the sender's waves if one reached it.
    #[test]
    fn a_wrong_secret_shares_no_wire_channel(
        (right, wrong) in (secret(), secret()).prop_filter("two secrets", |(a, b)| a != b),
        base in base_channel(),
        hop_count in 1u32..=16,
        start in 0u64..(1u64 << 40),
    ) {
        let sender = sequence(&right, &base, hop_count, 200);
        let other = sequence(&wrong, &base, hop_count, 200);
        let sent: HashSet<Channel> = (start..start + 200).map(|s| sender.channel_at_slot(s)).collect();
        let heard: HashSet<Channel> = (start..start + 200).map(|s| other.channel_at_slot(s)).collect();
        prop_assert!(sent.is_disjoint(&heard));
        let t = start * 200;
        let wire = sender.channel_at(t);
        prop_assert_eq!(
            other.check(&wire, Some(t), t),
            Err(Refusal::WrongHop { stamp_slot: start })
        );
    }

    /// The wire channel is `_hop.` and 32 hex digits, shows nothing of the
    /// base, and differs for every base and every hop.
    #[test]
    fn the_token_hides_the_base_and_differs_per_base(
        secret in proptest::option::of(secret()),
        (a, b) in (base_channel(), base_channel()).prop_filter("two bases", |(a, b)| a != b),
        hop_count in 1u32..=32,
    ) {
        let key = HopKey::new(secret.map(Secret::new).as_ref());
        let tokens = |base: &str| -> HashSet<Channel> {
            (0..hop_count).map(|h| key.wire_channel(&Channel::new(base), h)).collect()
        };
        let (of_a, of_b) = (tokens(&a), tokens(&b));
        prop_assert_eq!(of_a.len(), hop_count as usize, "one wire channel per hop");
        prop_assert!(of_a.is_disjoint(&of_b));
        for wire in of_a.iter().chain(&of_b) {
            let name = wire.as_str();
            let hex = name.strip_prefix("_hop.").expect("under the reserved token");
            prop_assert_eq!(hex.len(), 32);
            prop_assert!(hex.bytes().all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c)));
            prop_assert!(wire.validate_concrete().is_ok());
            prop_assert!(hopping::is_hop_channel(wire));
            for base in [&a, &b] {
                prop_assert!(!name.contains(base.as_str()));
                let telling = |t: &&str| t.len() > 2 && t.chars().any(|c| !c.is_ascii_hexdigit());
                for token in base.split('.').filter(telling) {
                    prop_assert!(!hex.contains(token), "{} in {}", token, name);
                }
            }
        }
    }
}

/// Hops are spread evenly over `hop_count`: over 10,000 slots the
/// chi-square statistic stays under a bound a uniform sequence exceeds with
/// a chance of about one in 10^8 (df + 8·sqrt(2·df) + 20), and every hop is
/// used.
#[test]
fn hops_are_spread_evenly() {
    let cases = [
        (SECRET, "orders", 2),
        (SECRET, "orders", 4),
        (OTHER_SECRET, "payments.card.captured", 7),
        (SECRET, "telemetry.engine", 16),
        ("yet another secret, longer", "x-1", 50),
    ];
    for (secret, base, hop_count) in cases {
        let seq = sequence(secret, base, hop_count, 200);
        let mut counts = vec![0u64; hop_count as usize];
        let start = 8_500_000_000u64;
        let slots = 10_000u64;
        for s in start..start + slots {
            counts[seq.hop_at_slot(s) as usize] += 1;
        }
        let expected = slots as f64 / f64::from(hop_count);
        let chi2: f64 = counts
            .iter()
            .map(|&n| (n as f64 - expected).powi(2) / expected)
            .sum();
        let df = f64::from(hop_count - 1);
        let bound = df + 8.0 * (2.0 * df).sqrt() + 20.0;
        assert!(
            chi2 < bound,
            "{base} over {hop_count} hops: chi² {chi2:.1} ≥ {bound:.1}: {counts:?}"
        );
        assert!(counts.iter().all(|&n| n > 0), "{counts:?}");
    }
}

/// Values another client can check its implementation against (computed
/// independently with Python's `hmac` and `hashlib`).
#[test]
fn known_values_for_other_clients() {
    let seq = sequence("sixteen byte key", "orders", 4, 200);
    let t = 8_500_000_000 * 200; // slot 8,500,000,000
    assert_eq!(seq.slot(t), 8_500_000_000);
    assert_eq!(seq.hop_at_slot(8_500_000_000), 1);
    assert_eq!(seq.hop_at_slot(8_500_000_001), 3);
    assert_eq!(seq.channel_at(t), "_hop.6d237c4a896084b7e8e4f04fcdd56eb3");
    assert_eq!(
        seq.channel_at(t + 200),
        "_hop.63c5fc47bb40daadef210140355380c6"
    );
    // Without a secret (the empty key), anyone can compute the same.
    let public = HopSequence::new(HopKey::new(None), Channel::new("orders"), 4, 200).unwrap();
    assert!(!public.key().conceals());
    assert_eq!(public.hop_at_slot(8_500_000_000), 3);
    assert_eq!(
        public.channel_at(t),
        "_hop.9c6448a3ff1ac61959960e74a65bc54e"
    );
}

#[test]
fn bad_hop_settings_are_refused() {
    let k = || key(SECRET);
    for (base, hops, interval, says) in [
        ("orders", 0, 200, "hop_count must be at least 1"),
        ("orders", 4, 0, "hop_interval_ms must be at least 1"),
        ("orders.*", 4, 200, "wildcards"),
        ("_hop.abc", 4, 200, "reserved"),
        ("a..b", 4, 200, "empty"),
    ] {
        let err = HopSequence::new(k(), Channel::new(base), hops, interval).unwrap_err();
        assert!(err.to_string().contains(says), "{base}: {err}");
    }
    let seq = sequence(SECRET, "orders", 4, 200);
    assert_eq!(
        seq.check(&seq.channel_at(0), None, 0),
        Err(Refusal::NotStamped)
    );
    assert!(
        !format!("{:?}", seq).contains(SECRET),
        "the key is redacted"
    );
}

// ---------------------------------------------------------------------------
// Configuration.

#[test]
fn hopping_config_is_validated_and_never_shows_the_secret() {
    let with = |hopping: HoppingConfig| AetherConfig {
        hopping,
        ..Default::default()
    };
    assert_eq!(AetherConfig::default().hopping.hop_interval_ms, 200);
    assert_eq!(AetherConfig::default().hopping.secret, None);
    for interval in [0, 9, 86_400_001] {
        let bad = with(HoppingConfig {
            hop_interval_ms: interval,
            ..Default::default()
        });
        assert_eq!(
            Aether::new(bad).unwrap_err().key(),
            "hopping.hop_interval_ms"
        );
    }
    let short = with(HoppingConfig {
        secret: Some(Secret::new("fifteen bytes!!")),
        ..Default::default()
    });
    let err = Aether::new(short.clone()).unwrap_err();
    assert_eq!(err.key(), "hopping.secret");
    assert!(!err.to_string().contains("fifteen"), "{err}");
    assert!(!format!("{short:?}").contains("fifteen"));
    let good = with(HoppingConfig {
        secret: Some(Secret::new(SECRET)),
        hop_interval_ms: 10,
    });
    let aether = Aether::new(good).unwrap();
    assert!(!format!("{aether:?}").contains(SECRET));
}

/// The secret comes from the environment like any setting, through the
/// `config` crate as README.md shows it: `AETHER__AETHER__HOPPING__SECRET`
/// (`AETHER__<SECTION>__<KEY>`, the section being `[aether]`) over
/// `config/default.toml`.
#[test]
fn the_secret_is_read_from_the_environment() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/default.toml");
    let env = std::collections::HashMap::from([(
        "AETHER__AETHER__HOPPING__SECRET".to_string(),
        SECRET.to_string(),
    )]);
    let loaded = config::Config::builder()
        .add_source(config::File::with_name(path))
        .add_source(
            config::Environment::with_prefix("AETHER")
                .prefix_separator("__")
                .separator("__")
                .source(Some(env)),
        )
        .build()
        .unwrap()
        .get::<AetherConfig>("aether")
        .unwrap();
    assert_eq!(loaded.hopping.secret, Some(Secret::new(SECRET)));
    assert_eq!(loaded.hopping.hop_interval_ms, 200);
    loaded.validate().unwrap();
}

// ---------------------------------------------------------------------------
// Helpers for vibrators.

fn config(secret: Option<&str>, interval_ms: u64) -> AetherConfig {
    AetherConfig {
        hopping: HoppingConfig {
            secret: secret.map(Secret::new),
            hop_interval_ms: interval_ms,
        },
        ..Default::default()
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn stamp_ms(wave: &Wave) -> u64 {
    wave.emitted_at()
        .unwrap()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Fails the test if `fut` takes longer than 20 s.
async fn within<T>(fut: impl Future<Output = T>) -> T {
    timeout(Duration::from_secs(20), fut)
        .await
        .expect("hopping case took longer than 20 s")
}

/// Waits (polling the clock) until the next slot begins.
async fn next_slot(interval_ms: u64) {
    let s = hopping::slot(now_ms(), interval_ms);
    while hopping::slot(now_ms(), interval_ms) == s {
        sleep(Duration::from_millis(1)).await;
    }
}

/// Waits until `done` holds, probing every millisecond.
async fn until(mut done: impl FnMut() -> bool) {
    while !done() {
        sleep(Duration::from_millis(1)).await;
    }
}

async fn recv(v: &mut Vibrator) -> Wave {
    timeout(Duration::from_secs(5), v.receive())
        .await
        .expect("no wave within 5 s")
        .expect("aether closed")
}

async fn assert_silent(v: &mut Vibrator) {
    if let Ok(wave) = timeout(Duration::from_millis(150), v.receive()).await {
        panic!("{} expected no wave, got {wave:?}", v.name());
    }
}

// ---------------------------------------------------------------------------
// The embedded medium.

/// Waves emitted over a dozen slot boundaries all arrive, in order, on the
/// base channel, while the wire channel changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_waves_across_many_slots_all_arrive() {
    within(async {
        let aether = Aether::new(config(Some(SECRET), FAST_MS)).unwrap();
        let mut receiver = Vibrator::create("receiver", &aether).await.unwrap();
        receiver.resonate_hopping("orders", 4).await.unwrap();
        let mut wire = Vibrator::create("wire", &aether).await.unwrap();
        wire.resonate_on("_hop.*").await.unwrap();
        let sender = Vibrator::create("sender", &aether).await.unwrap();

        let (slots, per_slot) = (12, 5);
        let mut n = 0;
        for _ in 0..slots {
            for _ in 0..per_slot {
                sender
                    .emit_time_hopping_wave("orders", 4, FAST_MS, json!({"n": n}))
                    .await
                    .unwrap();
                n += 1;
            }
            next_slot(FAST_MS).await;
        }
        let seq = sequence(SECRET, "orders", 4, FAST_MS);
        let mut wire_channels = HashSet::new();
        for i in 0..n {
            let wave = recv(&mut receiver).await;
            assert_eq!(wave.channel(), "orders");
            assert_eq!(wave.payload()["n"], i);
            assert_eq!(wave.source(), Some("sender"));
            let seen = recv(&mut wire).await;
            assert_eq!(seen.id(), wave.id());
            assert!(!seen.channel().as_str().contains("orders"));
            assert_eq!(*seen.channel(), seq.channel_at(stamp_ms(&seen)));
            wire_channels.insert(seen.channel().clone());
        }
        assert!(wire_channels.len() > 1, "the wire channel hops");
        let stats = receiver.stats();
        assert_eq!((stats.delivered, stats.dropped_total()), (n, 0));
        assert_eq!(receiver.hopping_bases().collect::<Vec<_>>(), ["orders"]);
    })
    .await;
}

/// On one aether, a vibrator hopping with another secret hears nothing of
/// the sender's waves, and one with the right secret hears them all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_a_wrong_secret_hears_nothing() {
    within(async {
        let aether = Aether::new(config(Some(SECRET), FAST_MS)).unwrap();
        let mut right = Vibrator::create("right", &aether).await.unwrap();
        right.resonate_hopping("orders", 4).await.unwrap();
        let mut wrong = Vibrator::create("wrong", &aether).await.unwrap();
        wrong.set_hopping_secret(Secret::new(OTHER_SECRET)).unwrap();
        wrong.resonate_hopping("orders", 4).await.unwrap();
        assert!(wrong.hopping_conceals() && right.hopping_conceals());
        let sender = Vibrator::create("sender", &aether).await.unwrap();
        for n in 0..20 {
            sender
                .emit_time_hopping_wave("orders", 4, FAST_MS, json!({"n": n}))
                .await
                .unwrap();
            if n % 4 == 3 {
                next_slot(FAST_MS).await;
            }
        }
        for n in 0..20 {
            assert_eq!(recv(&mut right).await.payload()["n"], n);
        }
        assert_silent(&mut wrong).await;
        assert_eq!(wrong.stats().delivered, 0);
        assert_eq!(wrong.stats().dropped_total(), 0, "not even offered");

        let short = wrong.set_hopping_secret(Secret::new("short")).unwrap_err();
        assert_eq!(short.kind(), VibratorErrorKind::InvalidSetting);
        assert!(!short.to_string().contains("short\""), "{short}");
    })
    .await;
}

/// In process, a wave captured on a wire channel cannot be emitted again
/// there, nor can a fresh wave be sent on a wire channel: those channels are
/// the aether's own. (The gate's refusal of replays from outside is tested
/// over NATS.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_replays_are_refused_and_counted() {
    within(async {
        let aether = Aether::new(config(Some(SECRET), FAST_MS)).unwrap();
        let mut receiver = Vibrator::create("receiver", &aether).await.unwrap();
        receiver.resonate_hopping("orders", 4).await.unwrap();
        let mut eavesdropper = Vibrator::create("eavesdropper", &aether).await.unwrap();
        eavesdropper.resonate_on("_hop.*").await.unwrap();
        let sender = Vibrator::create("sender", &aether).await.unwrap();
        sender
            .emit_time_hopping_wave("orders", 4, FAST_MS, json!({"pay": 100}))
            .await
            .unwrap();
        assert_eq!(recv(&mut receiver).await.payload()["pay"], 100);
        let captured = recv(&mut eavesdropper).await;

        // Wait until the captured wire channel is live again, two slots or
        // more after the stamp, and send the wave again.
        let seq = sequence(SECRET, "orders", 4, FAST_MS);
        let stamp_slot = seq.slot(stamp_ms(&captured));
        until(|| {
            let now = now_ms();
            seq.slot(now) >= stamp_slot + 2 && seq.channel_at(now) == *captured.channel()
        })
        .await;
        let mut replay = captured.clone();
        replay.propagate(); // a hop: the stamp stays
        // In process, the wire channels are the aether's own: an
        // application cannot emit there at all (over NATS a raw client can,
        // and the gate refuses it: nats_a_raw_replay_is_refused_and_counted).
        let err = eavesdropper.emit(replay).await.unwrap_err();
        assert_eq!(err.kind(), EmitErrorKind::InvalidChannel, "{err}");
        assert_silent(&mut receiver).await;
    })
    .await;

    // A fresh wave on a live wire channel that is not its slot's hop.
    within(async {
        let hops = 1000;
        let aether = Aether::new(config(Some(SECRET), 200)).unwrap();
        let mut receiver = Vibrator::create("receiver", &aether).await.unwrap();
        receiver.resonate_hopping("orders", hops).await.unwrap();
        let forger = Vibrator::create("forger", &aether).await.unwrap();
        let seq = sequence(SECRET, "orders", hops, 200);
        // At the start of a slot, the hop of the slot before: still listened
        // to, and not the hop of this slot or the next.
        let before = loop {
            next_slot(200).await;
            let s = seq.slot(now_ms());
            let before = seq.channel_at_slot(s - 1);
            if before != seq.channel_at_slot(s) && before != seq.channel_at_slot(s + 1) {
                break before;
            }
        };
        let err = forger
            .emit(Wave::new(before.clone(), "forged"))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), EmitErrorKind::InvalidChannel, "{err}");
        assert!(receiver.try_receive().is_none());
        // The gate's own rule for such a wave, as a raw client could send it.
        let stamp = now_ms();
        assert!(seq.check(&before, Some(stamp), stamp).is_err());
    })
    .await;
}

/// Without a secret hopping works, and anyone who knows the base computes
/// the wire channels: it conceals nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_without_a_secret_hopping_works_and_conceals_nothing() {
    within(async {
        let aether = Aether::new(config(None, FAST_MS)).unwrap();
        let mut receiver = Vibrator::create("receiver", &aether).await.unwrap();
        receiver.resonate_hopping("orders", 4).await.unwrap();
        assert!(!receiver.hopping_conceals());
        let mut outsider = Vibrator::create("outsider", &aether).await.unwrap();
        outsider.resonate_on("_hop.*").await.unwrap();
        let sender = Vibrator::create("sender", &aether).await.unwrap();
        sender
            .emit_time_hopping_wave("orders", 4, FAST_MS, json!("open"))
            .await
            .unwrap();
        assert_eq!(recv(&mut receiver).await.channel(), "orders");
        let seen = recv(&mut outsider).await;
        let public =
            HopSequence::new(HopKey::new(None), Channel::new("orders"), 4, FAST_MS).unwrap();
        assert_eq!(*seen.channel(), public.channel_at(stamp_ms(&seen)));
    })
    .await;
}

#[tokio::test]
async fn bad_hopping_calls_are_refused() {
    let aether = Aether::new(config(Some(SECRET), 200)).unwrap();
    let mut v = Vibrator::create("v", &aether).await.unwrap();
    for (base, hops, interval, says) in [
        ("orders", 0, 200, "hop_count must be at least 1"),
        (
            "orders",
            4,
            100,
            "is not this aether's hopping.hop_interval_ms (200)",
        ),
        ("orders.*", 4, 200, "wildcards"),
        ("_hop.x", 4, 200, "reserved"),
    ] {
        let err = v
            .emit_time_hopping_wave(base, hops, interval, json!({}))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), EmitErrorKind::InvalidChannel, "{base}");
        assert!(err.to_string().contains(says), "{err}");
    }
    for (base, hops) in [("orders", 0), ("orders.>", 4), ("_hop", 4)] {
        let err = v.resonate_hopping(base, hops).await.unwrap_err();
        assert_eq!(err.kind(), ResonateErrorKind::InvalidChannel, "{base}");
    }
    assert_eq!(aether.stats().emitted, 0);
    aether.close();
    let err = v.resonate_hopping("orders", 4).await.unwrap_err();
    assert_eq!(err.kind(), ResonateErrorKind::Closed);
    let err = v
        .emit_time_hopping_wave("orders", 4, 200, json!({}))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), EmitErrorKind::Closed);
}

/// `stop_hopping` and dropping the vibrator stop the resonance at once; a
/// second `resonate_hopping` on a base replaces the first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_and_dropping_end_the_resonance() {
    within(async {
        let aether = Aether::new(config(Some(SECRET), FAST_MS)).unwrap();
        let mut receiver = Vibrator::create("receiver", &aether).await.unwrap();
        let sender = Vibrator::create("sender", &aether).await.unwrap();
        let emit = |n: i32| sender.emit_time_hopping_wave("orders", 4, FAST_MS, json!(n));
        receiver.resonate_hopping("orders", 4).await.unwrap();
        receiver.resonate_hopping("orders", 4).await.unwrap(); // replaces
        emit(1).await.unwrap();
        assert_eq!(recv(&mut receiver).await.payload(), 1);
        assert!(receiver.try_receive().is_none(), "heard once");

        assert!(receiver.stop_hopping("orders").await);
        assert!(!receiver.stop_hopping("orders").await);
        emit(2).await.unwrap();
        assert_silent(&mut receiver).await;

        receiver.resonate_hopping("orders", 4).await.unwrap();
        emit(3).await.unwrap();
        assert_eq!(recv(&mut receiver).await.payload(), 3);
        drop(receiver);
        // The window's subscriptions go with it: the waves are unrouted.
        let unrouted = aether.stats().unrouted;
        until(|| {
            let before = aether.stats().unrouted;
            futures_util::FutureExt::now_or_never(emit(4))
                .unwrap()
                .unwrap();
            aether.stats().unrouted > before
        })
        .await;
        assert!(aether.stats().unrouted > unrouted);
    })
    .await;
}

// ---------------------------------------------------------------------------
// NATS: three aethers on one server, and a raw client on the wire.

async fn nats_aether(server: &NatsServer, secret: &str) -> Aether {
    Aether::connect(AetherConfig {
        nats: NatsConfig {
            urls: vec![server.url()],
            batch: aether_core::config::NatsBatch {
                enabled: aether_testkit::batch_frames(),
                ..Default::default()
            },
            ..Default::default()
        },
        ..config(Some(secret), NATS_MS)
    })
    .await
    .expect("connects to the test server")
}

/// Emits warm-up hopping waves until `receiver` hears one: its
/// subscriptions are live on the server. Returns how many were sent.
async fn warm_up(sender: &Vibrator, receiver: &mut Vibrator) -> u64 {
    let mut sent = 0;
    loop {
        sender
            .emit_time_hopping_wave("orders", 4, NATS_MS, json!({"warm_up": true}))
            .await
            .unwrap();
        sent += 1;
        if timeout(Duration::from_millis(20), receiver.receive())
            .await
            .is_ok()
        {
            return sent;
        }
    }
}

/// Receives until every `n` in `0..count` arrived (warm-up waves aside).
async fn receive_all(receiver: &mut Vibrator, count: u64) {
    let mut missing: BTreeSet<u64> = (0..count).collect();
    while !missing.is_empty() {
        let Ok(Some(wave)) = timeout(Duration::from_secs(5), receiver.receive()).await else {
            panic!("missing {missing:?}; receiver {:?}", receiver.stats());
        };
        assert_eq!(wave.channel(), "orders", "the base channel, not the wire's");
        if let Some(n) = wave.payload()["n"].as_u64() {
            assert!(missing.remove(&n), "{n} twice");
        }
    }
}

/// Same secret: every wave arrives across slot boundaries. Another secret:
/// nothing. On the wire: only opaque subjects, none naming the base.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_hopping_between_aethers() {
    within(async {
        let server = NatsServer::builder().start().await.unwrap();
        let mut raw = RawNats::connect(server.addr()).await.unwrap();
        raw.subscribe("aether.>", 1, None).await.unwrap();
        raw.ping().await.unwrap();
        let (a, b, c) = (
            nats_aether(&server, SECRET).await,
            nats_aether(&server, SECRET).await,
            nats_aether(&server, OTHER_SECRET).await,
        );
        let sender = Vibrator::create("sender", &a).await.unwrap();
        let mut receiver = Vibrator::create("receiver", &b).await.unwrap();
        receiver.resonate_hopping("orders", 4).await.unwrap();
        let mut stranger = Vibrator::create("stranger", &c).await.unwrap();
        stranger.resonate_hopping("orders", 4).await.unwrap();

        let warm = warm_up(&sender, &mut receiver).await;
        let count = 40;
        for n in 0..count {
            sender
                .emit_time_hopping_wave("orders", 4, NATS_MS, json!({"n": n}))
                .await
                .unwrap();
            if n % 4 == 3 {
                next_slot(NATS_MS).await;
            }
        }
        receive_all(&mut receiver, count).await;
        assert_eq!(receiver.stats().dropped(DropReason::Replay), 0);
        assert_silent(&mut stranger).await;
        assert_eq!(stranger.stats().delivered, 0);
        assert_eq!(stranger.stats().dropped_total(), 0);

        let mut subjects = BTreeSet::new();
        let mut seen = 0;
        while seen < warm + count {
            let message = raw
                .next_message(Duration::from_secs(5))
                .await
                .unwrap()
                .expect("the raw client sees every wave");
            assert!(
                message.subject.starts_with("aether._hop."),
                "{}",
                message.subject
            );
            assert!(!message.subject.contains("orders"), "{}", message.subject);
            seen += envelopes(&message.payload).len() as u64;
            subjects.insert(message.subject);
        }
        assert!(subjects.len() > 1, "the subject hops: {subjects:?}");
        assert!(subjects.len() <= 4, "over at most hop_count subjects");
    })
    .await;
}

/// A message captured on the wire and published again, as it was, once its
/// slot is past: refused as a replay and counted by the receiver.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_a_raw_replay_is_refused_and_counted() {
    within(async {
        let server = NatsServer::builder().start().await.unwrap();
        let mut raw = RawNats::connect(server.addr()).await.unwrap();
        raw.subscribe("aether._hop.>", 1, None).await.unwrap();
        raw.ping().await.unwrap();
        let (a, b) = (
            nats_aether(&server, SECRET).await,
            nats_aether(&server, SECRET).await,
        );
        let sender = Vibrator::create("sender", &a).await.unwrap();
        let mut receiver = Vibrator::create("receiver", &b).await.unwrap();
        receiver.resonate_hopping("orders", 4).await.unwrap();
        warm_up(&sender, &mut receiver).await;
        let captured = raw
            .next_message(Duration::from_secs(5))
            .await
            .unwrap()
            .expect("a wave on the wire");
        let wire = Channel::new(captured.subject.strip_prefix("aether.").unwrap());
        let stamp = wire_stamp_ms(&captured.payload);
        // A batch frame replays every wave in it.
        let replayed = envelopes(&captured.payload).len() as u64;

        let seq = sequence(SECRET, "orders", 4, NATS_MS);
        let stamp_slot = seq.slot(stamp);
        assert_eq!(seq.channel_at_slot(stamp_slot), wire);
        until(|| {
            let now = now_ms();
            seq.slot(now) >= stamp_slot + 2 && seq.channel_at(now) == wire
        })
        .await;
        // Drain what the warm-up left, then replay.
        while timeout(Duration::from_millis(30), receiver.receive())
            .await
            .is_ok()
        {}
        let before = receiver.stats().delivered;
        raw.publish(&captured.subject, None, &captured.payload)
            .await
            .unwrap();
        raw.ping().await.unwrap();
        timeout(Duration::from_secs(5), async {
            until(|| receiver.stats().dropped(DropReason::Replay) == replayed).await
        })
        .await
        .expect("the replay is counted");
        assert_eq!(receiver.stats().delivered, before);
        assert_eq!(b.stats().dropped(DropReason::Replay), replayed);
    })
    .await;
}

/// The envelopes of a message: itself, or each of a batch frame's.
fn envelopes(body: &[u8]) -> Vec<bytes::Bytes> {
    let body = bytes::Bytes::copy_from_slice(body);
    if aether_core::wire::is_frame(&body) {
        aether_core::wire::frame_envelopes(&body, &Default::default()).unwrap()
    } else {
        vec![body]
    }
}

/// The emission millisecond of a message's first wave (its id's time).
fn wire_stamp_ms(body: &[u8]) -> u64 {
    let first = envelopes(body).remove(0);
    aether_core::wire::decode(Channel::new("any"), first, &Default::default())
        .unwrap()
        .id()
        .timestamp_ms()
}
