//! Sealed channels (`[aether.security] encryption`) over NATS: payloads on
//! the wire are ciphertext, a receiver with the key reads them, one without
//! the key or with another drops them as undecryptable, a wave in the clear
//! or tampered with on a sealed channel is dropped too, and replicated
//! state on sealed channels converges only among key holders. Bounded.

#![cfg(feature = "nats")]

mod state_suite;

use std::time::Duration;

use aether_core::{
    Aether, AetherConfig, DropReason, Secret, Vibrator, Wave,
    config::{EncryptionRule, NatsConfig, SecurityConfig},
    state::{StateConfig, StateMap},
    wire,
};
use aether_testkit::{NatsServer, RawNats};
use state_suite::until;
use tokio::time::timeout;

const LIMIT: Duration = Duration::from_secs(30);
const KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
const OTHER: &str = "ff0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

fn sealed(url: &str, key: Option<&str>) -> AetherConfig {
    let encryption = key
        .map(|key| {
            vec![EncryptionRule {
                channels: vec!["secret.>".into(), "_state.vault.>".into()],
                key: Some(Secret::new(key)),
                key_file: None,
                key_env: None,
            }]
        })
        .unwrap_or_default();
    AetherConfig {
        nats: NatsConfig {
            urls: vec![url.into()],
            batch: aether_core::config::NatsBatch {
                enabled: aether_testkit::batch_frames(),
                ..Default::default()
            },
            ..Default::default()
        },
        security: SecurityConfig {
            encryption,
            ..Default::default()
        },
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sealed_payloads_are_read_only_with_the_key() {
    timeout(LIMIT, async {
        let server = NatsServer::start().await.unwrap();
        let url = server.url();
        let sender = Aether::connect(sealed(&url, Some(KEY))).await.unwrap();
        let holder = Aether::connect(sealed(&url, Some(KEY))).await.unwrap();
        let wrong = Aether::connect(sealed(&url, Some(OTHER))).await.unwrap();
        let keyless = Aether::connect(sealed(&url, None)).await.unwrap();
        let mut raw = RawNats::connect(server.addr()).await.unwrap();
        raw.subscribe("aether.secret.>", 1, None).await.unwrap();
        raw.ping().await.unwrap();

        let mut receivers = Vec::new();
        for aether in [&holder, &wrong, &keyless] {
            let mut v = Vibrator::create("reader", aether).await.unwrap();
            v.resonate_on("secret.>").await.unwrap();
            receivers.push(v);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        let tx = Vibrator::create("writer", &sender).await.unwrap();
        tx.emit(Wave::new("secret.plans", "the door code is 4711"))
            .await
            .unwrap();

        let got = timeout(Duration::from_secs(5), receivers[0].receive())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&got.payload_bytes()[..], b"the door code is 4711");
        let on_wire = raw
            .next_message(Duration::from_secs(5))
            .await
            .unwrap()
            .unwrap();
        let seen = &on_wire.payload;
        assert!(
            !seen.windows(4).any(|w| w == b"4711"),
            "the plaintext crossed the wire"
        );
        // A lone wave leaves as its version 2 envelope: the flags are a
        // varint at byte 2 (the sealed bit, 9, makes it two bytes).
        assert_eq!(seen[1], wire::VERSION_2);
        let flags = u32::from(seen[2] & 0x7F) | (u32::from(seen[3] & 0x7F) << 7);
        assert_ne!(seen[2] & 0x80, 0);
        assert_ne!(flags & u32::from(wire::FLAG_SEALED), 0);
        for aether in [&wrong, &keyless] {
            until("dropped as undecryptable", || {
                aether.stats().dropped(DropReason::Undecryptable) >= 1
            })
            .await;
        }
        for v in &mut receivers[1..] {
            assert!(v.try_receive().is_none());
        }

        // In the clear on a sealed channel, and tampered ciphertext.
        let clear = wire::encode(&Wave::new("secret.plans", "clear"));
        raw.publish("aether.secret.plans", None, &clear)
            .await
            .unwrap();
        let mut tampered = seen.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        raw.publish("aether.secret.plans", None, &tampered)
            .await
            .unwrap();
        raw.ping().await.unwrap();
        until("both dropped by the key holder", || {
            holder.stats().dropped(DropReason::Undecryptable) == 2
        })
        .await;
        assert!(receivers[0].try_receive().is_none());

        // Other channels travel as they are.
        tx.emit(Wave::new("public.news", "hello")).await.unwrap();
    })
    .await
    .expect("bounded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sealed_map_converges_among_key_holders_only() {
    timeout(LIMIT, async {
        let server = NatsServer::start().await.unwrap();
        let url = server.url();
        let config = || StateConfig {
            heartbeat_interval: Duration::from_millis(50),
            presence_timeout: Duration::from_millis(400),
            anti_entropy_interval: Duration::from_millis(100),
            ready_timeout: Duration::from_millis(500),
            ..Default::default()
        };
        let (x, y, z) = (
            Aether::connect(sealed(&url, Some(KEY))).await.unwrap(),
            Aether::connect(sealed(&url, Some(KEY))).await.unwrap(),
            Aether::connect(sealed(&url, None)).await.unwrap(),
        );
        let a = StateMap::builder("vault")
            .node("a")
            .config(config())
            .open(&x)
            .await
            .unwrap();
        let b = StateMap::builder("vault")
            .node("b")
            .config(config())
            .open(&y)
            .await
            .unwrap();
        let outsider = StateMap::builder("vault")
            .node("outsider")
            .config(config())
            .open(&z)
            .await
            .unwrap();
        a.set("pin", "1234").await.unwrap();
        until("b has it", || b.get("pin").is_some()).await;
        until("the outsider drops what it cannot read", || {
            z.stats().dropped(DropReason::Undecryptable) > 0
        })
        .await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(outsider.get("pin").is_none());
        assert!(outsider.is_empty());
    })
    .await
    .expect("bounded");
}
