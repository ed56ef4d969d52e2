//! Clients that are not aether-core, speaking the raw NATS text protocol
//! over a TCP socket, exchange waves with vibrators: they publish envelopes
//! (the committed test vectors, written by an independent Python encoder)
//! and read the envelopes vibrators emit, byte by byte as docs/guide/wire.md
//! lays them out. Garbage is refused, counted, and does not stop the stream.

#![cfg(feature = "nats")]

use std::{path::PathBuf, time::Duration};

use aether_core::{
    Aether, AetherConfig, Channel, DropReason, Phase, Vibrator, Wave, config::NatsConfig, wire,
};
use aether_testkit::{NatsServer, RawNats};
use tokio::time::{Instant, sleep, timeout};

const LIMIT: Duration = Duration::from_secs(30);

fn vector(name: &str) -> Vec<u8> {
    let path: PathBuf = [env!("CARGO_MANIFEST_DIR"), "tests/vectors/wire", name]
        .iter()
        .collect();
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

async fn setup() -> (NatsServer, Aether, RawNats) {
    let server = NatsServer::builder().start().await.unwrap();
    let aether = Aether::connect(AetherConfig {
        nats: NatsConfig {
            urls: vec![server.url()],
            ..Default::default()
        },
        ..Default::default()
    })
    .await
    .unwrap();
    let raw = RawNats::connect(server.addr()).await.unwrap();
    (server, aether, raw)
}

/// Publishes `body` from the raw client until `rx` hears something (the
/// vibrator's subscription is live on the server), and returns it.
async fn publish_until_heard(
    raw: &mut RawNats,
    subject: &str,
    body: &[u8],
    rx: &mut Vibrator,
) -> Wave {
    loop {
        raw.publish(subject, None, body).await.unwrap();
        raw.ping().await.unwrap();
        if let Ok(Some(wave)) = timeout(Duration::from_millis(50), rx.receive()).await {
            return wave;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_raw_client_emits_a_wave_that_a_vibrator_receives() {
    timeout(LIMIT, async {
        let (_server, aether, mut raw) = setup().await;
        let mut rx = Vibrator::create("rx", &aether).await.unwrap();
        rx.resonate_on("orders.*").await.unwrap();

        // `emitted.bin`: source "shop", payload "hello", a fixed id.
        let wave = publish_until_heard(
            &mut raw,
            "aether.orders.created",
            &vector("emitted.bin"),
            &mut rx,
        )
        .await;
        assert_eq!(wave.channel().as_str(), "orders.created");
        assert_eq!(wave.source(), Some("shop"));
        assert_eq!(&wave.payload_bytes()[..], b"hello");
        assert_eq!(wave.id().to_string(), "0194a8df647b5eed2a4b00000000002a");
        assert_eq!(wave.amplitude().value(), 1.0);
        assert_eq!(wave.propagation_count(), 0);

        // `hopped.bin` arrives attenuated by its hops, measured on arrival.
        raw.publish("aether.orders.relayed", None, &vector("hopped.bin"))
            .await
            .unwrap();
        let hopped = timeout(Duration::from_secs(5), rx.receive())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(hopped.propagation_count(), 3);
        assert!(hopped.amplitude().value() < hopped.source_amplitude().value());
    })
    .await
    .expect("bounded");
}

/// A LEB128 varint at `at` (docs/guide/wire.md, version 2), read by hand.
fn varint(body: &[u8], at: &mut usize) -> u64 {
    let (mut value, mut shift) = (0u64, 0);
    loop {
        let byte = body[*at];
        *at += 1;
        value |= u64::from(byte & 0x7F) << shift;
        if byte & 0x80 == 0 {
            return value;
        }
        shift += 7;
    }
}

/// The wave both envelope tests emit, and what a raw client reads of it.
fn cancelled() -> Wave {
    Wave::builder("orders.cancelled")
        .amplitude(0.75)
        .phase(Phase::RETRACT)
        .correlation_key("order-42")
        .payload("{\"order_id\":42}")
        .build()
        .unwrap()
}

/// Emits [`cancelled`] from an aether with `version` and returns its id and
/// the body the raw client read.
async fn emitted_body(version: wire::WireVersion) -> (u128, Vec<u8>) {
    let server = NatsServer::builder().start().await.unwrap();
    let mut config = NatsConfig {
        urls: vec![server.url()],
        wire_version: version,
        ..Default::default()
    };
    config.batch.enabled = true;
    let aether = Aether::connect(AetherConfig {
        nats: config,
        ..Default::default()
    })
    .await
    .unwrap();
    let mut raw = RawNats::connect(server.addr()).await.unwrap();
    raw.subscribe("aether.orders.>", 1, None).await.unwrap();
    raw.ping().await.unwrap();
    let tx = Vibrator::create("order-service", &aether).await.unwrap();
    let id = tx.emit(cancelled()).await.unwrap();
    let message = raw
        .next_message(Duration::from_secs(5))
        .await
        .unwrap()
        .expect("a message");
    assert_eq!(message.subject, "aether.orders.cancelled");
    (id.as_u128(), message.payload)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_raw_client_reads_the_version_2_envelope_a_vibrator_emits() {
    timeout(LIMIT, async {
        let (id, body) = emitted_body(wire::WireVersion::V2).await;
        // A lone wave leaves as its envelope, not a frame. Read by hand
        // from the documented layout.
        assert_eq!(body[0], wire::MAGIC);
        assert_eq!(body[1], 2);
        let mut at = 2;
        let flags = varint(&body, &mut at);
        // The key's section; amplitude 0.75 and phase π written out; a0
        // equal to the amplitude, the id's node the origin's, emitted in
        // the id's millisecond: left out.
        assert_eq!(flags, (1 << 1) | (1 << 10) | (1 << 12));
        let u48 = |bytes: &[u8]| {
            let mut wide = [0u8; 8];
            wide[..6].copy_from_slice(bytes);
            u64::from_le_bytes(wide)
        };
        let millis = u48(&body[at..at + 6]);
        let sequence = u48(&body[at + 6..at + 12]);
        let origin = u64::from_le_bytes(body[at + 12..at + 20].try_into().unwrap());
        at += 20;
        let node = origin >> 32;
        let rebuilt = (u128::from(millis) << 80) | (u128::from(node) << 48) | u128::from(sequence);
        assert_eq!(rebuilt, id);
        let past = varint(&body, &mut at);
        assert!(past < 1_000_000);
        let emitted_ms = (millis * 1_000_000 + past) / 1_000_000;
        assert_eq!(emitted_ms, millis);
        assert_eq!(varint(&body, &mut at), 0, "hops");
        let f64_at = |at: usize| f64::from_le_bytes(body[at..at + 8].try_into().unwrap());
        assert_eq!(f64_at(at), 0.75);
        assert_eq!(f64_at(at + 8), std::f64::consts::PI);
        at += 16;
        let source_len = body[at] as usize;
        at += 1;
        assert_eq!(&body[at..at + source_len], b"order-service");
        at += source_len;
        let key_len = u16::from_le_bytes([body[at], body[at + 1]]) as usize;
        assert_eq!(&body[at + 2..at + 2 + key_len], b"order-42");
        assert_eq!(&body[at + 2 + key_len..], b"{\"order_id\":42}");
    })
    .await
    .expect("bounded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_raw_client_reads_the_version_1_envelope_an_aether_set_to_it_emits() {
    timeout(LIMIT, async {
        let (id, body) = emitted_body(wire::WireVersion::V1).await;
        // The fixed header, read by hand from the documented offsets.
        assert_eq!(body[0], wire::MAGIC);
        assert_eq!(body[1], wire::VERSION);
        let flags = u16::from_le_bytes([body[2], body[3]]);
        assert_eq!(flags, wire::FLAG_CORRELATION_KEY);
        assert_eq!(u128::from_be_bytes(body[4..20].try_into().unwrap()), id);
        let f64_at = |at: usize| f64::from_le_bytes(body[at..at + 8].try_into().unwrap());
        assert_eq!(f64_at(36), 0.75);
        assert_eq!(f64_at(44), 0.75);
        assert_eq!(f64_at(52), std::f64::consts::PI);
        assert_eq!(u16::from_le_bytes([body[60], body[61]]), 0);
        let source_len = body[62] as usize;
        assert_eq!(&body[63..63 + source_len], b"order-service");
        let key_at = 63 + source_len;
        let key_len = u16::from_le_bytes([body[key_at], body[key_at + 1]]) as usize;
        assert_eq!(&body[key_at + 2..key_at + 2 + key_len], b"order-42");
        assert_eq!(&body[key_at + 2 + key_len..], b"{\"order_id\":42}");
    })
    .await
    .expect("bounded");
}

/// A steady stream from a thread outside the runtime (as the Python
/// package's emits are) is gathered into frames instead of waking the
/// sender once per wave; a lone wave on a quiet bus still leaves at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_from_another_thread_leaves_in_frames_and_a_lone_wave_at_once() {
    timeout(LIMIT, async {
        let (_server, aether, _raw) = setup().await;
        let mut rx = Vibrator::builder("rx")
            .queue_capacity(100_000)
            .create(&aether)
            .await
            .unwrap();
        rx.resonate_on("stream.*").await.unwrap();
        let tx = Vibrator::create("stream", &aether).await.unwrap();
        let emitter = tx.emitter();
        let handle = tokio::runtime::Handle::current();
        let total = 20_000u64;
        std::thread::spawn(move || {
            for i in 0..total {
                // Paced as a script's emits are: a few microseconds apart.
                let at = std::time::Instant::now();
                while at.elapsed() < Duration::from_micros(3) {
                    std::hint::spin_loop();
                }
                handle
                    .block_on(emitter.emit(Wave::new("stream.tick", i.to_le_bytes().to_vec())))
                    .unwrap();
            }
        })
        .join()
        .unwrap();
        aether.flush(Duration::from_secs(10)).await.unwrap();
        let connection = aether.connection();
        let messages = connection.frames_sent + (total - connection.waves_framed);
        assert!(
            messages * 4 < total,
            "{total} waves left in {messages} messages ({} frames)",
            connection.frames_sent
        );
        for i in 0..total {
            let wave = timeout(Duration::from_secs(5), rx.receive())
                .await
                .unwrap()
                .unwrap();
            assert_eq!(&wave.payload_bytes()[..], &i.to_le_bytes());
        }

        // Quiet now: a lone wave is not held back for a frame.
        sleep(Duration::from_millis(50)).await;
        let started = Instant::now();
        tx.emit(Wave::new("stream.last", b"1".to_vec()))
            .await
            .unwrap();
        let last = timeout(Duration::from_secs(5), rx.receive())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(last.channel().as_str(), "stream.last");
        assert!(
            started.elapsed() < Duration::from_millis(500),
            "a lone wave took {:?}",
            started.elapsed()
        );
    })
    .await
    .expect("bounded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_raw_client_reads_a_batch_frame_and_sends_one() {
    timeout(LIMIT, async {
        let (_server, aether, mut raw) = setup().await;
        raw.subscribe("aether.jobs.>", 1, None).await.unwrap();
        raw.ping().await.unwrap();
        let mut rx = Vibrator::create("rx", &aether).await.unwrap();
        rx.resonate_on("jobs.*").await.unwrap();
        let tx = Vibrator::create("jobs", &aether).await.unwrap();
        // Emitted back to back (fewer than rx's queue holds): some leave
        // together as frames. The raw client unpacks them by the
        // documented layout.
        let total = 500u64;
        for i in 0..total {
            tx.emit(Wave::new("jobs.run", i.to_le_bytes().to_vec()))
                .await
                .unwrap();
        }
        let (mut waves, mut frames) = (Vec::new(), 0);
        while (waves.len() as u64) < total {
            let message = raw
                .next_message(Duration::from_secs(5))
                .await
                .unwrap()
                .expect("every wave reaches the raw client");
            let body = bytes::Bytes::from(message.payload);
            if body[1] == 0xFB {
                frames += 1;
                let mut at = 2;
                let count = varint(&body, &mut at);
                for _ in 0..count {
                    let len = varint(&body, &mut at) as usize;
                    waves.push(body.slice(at..at + len));
                    at += len;
                }
                assert_eq!(at, body.len());
            } else {
                waves.push(body);
            }
        }
        assert!(frames > 0, "500 waves back to back made no frame");
        assert_eq!(aether.connection().frames_sent, frames);
        // In emit order, each a wave of its own.
        for (i, envelope) in waves.into_iter().enumerate() {
            let wave =
                wire::decode(Channel::new("jobs.run"), envelope, &wire::Limits::default()).unwrap();
            assert_eq!(&wave.payload_bytes()[..], &(i as u64).to_le_bytes());
        }
        for i in 0..total {
            let wave = timeout(Duration::from_secs(5), rx.receive())
                .await
                .unwrap()
                .unwrap();
            assert_eq!(&wave.payload_bytes()[..], &i.to_le_bytes());
        }

        // A raw client's own frame: a v1 vector and a v2 vector, by hand.
        let (one, two) = (vector("emitted.bin"), vector("v2_emitted.bin"));
        let mut frame = vec![wire::MAGIC, 0xFB, 2];
        for envelope in [&one, &two] {
            assert!(envelope.len() < 128);
            frame.push(envelope.len() as u8);
            frame.extend_from_slice(envelope);
        }
        let mut orders = Vibrator::create("orders", &aether).await.unwrap();
        orders.resonate_on("orders.*").await.unwrap();
        let before = aether.connection().frames_received;
        let first =
            publish_until_heard(&mut raw, "aether.orders.created", &frame, &mut orders).await;
        let second = timeout(Duration::from_secs(5), orders.receive())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(first.source(), Some("shop"));
        assert_eq!(&first.payload_bytes()[..], b"hello");
        assert_eq!(second.channel().as_str(), "orders.created");
        assert!(aether.connection().frames_received > before);
        // A frame that says it holds more than it does: refused whole,
        // counted once, and the stream goes on.
        let malformed = aether.connection().malformed;
        let mut lying = frame.clone();
        lying[2] = 60;
        raw.publish("aether.orders.created", None, &lying)
            .await
            .unwrap();
        raw.publish("aether.orders.created", None, &one)
            .await
            .unwrap();
        raw.ping().await.unwrap();
        loop {
            let wave = timeout(Duration::from_secs(5), orders.receive())
                .await
                .unwrap()
                .unwrap();
            if aether.connection().malformed == malformed + 1 {
                assert_eq!(wave.source(), Some("shop"));
                break;
            }
        }
    })
    .await
    .expect("bounded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_raw_client_requests_and_a_vibrator_replies() {
    timeout(LIMIT, async {
        let (_server, aether, mut raw) = setup().await;
        let mut svc = Vibrator::create("echo", &aether).await.unwrap();
        svc.resonate_on("svc.echo").await.unwrap();
        let responder = tokio::spawn(async move {
            while let Some(request) = svc.receive().await {
                let body = request.payload_bytes().clone();
                svc.reply(&request, body).await.unwrap();
            }
        });
        // Replies travel on a reply subject under the prefix.
        raw.subscribe("aether._INBOX.raw.*", 7, None).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let reply = loop {
            raw.publish(
                "aether.svc.echo",
                Some("aether._INBOX.raw.1"),
                &vector("emitted.bin"),
            )
            .await
            .unwrap();
            if let Some(reply) = raw.next_message(Duration::from_millis(50)).await.unwrap() {
                break reply;
            }
            assert!(Instant::now() < deadline, "no reply");
        };
        assert_eq!(reply.subject, "aether._INBOX.raw.1");
        let wave = wire::decode(
            Channel::new("_INBOX.raw.1"),
            reply.payload.into(),
            &wire::Limits::default(),
        )
        .unwrap();
        assert_eq!(wave.source(), Some("echo"));
        assert_eq!(&wave.payload_bytes()[..], b"hello");
        responder.abort();
    })
    .await
    .expect("bounded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_off_the_wire_is_refused_counted_and_the_stream_goes_on() {
    timeout(LIMIT, async {
        let (_server, aether, mut raw) = setup().await;
        let mut rx = Vibrator::create("rx", &aether).await.unwrap();
        rx.resonate_on("in.*").await.unwrap();
        publish_until_heard(&mut raw, "aether.in.probe", &vector("minimal.bin"), &mut rx).await;
        while rx.try_receive().is_some() {}

        let garbage: Vec<Vec<u8>> = vec![
            b"{\"not\": \"an envelope\"}".to_vec(),
            Vec::new(),
            vector("truncated_header.bin"),
            vector("version_3.bin"),
            vector("unknown_flag_bit8.bin"),
            vector("amplitude_nan.bin"),
            vector("truncated_source.bin"),
            vec![0xAE; 5000],
        ];
        let before = aether.connection().malformed;
        for body in &garbage {
            raw.publish("aether.in.bad", None, body).await.unwrap();
        }
        // A valid envelope on a subject that is no channel is refused too.
        raw.publish("aether.in.b$d", None, &vector("minimal.bin"))
            .await
            .unwrap();
        // A valid wave in the middle of the garbage arrives.
        raw.publish("aether.in.bad", None, &vector("minimal.bin"))
            .await
            .unwrap();
        raw.publish("aether.in.good", None, &vector("emitted.bin"))
            .await
            .unwrap();
        raw.ping().await.unwrap();

        let good = timeout(Duration::from_secs(5), rx.receive())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(good.channel().as_str(), "in.bad");
        let good = timeout(Duration::from_secs(5), rx.receive())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(good.channel().as_str(), "in.good");
        let deadline = Instant::now() + Duration::from_secs(5);
        let refused = garbage.len() as u64 + 1;
        while aether.connection().malformed < before + refused {
            assert!(Instant::now() < deadline, "{:?}", aether.connection());
            sleep(Duration::from_millis(1)).await;
        }
        assert_eq!(aether.connection().malformed, before + refused);
        assert_eq!(rx.stats().dropped_total(), 0);

        // A wave long dead on arrival (its decay clock started in 2025) is
        // counted as expired, not delivered.
        raw.publish("aether.in.full", None, &vector("full.bin"))
            .await
            .unwrap();
        raw.publish("aether.in.after", None, &vector("emitted.bin"))
            .await
            .unwrap();
        let after = timeout(Duration::from_secs(5), rx.receive())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(after.channel().as_str(), "in.after");
        assert_eq!(aether.stats().dropped(DropReason::Expired), 1);
    })
    .await
    .expect("bounded");
}

/// A wave larger than the largest message (`nats.max_wave_bytes`, the
/// server's `max_payload` by default) is refused at `emit` with a typed
/// error that says what to do, rather than accepted and lost when the
/// server refuses it; a large wave under it arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wave_over_the_largest_message_is_refused_at_emit() {
    let (_server, aether, _raw) = setup().await;
    let mut rx = Vibrator::create("rx", &aether).await.unwrap();
    rx.resonate_on("big.*").await.unwrap();
    let tx = Vibrator::create("tx", &aether).await.unwrap();
    for size in [1_100_000, 2_000_000] {
        let err = tx
            .emit(Wave::new("big.one", vec![b'a'; size]))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), aether_core::EmitErrorKind::TooLarge, "{err}");
        assert!(err.to_string().contains("nats.max_wave_bytes"), "{err}");
    }
    let wave = Wave::new("big.two", vec![b'b'; 100_000]);
    let heard = timeout(LIMIT, async {
        loop {
            tx.emit(wave.clone()).await.unwrap();
            if let Ok(Some(wave)) = timeout(Duration::from_millis(200), rx.receive()).await {
                break wave;
            }
        }
    })
    .await
    .expect("the 100 KB wave arrives");
    assert_eq!(heard.payload_bytes().len(), 100_000);
    assert_eq!(aether.stats().dropped(DropReason::Unsent), 0);
}
