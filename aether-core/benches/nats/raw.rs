//! Raw async-nats: the side every scenario is measured against.

use super::*;

/// A raw client with `capacity` messages of buffer per subscription, and a
/// count of its slow-consumer events.
pub(crate) async fn raw_connect(url: &str, capacity: usize) -> (Client, Arc<AtomicU64>) {
    let slow = Arc::new(AtomicU64::new(0));
    let counter = slow.clone();
    let client = ConnectOptions::new()
        .subscription_capacity(capacity)
        .client_capacity(CLIENT_CAPACITY)
        .request_timeout(Some(REQUEST_TIMEOUT))
        .event_callback(move |event| {
            let counter = counter.clone();
            async move {
                if let Event::SlowConsumer(_) = event {
                    counter.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
        .connect(url)
        .await
        .expect("raw client connects");
    (client, slow)
}

/// Publishes probes until every subscriber has seen one, then a fence that
/// each reads up to: afterwards the subscriptions are live and empty.
pub(crate) async fn raw_probe(client: &Client, subject: &'static str, subs: &mut [Subscriber]) {
    let deadline = Instant::now() + PROBE_LIMIT;
    let mut live = vec![false; subs.len()];
    while !live.iter().all(|l| *l) {
        assert!(
            Instant::now() < deadline,
            "raw: subscriptions not live within {PROBE_LIMIT:?}"
        );
        client
            .publish(subject, Bytes::from_static(PROBE))
            .await
            .expect("probe");
        client.flush().await.expect("flush");
        for (sub, live) in subs.iter_mut().zip(&mut live) {
            if !*live {
                *live = matches!(timeout(PROBE_WAIT, sub.next()).await, Ok(Some(_)));
            }
        }
    }
    client
        .publish(subject, Bytes::from_static(FENCE))
        .await
        .expect("fence");
    client.flush().await.expect("flush");
    for sub in subs {
        loop {
            let message = timeout(ROUND_LIMIT, sub.next())
                .await
                .expect("raw: the fence arrives")
                .expect("subscription open");
            if message.payload == FENCE {
                break;
            }
        }
    }
}

/// Publishes `n` messages on `subject`; each subscriber must receive exactly
/// `n`. Returns the time from the first publish to the last delivery.
pub(crate) async fn raw_run(
    label: &str,
    tx: &Client,
    subject: &'static str,
    subs: Vec<Subscriber>,
    n: usize,
    len: usize,
) -> Duration {
    let payload = body(len);
    let start = Instant::now();
    let mut cpu = crate::cpu::start();
    let (consumers, progress) = consume(subs, |mut sub, got| async move {
        while got.load(Ordering::Relaxed) < n {
            let message = sub.next().await.expect("subscription open");
            assert_eq!(message.payload.len(), len, "a data message");
            black_box(message);
            got.fetch_add(1, Ordering::Relaxed);
        }
        sub
    });
    for _ in 0..n {
        tx.publish(subject, payload.clone()).await.expect("publish");
    }
    cpu.emitted();
    tx.flush().await.expect("flush");
    let subs = finish(label, consumers, &progress, n).await;
    let elapsed = start.elapsed();
    cpu.end(crate::cpu::Side::Raw);
    for mut sub in subs {
        assert!(
            sub.next().now_or_never().is_none(),
            "{label}: more than {n} messages"
        );
    }
    elapsed
}

/// Raw 1 -> 1 with `len`-byte bodies.
pub(crate) async fn raw_one_to_one(url: String, n: usize, len: usize) -> Duration {
    let (rx, rx_slow) = raw_connect(&url, capacity(n)).await;
    let (tx, tx_slow) = raw_connect(&url, capacity(n)).await;
    let mut subs = vec![rx.subscribe(ONE_SUBJECT).await.expect("subscribe")];
    raw_probe(&tx, ONE_SUBJECT, &mut subs).await;
    let elapsed = raw_run("raw 1 -> 1", &tx, ONE_SUBJECT, subs, n, len).await;
    assert_eq!(rx_slow.load(Ordering::Relaxed), 0, "raw: slow consumer");
    assert_eq!(tx_slow.load(Ordering::Relaxed), 0, "raw: slow consumer");
    elapsed
}

/// Four subscribers on one receiving client: the same wire traffic as four
/// vibrators on one aether (one connection, four subscriptions).
pub(crate) async fn raw_fan_out(url: String, n: usize) -> Duration {
    let (rx, rx_slow) = raw_connect(&url, capacity(n)).await;
    let (tx, tx_slow) = raw_connect(&url, capacity(n)).await;
    let mut subs = Vec::new();
    for _ in 0..FAN_OUT {
        subs.push(rx.subscribe(FAN_PATTERN).await.expect("subscribe"));
    }
    raw_probe(&tx, FAN_SUBJECT, &mut subs).await;
    let elapsed = raw_run("raw 1 -> 4", &tx, FAN_SUBJECT, subs, n, PAYLOAD).await;
    assert_eq!(rx_slow.load(Ordering::Relaxed), 0, "raw: slow consumer");
    assert_eq!(tx_slow.load(Ordering::Relaxed), 0, "raw: slow consumer");
    elapsed
}

/// Sequential requests to an echoing responder on another connection:
/// `warm_up` untimed, then `samples` timed.
pub(crate) async fn raw_request_reply(
    url: String,
    warm_up: usize,
    samples: usize,
) -> Vec<Duration> {
    let (responder, _) = raw_connect(&url, capacity(0)).await;
    let (requester, slow) = raw_connect(&url, capacity(0)).await;
    let mut sub = responder.subscribe(REQ_SUBJECT).await.expect("subscribe");
    let echo = tokio::spawn(async move {
        while let Some(message) = sub.next().await {
            if let Some(reply) = message.reply {
                responder
                    .publish(reply, message.payload)
                    .await
                    .expect("reply");
            }
        }
    });
    let payload = payload();
    let request = || async {
        let reply = requester
            .request(REQ_SUBJECT, payload.clone())
            .await
            .map_err(|e| e.to_string())?;
        assert_eq!(reply.payload, payload, "raw: the reply echoes the request");
        Ok::<_, String>(())
    };
    // Live when a request gets its answer (until then: no responders).
    let deadline = Instant::now() + PROBE_LIMIT;
    while let Err(error) = request().await {
        assert!(
            Instant::now() < deadline,
            "raw: responder not live within {PROBE_LIMIT:?}: {error}"
        );
    }
    for _ in 0..warm_up {
        request().await.expect("raw request");
    }
    let mut out = Vec::with_capacity(samples);
    for _ in 0..samples {
        let start = Instant::now();
        request().await.expect("raw request");
        out.push(start.elapsed());
    }
    echo.abort();
    assert_eq!(slow.load(Ordering::Relaxed), 0, "raw: slow consumer");
    out
}
