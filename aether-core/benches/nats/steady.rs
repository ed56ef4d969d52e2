//! Steady one-way latency: messages paced at a fixed rate, each carrying
//! its send time.

use super::*;

/// Waves a second in the steady-latency rounds, and how many (the first
/// tenth not counted).
pub(crate) const STEADY_RATE: u64 = 10_000;
pub(crate) const STEADY_N: usize = 10_000;
pub(crate) const STEADY_SUBJECT: &str = "bench.steady";

/// Sends `STEADY_N` messages at `STEADY_RATE` from a blocking thread paced
/// by `std::thread::sleep` (tokio's timer ticks in milliseconds, which
/// would send bursts), each payload starting with its send time in ns since
/// `epoch`; `send` publishes one.
pub(crate) async fn pace<F, Fut>(epoch: Instant, send: F)
where
    F: Fn(Bytes) -> Fut + Send + 'static,
    Fut: Future<Output = ()>,
{
    let handle = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        let gap = Duration::from_nanos(1_000_000_000 / STEADY_RATE);
        let start = Instant::now();
        for i in 0..STEADY_N {
            let due = start + gap * i as u32;
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
            let mut payload = vec![0xAB; PAYLOAD];
            let sent = epoch.elapsed().as_nanos() as u64;
            payload[..8].copy_from_slice(&sent.to_le_bytes());
            handle.block_on(send(Bytes::from(payload)));
        }
    })
    .await
    .expect("pacer");
}

/// The latency of a received payload sent by [`pace`].
pub(crate) fn one_way(epoch: Instant, payload: &[u8]) -> Duration {
    let sent = u64::from_le_bytes(payload[..8].try_into().expect("8 bytes"));
    epoch.elapsed().saturating_sub(Duration::from_nanos(sent))
}

/// Raw one-way latency at a steady `STEADY_RATE`.
pub(crate) async fn raw_steady(url: String) -> Vec<Duration> {
    let (rx, _) = raw_connect(&url, capacity(STEADY_N)).await;
    let (tx, _) = raw_connect(&url, capacity(STEADY_N)).await;
    let mut subs = vec![rx.subscribe(STEADY_SUBJECT).await.expect("subscribe")];
    raw_probe(&tx, STEADY_SUBJECT, &mut subs).await;
    let mut sub = subs.pop().expect("one");
    let epoch = Instant::now();
    let receiver = tokio::spawn(async move {
        let mut out = Vec::with_capacity(STEADY_N);
        while out.len() < STEADY_N {
            let message = timeout(ROUND_LIMIT, sub.next())
                .await
                .expect("raw steady: in time")
                .expect("open");
            out.push(one_way(epoch, &message.payload));
        }
        out
    });
    let sender = tx.clone();
    pace(epoch, move |payload| {
        let tx = sender.clone();
        async move { tx.publish(STEADY_SUBJECT, payload).await.expect("publish") }
    })
    .await;
    tx.flush().await.expect("flush");
    let out = receiver.await.expect("receiver");
    out[STEADY_N / 10..].to_vec()
}

/// Aether one-way latency at a steady `STEADY_RATE`, batch frames on (the
/// default): what batching adds when the bus is not busy.
pub(crate) async fn aether_steady(url: String) -> Vec<Duration> {
    let rx_aether = aether_connect(&url, capacity(STEADY_N)).await;
    let tx_aether = aether_connect(&url, capacity(STEADY_N)).await;
    let mut rx = Vibrator::create("rx", &rx_aether).await.expect("rx");
    rx.resonate_on(STEADY_SUBJECT).await.expect("resonate");
    let tx = Vibrator::create(EMITTER, &tx_aether).await.expect("tx");
    let channel = Channel::new(STEADY_SUBJECT);
    let mut rxs = vec![rx];
    aether_probe(&tx, &channel, &mut rxs).await;
    let mut rx = rxs.pop().expect("one");
    let epoch = Instant::now();
    let receiver = tokio::spawn(async move {
        let mut out = Vec::with_capacity(STEADY_N);
        while out.len() < STEADY_N {
            let wave = timeout(ROUND_LIMIT, rx.receive())
                .await
                .expect("aether steady: in time")
                .expect("open");
            out.push(one_way(epoch, wave.payload_bytes()));
        }
        (out, rx)
    });
    let emitter = tx.emitter();
    pace(epoch, move |payload| {
        let emitter = emitter.clone();
        let channel = channel.clone();
        async move {
            emitter
                .emit(Wave::new(channel, payload))
                .await
                .expect("emit");
        }
    })
    .await;
    tx_aether
        .flush(Duration::from_secs(5))
        .await
        .expect("flush");
    let (out, rx) = receiver.await.expect("receiver");
    assert_eq!(rx.stats().dropped_total(), 0, "aether steady: drops");
    drop(tx);
    out[STEADY_N / 10..].to_vec()
}
