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
