//! The browser bridge, measured from outside over loopback WebSockets, beside
//! a plain axum WebSocket relay in the same run.
//!
//! - Round trip: page A sets a key, page B gets it and sets another, page A
//!   gets that: p50 and p99 of the round trip, and of the one way A -> B,
//!   through the gateway (stamped writes merged into its replica, sent to
//!   the other page) and through the plain relay (each text message
//!   forwarded to the room's other connections, nothing kept): ratios.
//! - A paste: page A writes 10,000 keys as fast as the gateway takes them,
//!   a `set` message each or many a `writes` message, until page B has
//!   had them all: writes a second of each, and their ratio.
//! - Tabs held: N connected pages with edits flowing (writes from pages in
//!   turn at a fixed rate, each sent to every other page): delivery latency
//!   p50 and p99, and loss, for growing N.
//!
//! `cargo bench -p aether-gateway --bench bridge`. Without `--bench` (as
//! `cargo test` runs it) a small smoke run.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use aether_core::Aether;
use aether_gateway::{BridgeConfig, Gateway, GatewayConfig};
use aether_ops::shutdown::Shutdown;
use axum::{
    Router,
    extract::{
        State,
        ws::{Message as AxMessage, WebSocket, WebSocketUpgrade},
    },
    routing::get,
};
use futures_util::{SinkExt, StreamExt, stream::SplitSink};
use serde_json::{Value, json};
use tokio::{net::TcpStream, sync::broadcast};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async, tungstenite::Message};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;
type Sink = SplitSink<Ws, Message>;

const TOKEN: &str = "a-token-of-the-bridge-bench-000";

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

async fn gateway(max: usize) -> Gateway {
    let config = GatewayConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        max_connections: max + 64,
        physics: false,
        bridge: BridgeConfig {
            token: Some(TOKEN.into()),
            max_connections: max,
            maps: vec!["board".into()],
            max_connections_per_address: max,
            // Measured pages send as fast as they get answers.
            messages_per_s: 100_000,
            burst: 100_000,
            writes_per_s: 1_000_000,
            write_burst: 1_000_000,
            ..Default::default()
        },
        ..Default::default()
    };
    Gateway::start(&Aether::default(), config, Shutdown::new())
        .await
        .expect("the gateway starts")
}

/// The relay's room, and the next connection's number.
type Room = (
    broadcast::Sender<(u64, String)>,
    Arc<std::sync::atomic::AtomicU64>,
);

/// A plain WebSocket relay: every text message goes to the other
/// connections.
async fn relay() -> SocketAddr {
    async fn connection(
        socket: WebSocket,
        room: broadcast::Sender<(u64, String)>,
        mut heard: broadcast::Receiver<(u64, String)>,
        me: u64,
    ) {
        let (mut tx, mut rx) = socket.split();
        loop {
            tokio::select! {
                message = rx.next() => match message {
                    Some(Ok(AxMessage::Text(text))) => {
                        let _ = room.send((me, text.to_string()));
                    }
                    Some(Ok(_)) => {}
                    _ => return,
                },
                message = heard.recv() => match message {
                    Ok((from, text)) if from != me => {
                        if tx.send(AxMessage::Text(text.into())).await.is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(_) => return,
                },
            }
        }
    }
    let (room, _) = broadcast::channel::<(u64, String)>(4096);
    let next = Arc::new(std::sync::atomic::AtomicU64::new(1));
    let app = Router::new()
        .route(
            "/relay",
            get(
                |State((room, next)): State<Room>, ws: WebSocketUpgrade| async move {
                    let me = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    // In the room before the handshake's answer: a message
                    // sent once the other end's connect returned reaches it.
                    let heard = room.subscribe();
                    ws.on_upgrade(move |socket| connection(socket, room, heard, me))
                },
            ),
        )
        .with_state((room, next));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // As the gateway does: each message goes out at once (TCP_NODELAY).
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        let _ = tcp.set_nodelay(true);
    });
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

/// A page on the bridge: authenticated, its hello and snapshot read. Its
/// replica id may still be held a moment by a page of the same id that
/// just closed (`replica_in_use`): then it tries again.
async fn page(addr: SocketAddr, replica: u64) -> Ws {
    for _ in 0..500 {
        let (mut ws, _) = connect_async(format!("ws://{addr}/bridge/board"))
            .await
            .unwrap();
        let auth = json!({"type": "auth", "token": TOKEN, "replica": format!("{replica:016x}")});
        ws.send(Message::text(auth.to_string())).await.unwrap();
        let hello = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("a message within 10 s");
        if let Some(Ok(Message::Text(_))) = hello {
            next_text(&mut ws).await;
            return ws;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("replica {replica:x} still in use after 5 s");
}

async fn plain(addr: SocketAddr) -> Ws {
    connect_async(format!("ws://{addr}/relay")).await.unwrap().0
}

async fn next_text(ws: &mut Ws) -> String {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("a message within 10 s")
            .expect("open")
            .expect("a message");
        if let Message::Text(text) = message {
            return text.to_string();
        }
    }
}

fn set(key: &str, n: u64, replica: u64) -> String {
    format!(
        "{{\"type\":\"set\",\"key\":\"{key}\",\"value\":{{\"n\":{n}}},\"stamp\":\"{:016x}-{:08x}-{replica:016x}\"}}",
        now_ns(),
        n as u32
    )
}

/// `n` round trips A -> B -> A: (round trips, one ways), in microseconds.
async fn ping_pong(a: &mut Ws, b: &mut Ws, n: u64) -> (Vec<f64>, Vec<f64>) {
    let (mut rtt, mut one) = (Vec::new(), Vec::new());
    for i in 0..n {
        let start = Instant::now();
        a.send(Message::text(set("ping", i, 0xa))).await.unwrap();
        next_text(b).await;
        one.push(start.elapsed().as_secs_f64() * 1e6);
        b.send(Message::text(set("pong", i, 0xb))).await.unwrap();
        next_text(a).await;
        rtt.push(start.elapsed().as_secs_f64() * 1e6);
    }
    (rtt, one)
}

/// The next `set`, past the `synced` answers.
async fn next_set(ws: &mut Ws) -> String {
    loop {
        let text = next_text(ws).await;
        if text.starts_with("{\"type\":\"set\"") {
            return text;
        }
    }
}

/// As [`ping_pong`] between the pages of replicas `0xc` and `0xd`, each
/// write as aether.js sends it: with the `prev` it replaced, and a `sync`
/// after it (whose `synced` comes back).
async fn ping_pong_as_client(a: &mut Ws, b: &mut Ws, n: u64) -> Vec<f64> {
    let with_prev =
        |text: String, prev: &str| format!("{},\"prev\":{prev}}}", &text[..text.len() - 1]);
    let sync = |i: u64| Message::text(format!("{{\"type\":\"sync\",\"id\":{}}}", i + 1));
    let mut rtt = Vec::new();
    for i in 0..n {
        let start = Instant::now();
        a.send(Message::text(with_prev(set("ping", i, 0xc), "null")))
            .await
            .unwrap();
        a.send(sync(i)).await.unwrap();
        next_set(b).await;
        b.send(Message::text(with_prev(set("pong", i, 0xd), "null")))
            .await
            .unwrap();
        b.send(sync(i)).await.unwrap();
        next_set(a).await;
        rtt.push(start.elapsed().as_secs_f64() * 1e6);
    }
    rtt
}

fn percentile(samples: &mut [f64], p: f64) -> f64 {
    samples.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let i = ((samples.len() as f64 - 1.0) * p).round() as usize;
    samples[i]
}

fn median(mut v: Vec<f64>) -> f64 {
    percentile(&mut v, 0.5)
}

fn spread(v: &[f64]) -> String {
    let min = v.iter().cloned().fold(f64::INFINITY, f64::min);
    let max = v.iter().cloned().fold(0.0, f64::max);
    format!("{min:.2}-{max:.2}")
}

/// `tabs` pages connected; `edits_per_s` writes a second from the pages in
/// turn for `seconds`; each reaches every other page. (delivered, expected,
/// p50 ms, p99 ms)
async fn tabs(
    addr: SocketAddr,
    tabs: usize,
    edits_per_s: u64,
    seconds: u64,
) -> (u64, u64, f64, f64) {
    let latencies = Arc::new(Mutex::new(Vec::<f64>::new()));
    let (done_tx, done) = tokio::sync::watch::channel(false);
    let connecting = Instant::now();
    let mut sinks: Vec<Sink> = Vec::new();
    let mut readers = Vec::new();
    for t in 0..tabs {
        let ws = page(addr, 0x1_0000 + t as u64).await;
        let (sink, mut stream) = ws.split();
        sinks.push(sink);
        let latencies = latencies.clone();
        let done = done.clone();
        readers.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            // Until the edits are all sent and then 3 s pass with nothing.
            loop {
                let message =
                    match tokio::time::timeout(Duration::from_secs(3), stream.next()).await {
                        Ok(Some(Ok(message))) => message,
                        Ok(_) => break,
                        Err(_) if *done.borrow() => break,
                        Err(_) => continue,
                    };
                let Message::Text(text) = message else {
                    continue;
                };
                let Ok(value) = serde_json::from_str::<Value>(&text) else {
                    continue;
                };
                // A change alone, or changes that came together.
                let changes = match value["changes"].as_array() {
                    Some(changes) => changes.clone(),
                    None => vec![value],
                };
                for change in changes {
                    if let Some(sent) = change["value"]["t"].as_u64() {
                        mine.push(now_ns().saturating_sub(sent) as f64 / 1e6);
                    }
                }
            }
            let got = mine.len();
            latencies.lock().unwrap().extend(mine);
            (t, got)
        }));
    }
    eprintln!(
        "  ({tabs} pages connected in {:.1} s)",
        connecting.elapsed().as_secs_f64()
    );
    let edits = edits_per_s * seconds;
    let gap = Duration::from_nanos(1_000_000_000 / edits_per_s);
    let mut tick = tokio::time::interval(gap);
    for e in 0..edits {
        tick.tick().await;
        let writer = (e as usize) % tabs;
        let stamp = format!("{:016x}-{:08x}-{:016x}", now_ns(), 0, writer + 1);
        let text = format!(
            "{{\"type\":\"set\",\"key\":\"k{}\",\"value\":{{\"t\":{}}},\"stamp\":\"{stamp}\"}}",
            e % 64,
            now_ns()
        );
        sinks[writer].send(Message::text(text)).await.unwrap();
    }
    done_tx.send_replace(true);
    // Readers stop 3 s after the last message they got.
    let mut short = Vec::new();
    for reader in readers {
        if let Ok((t, got)) = reader.await {
            let want = edits as usize - (0..edits as usize).filter(|e| e % tabs == t).count();
            if got != want {
                short.push((t, got, want));
            }
        }
    }
    if !short.is_empty() {
        eprintln!("pages short of edits (page, got, expected): {short:?}");
    }
    for mut sink in sinks {
        let _ = sink.close().await;
    }
    let mut all = std::mem::take(&mut *latencies.lock().unwrap());
    let delivered = all.len() as u64;
    let expected = edits * (tabs as u64 - 1);
    if all.is_empty() {
        return (0, expected, f64::NAN, f64::NAN);
    }
    let p50 = percentile(&mut all, 0.5);
    let p99 = percentile(&mut all, 0.99);
    (delivered, expected, p50, p99)
}

/// Page `a` (replica `replica`) writes `n` keys `paste/<i>` (their values
/// marked with `round`), `per` writes a message (1: a `set` each, as one
/// message a write); the writes a second until page `b` has had every one.
async fn paste(a: &mut Ws, b: &mut Ws, n: u64, per: usize, replica: u64, round: u64) -> f64 {
    let writes: Vec<String> = (0..n)
        .map(|i| {
            format!(
                "{{\"key\":\"paste/{i}\",\"value\":{{\"title\":\"card {i}\",\"round\":{round}}},\"stamp\":\"{:016x}-{:08x}-{replica:016x}\"}}",
                now_ns(),
                i as u32
            )
        })
        .collect();
    let start = Instant::now();
    let (mut to_gateway, mut from_gateway) = (&mut *a).split();
    let send = async move {
        for chunk in writes.chunks(per) {
            let text = if per == 1 {
                format!("{{\"type\":\"set\",{}", &chunk[0][1..])
            } else {
                format!("{{\"type\":\"writes\",\"writes\":[{}]}}", chunk.join(","))
            };
            to_gateway.send(Message::text(text)).await.unwrap();
        }
    };
    // A reads what comes to it, as a page does.
    let drain = async move {
        while let Some(Ok(_)) = from_gateway.next().await {}
        std::future::pending::<()>().await;
    };
    // The keys B has had at this round: changes one by one or together,
    // or the map whole when B fell behind the changes (`watch_buffer`).
    let receive = async {
        let mut seen = std::collections::HashSet::new();
        while (seen.len() as u64) < n {
            let text = next_text(b).await;
            let message: serde_json::Value = serde_json::from_str(&text).unwrap();
            let this_round = |entry: &serde_json::Value| entry["value"]["round"] == round;
            let keys: Vec<String> = match message["type"].as_str() {
                Some("set") if this_round(&message) => vec![message["key"].to_string()],
                Some("changes") => message["changes"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|c| this_round(c))
                    .map(|c| c["key"].to_string())
                    .collect(),
                Some("snapshot" | "snapshot-part") => message["entries"]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .filter(|(_, e)| this_round(e))
                    .map(|(k, _)| k.clone())
                    .collect(),
                _ => Vec::new(),
            };
            seen.extend(keys);
        }
    };
    tokio::join!(send, async {
        tokio::select! {
            () = receive => {}
            () = drain => {}
        }
    });
    n as f64 / start.elapsed().as_secs_f64()
}

/// Rounds of [`paste`], a `set` each and `writes` of 400 (within the 64 KiB message limit) alternating.
async fn pastes(addr: SocketAddr, rounds: u64) {
    let n = 10_000;
    let (mut singles, mut groups, mut paste_ratios) = (Vec::new(), Vec::new(), Vec::new());
    let (mut a, mut b) = (page(addr, 0xe).await, page(addr, 0xf).await);
    for round in 0..rounds {
        let one = paste(&mut a, &mut b, n, 1, 0xe, 2 * round).await;
        let many = paste(&mut a, &mut b, n, 400, 0xe, 2 * round + 1).await;
        singles.push(one);
        groups.push(many);
        paste_ratios.push(many / one);
    }
    println!(
        "a paste of {n} keys from page A until page B has them all, {rounds} alternating rounds, medians (min-max):"
    );
    println!(
        "  a set message each        {:.0} writes/s ({})",
        median(singles.clone()),
        spread(&singles)
    );
    println!(
        "  writes messages of 400    {:.0} writes/s ({})",
        median(groups.clone()),
        spread(&groups)
    );
    println!(
        "  ratio: {:.2}x ({})",
        median(paste_ratios.clone()),
        spread(&paste_ratios)
    );
}

fn main() {
    // `cargo bench` measures; as a test, one small smoke run of each case.
    let testing = !aether_testkit::bench::measuring();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let max = if testing { 64 } else { 4200 };
        let gateway = gateway(max).await;
        let addr = gateway.addr();
        let relay = relay().await;
        if testing {
            let (mut a, mut b) = (page(addr, 0xa).await, page(addr, 0xb).await);
            let (rtt, _) = ping_pong(&mut a, &mut b, 20).await;
            assert_eq!(rtt.len(), 20);
            let (mut a, mut b) = (page(addr, 0xc).await, page(addr, 0xd).await);
            assert_eq!(ping_pong_as_client(&mut a, &mut b, 20).await.len(), 20);
            let (mut a, mut b) = (plain(relay).await, plain(relay).await);
            ping_pong(&mut a, &mut b, 20).await;
            let (delivered, expected, _, _) = tabs(addr, 8, 50, 1).await;
            assert_eq!(delivered, expected, "every edit reached every other page");
            let (mut a, mut b) = (page(addr, 0xe).await, page(addr, 0xf).await);
            for (per, round) in [(1, 0), (400, 1)] {
                assert!(paste(&mut a, &mut b, 2_000, per, 0xe, round).await > 0.0);
            }
            println!("bridge bench: smoke run ok");
            return;
        }
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|c| c.lines().find(|l| l.starts_with("model name")).map(|l| l[13..].trim().to_string()))
            .unwrap_or_default();
        println!("machine: {cpu}, {} CPUs", std::thread::available_parallelism().map_or(0, |n| n.get()));
        if std::env::var_os("AETHER_BENCH_PASTE").is_some() {
            pastes(addr, 7).await;
            return;
        }
        if let Ok(only) = std::env::var("AETHER_BENCH_TABS") {
            let count: usize = only.parse().expect("a number of tabs");
            let (delivered, expected, p50, p99) = tabs(addr, count, 20, 3).await;
            println!("{count} tabs: {delivered}/{expected} p50 {p50:.2} ms p99 {p99:.2} ms");
            for line in gateway.metrics_text().lines().filter(|l| l.starts_with("aether_bridge")) {
                println!("  {line}");
            }
            return;
        }
        let rounds = 7;
        let n = 2000;
        let (mut ours, mut theirs) = (Vec::new(), Vec::new());
        let (mut ours99, mut theirs99, mut one50, mut one99, mut ratios) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let (mut client50, mut client99, mut client_ratios) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..rounds {
            let (mut a, mut b) = (plain(relay).await, plain(relay).await);
            let (mut r, _) = ping_pong(&mut a, &mut b, n).await;
            let (t50, t99) = (percentile(&mut r, 0.5), percentile(&mut r, 0.99));
            let (mut a, mut b) = (page(addr, 0xa).await, page(addr, 0xb).await);
            let (mut r, mut o) = ping_pong(&mut a, &mut b, n).await;
            let (o50, o99) = (percentile(&mut r, 0.5), percentile(&mut r, 0.99));
            one50.push(percentile(&mut o, 0.5));
            one99.push(percentile(&mut o, 0.99));
            ours.push(o50);
            ours99.push(o99);
            theirs.push(t50);
            theirs99.push(t99);
            ratios.push(o50 / t50);
            let (mut a, mut b) = (page(addr, 0xc).await, page(addr, 0xd).await);
            let mut c = ping_pong_as_client(&mut a, &mut b, n).await;
            let c50 = percentile(&mut c, 0.5);
            client50.push(c50);
            client99.push(percentile(&mut c, 0.99));
            client_ratios.push(c50 / o50);
        }
        println!("round trip page -> gateway -> page -> gateway -> page, {n} per round, {rounds} alternating rounds, medians (min-max):");
        println!(
            "  bridge     p50 {:.0} us ({}) p99 {:.0} us ({})",
            median(ours.clone()), spread(&ours), median(ours99.clone()), spread(&ours99)
        );
        println!(
            "  plain relay p50 {:.0} us ({}) p99 {:.0} us ({})",
            median(theirs.clone()), spread(&theirs), median(theirs99.clone()), spread(&theirs99)
        );
        println!("  ratio bridge / relay p50: {:.2}x ({})", median(ratios.clone()), spread(&ratios));
        println!(
            "  as aether.js sends (prev, a sync each write) p50 {:.0} us ({}) p99 {:.0} us ({}); / bridge p50 {:.2}x ({})",
            median(client50.clone()), spread(&client50), median(client99.clone()), spread(&client99),
            median(client_ratios.clone()), spread(&client_ratios)
        );
        println!(
            "one way page -> gateway -> page: p50 {:.0} us ({}) p99 {:.0} us ({})",
            median(one50.clone()), spread(&one50), median(one99.clone()), spread(&one99)
        );
        pastes(addr, rounds).await;
        println!("tabs held, 20 edits/s from the pages in turn for 3 s, each to every other page:");
        println!("  tabs | deliveries/s | delivered/expected | p50 ms | p99 ms");
        for count in [100, 250, 500, 1000, 2000, 4000] {
            let (delivered, expected, p50, p99) = tabs(addr, count, 20, 3).await;
            println!(
                "  {count:>4} | {:>12.0} | {delivered}/{expected} | {p50:.2} | {p99:.2}",
                expected as f64 / 3.0
            );
        }
        gateway.stop().await.unwrap();
    });
}
