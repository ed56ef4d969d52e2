//! The sample flow across a real NATS bus: the `aether-gateway`,
//! `aether-service-beta` (inventory) and `aether-service-alpha` (orders)
//! programs as processes, sharing one settings folder. The gateway's
//! `/metrics` must show the whole flow, agreeing with what the services say
//! they did.
//!
//! Alpha and beta run as their programs (built for the test by
//! `aether_testkit::workspace_program`), stopped with SIGTERM; the counts
//! they report must be the gateway's.

mod support;

use std::time::Duration;

use aether_testkit::NatsServer;
use support::{
    eventually, get, observed,
    programs::{PROGRAM, gateway, service, stop_gateway, summary},
};

const BOUND: Duration = Duration::from_secs(10);
const FAMILIES: [&str; 5] = [
    "orders.created",
    "inventory.reserved",
    "inventory.insufficient",
    "orders.confirmed",
    "orders.cancelled",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_sees_orders_reserved_refused_confirmed_and_cancelled() {
    // Built before the clock starts: a first build takes a while.
    let [beta_bin, alpha_bin] = support::service_programs(PROGRAM).await;
    tokio::time::timeout(Duration::from_secs(30), flow(&beta_bin, &alpha_bin))
        .await
        .expect("the flow within 30 s");
}

async fn flow(beta_bin: &str, alpha_bin: &str) {
    let server = NatsServer::builder().start().await.expect("nats-server");
    let url = server.url();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("default.toml"), "").unwrap();
    // Once it hears the bus.
    let (gateway, addr) = gateway(dir.path(), &url).await;

    // Beta, then alpha, as the programs, on the same bus and settings.
    let beta = service(beta_bin, dir.path(), &url, "beta-1", &[]);
    let alpha = service(alpha_bin, dir.path(), &url, "alpha-1", &["--rate", "50"]);

    // Every step of the flow, through the gateway.
    eventually("every family of the flow in /metrics", BOUND, || async {
        let text = get(addr, "/metrics").await.body;
        FAMILIES
            .iter()
            .all(|family| observed(&text, family) > 0)
            .then_some(())
    })
    .await;

    let alpha = summary(alpha, "service-alpha:", true).await;
    let beta = summary(beta, "service-beta:", true).await;
    assert!(
        alpha["confirmed"] > 0 && alpha["cancelled"] > 0,
        "{alpha:?}"
    );
    assert_eq!(
        (alpha["confirmed"], alpha["cancelled"]),
        (beta["reserved"], beta["insufficient"]),
        "{alpha:?}; {beta:?}"
    );
    // And the gateway's counts are the services' own.
    let want = [
        alpha["created"],
        beta["reserved"],
        beta["insufficient"],
        alpha["confirmed"],
        alpha["cancelled"],
    ];
    eventually(
        "the gateway's counts agree with the services'",
        BOUND,
        || async {
            let text = get(addr, "/metrics").await.body;
            (FAMILIES.map(|family| observed(&text, family)) == want).then_some(())
        },
    )
    .await;

    stop_gateway(gateway).await;
}
