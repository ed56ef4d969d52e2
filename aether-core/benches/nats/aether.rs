//! The aether over NATS: 1 -> 1, 1 -> 4, handlers and request/reply,
//! each round checked for zero loss.

use super::*;

/// An aether on the bench's server whose vibrators and NATS subscriptions
/// hold `capacity` waves each.
pub(crate) async fn aether_connect(url: &str, capacity: usize) -> Aether {
    aether_connect_with(url, capacity, true).await
}

/// [`aether_connect`], with batch frames on or off.
pub(crate) async fn aether_connect_with(url: &str, capacity: usize, batch: bool) -> Aether {
    let mut nats = NatsConfig {
        urls: vec![url.to_string()],
        subscription_capacity: capacity,
        client_capacity: CLIENT_CAPACITY,
        ..Default::default()
    };
    nats.batch.enabled = batch;
    Aether::connect(AetherConfig {
        channel_buffer_size: capacity,
        request_timeout: REQUEST_TIMEOUT,
        nats,
        ..Default::default()
    })
    .await
    .expect("aether connects")
}

/// Emits probes until every vibrator has heard one, then a fence that each
/// reads up to.
pub(crate) async fn aether_probe(tx: &Vibrator, channel: &Channel, rxs: &mut [Vibrator]) {
    let deadline = Instant::now() + PROBE_LIMIT;
    let mut live = vec![false; rxs.len()];
    while !live.iter().all(|l| *l) {
        assert!(
            Instant::now() < deadline,
            "aether: resonances not live within {PROBE_LIMIT:?}"
        );
        tx.emit(Wave::new(channel.clone(), Bytes::from_static(PROBE)))
            .await
            .expect("probe");
        for (rx, live) in rxs.iter_mut().zip(&mut live) {
            if !*live {
                *live = matches!(timeout(PROBE_WAIT, rx.receive()).await, Ok(Some(_)));
            }
        }
    }
    tx.emit(Wave::new(channel.clone(), Bytes::from_static(FENCE)))
        .await
        .expect("fence");
    for rx in rxs {
        loop {
            let wave = timeout(ROUND_LIMIT, rx.receive())
                .await
                .expect("aether: the fence arrives")
                .expect("aether open");
            if wave.payload_bytes() == FENCE {
                break;
            }
        }
    }
}

/// Emits `n` waves on `channel`; each vibrator must receive exactly `n`,
/// with no drop and no slow-consumer event on `rx_aether`.
pub(crate) async fn aether_run(
    label: &str,
    tx: &Vibrator,
    channel: &Channel,
    rx_aether: &Aether,
    rxs: Vec<Vibrator>,
    n: usize,
) -> Duration {
    let payload = payload();
    let start = Instant::now();
    let mut cpu = crate::cpu::start();
    let (consumers, progress) = consume(rxs, |mut rx, got| async move {
        while got.load(Ordering::Relaxed) < n {
            let wave = rx.receive().await.expect("aether open");
            assert_eq!(wave.payload_bytes().len(), PAYLOAD, "a data wave");
            black_box(wave);
            got.fetch_add(1, Ordering::Relaxed);
        }
        rx
    });
    emit_data(tx, channel, &payload, n).await;
    cpu.emitted();
    let mut rxs = finish(label, consumers, &progress, n).await;
    let elapsed = start.elapsed();
    cpu.end(crate::cpu::Side::Aether);
    for rx in &mut rxs {
        assert!(rx.try_receive().is_none(), "{label}: more than {n} waves");
    }
    assert_nothing_lost(label, rx_aether, &rxs);
    elapsed
}

/// Emits `n` data waves on `channel`, one after the other.
pub(crate) async fn emit_data(tx: &Vibrator, channel: &Channel, payload: &Bytes, n: usize) {
    for _ in 0..n {
        tx.emit(Wave::new(channel.clone(), payload.clone()))
            .await
            .expect("emit");
    }
}

/// No wave dropped by `rxs` or `rx_aether`, no slow-consumer event and no
/// malformed wave on its connection.
pub(crate) fn assert_nothing_lost(label: &str, rx_aether: &Aether, rxs: &[Vibrator]) {
    for rx in rxs {
        assert_eq!(rx.stats().dropped_total(), 0, "{label}: waves dropped");
    }
    let status = rx_aether.connection();
    assert_eq!(status.slow_consumer_events, 0, "{label}: slow consumer");
    assert_eq!(status.malformed, 0, "{label}: malformed waves");
    assert_eq!(
        rx_aether.stats().dropped_total(),
        0,
        "{label}: waves dropped"
    );
}

pub(crate) async fn aether_one_to_one(url: String, n: usize) -> Duration {
    aether_one_to_one_with(url, n, true).await
}

pub(crate) async fn aether_one_to_one_with(url: String, n: usize, batch: bool) -> Duration {
    let rx_aether = aether_connect_with(&url, capacity(n), batch).await;
    let tx_aether = aether_connect_with(&url, capacity(n), batch).await;
    let mut rx = Vibrator::create("rx", &rx_aether).await.expect("rx");
    rx.resonate_on(ONE_SUBJECT).await.expect("resonate");
    let tx = Vibrator::create(EMITTER, &tx_aether).await.expect("tx");
    let channel = Channel::new(ONE_SUBJECT);
    let mut rxs = vec![rx];
    aether_probe(&tx, &channel, &mut rxs).await;
    let elapsed = aether_run("aether 1 -> 1", &tx, &channel, &rx_aether, rxs, n).await;
    let status = tx_aether.connection();
    FRAMED.fetch_add(status.waves_framed, Ordering::Relaxed);
    FRAMES.fetch_add(status.frames_sent, Ordering::Relaxed);
    elapsed
}

/// What a handler vibrator counted: data waves, and probes; `done` is
/// told when the data reach the round's count.
#[derive(Default)]
pub(crate) struct Counted {
    data: AtomicUsize,
    probes: AtomicUsize,
    done: tokio::sync::Notify,
}

/// 1 -> `fan` with the receiving vibrators' handlers counting each wave
/// where it arrives (`on_wave`): no queue, no `receive()`. Probes until
/// every handler heard one (probes are shorter than data, so the later
/// ones are told apart), then `n` waves; each handler must count exactly
/// `n`, with no drop and no slow-consumer event.
pub(crate) async fn aether_handler(url: String, n: usize, fan: usize) -> Duration {
    let label = format!("aether handler 1 -> {fan}");
    let rx_aether = aether_connect(&url, capacity(n)).await;
    let tx_aether = aether_connect(&url, capacity(n)).await;
    let (pattern, subject) = if fan == 1 {
        (ONE_SUBJECT, ONE_SUBJECT)
    } else {
        (FAN_PATTERN, FAN_SUBJECT)
    };
    let mut rxs = Vec::new();
    let mut counts = Vec::new();
    for i in 0..fan {
        let counted = Arc::new(Counted::default());
        let into = counted.clone();
        let mut rx = Vibrator::builder(format!("rx{i}"))
            .on_wave(move |wave: Wave| {
                if wave.payload_bytes().len() == PAYLOAD {
                    black_box(wave);
                    if into.data.fetch_add(1, Ordering::Relaxed) + 1 == n {
                        into.done.notify_one();
                    }
                } else {
                    into.probes.fetch_add(1, Ordering::Relaxed);
                }
            })
            .create(&rx_aether)
            .await
            .expect("rx");
        rx.resonate_on(pattern).await.expect("resonate");
        rxs.push(rx);
        counts.push(counted);
    }
    let tx = Vibrator::create(EMITTER, &tx_aether).await.expect("tx");
    let channel = Channel::new(subject);
    let deadline = Instant::now() + PROBE_LIMIT;
    while !counts.iter().all(|c| c.probes.load(Ordering::Relaxed) > 0) {
        assert!(
            Instant::now() < deadline,
            "{label}: resonances not live within {PROBE_LIMIT:?}"
        );
        tx.emit(Wave::new(channel.clone(), Bytes::from_static(PROBE)))
            .await
            .expect("probe");
        tokio::time::sleep(PROBE_WAIT).await;
    }
    let payload = payload();
    let start = Instant::now();
    let mut cpu = crate::cpu::start();
    emit_data(&tx, &channel, &payload, n).await;
    cpu.emitted();
    for counted in &counts {
        let arrived = timeout(ROUND_LIMIT, counted.done.notified()).await;
        assert!(
            arrived.is_ok(),
            "{label}: {} of {n} arrived within {ROUND_LIMIT:?}",
            counted.data.load(Ordering::Relaxed)
        );
    }
    let elapsed = start.elapsed();
    cpu.end(crate::cpu::Side::Aether);
    for counted in &counts {
        assert_eq!(
            counted.data.load(Ordering::Relaxed),
            n,
            "{label}: more than {n} waves"
        );
    }
    assert_nothing_lost(&label, &rx_aether, &rxs);
    elapsed
}

/// Frames the 1 -> 1 rounds sent, and the waves in them.
pub(crate) static FRAMES: AtomicU64 = AtomicU64::new(0);
pub(crate) static FRAMED: AtomicU64 = AtomicU64::new(0);

pub(crate) async fn aether_fan_out(url: String, n: usize) -> Duration {
    let rx_aether = aether_connect(&url, capacity(n)).await;
    let tx_aether = aether_connect(&url, capacity(n)).await;
    let mut rxs = Vec::new();
    for i in 0..FAN_OUT {
        let mut rx = Vibrator::create(format!("rx{i}"), &rx_aether)
            .await
            .expect("rx");
        rx.resonate_on(FAN_PATTERN).await.expect("resonate");
        rxs.push(rx);
    }
    let tx = Vibrator::create(EMITTER, &tx_aether).await.expect("tx");
    let channel = Channel::new(FAN_SUBJECT);
    aether_probe(&tx, &channel, &mut rxs).await;
    aether_run("aether 1 -> 4", &tx, &channel, &rx_aether, rxs, n).await
}

pub(crate) async fn aether_request_reply(
    url: String,
    warm_up: usize,
    samples: usize,
) -> Vec<Duration> {
    let responder_aether = aether_connect(&url, capacity(0)).await;
    let requester_aether = aether_connect(&url, capacity(0)).await;
    let mut responder = Vibrator::create("responder", &responder_aether)
        .await
        .expect("responder");
    responder.resonate_on(REQ_SUBJECT).await.expect("resonate");
    let echo = tokio::spawn(async move {
        while let Some(wave) = responder.receive().await {
            responder
                .reply(&wave, wave.payload_bytes().clone())
                .await
                .expect("reply");
        }
    });
    let requester = Vibrator::create("requester", &requester_aether)
        .await
        .expect("requester");
    let channel = Channel::new(REQ_SUBJECT);
    let payload = payload();
    let request = || async {
        let reply = requester
            .request_with_timeout(Wave::new(channel.clone(), payload.clone()), REQUEST_TIMEOUT)
            .await
            .map_err(|e| e.to_string())?;
        assert_eq!(
            reply.payload_bytes(),
            &payload,
            "aether: the reply echoes the request"
        );
        Ok::<_, String>(())
    };
    let deadline = Instant::now() + PROBE_LIMIT;
    while let Err(error) = request().await {
        assert!(
            Instant::now() < deadline,
            "aether: responder not live within {PROBE_LIMIT:?}: {error}"
        );
    }
    for _ in 0..warm_up {
        request().await.expect("aether request");
    }
    let mut out = Vec::with_capacity(samples);
    for _ in 0..samples {
        let start = Instant::now();
        request().await.expect("aether request");
        out.push(start.elapsed());
    }
    echo.abort();
    for aether in [&responder_aether, &requester_aether] {
        let status = aether.connection();
        assert_eq!(status.slow_consumer_events, 0, "aether: slow consumer");
        assert_eq!(status.malformed, 0, "aether: malformed waves");
        assert_eq!(aether.stats().dropped_total(), 0, "aether: waves dropped");
    }
    out
}
