//! The behaviour suite on the NATS medium, each case on its own nats-server
//! process (started on a free loopback port, killed when the case ends).

#![cfg(feature = "nats")]

mod behaviour;

use std::{future::Future, pin::Pin};

use aether_core::{Aether, AetherConfig, config::NatsConfig};
use aether_testkit::NatsServer;
use tokio::sync::OnceCell;

#[derive(Default)]
struct Nats {
    server: OnceCell<NatsServer>,
    /// Wire version 1, one message per wave (the defaults are version 2
    /// and batch frames).
    v1_unbatched: bool,
}

impl behaviour::Medium for Nats {
    fn aether(&self, config: AetherConfig) -> Pin<Box<dyn Future<Output = Aether> + Send + '_>> {
        Box::pin(async move {
            let server = self
                .server
                .get_or_try_init(|| NatsServer::builder().start())
                .await
                .expect("nats-server starts");
            let mut nats = NatsConfig {
                urls: vec![server.url()],
                ..config.nats.clone()
            };
            if self.v1_unbatched {
                nats.wire_version = aether_core::wire::WireVersion::V1;
                nats.batch.enabled = false;
            }
            Aether::connect(AetherConfig { nats, ..config })
                .await
                .expect("connects to the test server")
        })
    }
}

behaviour_suite!(Nats::default());

/// The same suite with wire version 1 and no batch frames.
mod v1_unbatched {
    use super::*;

    behaviour_suite!(Nats {
        v1_unbatched: true,
        ..Nats::default()
    });
}

/// Over NATS each aether's physics engine sees the waves its own vibrators
/// receive; a gateway that resonates on `*` sees them all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_aether_s_engine_sees_what_its_vibrators_receive() {
    use std::time::Duration;

    use aether_core::Vibrator;

    behaviour::within(async {
        let medium = Nats::default();
        let shop_side = behaviour::Medium::aether(&medium, AetherConfig::default()).await;
        let gateway_side = behaviour::Medium::aether(&medium, AetherConfig::default()).await;
        let (shop_physics, gateway_physics) = (shop_side.physics(), gateway_side.physics());
        let mut gateway = Vibrator::create("gateway", &gateway_side).await.unwrap();
        gateway.resonate_on("*").await.unwrap();
        let mut inventory = Vibrator::create("inventory", &shop_side).await.unwrap();
        inventory.resonate_on("orders.*").await.unwrap();
        let shop = Vibrator::create("shop", &shop_side).await.unwrap();
        // The gateway subscribed on another connection: wait until the
        // server delivers to it.
        loop {
            shop.emit_wave("warmup", serde_json::json!(0))
                .await
                .unwrap();
            let heard = tokio::time::timeout(Duration::from_millis(50), gateway.receive()).await;
            if heard.is_ok() {
                break;
            }
        }
        for channel in ["orders.created", "orders.created", "users.created"] {
            shop.emit_wave(channel, serde_json::json!(1)).await.unwrap();
        }
        for _ in 0..2 {
            behaviour::recv(&mut inventory).await;
        }
        let on = |edges: Vec<aether_core::ResonanceEdge>, resonator: &str, channel: &str| {
            edges
                .into_iter()
                .find(|e| e.resonator == resonator && e.channel == channel)
                .map(|e| e.deliveries)
        };
        behaviour::eventually("the gateway's edges", || {
            let edges = gateway_physics.edges();
            (on(edges.clone(), "gateway", "orders.created") == Some(2)
                && on(edges, "gateway", "users.created") == Some(1))
            .then_some(())
        })
        .await;
        behaviour::eventually("the shop side's edge", || {
            (on(shop_physics.edges(), "inventory", "orders.created") == Some(2)).then_some(())
        })
        .await;
        // Each engine saw its own vibrators' deliveries only.
        assert!(
            shop_physics
                .edges()
                .iter()
                .all(|e| e.resonator == "inventory"),
            "{:?}",
            shop_physics.edges()
        );
        assert!(
            gateway_physics
                .edges()
                .iter()
                .all(|e| e.resonator == "gateway" && e.emitter == "shop")
        );
    })
    .await;
}

/// Vibrators of one aether on the same subject share one NATS subscription:
/// each gets every wave once, a member that leaves stops the deliveries to
/// it only, one that joins later hears what follows, and a vibrator whose
/// older resonance hears the wave too gets it once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resonances_on_one_subject_share_a_subscription() {
    use std::time::Duration;

    use aether_core::Vibrator;

    behaviour::within(async {
        let medium = Nats::default();
        let receiving = behaviour::Medium::aether(&medium, AetherConfig::default()).await;
        let sending = behaviour::Medium::aether(&medium, AetherConfig::default()).await;
        let mut a = Vibrator::create("a", &receiving).await.unwrap();
        let mut b = Vibrator::create("b", &receiving).await.unwrap();
        let mut c = Vibrator::create("c", &receiving).await.unwrap();
        for v in [&mut a, &mut b, &mut c] {
            v.resonate_on("orders.*").await.unwrap();
        }
        // c also resonates on the concrete channel: it hears each wave once.
        c.resonate_on("orders.created").await.unwrap();
        let shop = Vibrator::create("shop", &sending).await.unwrap();
        loop {
            shop.emit_wave("orders.created", serde_json::json!(-1))
                .await
                .unwrap();
            if tokio::time::timeout(Duration::from_millis(50), a.receive())
                .await
                .is_ok()
            {
                break;
            }
        }
        // Drain the warm-up waves, then a fence each reads up to.
        let fence = |n: i64| serde_json::json!(n);
        shop.emit_wave("orders.created", fence(0)).await.unwrap();
        for v in [&mut a, &mut b, &mut c] {
            while behaviour::recv(v).await.payload() != fence(0) {}
        }
        for n in 1..=10 {
            shop.emit_wave("orders.created", fence(n)).await.unwrap();
        }
        for v in [&mut a, &mut b, &mut c] {
            for n in 1..=10 {
                assert_eq!(behaviour::recv(v).await.payload(), fence(n), "{}", v.name());
            }
        }
        // b leaves; d joins the same subject.
        drop(b);
        let mut d = Vibrator::create("d", &receiving).await.unwrap();
        d.resonate_on("orders.*").await.unwrap();
        shop.emit_wave("orders.created", fence(11)).await.unwrap();
        for v in [&mut a, &mut c, &mut d] {
            assert_eq!(
                behaviour::recv(v).await.payload(),
                fence(11),
                "{}",
                v.name()
            );
        }
        // Nothing more for anyone: c got each wave once.
        for v in [&mut a, &mut c, &mut d] {
            assert!(
                tokio::time::timeout(Duration::from_millis(200), v.receive())
                    .await
                    .is_err(),
                "{} got a wave twice",
                v.name()
            );
        }
        assert_eq!(c.stats().delivered, a.stats().delivered);
    })
    .await;
}

/// `Aether::connect_url` connects in one line, with every other setting at
/// its default; several servers of one cluster are separated by commas, and
/// a refusal names them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_url_is_connect_in_one_line() {
    tokio::time::timeout(std::time::Duration::from_secs(20), async {
        let server = NatsServer::start().await.unwrap();
        let aether = Aether::connect_url(&server.url()).await.unwrap();
        assert_eq!(aether.config().nats.urls, [server.url()]);
        let port = aether_testkit::free_port().unwrap();
        let both = format!("nats://127.0.0.1:{port}, {}", server.url());
        let aether = Aether::connect_url(&both).await.unwrap();
        assert_eq!(aether.config().nats.urls.len(), 2);
        let nobody = format!("nats://127.0.0.1:{port}");
        let err = Aether::connect_url(&nobody).await.unwrap_err();
        assert!(err.to_string().contains(&nobody), "{err}");
    })
    .await
    .expect("bounded");
}

/// `drain` sends everything emitted so far, then closes: a receiver on
/// another aether gets every wave, and the drained aether refuses more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_sends_what_was_emitted_then_closes() {
    use std::time::Duration;
    tokio::time::timeout(Duration::from_secs(20), async {
        let server = NatsServer::start().await.unwrap();
        let receiving = Aether::connect_url(&server.url()).await.unwrap();
        let sending = Aether::connect_url(&server.url()).await.unwrap();
        let mut rx = aether_core::Vibrator::create("rx", &receiving)
            .await
            .unwrap();
        rx.resonate_on("drain.*").await.unwrap();
        let tx = aether_core::Vibrator::create("tx", &sending).await.unwrap();
        // Once rx hears the bus, emit a burst and drain at once.
        loop {
            tx.emit_wave("drain.probe", 0).await.unwrap();
            if tokio::time::timeout(Duration::from_millis(50), rx.receive())
                .await
                .is_ok()
            {
                break;
            }
        }
        while tokio::time::timeout(Duration::from_millis(50), rx.receive())
            .await
            .is_ok()
        {}
        for n in 0..500u32 {
            tx.emit_wave("drain.burst", n).await.unwrap();
        }
        sending.drain(Duration::from_secs(5)).await.unwrap();
        assert!(sending.is_closed());
        let err = tx.emit_wave("drain.burst", 0).await.unwrap_err();
        assert_eq!(err.kind(), aether_core::EmitErrorKind::Closed);
        for n in 0..500u32 {
            let wave = rx.receive().await.unwrap();
            assert_eq!(wave.json::<u32>().unwrap(), n, "every wave, in order");
        }
    })
    .await
    .expect("bounded");
}

/// A loop of emits over NATS (each wave written into the batch frame
/// being filled, which never waits while the queue has room) leaves the
/// runtime's other tasks their turn, as a channel's sender does: on a
/// one-thread runtime another task runs while the loop does, not after it.
#[tokio::test(flavor = "current_thread")]
async fn a_loop_of_emits_leaves_other_tasks_their_turn() {
    use std::{
        sync::{
            Arc,
            atomic::{AtomicUsize, Ordering},
        },
        time::Duration,
    };
    tokio::time::timeout(Duration::from_secs(20), async {
        let server = NatsServer::start().await.unwrap();
        let sending = Aether::connect_url(&server.url()).await.unwrap();
        let tx = aether_core::Vibrator::create("tx", &sending).await.unwrap();
        let turns = Arc::new(AtomicUsize::new(0));
        let counting = turns.clone();
        let other = tokio::spawn(async move {
            loop {
                counting.fetch_add(1, Ordering::Relaxed);
                tokio::task::yield_now().await;
            }
        });
        tokio::task::yield_now().await;
        let before = turns.load(Ordering::Relaxed);
        // About a megabyte: within the frames' queue (4 MiB), so no emit
        // waits for room.
        let n = 10_000u32;
        for i in 0..n {
            tx.emit_wave("loop.turns", i).await.unwrap();
        }
        let during = turns.load(Ordering::Relaxed) - before;
        other.abort();
        assert!(
            during >= n as usize / 256,
            "the other task ran {during} times during {n} emits"
        );
        sending.drain(Duration::from_secs(5)).await.unwrap();
    })
    .await
    .expect("bounded");
}

/// The connection's name is the one the settings give, and the server's
/// monitoring (`/connz`) shows it, so an operator tells programs apart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_lists_the_connection_by_its_name() {
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    tokio::time::timeout(Duration::from_secs(20), async {
        let port = aether_testkit::free_port().unwrap();
        let server = NatsServer::builder()
            .extra_config(format!("http: \"127.0.0.1:{port}\""))
            .start()
            .await
            .unwrap();
        let mut config = AetherConfig::default();
        config.nats.urls = vec![server.url()];
        config.nats.connection_name = Some("aether-service-beta beta-1".into());
        let _aether = Aether::connect(config).await.unwrap();
        let mut http = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        http.write_all(b"GET /connz HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            .await
            .unwrap();
        let mut body = String::new();
        http.read_to_string(&mut body).await.unwrap();
        assert!(
            body.contains("\"name\": \"aether-service-beta beta-1\""),
            "{body}"
        );
    })
    .await
    .expect("bounded");
}

/// A vibrator in several groups whose patterns match a wave gets it once
/// in a flood too, each channel's waves in order: each group is a queue
/// subscription of its own, and the server's copies of one message must
/// reach the vibrator close enough together to be told apart from new
/// waves, however many waves a frame holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_through_several_groups_is_taken_once() {
    use aether_core::{Channel, Vibrator, Wave};
    use std::{
        sync::{Arc, Mutex},
        time::Duration,
    };
    fn number(wave: &Wave) -> u32 {
        u32::from_le_bytes(wave.payload_bytes()[..4].try_into().unwrap())
    }
    tokio::time::timeout(Duration::from_secs(60), async {
        let server = NatsServer::start().await.unwrap();
        let rx_aether = Aether::connect_url(&server.url()).await.unwrap();
        let tx_aether = Aether::connect_url(&server.url()).await.unwrap();
        let taken = Arc::new(Mutex::new(Vec::new()));
        let into = taken.clone();
        let total = 100_000u32;
        // A handler and a queue, each the one member of three groups.
        let mut handler = Vibrator::builder("handler")
            .on_wave(move |wave: Wave| into.lock().unwrap().push(number(&wave)))
            .create(&rx_aether)
            .await
            .unwrap();
        let mut queue = Vibrator::builder("queue")
            .queue_capacity(2 * total as usize)
            .create(&rx_aether)
            .await
            .unwrap();
        for (vibrator, tag) in [(&mut handler, "h"), (&mut queue, "q")] {
            for (pattern, group) in [("s.*", "a"), ("s.a", "b"), ("s.>", "c")] {
                vibrator
                    .resonate_in_group(pattern, &format!("{tag}{group}"))
                    .await
                    .unwrap();
            }
        }
        // The server has the subscriptions well before the flood.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let tx = Vibrator::create("tx", &tx_aether).await.unwrap();
        let (a, b) = (Channel::new("s.a"), Channel::new("s.b"));
        for i in 0..total {
            let channel = if i % 2 == 0 { &a } else { &b };
            let payload = bytes::Bytes::copy_from_slice(&i.to_le_bytes());
            tx.emit(Wave::new(channel.clone(), payload)).await.unwrap();
        }
        tx_aether.flush(Duration::from_secs(10)).await.unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while taken.lock().unwrap().len() < total as usize && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // Copies that slipped through would come by now.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut queued = Vec::new();
        while let Some(wave) = queue.try_receive() {
            queued.push(number(&wave));
        }
        let handled = taken.lock().unwrap().clone();
        for (name, taken) in [("handler", handled), ("queue", queued)] {
            let mut once = taken.clone();
            once.sort_unstable();
            once.dedup();
            assert_eq!(taken.len(), total as usize, "{name}: each wave once");
            assert_eq!(once.len(), total as usize, "{name}: each wave once");
            // Each channel's waves in the order they were emitted.
            for parity in [0, 1] {
                let channel: Vec<u32> = taken.iter().copied().filter(|i| i % 2 == parity).collect();
                assert!(
                    channel.is_sorted(),
                    "{name}: in order on s.{}",
                    ["a", "b"][parity as usize]
                );
            }
        }
    })
    .await
    .expect("bounded");
}
