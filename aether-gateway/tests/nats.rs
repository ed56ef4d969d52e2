//! The gateway on the NATS medium, against a real `nats-server`: it sees
//! the waves of another process's aether, reports the connection, and
//! `/ready` answers 503 once the server is gone.

mod support;

use std::time::Duration;

use aether_core::{Aether, AetherConfig, Vibrator, config::NatsConfig};
use aether_testkit::NatsServer;
use support::{config, eventually, get, sample, start};

const BOUND: Duration = Duration::from_secs(15);

async fn connect(url: String) -> Aether {
    Aether::connect(AetherConfig {
        nats: NatsConfig {
            urls: vec![url],
            reconnect_delay_max: Duration::from_millis(100),
            ..Default::default()
        },
        ..Default::default()
    })
    .await
    .expect("connects to the test server")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn observes_the_bus_and_is_not_ready_without_its_server() {
    let mut server = NatsServer::start().await.expect("nats-server starts");
    let observed = connect(server.url()).await;
    let gateway = start(&observed, config()).await;
    let ready = get(gateway.addr(), "/ready").await;
    assert_eq!(ready.status, 200, "{}", ready.body);
    assert!(ready.body.contains("connected"), "{}", ready.body);

    // Another process's aether, as far as the bus can tell.
    let shop_aether = connect(server.url()).await;
    let shop = Vibrator::create("shop", &shop_aether).await.unwrap();
    let text = eventually("the shop's waves observed over NATS", BOUND, || async {
        // Emitted until seen: the gateway's subscription may still be on
        // its way to the server.
        shop.emit_wave("orders.created", 1).await.unwrap();
        let text = gateway.metrics_text();
        let seen = sample(
            &text,
            "aether_gateway_waves_observed_total{family=\"orders.created\"}",
        );
        (seen.unwrap_or(0.0) >= 3.0).then_some(text)
    })
    .await;
    assert_eq!(
        sample(&text, "aether_nats_connection_state{state=\"connected\"}"),
        Some(1.0)
    );
    assert_eq!(gateway.snapshot().medium, "nats");

    server.kill().await.expect("the server is killed");
    let not_ready = eventually("/ready 503 without the server", BOUND, || async {
        let ready = get(gateway.addr(), "/ready").await;
        (ready.status == 503).then_some(ready)
    })
    .await;
    assert!(
        not_ready.body.contains("disconnected"),
        "{}",
        not_ready.body
    );
    assert_eq!(get(gateway.addr(), "/health").await.status, 200);
    let text = gateway.metrics_text();
    assert_eq!(
        sample(
            &text,
            "aether_nats_connection_state{state=\"disconnected\"}"
        ),
        Some(1.0)
    );
    assert!(sample(&text, "aether_nats_disconnects_total").unwrap() >= 1.0);

    server.restart().await.expect("the server restarts");
    eventually("/ready 200 again", BOUND, || async {
        (get(gateway.addr(), "/ready").await.status == 200).then_some(())
    })
    .await;
    assert!(sample(&gateway.metrics_text(), "aether_nats_reconnects_total").unwrap() >= 1.0);
    gateway.stop().await.unwrap();
    shop_aether.close();
    observed.close();
}
