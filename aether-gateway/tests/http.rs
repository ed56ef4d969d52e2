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

/// At `max_connections`, a new connection makes room rather than wait:
/// a connection that never sent a request is closed first, else the one
/// kept open longest after its answer; the new one is served at once.
#[tokio::test]
async fn at_max_connections_the_longest_waiting_connection_makes_room() {
    use tokio::net::TcpStream;

    let aether = Aether::default();
    let gateway = start(
        &aether,
        aether_gateway::GatewayConfig {
            max_connections: 3,
            max_event_streams: 1,
            header_read_timeout_ms: 60_000,
            ..config()
        },
    )
    .await;
    let addr = gateway.addr();
    // Two connections served and kept open, then one that says nothing.
    let mut first = TcpStream::connect(addr).await.unwrap();
    assert!(health_on(&mut first, BOUND).await);
    let mut second = TcpStream::connect(addr).await.unwrap();
    assert!(health_on(&mut second, BOUND).await);
    let mut silent = TcpStream::connect(addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;

    // A fourth is served at once, in the silent one's place.
    let mut fourth = TcpStream::connect(addr).await.unwrap();
    assert!(
        health_on(&mut fourth, BOUND).await,
        "a fourth connection was not served with 3 open and max_connections = 3"
    );
    closed_within(&mut silent, BOUND)
        .await
        .expect("the silent connection made room");
    // A fifth, in the place of the one kept open longest: the first.
    let mut fifth = TcpStream::connect(addr).await.unwrap();
    assert!(health_on(&mut fifth, BOUND).await);
    closed_within(&mut first, BOUND)
        .await
        .expect("the connection idle longest made room");
    assert!(health_on(&mut second, BOUND).await, "the others stay");
    assert!(health_on(&mut fourth, BOUND).await);
    drop((second, fourth, fifth));
    gateway.stop().await.unwrap();
}

/// A connection from `from` (a loopback address) to `addr`.
async fn connect_from(from: [u8; 4], addr: std::net::SocketAddr) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket
        .bind((std::net::Ipv4Addr::from(from), 0).into())
        .unwrap();
    socket.connect(addr).await.unwrap()
}

/// Thousands of sockets that say nothing cannot keep a Prometheus scrape
/// out: with `max_connections` held full by silent sockets, every scrape is
/// answered within its timeout.
#[tokio::test]
async fn scrapes_get_through_while_silent_sockets_fill_max_connections() {
    use tokio::net::TcpStream;

    let aether = Aether::default();
    let gateway = start(
        &aether,
        aether_gateway::GatewayConfig {
            max_connections: 32,
            max_event_streams: 4,
            header_read_timeout_ms: 60_000,
            ..config()
        },
    )
    .await;
    let addr = gateway.addr();
    let mut silent = Vec::new();
    for _ in 0..64 {
        silent.push(TcpStream::connect(addr).await.unwrap());
    }
    for scrape in 0..7 {
        let answer = tokio::time::timeout(Duration::from_secs(3), async {
            let mut stream = connect_from([127, 0, 0, 2], addr).await;
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            stream
                .write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
                .await
                .unwrap();
            let mut raw = Vec::new();
            stream.read_to_end(&mut raw).await.unwrap();
            raw
        })
        .await
        .unwrap_or_else(|_| panic!("scrape {scrape} not answered within 3 s"));
        let text = String::from_utf8_lossy(&answer);
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
        assert!(text.contains("aether_build_info"), "scrape {scrape}");
        // The silent sockets fill the room again.
        for _ in 0..8 {
            silent.push(TcpStream::connect(addr).await.unwrap());
        }
    }
    let text = gateway.metrics_text();
    let made_room = r#"aether_gateway_http_connections_closed_total{reason="made_room"}"#;
    assert!(
        support::sample(&text, made_room).unwrap_or(0.0) >= 32.0,
        "{made_room}: {text}"
    );
    drop(silent);
    gateway.stop().await.unwrap();
}

/// One address cannot take every connection: past
/// `max_connections_per_address` its further connections are closed at
/// once, and another address is still served.
#[tokio::test]
async fn connections_per_address_are_capped() {
    let aether = Aether::default();
    let gateway = start(
        &aether,
        aether_gateway::GatewayConfig {
            max_connections_per_address: 3,
            header_read_timeout_ms: 60_000,
            ..config()
        },
    )
    .await;
    let addr = gateway.addr();
    let mut kept = Vec::new();
    for _ in 0..3 {
        let mut stream = connect_from([127, 0, 0, 1], addr).await;
        assert!(health_on(&mut stream, BOUND).await);
        kept.push(stream);
    }
    let mut one_more = connect_from([127, 0, 0, 1], addr).await;
    closed_within(&mut one_more, BOUND)
        .await
        .expect("a fourth connection from one address is closed");
    let text = gateway.metrics_text();
    let refused = r#"aether_gateway_http_connections_closed_total{reason="address_capacity"}"#;
    assert_eq!(support::sample(&text, refused), Some(1.0), "{text}");
    let mut other = connect_from([127, 0, 0, 3], addr).await;
    assert!(
        health_on(&mut other, BOUND).await,
        "another address is served"
    );
    for stream in &mut kept {
        assert!(health_on(stream, BOUND).await, "the first three stay");
    }
    drop((kept, other));
    gateway.stop().await.unwrap();
}

/// Sends `GET /events` on `stream` and reads the status line of the answer
/// (and no more), within 10 s.
async fn events_status(stream: &mut tokio::net::TcpStream) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream
        .write_all(b"GET /events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    let mut head = [0u8; 12];
    tokio::time::timeout(BOUND, stream.read_exact(&mut head))
        .await
        .expect("an answer")
        .unwrap();
    String::from_utf8_lossy(&head).into_owned()
}

/// Event streams that never read, all from one address, cannot take every
/// stream: past `max_event_streams_per_address` (8) theirs are answered
/// 503, and a dashboard from another address gets its stream.
#[tokio::test]
async fn streams_that_never_read_leave_room_for_a_dashboard() {
    let aether = Aether::default();
    let gateway = start(&aether, config()).await;
    let addr = gateway.addr();
    let mut hogs = Vec::new();
    let mut served = 0;
    for _ in 0..64 {
        let mut stream = connect_from([127, 0, 0, 1], addr).await;
        if events_status(&mut stream).await.contains("200") {
            served += 1;
        }
        hogs.push(stream);
    }
    assert_eq!(served, 8, "streams served to one address");
    let mut dashboard = connect_from([127, 0, 0, 2], addr).await;
    let status = events_status(&mut dashboard).await;
    assert!(status.contains("200"), "the dashboard: {status}");
    drop((hogs, dashboard));
    gateway.stop().await.unwrap();
}

/// Streams that never read from many addresses fill every place; a
/// dashboard from another address still gets its stream (the address
/// holding the most gives up its oldest).
#[tokio::test]
async fn streams_from_many_addresses_leave_room_for_a_dashboard() {
    let aether = Aether::default();
    let gateway = start(&aether, config()).await;
    let addr = gateway.addr();
    let mut hogs = Vec::new();
    let mut served = 0;
    for host in 2..=11u8 {
        for _ in 0..8 {
            let mut stream = connect_from([127, 0, 0, host], addr).await;
            if events_status(&mut stream).await.contains("200") {
                served += 1;
            }
            hogs.push(stream);
        }
    }
    assert!(served >= 64, "the hogs took every place ({served})");
    for attempt in 0..3 {
        let mut dashboard = connect_from([127, 0, 0, 1], addr).await;
        let status = events_status(&mut dashboard).await;
        assert!(
            status.contains("200"),
            "the dashboard, try {attempt}: {status}"
        );
        hogs.push(dashboard);
    }
    drop(hogs);
    gateway.stop().await.unwrap();
}

/// One stream that never reads from each of as many addresses as there are
/// places: a dashboard from another address still gets in.
#[tokio::test]
async fn one_stream_from_each_of_many_addresses_leaves_room_for_a_dashboard() {
    let aether = Aether::default();
    let gateway = start(&aether, config()).await;
    let addr = gateway.addr();
    let mut hogs = Vec::new();
    for host in 2..=70u8 {
        let mut stream = connect_from([127, 0, 0, host], addr).await;
        let _ = events_status(&mut stream).await;
        hogs.push(stream);
    }
    let mut dashboard = connect_from([127, 0, 0, 1], addr).await;
    let status = events_status(&mut dashboard).await;
    assert!(status.contains("200"), "the dashboard: {status}");
    drop((hogs, dashboard));
    gateway.stop().await.unwrap();
}

/// A peer that takes no byte of its event stream for
/// `write_stall_timeout_ms` is closed, and its stream slot given back.
#[tokio::test]
async fn a_peer_that_never_reads_is_closed_after_the_write_stall_timeout() {
    let aether = Aether::default();
    let gateway = start(
        &aether,
        aether_gateway::GatewayConfig {
            write_stall_timeout_ms: 300,
            max_channel_families: 2_000,
            ..config()
        },
    )
    .await;
    let addr = gateway.addr();
    // Big snapshots (some 150 KB every 50 ms) fill the sockets' buffers
    // sooner: 2,000 families.
    let shop = Vibrator::create("shop", &aether).await.unwrap();
    for n in 0..2_000u32 {
        shop.emit_wave(format!("family{n}.created").as_str(), n)
            .await
            .unwrap();
    }
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stream = socket.connect(addr).await.unwrap();
    let status = events_status(&mut stream).await;
    assert!(status.contains("200"), "{status}");
    let started = std::time::Instant::now();
    support::eventually(
        "the stream that never reads is closed",
        BOUND * 3,
        || async {
            let text = gateway.metrics_text();
            (support::sample(&text, "aether_gateway_dashboard_clients") == Some(0.0)).then_some(())
        },
    )
    .await;
    println!("closed after {:?}", started.elapsed());
    assert!(started.elapsed() < BOUND, "{:?}", started.elapsed());
    closed_within(&mut stream, BOUND)
        .await
        .expect("the connection is closed");
    gateway.stop().await.unwrap();
}

/// A raw `GET path` with `host` as its `Host` header (none: HTTP/1.0
/// without one) and `extra` header lines; the status code.
async fn status_for_host(
    addr: std::net::SocketAddr,
    path: &str,
    host: Option<&str>,
    extra: &str,
) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let request = match host {
        Some(host) => {
            format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n{extra}Connection: close\r\n\r\n")
        }
        None => format!("GET {path} HTTP/1.0\r\n{extra}\r\n"),
    };
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut head = [0u8; 12];
    tokio::time::timeout(BOUND, stream.read_exact(&mut head))
        .await
        .expect("an answer")
        .unwrap();
    String::from_utf8_lossy(&head[9..12]).parse().unwrap()
}

const UPGRADE: &str = "Upgrade: websocket\r\nConnection: Upgrade\r\n\
                       Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n";

/// With `allowed_hosts`, a request for another name (a page whose name was
/// rebound to the gateway's address) is answered 421 on every path, the
/// bridge's upgrade too; the names listed, `localhost` and loopback
/// addresses are answered.
#[tokio::test]
async fn a_request_for_another_host_is_misdirected() {
    let aether = Aether::default();
    let mut settings = aether_gateway::GatewayConfig {
        allowed_hosts: vec!["Gateway.Example".into()],
        ..config()
    };
    settings.bridge.maps = vec!["board".into()];
    let gateway = start(&aether, settings).await;
    let addr = gateway.addr();
    let port = addr.port();
    for path in ["/snapshot", "/metrics", "/events", "/", "/health"] {
        let status = status_for_host(addr, path, Some("evil.example"), "").await;
        assert_eq!(status, 421, "{path}");
        let status = status_for_host(addr, path, Some(&format!("evil.example:{port}")), "").await;
        assert_eq!(status, 421, "{path}");
    }
    assert_eq!(
        status_for_host(addr, "/bridge/board", Some("evil.example"), UPGRADE).await,
        421
    );
    assert_eq!(status_for_host(addr, "/snapshot", None, "").await, 421);
    for host in [
        "gateway.example".to_string(),
        format!("GATEWAY.example:{port}"),
        "localhost".into(),
        format!("localhost:{port}"),
        format!("127.0.0.1:{port}"),
        format!("[::1]:{port}"),
    ] {
        assert_eq!(
            status_for_host(addr, "/snapshot", Some(&host), "").await,
            200,
            "{host}"
        );
    }
    assert_eq!(
        status_for_host(addr, "/bridge/board", Some("gateway.example"), UPGRADE).await,
        101
    );
    gateway.stop().await.unwrap();
}

/// Without `allowed_hosts` (the default), any name is answered.
#[tokio::test]
async fn any_host_is_answered_by_default() {
    let aether = Aether::default();
    let gateway = start(&aether, config()).await;
    let addr = gateway.addr();
    assert_eq!(
        status_for_host(addr, "/snapshot", Some("evil.example"), "").await,
        200
    );
    assert_eq!(status_for_host(addr, "/snapshot", None, "").await, 200);
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
