//! Durable channels on the embedded medium: waves nobody heard wait in the
//! durable outbox and are delivered when one resonates, taken once; waves
//! left in a dropped vibrator's queue go to another resonator; the
//! outbox's bound; and processes killed (SIGKILL) after `emit` returned or
//! with waves queued and not received. Every test is bounded in time. No
//! NATS: these run in the build without default features too.
//!
//! The child processes are this test binary run again: the test
//! `durable_embedded_process` is that program, and it does nothing unless
//! `AETHER_DURABLE_EMBEDDED` is set.

mod durable_support;

use std::{
    ffi::OsString,
    path::{Path, PathBuf},
    time::Duration,
};

use aether_core::{Aether, AetherConfig, DropReason, Vibrator, Wave, config::DurabilityConfig};
use durable_support::{LIMIT, Process, nothing_more, receive_n, seq};
use serde_json::json;
use tokio::time::{sleep, timeout};

/// An embedded aether whose `orders.*` is durable, its outbox in `dir`.
fn embedded(dir: &Path, outbox_max_bytes: u64) -> Aether {
    Aether::new(AetherConfig {
        durability: DurabilityConfig {
            channels: vec!["orders.*".into()],
            outbox_dir: Some(dir.to_path_buf()),
            outbox_max_bytes,
            ..Default::default()
        },
        ..Default::default()
    })
    .unwrap()
}

const OUTBOX_MAX: u64 = 1 << 20;

/// The length of a drained outbox file: its header.
fn outbox_len(dir: &Path) -> u64 {
    std::fs::metadata(dir.join("durable-outbox.log"))
        .unwrap()
        .len()
}

/// A wave that waits in the durable outbox is judged by the life rules of
/// the aether that delivers it, the hop limit too: one emitted after four
/// hops, delivered by a process whose limit is two, is dropped and counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_outbox_waves_pass_the_hop_limit_when_delivered() {
    timeout(LIMIT, async {
        let dir = tempfile::tempdir().unwrap();
        let aether = embedded(dir.path(), OUTBOX_MAX);
        let tx = Vibrator::create("relay", &aether).await.unwrap();
        let mut wave = Wave::builder("orders.relayed").build().unwrap();
        for _ in 0..4 {
            wave.propagate();
        }
        tx.emit(wave).await.unwrap();
        tx.emit_wave("orders.fresh", json!({"seq": 1}))
            .await
            .unwrap();
        drop(tx);
        drop(aether);
        let strict = Aether::new(AetherConfig {
            max_propagation: 2,
            durability: DurabilityConfig {
                channels: vec!["orders.*".into()],
                outbox_dir: Some(dir.path().to_path_buf()),
                outbox_max_bytes: OUTBOX_MAX,
                ..Default::default()
            },
            ..Default::default()
        })
        .unwrap();
        let mut rx = Vibrator::create("billing", &strict).await.unwrap();
        rx.resonate_on("orders.*").await.unwrap();
        let got = receive_n(&mut rx, 1).await;
        assert_eq!(got[0].channel().as_str(), "orders.fresh");
        nothing_more(&mut rx).await;
        assert_eq!(strict.stats().dropped(DropReason::PropagationLimit), 1);
    })
    .await
    .expect("bounded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_waves_nobody_heard_are_delivered_when_one_resonates_and_taken_once() {
    timeout(LIMIT, async {
        let dir = tempfile::tempdir().unwrap();
        let aether = embedded(dir.path(), OUTBOX_MAX);
        let tx = Vibrator::create("shop", &aether).await.unwrap();
        for n in 0..5u64 {
            tx.emit_wave("orders.created", json!({"seq": n}))
                .await
                .unwrap();
        }
        // Not durable: nobody hears it, nothing keeps it.
        tx.emit_wave("audit.seen", json!({"seq": 99}))
            .await
            .unwrap();
        let mut rx = Vibrator::create("billing", &aether).await.unwrap();
        rx.resonate_on("audit.*").await.unwrap();
        rx.resonate_on("orders.*").await.unwrap();
        tx.emit_wave("orders.created", json!({"seq": 5}))
            .await
            .unwrap();
        let got: Vec<u64> = receive_n(&mut rx, 6).await.iter().map(seq).collect();
        assert_eq!(got, [0, 1, 2, 3, 4, 5], "the waiting ones first, in order");
        nothing_more(&mut rx).await;
        assert_eq!(outbox_len(dir.path()), 8, "every wave taken: cut back");

        // Taken: a later resonator does not get them again, nor does the
        // next process.
        let mut late = Vibrator::create("late", &aether).await.unwrap();
        late.resonate_on("orders.*").await.unwrap();
        assert!(late.try_receive().is_none());
        drop((rx, late, tx));
        drop(aether);
        let again = embedded(dir.path(), OUTBOX_MAX);
        let mut rx = Vibrator::create("billing", &again).await.unwrap();
        rx.resonate_on("orders.*").await.unwrap();
        assert!(rx.try_receive().is_none());
    })
    .await
    .expect("bounded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_waves_left_in_a_dropped_vibrators_queue_go_to_another_resonator() {
    timeout(LIMIT, async {
        let dir = tempfile::tempdir().unwrap();
        let aether = embedded(dir.path(), OUTBOX_MAX);
        let tx = Vibrator::create("shop", &aether).await.unwrap();
        let mut one = Vibrator::create("worker-1", &aether).await.unwrap();
        let mut two = Vibrator::create("worker-2", &aether).await.unwrap();
        one.resonate_in_group("orders.*", "workers").await.unwrap();
        two.resonate_in_group("orders.*", "workers").await.unwrap();
        for n in 0..6u64 {
            tx.emit_wave("orders.created", json!({"seq": n}))
                .await
                .unwrap();
        }
        // Each member queued three; one leaves without receiving.
        assert_eq!((one.queued(), two.queued()), (3, 3));
        drop(one);
        let mut got: Vec<u64> = receive_n(&mut two, 6).await.iter().map(seq).collect();
        got.sort_unstable();
        assert_eq!(got, [0, 1, 2, 3, 4, 5]);
        nothing_more(&mut two).await;
        assert_eq!(outbox_len(dir.path()), 8);
    })
    .await
    .expect("bounded");
}

/// A wave handler (`on_wave`) is refused on an aether with durable
/// channels, whose waves are acknowledged as `receive()` hands them out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_wave_handlers_are_refused_beside_durable_channels() {
    let dir = tempfile::tempdir().unwrap();
    let aether = embedded(dir.path(), OUTBOX_MAX);
    let refused = Vibrator::builder("meter")
        .on_wave(|_| {})
        .create(&aether)
        .await
        .expect_err("refused");
    assert_eq!(
        refused.kind(),
        aether_core::VibratorErrorKind::InvalidSetting
    );
    assert!(refused.to_string().contains("durable"), "{refused}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_outbox_full_is_refused_and_frees_up_as_waves_are_taken() {
    timeout(LIMIT, async {
        let dir = tempfile::tempdir().unwrap();
        let aether = embedded(dir.path(), 2000);
        let tx = Vibrator::create("shop", &aether).await.unwrap();
        let big = "x".repeat(600);
        let mut accepted = 0u64;
        let err = loop {
            match tx
                .emit_wave("orders.created", json!({"seq": accepted, "pad": big}))
                .await
            {
                Ok(_) => accepted += 1,
                Err(err) => break err,
            }
            assert!(accepted < 10, "the bound was never reached");
        };
        assert_eq!(err.kind(), aether_core::EmitErrorKind::OutboxFull, "{err}");
        assert!(err.to_string().contains("outbox_max_bytes"), "{err}");
        assert!(accepted >= 1);
        // What was refused is not counted as published, and is counted
        // as refused.
        assert_eq!(tx.stats().published, accepted);
        assert_eq!(
            aether
                .stats()
                .refused(aether_core::EmitErrorKind::OutboxFull),
            1
        );
        // Other channels are not held back.
        tx.emit_wave("audit.seen", json!({})).await.unwrap();

        let mut rx = Vibrator::create("billing", &aether).await.unwrap();
        rx.resonate_on("orders.*").await.unwrap();
        let got: Vec<u64> = receive_n(&mut rx, accepted as usize)
            .await
            .iter()
            .map(seq)
            .collect();
        assert_eq!(got, (0..accepted).collect::<Vec<_>>());
        tx.emit_wave("orders.created", json!({"seq": accepted, "pad": big}))
            .await
            .unwrap();
        assert_eq!(seq(&receive_n(&mut rx, 1).await[0]), accepted);
    })
    .await
    .expect("bounded");
}

/// A child process of these tests: this test binary, running
/// `durable_embedded_process` as `role`: `emit` (emit `count` waves nobody
/// hears, printing `emitted N` after each `emit` returned) or `queue`
/// (resonate, emit `count` waves, receive two, print `queued`).
fn start_process(role: &str, dir: &Path, count: u64) -> Process {
    Process::start(
        "durable_embedded_process",
        &[
            ("AETHER_DURABLE_EMBEDDED", OsString::from(role)),
            ("EMITTER_OUTBOX", dir.into()),
            ("EMITTER_COUNT", count.to_string().into()),
        ],
    )
}

/// The program of the embedded crash tests (does nothing unless
/// `AETHER_DURABLE_EMBEDDED` is set).
#[test]
fn durable_embedded_process() {
    let Some(role) = std::env::var_os("AETHER_DURABLE_EMBEDDED") else {
        return;
    };
    let dir = PathBuf::from(std::env::var_os("EMITTER_OUTBOX").unwrap());
    let count: u64 = std::env::var("EMITTER_COUNT").unwrap().parse().unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let aether = embedded(&dir, 64 << 20);
        let tx = Vibrator::create("shop", &aether).await.unwrap();
        let mut rx = Vibrator::create("billing", &aether).await.unwrap();
        if role == "queue" {
            rx.resonate_on("orders.*").await.unwrap();
        }
        for n in 0..count {
            tx.emit_wave("orders.created", json!({"seq": n}))
                .await
                .unwrap();
            println!("\nemitted {n}");
        }
        if role == "queue" {
            // The application takes two; the rest stays queued.
            assert_eq!(
                receive_n(&mut rx, 2)
                    .await
                    .iter()
                    .map(seq)
                    .collect::<Vec<_>>(),
                [0, 1]
            );
            assert_eq!(rx.queued() as u64, count - 2);
            // The taken marks are written a moment after the hand-out;
            // flush waits for them.
            aether.flush(Duration::from_secs(5)).await.unwrap();
            println!("\nqueued");
        }
        // Killed by the test.
        sleep(Duration::from_secs(120)).await;
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_waves_queued_but_not_received_at_a_kill_arrive_after_restart_once() {
    timeout(LIMIT, async {
        let dir = tempfile::tempdir().unwrap();
        let mut process = start_process("queue", dir.path(), 8);
        process.wait_for("queued").await;
        process.kill();

        let aether = embedded(dir.path(), OUTBOX_MAX);
        let mut rx = Vibrator::create("billing", &aether).await.unwrap();
        rx.resonate_on("orders.*").await.unwrap();
        let got: Vec<u64> = receive_n(&mut rx, 6).await.iter().map(seq).collect();
        assert_eq!(got, [2, 3, 4, 5, 6, 7], "the two taken do not come again");
        nothing_more(&mut rx).await;
        drop(rx);
        drop(aether);

        // Taken now: a third process gets nothing.
        let aether = embedded(dir.path(), OUTBOX_MAX);
        let mut rx = Vibrator::create("billing", &aether).await.unwrap();
        rx.resonate_on("orders.*").await.unwrap();
        assert!(rx.try_receive().is_none());
        assert_eq!(outbox_len(dir.path()), 8);
    })
    .await
    .expect("bounded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_emitter_killed_right_after_emit_returned_delivers_each_wave_once() {
    timeout(LIMIT, async {
        let dir = tempfile::tempdir().unwrap();
        // Killed right after the 10th emit returned, while still emitting.
        let mut process = start_process("emit", dir.path(), 1_000_000);
        let emitted = process.wait_for("emitted 9").await;
        process.kill();
        assert_eq!(emitted, (0..10).collect::<Vec<_>>());

        let aether = embedded(dir.path(), 64 << 20);
        let mut rx = Vibrator::create("billing", &aether).await.unwrap();
        rx.resonate_on("orders.*").await.unwrap();
        // Every wave whose emit returned, and perhaps one in flight at the
        // kill: each once, in order.
        let mut got = receive_n(&mut rx, 10).await;
        while let Some(wave) = rx.try_receive() {
            got.push(wave);
        }
        let seqs: Vec<u64> = got.iter().map(seq).collect();
        assert_eq!(seqs, (0..seqs.len() as u64).collect::<Vec<_>>());
        nothing_more(&mut rx).await;
    })
    .await
    .expect("bounded");
}
