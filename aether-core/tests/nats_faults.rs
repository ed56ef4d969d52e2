//! Fault injection on the NATS medium, with real processes on loopback:
//! a server killed and restarted mid-stream, a cluster node lost, a proxy
//! that stalls and cuts the connection, and a slow consumer. Every test is
//! bounded in time and every loop stops by itself.

#![cfg(feature = "nats")]

use std::time::Duration;

use aether_core::{
    Aether, AetherConfig, ConnectionState, DropReason, EmitErrorKind, Vibrator, Wave,
    config::NatsConfig, connection::ConnectionEvent,
};
use aether_testkit::{NatsCluster, NatsServer, TcpProxy};
use serde_json::json;
use tokio::time::{Instant, sleep, timeout};

/// Each test fails rather than hangs past this.
const LIMIT: Duration = Duration::from_secs(60);

fn config(urls: Vec<String>, outbox_capacity: usize) -> AetherConfig {
    AetherConfig {
        channel_buffer_size: 100_000,
        nats: NatsConfig {
            urls,
            outbox_capacity,
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

/// Waits (bounded) until `check` holds, probing every millisecond.
async fn until(what: &str, limit: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        sleep(Duration::from_millis(1)).await;
    }
}

fn seq(wave: &Wave) -> u64 {
    wave.payload()["seq"].as_u64().expect("a sequence number")
}

/// Receives waves until `last` (by sequence) arrives, bounded.
async fn receive_through(rx: &mut Vibrator, last: u64) -> Vec<u64> {
    let mut got = Vec::new();
    timeout(Duration::from_secs(20), async {
        loop {
            let wave = rx.receive().await.expect("aether open");
            got.push(seq(&wave));
            if seq(&wave) == last {
                break;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("wave {last} did not arrive; got {} waves", got.len()));
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_killed_and_restarted_mid_stream_loses_nothing_accepted() {
    timeout(LIMIT, async {
        let mut server = NatsServer::builder().start().await.unwrap();
        let outbox = 300;
        let aether = Aether::connect(config(vec![server.url()], outbox))
            .await
            .unwrap();
        let mut rx = Vibrator::create("rx", &aether).await.unwrap();
        rx.resonate_on("stream.*").await.unwrap();
        let tx = Vibrator::create("tx", &aether).await.unwrap();
        let mut events = aether.connection_events();

        // Streaming while connected.
        let mut next = 0u64;
        for _ in 0..200 {
            tx.emit_wave("stream.x", json!({"seq": next}))
                .await
                .unwrap();
            next += 1;
        }
        assert_eq!(receive_through(&mut rx, next - 1).await.len(), 200);

        // Kill mid-stream: the emitter keeps going while the client notices.
        server.kill().await.unwrap();
        let mut in_window = Vec::new();
        while aether.connection().state != ConnectionState::Disconnected {
            tx.emit_wave("stream.x", json!({"seq": next}))
                .await
                .unwrap();
            in_window.push(next);
            next += 1;
            sleep(Duration::from_micros(200)).await;
            assert!(in_window.len() < 100_000, "the loss was never noticed");
        }

        // Down: waves are accepted into the outbox up to its bound, then
        // refused. The last emits of the window may already be in it (the
        // state can flip between an emit and the check that ends the loop).
        let already = aether.connection().outbox_len;
        let room = outbox - already;
        let mut accepted_while_down = Vec::new();
        let mut refused = 0;
        for _ in 0..room + 50 {
            match tx.emit_wave("stream.x", json!({"seq": next})).await {
                Ok(_) => accepted_while_down.push(next),
                Err(e) => {
                    assert_eq!(e.kind(), EmitErrorKind::OutboxFull, "{e}");
                    refused += 1;
                }
            }
            next += 1;
        }
        assert_eq!(accepted_while_down.len(), room);
        assert_eq!(refused, 50);
        // Each refusal counted by its kind, by the aether and the emitter.
        assert_eq!(aether.stats().refused(EmitErrorKind::OutboxFull), 50);
        assert_eq!(tx.stats().refused(EmitErrorKind::OutboxFull), 50);
        assert_eq!(aether.stats().refused_total(), 50);
        assert_eq!(aether.connection().outbox_len, outbox);

        // Nothing can leave while the server is down: flush says so.
        let err = aether.flush(Duration::from_millis(50)).await.unwrap_err();
        assert_eq!(err.kind(), EmitErrorKind::Medium, "{err}");

        // Back on the same port: the outbox is sent in order after reconnect.
        server.restart().await.unwrap();
        aether.flush(Duration::from_secs(10)).await.unwrap();
        assert_eq!(aether.connection().outbox_len, 0);
        let last = *accepted_while_down.last().unwrap();
        let got = receive_through(&mut rx, last).await;
        let down: Vec<u64> = got
            .iter()
            .copied()
            .filter(|s| *s >= accepted_while_down[0])
            .collect();
        assert_eq!(
            down, accepted_while_down,
            "every wave accepted while down, in order"
        );
        let window_lost = in_window.iter().filter(|s| !got.contains(s)).count();
        println!(
            "emitted before the loss was noticed: {} (lost: {window_lost}); accepted while \
             down: {} (all arrived, in order); refused with OutboxFull: {refused}",
            in_window.len(),
            accepted_while_down.len()
        );
        let status = aether.connection();
        assert_eq!(status.state, ConnectionState::Connected);
        assert_eq!(status.outbox_len, 0);
        assert_eq!(status.outbox_flushed, outbox as u64);
        assert!(
            status.disconnects >= 1 && status.connects >= 2,
            "{status:?}"
        );
        // The events told the story.
        let mut seen = Vec::new();
        while let Ok(event) = events.try_recv() {
            seen.push(event);
        }
        assert!(seen.contains(&ConnectionEvent::Disconnected), "{seen:?}");
        assert!(
            seen.contains(&ConnectionEvent::OutboxFlushed(outbox)),
            "{seen:?}"
        );

        // The stream goes on.
        tx.emit_wave("stream.x", json!({"seq": next}))
            .await
            .unwrap();
        assert_eq!(receive_through(&mut rx, next).await, vec![next]);
    })
    .await
    .expect("bounded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_the_cluster_node_fails_over_and_the_stream_continues() {
    timeout(LIMIT, async {
        let mut cluster = NatsCluster::start(3).await.unwrap();
        // The receiver knows only node 0 and learns the others from it.
        let receiver = Aether::connect(config(vec![cluster.node(0).url()], 1000))
            .await
            .unwrap();
        let sender = Aether::connect(config(vec![cluster.node(2).url()], 1000))
            .await
            .unwrap();
        let mut rx = Vibrator::create("rx", &receiver).await.unwrap();
        rx.resonate_on("fail.over").await.unwrap();
        let tx = Vibrator::create("tx", &sender).await.unwrap();

        // Probe until the subscription is live across the cluster.
        let mut next = 0u64;
        loop {
            tx.emit_wave("fail.over", json!({"seq": next}))
                .await
                .unwrap();
            next += 1;
            if timeout(Duration::from_millis(50), rx.receive())
                .await
                .is_ok()
            {
                break;
            }
        }
        let streaming = tokio::spawn(async move {
            // Emits for a bounded time, a wave every 2 ms.
            let end = Instant::now() + Duration::from_secs(4);
            let mut n = next;
            while Instant::now() < end {
                tx.emit_wave("fail.over", json!({"seq": n})).await.unwrap();
                n += 1;
                sleep(Duration::from_millis(2)).await;
            }
            n - 1
        });
        sleep(Duration::from_millis(500)).await;
        cluster.kill(0).await.unwrap();
        let before_failover = receiver.connection().connects;
        until(
            "the receiver reconnects to another node",
            Duration::from_secs(15),
            || {
                receiver.connection().connects > before_failover
                    && receiver.connection().state == ConnectionState::Connected
            },
        )
        .await;
        let last = streaming.await.unwrap();
        let got = receive_through(&mut rx, last).await;
        let total = last + 1 - next;
        println!(
            "failover: {} of {} waves arrived (core NATS loses those sent while the \
             receiver was between nodes)",
            got.len(),
            total
        );
        assert!(got.windows(2).all(|w| w[0] < w[1]), "in order");
        assert!(
            got.len() as u64 > total / 2,
            "the stream continued after failover"
        );
        assert!(receiver.connection().disconnects >= 1);
    })
    .await
    .expect("bounded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_that_stalls_and_cuts_the_connection_is_survived() {
    timeout(LIMIT, async {
        let server = NatsServer::builder().start().await.unwrap();
        let proxy = TcpProxy::start(server.addr()).await.unwrap();
        let receiver = Aether::connect(config(vec![proxy.url()], 1000))
            .await
            .unwrap();
        let sender = Aether::connect(config(vec![server.url()], 1000))
            .await
            .unwrap();
        let mut rx = Vibrator::create("rx", &receiver).await.unwrap();
        rx.resonate_on("cut.*").await.unwrap();
        let tx = Vibrator::create("tx", &sender).await.unwrap();

        // Sends waves until the receiver hears one: the path works again.
        let mut next = 0u64;
        let heard = async |rx: &mut Vibrator, next: &mut u64| loop {
            tx.emit_wave("cut.x", json!({"seq": *next})).await.unwrap();
            *next += 1;
            if let Ok(Some(wave)) = timeout(Duration::from_millis(50), rx.receive()).await {
                return seq(&wave);
            }
        };
        heard(&mut rx, &mut next).await;

        // A stall: no byte moves; missed pings mark the connection dead.
        proxy.stall();
        until("the stall is noticed", Duration::from_secs(10), || {
            receiver.connection().state == ConnectionState::Disconnected
        })
        .await;
        proxy.resume();
        until(
            "reconnected after the stall",
            Duration::from_secs(10),
            || receiver.connection().state == ConnectionState::Connected,
        )
        .await;
        heard(&mut rx, &mut next).await;

        // A cut: every connection through the proxy is closed at once.
        let connects = receiver.connection().connects;
        proxy.cut();
        until("reconnected after the cut", Duration::from_secs(10), || {
            receiver.connection().connects > connects
                && receiver.connection().state == ConnectionState::Connected
        })
        .await;
        let after_cut = heard(&mut rx, &mut next).await;
        assert!(after_cut > 0);
        let status = receiver.connection();
        assert!(status.disconnects >= 2, "{status:?}");
        assert_eq!(status.slow_consumer_events, 0);
    })
    .await
    .expect("bounded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_consumer_sheds_weakest_first_without_slowing_others() {
    timeout(LIMIT, async {
        let server = NatsServer::builder().start().await.unwrap();
        let aether = Aether::connect(config(vec![server.url()], 1000))
            .await
            .unwrap();
        // `slow` never receives while the burst lasts; `fast` does.
        let mut slow = Vibrator::builder("slow")
            .queue_capacity(100)
            .create(&aether)
            .await
            .unwrap();
        slow.resonate_on("load.*").await.unwrap();
        let mut fast = Vibrator::create("fast", &aether).await.unwrap();
        fast.resonate_on("load.*").await.unwrap();
        let tx = Vibrator::create("tx", &aether).await.unwrap();

        let n = 20_000u64;
        let fast_task = tokio::spawn(async move {
            let mut got = 0;
            while got < n {
                fast.receive().await.expect("open");
                got += 1;
            }
            got
        });
        let started = Instant::now();
        for i in 0..n {
            // Amplitudes cycle through 0.01 .. 1.00: the strongest are known.
            let amplitude = ((i % 100) + 1) as f64 / 100.0;
            tx.emit(
                Wave::builder("load.x")
                    .amplitude(amplitude)
                    .json(&json!({"seq": i}))
                    .build()
                    .unwrap(),
            )
            .await
            .unwrap();
        }
        let emit_time = started.elapsed();
        assert_eq!(
            fast_task.await.unwrap(),
            n,
            "the fast consumer got every wave"
        );
        // Every wave reached the slow vibrator's queue: 100 kept, every other
        // one shed and counted.
        until(
            "every wave reached the slow queue",
            Duration::from_secs(10),
            || slow.stats().dropped(DropReason::QueueFull) == n - 100,
        )
        .await;
        assert_eq!(slow.queued(), 100);
        let mut kept = Vec::new();
        while let Some(wave) = slow.try_receive() {
            kept.push(wave.amplitude().value());
        }
        assert_eq!(kept.len(), 100);
        assert!(
            kept.iter().all(|a| *a == 1.0),
            "the queue kept the strongest waves: {kept:?}"
        );
        assert_eq!(aether.connection().slow_consumer_events, 0);
        println!("{n} waves emitted in {emit_time:?} past a stuck consumer");
    })
    .await
    .expect("bounded");
}
