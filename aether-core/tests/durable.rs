//! Durable channels on the NATS medium (JetStream) and on the embedded
//! medium, and the durable outbox on disk, with real processes on loopback:
//! a round trip, a receiver that restarts and resumes, deduplication by wave
//! id, emitter processes killed (SIGKILL) after `emit` returned, with NATS
//! down and with NATS up, receivers killed with waves queued and not
//! received (both mediums), and the embedded outbox's bound. Every test is
//! bounded in time.
//!
//! The emitter of the fault tests is this test binary run again: the test
//! `durable_emitter_process` is that program, and it does nothing unless
//! `AETHER_DURABLE_EMITTER` is set (see `Emitter`).

#![cfg(feature = "nats")]

mod durable_support;

use std::{
    ffi::OsString,
    path::{Path, PathBuf},
    time::Duration,
};

use aether_core::Operator;
use aether_core::{
    Aether, AetherConfig, Channel, Vibrator,
    config::{DurabilityConfig, DurableStorage, NatsConfig},
    wire,
};
use aether_testkit::{NatsCluster, NatsServer};
use durable_support::{LIMIT, Process, nothing_more, nothing_more_within, receive_n, seq};
use serde_json::json;
use tokio::time::{Instant, sleep, timeout};

/// The stream of these tests.
const STREAM: &str = "ORDERS";

/// The settings of every aether here: `orders.*` is durable. Only an
/// emitter with an outbox directory starts without NATS (it keeps trying);
/// the others connect before `connect` returns.
fn config(url: &str, outbox_dir: Option<&Path>) -> AetherConfig {
    AetherConfig {
        nats: NatsConfig {
            urls: vec![url.to_string()],
            ping_interval: Duration::from_millis(200),
            reconnect_delay_max: Duration::from_millis(100),
            retry_on_initial_connect: outbox_dir.is_some(),
            batch: aether_core::config::NatsBatch {
                enabled: aether_testkit::batch_frames(),
                ..Default::default()
            },
            ..Default::default()
        },
        durability: DurabilityConfig {
            channels: vec!["orders.*".into()],
            stream: STREAM.into(),
            storage: DurableStorage::File,
            outbox_dir: outbox_dir.map(Path::to_path_buf),
            ..Default::default()
        },
        ..Default::default()
    }
}

/// Runs a test's body within [`LIMIT`].
async fn bounded(test: impl std::future::Future<Output = ()>) {
    timeout(LIMIT, test).await.expect("bounded");
}

/// An aether on `url` with the settings of these tests, connected.
async fn connect(url: &str) -> Aether {
    Aether::connect(config(url, None)).await.unwrap()
}

/// A nats-server with JetStream, and its URL.
async fn jetstream() -> (NatsServer, String) {
    let server = NatsServer::builder().jetstream(true).start().await.unwrap();
    let url = server.url();
    (server, url)
}

/// Vibrator `name` of `aether`, resonating on `orders.*`.
async fn resonating(aether: &Aether, name: &str) -> Vibrator {
    let mut rx = Vibrator::create(name, aether).await.unwrap();
    rx.resonate_on("orders.*").await.unwrap();
    rx
}

/// Emits a wave on `orders.created` with each of `seqs` as its `seq`.
async fn emit_seqs(tx: &Vibrator, seqs: impl IntoIterator<Item = u64>) {
    for n in seqs {
        tx.emit_wave("orders.created", json!({"seq": n}))
            .await
            .unwrap();
    }
}

/// Waits until `done()` holds, checking every `every`; fails saying `what`
/// after `bound`.
async fn until(what: &str, bound: Duration, every: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + bound;
    while !done() {
        assert!(Instant::now() < deadline, "{what}");
        sleep(every).await;
    }
}

/// How many waves the stream holds, asked of the server directly.
async fn stored(url: &str) -> u64 {
    let client = async_nats::connect(url).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let mut stream = js.get_stream(STREAM).await.unwrap();
    stream.info().await.unwrap().state.messages
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_waves_are_stored_and_received_and_other_channels_are_not_stored() {
    bounded(async {
        let (_server, url) = jetstream().await;
        let a = connect(&url).await;
        let b = connect(&url).await;
        let mut rx = resonating(&b, "billing").await;
        let mut core_rx = Vibrator::create("audit", &b).await.unwrap();
        core_rx.resonate_on("audit.*").await.unwrap();
        let tx = Vibrator::create("shop", &a).await.unwrap();

        let mut ids = Vec::new();
        for n in 0..3u64 {
            ids.push(
                tx.emit_wave("orders.created", json!({"seq": n}))
                    .await
                    .unwrap(),
            );
        }
        // emit returned after the server's acknowledgement: stored.
        assert_eq!(stored(&url).await, 3);
        let got = receive_n(&mut rx, 3).await;
        assert_eq!(got.iter().map(seq).collect::<Vec<_>>(), [0, 1, 2]);
        assert_eq!(got.iter().map(|w| w.id()).collect::<Vec<_>>(), ids);
        assert_eq!(got[0].source(), Some("shop"));
        assert_eq!(got[0].channel().as_str(), "orders.created");

        // A channel outside the durable patterns takes the core path.
        tx.emit_wave("audit.seen", json!({"seq": 9})).await.unwrap();
        let got = receive_n(&mut core_rx, 1).await;
        assert_eq!(seq(&got[0]), 9);
        assert_eq!(stored(&url).await, 3);
        nothing_more(&mut rx).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_receiver_resumes_where_it_stopped() {
    bounded(async {
        let (_server, url) = jetstream().await;
        let a = connect(&url).await;
        let tx = Vibrator::create("shop", &a).await.unwrap();

        // A short ack_wait: a wave in flight to a receiver that went away
        // comes again soon.
        let first = Aether::connect(receiver_config(&url)).await.unwrap();
        let mut rx = resonating(&first, "billing").await;
        emit_seqs(&tx, [0]).await;
        assert_eq!(seq(&receive_n(&mut rx, 1).await[0]), 0);
        // The acknowledgement is on its way; the receiver goes away.
        first.flush(Duration::from_secs(5)).await.unwrap();
        drop(rx);
        drop(first);

        // Emitted while nobody of "billing" runs.
        emit_seqs(&tx, 1..=4u64).await;

        // The same vibrator name in a new aether resumes: what it missed,
        // each once, and not what it had taken. (A wave the server handed
        // to the stopped receiver's last pull before it was gone comes
        // again after ack_wait, after the others.)
        let second = Aether::connect(receiver_config(&url)).await.unwrap();
        let mut rx = resonating(&second, "billing").await;
        let mut got: Vec<u64> = receive_n(&mut rx, 4).await.iter().map(seq).collect();
        got.sort_unstable();
        assert_eq!(got, [1, 2, 3, 4]);
        nothing_more_within(&mut rx, Duration::from_millis(2500)).await;

        // Another vibrator name is another consumer: it reads everything
        // the stream holds.
        let mut other = resonating(&second, "reports").await;
        let got = receive_n(&mut other, 5).await;
        assert_eq!(got.iter().map(seq).collect::<Vec<_>>(), [0, 1, 2, 3, 4]);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_wave_id_is_stored_once() {
    bounded(async {
        let (_server, url) = jetstream().await;
        let a = connect(&url).await;
        let tx = Vibrator::create("shop", &a).await.unwrap();
        let mut rx = resonating(&a, "billing").await;

        // A relayed wave keeps its id: emitting it twice sends the same id.
        let wave = wire::Parts {
            id: 0x0123_4567_89ab_cdef_0011_2233_4455_6677,
            hops: 1,
            source: Some("shop".into()),
            payload: serde_json::to_vec(&json!({"seq": 7})).unwrap().into(),
            ..Default::default()
        }
        .into_wave(Channel::new("orders.relayed"))
        .unwrap();
        let first = tx.emit(wave.clone()).await.unwrap();
        let second = tx.emit(wave).await.unwrap();
        assert_eq!(first, second);
        assert_eq!(stored(&url).await, 1);
        let got = receive_n(&mut rx, 1).await;
        assert_eq!(got[0].id(), first);
        assert_eq!(seq(&got[0]), 7);
        nothing_more(&mut rx).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_members_share_one_durable_resonance() {
    bounded(async {
        let (_server, url) = jetstream().await;
        let a = connect(&url).await;
        let b = connect(&url).await;
        let mut one = Vibrator::create("worker-1", &a).await.unwrap();
        let mut two = Vibrator::create("worker-2", &b).await.unwrap();
        one.resonate_in_group("orders.*", "workers").await.unwrap();
        two.resonate_in_group("orders.*", "workers").await.unwrap();
        let tx = Vibrator::create("shop", &a).await.unwrap();
        let n = 40u64;
        emit_seqs(&tx, 0..n).await;
        let mut seen = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        while (seen.len() as u64) < n {
            assert!(Instant::now() < deadline, "got {} of {n}", seen.len());
            for rx in [&mut one, &mut two] {
                if let Ok(Some(wave)) = timeout(Duration::from_millis(20), rx.receive()).await {
                    seen.push(seq(&wave));
                }
            }
        }
        seen.sort_unstable();
        assert_eq!(
            seen,
            (0..n).collect::<Vec<_>>(),
            "each wave once, to one member"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_keeps_reading_across_a_server_restart() {
    bounded(async {
        let (mut server, url) = jetstream().await;
        let a = connect(&url).await;
        let b = connect(&url).await;
        let tx = Vibrator::create("shop", &a).await.unwrap();
        let mut rx = resonating(&b, "billing").await;
        emit_seqs(&tx, [0]).await;
        assert_eq!(seq(&receive_n(&mut rx, 1).await[0]), 0);

        // Emitted while the server is down: kept in the emitter's outbox.
        server.kill().await.unwrap();
        until(
            "the loss was never noticed",
            Duration::from_secs(10),
            Duration::from_millis(5),
            || a.connection().state != aether_core::ConnectionState::Connected,
        )
        .await;
        emit_seqs(&tx, 1..=3u64).await;
        server.restart().await.unwrap();
        a.flush(Duration::from_secs(20)).await.unwrap();
        emit_seqs(&tx, 4..=5u64).await;
        let got: Vec<u64> = receive_n(&mut rx, 5).await.iter().map(seq).collect();
        assert_eq!(got, [1, 2, 3, 4, 5]);
        assert_eq!(stored(&url).await, 6);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_without_jetstream_is_refused_at_connect() {
    bounded(async {
        let server = NatsServer::builder().start().await.unwrap();
        let Err(err) = Aether::connect(config(&server.url(), None)).await else {
            panic!("a server without JetStream was accepted");
        };
        assert_eq!(err.kind(), aether_core::ConnectErrorKind::Config, "{err}");
        assert!(err.to_string().contains("JetStream"), "{err}");
        // Without durable channels the same server is fine.
        let plain = AetherConfig {
            durability: DurabilityConfig::default(),
            ..config(&server.url(), None)
        };
        Aether::connect(plain).await.unwrap();
    })
    .await;
}

/// Programs that start together each create the stream, as large as the
/// server lets one be: every one connects (the server's check of its
/// storage counts a stream being made twice, and the next try finds it
/// made).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn programs_starting_together_all_get_the_stream() {
    bounded(async {
        for _ in 0..3 {
            let (_server, url) = jetstream().await;
            let config = AetherConfig {
                durability: DurabilityConfig {
                    // The test server's max_file_store.
                    max_bytes: 1 << 30,
                    ..config(&url, None).durability
                },
                ..config(&url, None)
            };
            let starts = (0..6).map(|_| Aether::connect(config.clone()));
            for started in futures_util::future::join_all(starts).await {
                if let Err(error) = started {
                    panic!("a program starting beside others: {error}");
                }
            }
        }
    })
    .await;
}

/// Programs started with a three-node cluster that has just formed, its
/// JetStream still electing its leaders: each waits for its three-replica
/// stream (the requests time out or are refused as the cluster not
/// available meanwhile) instead of failing at its first start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn programs_started_with_a_cluster_electing_wait_for_the_stream() {
    bounded(async {
        let cluster = NatsCluster::builder(3)
            .jetstream(true)
            .start()
            .await
            .unwrap();
        let mut config = config(&cluster.urls()[0], None);
        config.nats.urls = cluster.urls();
        config.durability.replicas = 3;
        let starts = (0..2).map(|_| Aether::connect(config.clone()));
        let started: Vec<Aether> = futures_util::future::join_all(starts)
            .await
            .into_iter()
            .map(|started| started.expect("a program starting with the cluster"))
            .collect();
        let mut rx = resonating(&started[1], "rx").await;
        let tx = Vibrator::create("tx", &started[0]).await.unwrap();
        emit_seqs(&tx, [1]).await;
        let got = receive_n(&mut rx, 1).await;
        assert_eq!(seq(&got[0]), 1);
    })
    .await;
}

/// An emitter process: this test binary, running `durable_emitter_process`,
/// which emits `count` waves (`seq` 0, 1, ...) on `orders.created`,
/// printing `emitted N` after each `emit` returned, then waits until its
/// outbox is empty, prints `drained` and waits to be killed.
fn start_emitter(url: &str, outbox_dir: &Path, count: u64) -> Process {
    Process::start(
        "durable_emitter_process",
        &[
            ("AETHER_DURABLE_EMITTER", OsString::from("1")),
            ("EMITTER_URL", url.into()),
            ("EMITTER_OUTBOX", outbox_dir.into()),
            ("EMITTER_COUNT", count.to_string().into()),
        ],
    )
}

/// The emitter program of the fault tests (does nothing unless
/// `AETHER_DURABLE_EMITTER` is set).
#[test]
fn durable_emitter_process() {
    if std::env::var_os("AETHER_DURABLE_EMITTER").is_none() {
        return;
    }
    let url = std::env::var("EMITTER_URL").unwrap();
    let outbox = PathBuf::from(std::env::var_os("EMITTER_OUTBOX").unwrap());
    let count: u64 = std::env::var("EMITTER_COUNT").unwrap().parse().unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let aether = Aether::connect(config(&url, Some(&outbox))).await.unwrap();
        let tx = Vibrator::create("shop", &aether).await.unwrap();
        for n in 0..count {
            tx.emit_wave("orders.created", json!({"seq": n}))
                .await
                .unwrap();
            println!("\nemitted {n}");
        }
        aether.flush(Duration::from_secs(60)).await.unwrap();
        println!("\ndrained");
        // Killed by the test.
        sleep(Duration::from_secs(120)).await;
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waves_accepted_while_nats_is_down_survive_a_killed_emitter_and_arrive_once() {
    bounded(async {
        let (mut server, url) = jetstream().await;
        server.kill().await.unwrap();
        let outbox = tempfile::tempdir().unwrap();

        // NATS is down: each emit returns once its wave is on disk.
        let n = 25;
        let mut emitter = start_emitter(&url, outbox.path(), n);
        let emitted = emitter.wait_for(&format!("emitted {}", n - 1)).await;
        assert_eq!(emitted, (0..n).collect::<Vec<_>>());
        emitter.kill();
        let file = outbox.path().join("durable-outbox.log");
        assert!(
            std::fs::metadata(&file).unwrap().len() > 8,
            "the waves are on disk"
        );

        // NATS is back; a receiver, then the emitter again with its outbox.
        server.restart().await.unwrap();
        let aether = connect(&url).await;
        let mut rx = resonating(&aether, "billing").await;
        let mut emitter = start_emitter(&url, outbox.path(), 0);
        emitter.wait_for("drained").await;
        emitter.kill();

        let got = receive_n(&mut rx, n as usize).await;
        assert_eq!(
            got.iter().map(seq).collect::<Vec<_>>(),
            (0..n).collect::<Vec<_>>()
        );
        nothing_more(&mut rx).await;
        assert_eq!(stored(&url).await, n);
        assert_eq!(
            std::fs::metadata(&file).unwrap().len(),
            8,
            "the outbox drained"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_emitter_killed_right_after_emit_returned_delivers_each_wave_once() {
    bounded(async {
        let (_server, url) = jetstream().await;
        let outbox = tempfile::tempdir().unwrap();
        let aether = connect(&url).await;
        let mut rx = resonating(&aether, "billing").await;

        // Killed right after the 10th emit returned, while still emitting.
        let mut emitter = start_emitter(&url, outbox.path(), 1_000_000);
        let emitted = emitter.wait_for("emitted 9").await;
        emitter.kill();
        assert_eq!(emitted, (0..10).collect::<Vec<_>>());

        // Restarted with the same outbox: whatever it held is sent again.
        let mut emitter = start_emitter(&url, outbox.path(), 0);
        emitter.wait_for("drained").await;
        emitter.kill();

        // Every wave whose emit returned arrives once; a wave in flight at
        // the kill arrives at most once; nothing arrives twice.
        let stored = stored(&url).await;
        assert!(stored >= 10, "only {stored} stored");
        let got = receive_n(&mut rx, stored as usize).await;
        let seqs: Vec<u64> = got.iter().map(seq).collect();
        assert_eq!(seqs, (0..stored).collect::<Vec<_>>());
        nothing_more(&mut rx).await;
    })
    .await;
}

// ------------------------------------- NATS: acknowledged at hand-out

/// A receiver's settings: a short ack_wait, so what a killed receiver did
/// not acknowledge comes again soon.
fn receiver_config(url: &str) -> AetherConfig {
    let config = config(url, None);
    AetherConfig {
        durability: DurabilityConfig {
            ack_wait: Duration::from_millis(1000),
            ..config.durability.clone()
        },
        ..config
    }
}

/// The receiver program of the NATS hand-out test (does nothing unless
/// `AETHER_DURABLE_RECEIVER` is set): "billing" resonates, waits until
/// `count` waves are in its queue, receives two, and prints `queued`.
#[test]
fn durable_receiver_process() {
    if std::env::var_os("AETHER_DURABLE_RECEIVER").is_none() {
        return;
    }
    let url = std::env::var("EMITTER_URL").unwrap();
    let count: usize = std::env::var("EMITTER_COUNT").unwrap().parse().unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let aether = Aether::connect(receiver_config(&url)).await.unwrap();
        let mut rx = resonating(&aether, "billing").await;
        let deadline = Instant::now() + Duration::from_secs(30);
        while rx.queued() < count {
            assert!(
                Instant::now() < deadline,
                "queued {} of {count}",
                rx.queued()
            );
            sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(
            receive_n(&mut rx, 2)
                .await
                .iter()
                .map(seq)
                .collect::<Vec<_>>(),
            [0, 1]
        );
        // The two acknowledgements are on the wire.
        aether.flush(Duration::from_secs(10)).await.unwrap();
        println!("\nqueued");
        // Killed by the test.
        sleep(Duration::from_secs(120)).await;
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_waves_queued_but_not_received_at_a_kill_come_to_the_restarted_receiver_once() {
    bounded(async {
        let (_server, url) = jetstream().await;
        let a = connect(&url).await;
        let tx = Vibrator::create("shop", &a).await.unwrap();
        let n = 6u64;
        emit_seqs(&tx, 0..n).await;

        // The receiver queues all six, receives two, and is killed.
        let mut receiver = Process::start(
            "durable_receiver_process",
            &[
                ("AETHER_DURABLE_RECEIVER", "1"),
                ("EMITTER_URL", &url),
                ("EMITTER_COUNT", &n.to_string()),
            ],
        );
        receiver.wait_for("queued").await;
        receiver.kill();

        // The same name again: the four it never handed out, each once.
        let b = Aether::connect(receiver_config(&url)).await.unwrap();
        let mut rx = resonating(&b, "billing").await;
        let got: Vec<u64> = receive_n(&mut rx, 4).await.iter().map(seq).collect();
        assert_eq!(got, [2, 3, 4, 5]);
        // Handed out, so acknowledged: nothing comes again after ack_wait.
        nothing_more_within(&mut rx, Duration::from_millis(2500)).await;
    })
    .await;
}

/// A stored message is counted once wherever it is seen: an observer
/// resonating on everything (`*`, as the gateway does) also hears
/// JetStream's deliveries to every consumer's inbox, which it passes over;
/// and a copy of a stored wave that a vibrator handed out already (here
/// published again by a raw client, as a replay would be) is dropped and
/// counted as `duplicate`, by the vibrator and its aether.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_copies_count_once_and_a_copy_handed_out_already_is_a_duplicate() {
    use aether_core::DropReason;
    use aether_testkit::RawNats;
    bounded(async {
        let (server, url) = jetstream().await;
        let b = connect(&url).await;
        let mut rx = resonating(&b, "billing").await;
        let c = connect(&url).await;
        let mut all = Vibrator::create("gateway", &c).await.unwrap();
        all.resonate_on("*").await.unwrap();
        // As the gateway: a durable resonance on the durable channels, then
        // everything; the stored channels are taken (and counted) by the
        // durable one only.
        let g = connect(&url).await;
        let mut gateway = resonating(&g, "gateway").await;
        gateway.resonate_on("*").await.unwrap();
        let mut raw = RawNats::connect(server.addr()).await.unwrap();

        let wave = wire::Parts {
            id: 0x0194_a8df_647b_5eed_2a4b_0000_0000_0001,
            emitted_at_ns: 1,
            source: Some("shop".into()),
            payload: serde_json::to_vec(&json!({"seq": 1})).unwrap().into(),
            ..Default::default()
        }
        .into_wave(Channel::new("orders.created"))
        .unwrap();
        let body = wire::encode(&wave);
        // Until the observer hears it: its subscription is live.
        loop {
            raw.publish("aether.orders.created", None, &body)
                .await
                .unwrap();
            raw.ping().await.unwrap();
            if timeout(Duration::from_millis(100), all.receive())
                .await
                .is_ok()
            {
                break;
            }
        }
        let got = receive_n(&mut rx, 1).await;
        assert_eq!(seq(&got[0]), 1);
        // Every copy after the first that reaches billing is a duplicate.
        let published = stored(&url).await;
        let deadline = Instant::now() + Duration::from_secs(10);
        while rx.stats().dropped(DropReason::Duplicate) + 1 < published {
            assert!(Instant::now() < deadline, "{:?}", rx.stats());
            let _ = timeout(Duration::from_millis(50), rx.receive()).await;
        }
        nothing_more(&mut rx).await;
        assert_eq!(
            b.stats().dropped(DropReason::Duplicate),
            rx.stats().dropped(DropReason::Duplicate)
        );

        // Garbage stored in the stream: billing's consumer refuses it once,
        // and the observer counts it once, not once more for the delivery
        // to billing's inbox it also hears.
        let before = c.connection().malformed;
        let gateway_before = g.connection().malformed;
        raw.publish("aether.orders.created", None, b"\x00garbage")
            .await
            .unwrap();
        raw.ping().await.unwrap();
        until(
            "billing never refused it",
            Duration::from_secs(10),
            Duration::from_millis(20),
            || b.connection().malformed != 0,
        )
        .await;
        sleep(Duration::from_millis(300)).await;
        assert_eq!(c.connection().malformed, before + 1);
        assert_eq!(b.connection().malformed, 1);
        // The gateway-like observer: once, by its durable resonance (its
        // `*` subscription passes the channel over).
        until(
            "the gateway never counted it",
            Duration::from_secs(10),
            Duration::from_millis(20),
            || g.connection().malformed != gateway_before,
        )
        .await;
        sleep(Duration::from_millis(300)).await;
        assert_eq!(g.connection().malformed, gateway_before + 1);
        assert_eq!(g.stats().dropped(DropReason::Replay), 0);
        // Its waves: each once (the raw copies of the wave came by both
        // subscriptions; the stored ones are handed out once, the rest
        // counted as duplicates).
        let mut heard = 0;
        while let Ok(Some(_)) = timeout(Duration::from_millis(200), gateway.receive()).await {
            heard += 1;
        }
        assert_eq!(heard, 1, "{:?}", gateway.stats());
        assert_eq!(c.stats().dropped(DropReason::Replay), 0);
    })
    .await;
}

/// The stream reports each durable consumer's backlog: waves stored and
/// not handed out, or handed out and not acknowledged, down to none once
/// the receiver took them all; and its one copy, up to date.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumers_backlog_is_reported_until_it_is_taken() {
    bounded(async {
        let (_server, url) = jetstream().await;
        let a = connect(&url).await;
        let b = connect(&url).await;
        let mut rx = resonating(&b, "billing").await;
        let tx = Vibrator::create("shop", &a).await.unwrap();
        emit_seqs(&tx, 0..200).await;
        let backlog = |status: &aether_core::StreamStatus| -> u64 {
            status
                .consumer_backlogs
                .iter()
                .map(|c| c.pending + c.ack_pending)
                .sum()
        };
        let status = a.durable_stream().await.unwrap();
        assert_eq!(status.consumer_backlogs.len(), 1, "{status:?}");
        assert_eq!(backlog(&status), 200, "{status:?}");
        assert_eq!((status.replicas, status.replicas_current), (1, 1));
        assert_eq!(status.replicas_offline + status.replicas_lagging, 0);
        receive_n(&mut rx, 200).await;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let status = a.durable_stream().await.unwrap();
            if backlog(&status) == 0 {
                break;
            }
            assert!(Instant::now() < deadline, "{status:?}");
            sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
}

/// A receiver slower than its producer (here one wave each 100 ms, a queue
/// of 4 s against an `ack_wait` of 1 s) is not delivered its queue again:
/// the waves waiting in it are said to be in progress, so none comes twice
/// and the consumer redelivers nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_receivers_queue_is_not_delivered_again() {
    bounded(async {
        let (_server, url) = jetstream().await;
        let a = connect(&url).await;
        let b = Aether::connect(receiver_config(&url)).await.unwrap();
        let mut rx = resonating(&b, "billing").await;
        let tx = Vibrator::create("shop", &a).await.unwrap();
        emit_seqs(&tx, 0..40).await;
        // Redeliveries pending are counted while the queue is read.
        let mut redelivered = 0;
        for n in 0..40 {
            timeout(Duration::from_secs(5), rx.receive())
                .await
                .expect("a wave within 5 s")
                .expect("open");
            sleep(Duration::from_millis(100)).await;
            if n % 10 == 5 {
                let status = a.durable_stream().await.unwrap();
                redelivered += status
                    .consumer_backlogs
                    .iter()
                    .map(|c| c.redelivered)
                    .sum::<u64>();
            }
        }
        assert_eq!(redelivered, 0);
        assert_eq!(
            rx.stats().dropped(aether_core::DropReason::Duplicate),
            0,
            "{:?}",
            rx.stats()
        );
    })
    .await;
}
