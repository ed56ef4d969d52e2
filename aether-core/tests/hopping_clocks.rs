//! Hopping between processes whose clocks are hours apart: a sender whose
//! machine's clock is two hours off (libfaketime preloaded into this test
//! binary, run again as the sender) hops in the bus's time, and a receiver
//! with the right clock hears every wave on the base channel; none is
//! refused as a replay. Needs Debian's `faketime`; without it, it says so
//! and passes over.

#![cfg(feature = "nats")]

use std::time::Duration;

use aether_core::{
    Aether, AetherConfig, DropReason, Secret, Vibrator,
    config::{HoppingConfig, NatsConfig},
};
use aether_testkit::NatsServer;

const SECRET: &str = "a hopping secret of the clock test";
const HOPS: u32 = 4;
const INTERVAL_MS: u64 = 200;
const WAVES: u64 = 10;
/// The sender's part is this binary run again with this variable: the
/// server's URL.
const SENDER: &str = "AETHER_TEST_HOPPING_SENDER";

fn config(url: &str, source: bool) -> AetherConfig {
    let mut config = AetherConfig {
        nats: NatsConfig {
            urls: vec![url.into()],
            ..Default::default()
        },
        hopping: HoppingConfig {
            secret: Some(Secret::new(SECRET)),
            hop_interval_ms: INTERVAL_MS,
        },
        ..Default::default()
    };
    config.clock.source = source;
    config
}

fn libfaketime() -> Option<&'static str> {
    [
        "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
        "/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1",
        "/usr/lib/faketime/libfaketime.so.1",
    ]
    .into_iter()
    .find(|path| std::path::Path::new(path).exists())
}

/// The sender, in a process of its own whose clock is off: it follows the
/// bus's time, then emits `WAVES` hopping waves, one a slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sender_part() {
    let Ok(url) = std::env::var(SENDER) else {
        // Run by the test below, not on its own.
        return;
    };
    let aether = Aether::connect(config(&url, false)).await.unwrap();
    aether_core::bustime::start(&aether).await;
    let status = aether_core::bustime::status();
    println!("offset_ms {}", status.offset_ns / 1_000_000);
    let sender = Vibrator::create("skewed-sender", &aether).await.unwrap();
    for n in 0..WAVES {
        sender
            .emit_time_hopping_wave("orders", HOPS, INTERVAL_MS, serde_json::json!({ "n": n }))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(INTERVAL_MS)).await;
    }
    aether.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sender_hours_off_hops_in_the_bus_time() {
    if std::env::var(SENDER).is_ok() {
        return;
    }
    let Some(library) = libfaketime() else {
        eprintln!("skipped: libfaketime is not installed (apt-get install faketime)");
        return;
    };
    let server = NatsServer::start().await.expect("nats-server starts");
    let url = server.url();
    // The receiver's clock is the machine's, and the bus's time source.
    let aether = Aether::connect(config(&url, true)).await.unwrap();
    aether_core::bustime::start(&aether).await;
    let mut receiver = Vibrator::create("receiver", &aether).await.unwrap();
    receiver.resonate_hopping("orders", HOPS).await.unwrap();
    for skew in ["-2h", "+2h"] {
        let mut sender = tokio::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "sender_part",
                "--nocapture",
                "--test-threads",
                "1",
            ])
            .env(SENDER, &url)
            .env("LD_PRELOAD", library)
            .env("FAKETIME", skew)
            // A clock set wrong moves the wall clock alone.
            .env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut heard = std::collections::BTreeSet::new();
        let listening = async {
            while heard.len() < WAVES as usize {
                let wave = receiver.receive().await.expect("the aether is open");
                assert_eq!(wave.channel().as_str(), "orders");
                let body: serde_json::Value = wave.json().unwrap();
                heard.insert(body["n"].as_u64().unwrap());
            }
        };
        let timely = tokio::time::timeout(Duration::from_secs(20), listening).await;
        let output = tokio::time::timeout(Duration::from_secs(20), async {
            sender.wait().await.unwrap();
            let mut out = String::new();
            use tokio::io::AsyncReadExt;
            sender
                .stdout
                .take()
                .unwrap()
                .read_to_string(&mut out)
                .await
                .unwrap();
            out
        })
        .await
        .expect("the sender ends");
        assert!(
            timely.is_ok(),
            "the sender {skew}: heard {} of {WAVES} ({heard:?}); replays refused: {}; it said: {output}",
            heard.len(),
            aether.stats().dropped(DropReason::Replay),
        );
        let offset_ms: i64 = output
            .lines()
            .find_map(|l| l.split("offset_ms ").nth(1))
            .and_then(|ms| ms.split_whitespace().next()?.parse().ok())
            .unwrap_or_else(|| panic!("no offset said: {output}"));
        let expected = if skew == "-2h" { 7_200_000 } else { -7_200_000 };
        assert!(
            (offset_ms - expected).abs() < 1_000,
            "the sender {skew} follows an offset of {offset_ms} ms"
        );
    }
    assert_eq!(aether.stats().dropped(DropReason::Replay), 0);
    aether.close();
}
