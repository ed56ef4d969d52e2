//! `/health`, `/ready`, `/`, `/events` and `/snapshot` on an embedded
//! aether, and shutdown with a dashboard open.

mod support;

use std::time::Duration;

use aether_core::{Aether, Vibrator};
use aether_gateway::Gateway;
use aether_ops::shutdown::Shutdown;
use support::{config, get, sse_until, start};

const BOUND: Duration = Duration::from_secs(10);

#[tokio::test]
async fn health_and_ready_on_the_embedded_medium() {
    let aether = Aether::default();
    let gateway = start(&aether, config()).await;
    let health = get(gateway.addr(), "/health").await;
    assert_eq!((health.status, health.body.as_str()), (200, "ok\n"));
    let ready = get(gateway.addr(), "/ready").await;
    assert_eq!(ready.status, 200, "{}", ready.body);
    assert!(ready.body.contains("embedded"), "{}", ready.body);
    assert_eq!(get(gateway.addr(), "/nowhere").await.status, 404);

    // A closed aether brings no waves: not ready, but alive.
    aether.close();
    let ready = get(gateway.addr(), "/ready").await;
    assert_eq!(ready.status, 503, "{}", ready.body);
    assert_eq!(get(gateway.addr(), "/health").await.status, 200);
    gateway.stop().await.unwrap();
}

#[tokio::test]
async fn the_dashboard_page_is_served() {
    let aether = Aether::default();
    let gateway = start(&aether, config()).await;
    let page = get(gateway.addr(), "/").await;
    assert_eq!(page.status, 200);
    assert!(
        page.headers.contains("content-type: text/html"),
        "{}",
        page.headers
    );
    assert!(page.body.contains("<title>Aether gateway</title>"));
    assert!(page.body.contains("new EventSource(\"events\")"));
    gateway.stop().await.unwrap();
}

#[tokio::test]
async fn the_event_stream_carries_emitted_channels() {
    let aether = Aether::default();
    let gateway = start(&aether, config()).await;
    let shop = Vibrator::create("shop", &aether).await.unwrap();
    // Emitted after the stream is open, and before: both must show.
    shop.emit_wave("orders.created", 1).await.unwrap();
    let addr = gateway.addr();
    let emitter = tokio::spawn(async move {
        for n in 0..200u32 {
            shop.emit_wave("payments.settled.eu", n).await.unwrap();
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    let snapshot = sse_until(addr, BOUND, |s| {
        let families = s["families"].as_array().unwrap();
        let waves = |name: &str| {
            families
                .iter()
                .find(|f| f["family"] == name)
                .and_then(|f| f["waves"].as_u64())
        };
        waves("orders.created") == Some(1) && waves("payments.settled").unwrap_or(0) >= 5
    })
    .await;
    assert_eq!(snapshot["medium"], "embedded");
    assert_eq!(snapshot["ready"], true);
    assert!(snapshot["rate_per_s"].as_f64().unwrap() > 0.0, "{snapshot}");
    emitter.abort();

    let body = get(addr, "/snapshot").await;
    assert!(body.headers.contains("content-type: application/json"));
    let json: serde_json::Value = serde_json::from_str(&body.body).unwrap();
    assert!(json["waves_observed"].as_u64().unwrap() >= 6, "{json}");
    gateway.stop().await.unwrap();
}

#[tokio::test]
async fn shutdown_ends_open_streams_and_the_server() {
    let aether = Aether::default();
    let shutdown = Shutdown::new();
    let gateway = Gateway::start(&aether, config(), shutdown.clone())
        .await
        .unwrap();
    let addr = gateway.addr();
    // A dashboard that stays open.
    let open = tokio::spawn(support::sse_until_end(addr, Duration::from_secs(60)));
    support::eventually("the dashboard counted", BOUND, || async {
        let text = gateway.metrics_text();
        (support::sample(&text, "aether_gateway_dashboard_clients") == Some(1.0)).then_some(())
    })
    .await;
    shutdown.trigger();
    tokio::time::timeout(BOUND, gateway.wait())
        .await
        .expect("stopped within 10 s")
        .unwrap();
    // The server ended the stream, after a snapshot or more.
    let snapshots = tokio::time::timeout(BOUND, open).await.unwrap().unwrap();
    assert!(snapshots >= 1);
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn serve_runs_until_shutdown() {
    let aether = Aether::default();
    let shutdown = Shutdown::new();
    let served = tokio::spawn(aether_gateway::serve(
        aether.clone(),
        config(),
        shutdown.clone(),
    ));
    tokio::time::sleep(Duration::from_millis(100)).await;
    shutdown.trigger();
    tokio::time::timeout(BOUND, served)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn a_busy_port_is_refused_with_its_address() {
    let aether = Aether::default();
    let first = start(&aether, config()).await;
    let taken = aether_gateway::GatewayConfig {
        listen: first.addr(),
        ..config()
    };
    let err = Gateway::start(&aether, taken, Shutdown::new())
        .await
        .unwrap_err();
    assert!(err.to_string().contains(&first.addr().to_string()), "{err}");
    let bad = aether_gateway::GatewayConfig {
        family_depth: 0,
        ..config()
    };
    let err = Gateway::start(&aether, bad, Shutdown::new())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("gateway.family_depth"), "{err}");
}

/// Reads from `stream` until the server closes it (end of stream or a
/// reset), within `bound`; how long that took, or `None` if it stayed open.
async fn closed_within(stream: &mut tokio::net::TcpStream, bound: Duration) -> Option<Duration> {
    use tokio::io::AsyncReadExt;
    let started = std::time::Instant::now();
    let mut buffer = [0u8; 1024];
    let closed = tokio::time::timeout(bound, async {
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await;
    closed.ok().map(|()| started.elapsed())
}

/// Sends `GET /health` on `stream`, keeping the connection open, and reads
/// the answer, within `bound`; `false` if none came in time.
async fn health_on(stream: &mut tokio::net::TcpStream, bound: Duration) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: gateway\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let mut buffer = [0u8; 1024];
    tokio::time::timeout(bound, async {
        while !answer.ends_with(b"\r\n\r\nok\n") {
            let n = stream.read(&mut buffer).await.unwrap();
            assert!(n > 0, "closed: {}", String::from_utf8_lossy(&answer));
            answer.extend_from_slice(&buffer[..n]);
        }
    })
    .await
    .is_ok()
}

/// A connection that sends part of a request head, or nothing, is closed
/// once `header_read_timeout_ms` has passed; a request sent whole is
/// answered, and a dashboard's event stream, which sends no further
/// request, stays open past it.
#[tokio::test]
async fn a_half_sent_request_is_closed_after_the_header_read_timeout() {
    use tokio::{io::AsyncWriteExt, net::TcpStream};

    let aether = Aether::default();
    let gateway = start(
        &aether,
        aether_gateway::GatewayConfig {
            header_read_timeout_ms: 300,
            ..config()
        },
    )
    .await;
    let addr = gateway.addr();
    let timeout = Duration::from_millis(300);
    let margin = Duration::from_secs(2);

    let mut half = TcpStream::connect(addr).await.unwrap();
    half.write_all(b"GET /metrics HTTP/1.1\r\nHo")
        .await
        .unwrap();
    let mut silent = TcpStream::connect(addr).await.unwrap();
    let closed = closed_within(&mut half, timeout + margin)
        .await
        .expect("the half-sent request's connection is closed");
    assert!(closed >= timeout - Duration::from_millis(50), "{closed:?}");
    closed_within(&mut silent, timeout + margin)
        .await
        .expect("the silent connection is closed");

    // Whole requests are answered, on a fresh connection and on one kept
    // open; the kept one is closed once idle past the timeout.
    assert_eq!(get(addr, "/health").await.status, 200);
    let mut kept = TcpStream::connect(addr).await.unwrap();
    assert!(health_on(&mut kept, BOUND).await);
    assert!(health_on(&mut kept, BOUND).await);
    closed_within(&mut kept, timeout + margin)
        .await
        .expect("the idle connection is closed");

    // 20 snapshots every 50 ms: a stream open three times the timeout.
    let mut snapshots = 0;
    sse_until(addr, BOUND, |_| {
        snapshots += 1;
        snapshots == 20
    })
    .await;
    gateway.stop().await.unwrap();
}

/// With `max_connections` open, a further connection is not served until
/// one of them closes, then it is.
#[tokio::test]
async fn a_connection_past_max_connections_waits_until_one_closes() {
    use tokio::net::TcpStream;

    let aether = Aether::default();
    let gateway = start(
        &aether,
        aether_gateway::GatewayConfig {
            max_connections: 2,
            max_event_streams: 1,
            header_read_timeout_ms: 60_000,
            ..config()
        },
    )
    .await;
    let addr = gateway.addr();
    // Two connections, served and kept open.
    let mut first = TcpStream::connect(addr).await.unwrap();
    assert!(health_on(&mut first, BOUND).await);
    let mut second = TcpStream::connect(addr).await.unwrap();
    assert!(health_on(&mut second, BOUND).await);

    let mut third = TcpStream::connect(addr).await.unwrap();
    assert!(
        !health_on(&mut third, Duration::from_millis(500)).await,
        "a third connection was served with 2 open and max_connections = 2"
    );
    // The first two are still served.
    assert!(health_on(&mut second, BOUND).await);

    drop(first);
    // The third's request, sent before, is answered now.
    let answered = tokio::time::timeout(BOUND, async {
        use tokio::io::AsyncReadExt;
        let mut answer = Vec::new();
        let mut buffer = [0u8; 1024];
        while !answer.ends_with(b"\r\n\r\nok\n") {
            let n = third.read(&mut buffer).await.unwrap();
            assert!(n > 0, "closed: {}", String::from_utf8_lossy(&answer));
            answer.extend_from_slice(&buffer[..n]);
        }
    })
    .await;
    assert!(answered.is_ok(), "not served once a connection closed");
    drop((second, third));
    gateway.stop().await.unwrap();
}

/// Event streams live long, so they are capped below the connections: past
/// `max_event_streams` a further stream is answered 503, and `/health` is
/// still served.
#[tokio::test]
async fn event_streams_cannot_take_every_connection() {
    use tokio::{
        io::{AsyncReadExt, AsyncWriteExt},
        net::TcpStream,
    };

    let aether = Aether::default();
    let gateway = start(
        &aether,
        aether_gateway::GatewayConfig {
            max_connections: 4,
            max_event_streams: 2,
            ..config()
        },
    )
    .await;
    let addr = gateway.addr();
    async fn open_events(addr: std::net::SocketAddr) -> (TcpStream, String) {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut head = [0u8; 64];
        let n = tokio::time::timeout(BOUND, stream.read(&mut head))
            .await
            .expect("an answer")
            .unwrap();
        let status = String::from_utf8_lossy(&head[..n])
            .lines()
            .next()
            .unwrap_or("")
            .to_string();
        (stream, status)
    }
    let (_a, first) = open_events(addr).await;
    let (_b, second) = open_events(addr).await;
    assert!(
        first.contains("200") && second.contains("200"),
        "{first} {second}"
    );
    let (_c, third) = open_events(addr).await;
    assert!(third.contains("503"), "{third}");
    let mut health = TcpStream::connect(addr).await.unwrap();
    assert!(
        health_on(&mut health, BOUND).await,
        "other requests are still served"
    );
    drop(health);
    gateway.stop().await.unwrap();
}
