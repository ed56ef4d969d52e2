//! One side aether, the other raw: where the aether's cost lies (the
//! emitting side, the receiving side).

use super::*;

/// A vibrator emits `n` waves; a raw subscriber on the channel's subject
/// decodes every envelope, and must get exactly `n` data waves.
pub(crate) async fn emit_to_raw(url: String, n: usize) -> Duration {
    let (rx, rx_slow) = raw_connect(&url, capacity(n)).await;
    let tx_aether = aether_connect(&url, capacity(n)).await;
    let tx = Vibrator::create(EMITTER, &tx_aether).await.expect("tx");
    let channel = Channel::new(ONE_SUBJECT);
    let mut sub = rx
        .subscribe(subject_of(ONE_SUBJECT))
        .await
        .expect("subscribe");
    let limits = wire::Limits::default();
    let heard = channel.clone();
    // A message is one envelope or a batch frame of several.
    let decode = move |message: async_nats::Message| -> Vec<Wave> {
        let envelopes = if wire::is_frame(&message.payload) {
            wire::frame_envelopes(&message.payload, &limits).expect("a vibrator's frame")
        } else {
            vec![message.payload]
        };
        envelopes
            .into_iter()
            .map(|e| {
                wire::decode(heard.clone(), e, &limits).expect("a vibrator's envelope decodes")
            })
            .collect()
    };
    // Live once a probe arrives; then read up to the fence.
    let deadline = Instant::now() + PROBE_LIMIT;
    loop {
        assert!(
            Instant::now() < deadline,
            "emit -> raw: subscription not live within {PROBE_LIMIT:?}"
        );
        tx.emit(Wave::new(channel.clone(), Bytes::from_static(PROBE)))
            .await
            .expect("probe");
        if let Ok(Some(_)) = timeout(PROBE_WAIT, sub.next()).await {
            break;
        }
    }
    tx.emit(Wave::new(channel.clone(), Bytes::from_static(FENCE)))
        .await
        .expect("fence");
    loop {
        let message = timeout(ROUND_LIMIT, sub.next())
            .await
            .expect("emit -> raw: the fence arrives")
            .expect("subscription open");
        if decode(message).iter().any(|w| w.payload_bytes() == FENCE) {
            break;
        }
    }
    let payload = payload();
    let start = Instant::now();
    let (consumers, progress) = consume(vec![sub], |mut sub, got| {
        let decode = decode.clone();
        async move {
            while got.load(Ordering::Relaxed) < n {
                let message = sub.next().await.expect("subscription open");
                for wave in decode(message) {
                    assert_eq!(wave.payload_bytes().len(), PAYLOAD, "a data wave");
                    black_box(wave);
                    got.fetch_add(1, Ordering::Relaxed);
                }
            }
            sub
        }
    });
    for _ in 0..n {
        tx.emit(Wave::new(channel.clone(), payload.clone()))
            .await
            .expect("emit");
    }
    let subs = finish("emit -> raw", consumers, &progress, n).await;
    let elapsed = start.elapsed();
    for mut sub in subs {
        assert!(
            sub.next().now_or_never().is_none(),
            "emit -> raw: more than {n} messages"
        );
    }
    assert_eq!(rx_slow.load(Ordering::Relaxed), 0, "raw: slow consumer");
    elapsed
}

/// A raw client publishes `n` copies of one envelope (encoded once, as a
/// client in another language would); a vibrator must receive exactly `n`.
pub(crate) async fn raw_to_receive(url: String, n: usize) -> Duration {
    let rx_aether = aether_connect(&url, capacity(n)).await;
    let (tx, tx_slow) = raw_connect(&url, capacity(n)).await;
    let mut rx = Vibrator::create("rx", &rx_aether).await.expect("rx");
    rx.resonate_on(ONE_SUBJECT).await.expect("resonate");
    let subject = subject_of(ONE_SUBJECT);
    let envelope = |payload: Bytes| wire::encode(&Wave::new(ONE_SUBJECT, payload));
    let deadline = Instant::now() + PROBE_LIMIT;
    loop {
        assert!(
            Instant::now() < deadline,
            "raw -> receive: resonance not live within {PROBE_LIMIT:?}"
        );
        tx.publish(subject.clone(), envelope(Bytes::from_static(PROBE)))
            .await
            .expect("probe");
        tx.flush().await.expect("flush");
        if let Ok(Some(_)) = timeout(PROBE_WAIT, rx.receive()).await {
            break;
        }
    }
    tx.publish(subject.clone(), envelope(Bytes::from_static(FENCE)))
        .await
        .expect("fence");
    tx.flush().await.expect("flush");
    loop {
        let wave = timeout(ROUND_LIMIT, rx.receive())
            .await
            .expect("raw -> receive: the fence arrives")
            .expect("aether open");
        if wave.payload_bytes() == FENCE {
            break;
        }
    }
    let body = envelope(payload());
    let start = Instant::now();
    let (consumers, progress) = consume(vec![rx], |mut rx, got| async move {
        while got.load(Ordering::Relaxed) < n {
            let wave = rx.receive().await.expect("aether open");
            assert_eq!(wave.payload_bytes().len(), PAYLOAD, "a data wave");
            black_box(wave);
            got.fetch_add(1, Ordering::Relaxed);
        }
        rx
    });
    let subject = async_nats::Subject::from(subject);
    for _ in 0..n {
        tx.publish(subject.clone(), body.clone())
            .await
            .expect("publish");
    }
    tx.flush().await.expect("flush");
    let rxs = finish("raw -> receive", consumers, &progress, n).await;
    let elapsed = start.elapsed();
    for mut rx in rxs {
        assert!(
            rx.try_receive().is_none(),
            "raw -> receive: more than {n} waves"
        );
    }
    let status = rx_aether.connection();
    assert_eq!(
        status.slow_consumer_events, 0,
        "raw -> receive: slow consumer"
    );
    assert_eq!(status.malformed, 0, "raw -> receive: malformed waves");
    assert_eq!(
        rx_aether.stats().dropped_total(),
        0,
        "raw -> receive: drops"
    );
    assert_eq!(tx_slow.load(Ordering::Relaxed), 0, "raw: slow consumer");
    elapsed
}
