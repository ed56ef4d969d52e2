//! The sample flow across a real NATS bus: the `aether-gateway` program as
//! a process, `aether-service-beta` (inventory) and `aether-service-alpha`
//! (orders) each on its own NATS connection, as separate processes would
//! be. The gateway's `/metrics` must show the whole flow, agreeing with
//! what the services say they did.
//!
//! Alpha and beta run through their `run` functions here: cargo builds the
//! binaries of this package only for its tests, not those of its
//! dependencies. Their programs are the same `run` behind settings and
//! signals.

mod support;

use std::{process::Stdio, time::Duration};

use aether_core::{Aether, AetherConfig, Vibrator, config::NatsConfig};
use aether_ops::shutdown::Shutdown;
use aether_service_alpha::AlphaSettings;
use aether_service_beta::BetaSettings;
use aether_testkit::NatsServer;
use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};
use support::{eventually, get, sample};
use tokio::io::{AsyncBufReadExt, BufReader};

const PROGRAM: &str = env!("CARGO_BIN_EXE_aether-gateway");
const BOUND: Duration = Duration::from_secs(10);
const FAMILIES: [&str; 5] = [
    "orders.created",
    "inventory.reserved",
    "inventory.insufficient",
    "orders.confirmed",
    "orders.cancelled",
];

async fn connect(url: &str) -> Aether {
    Aether::connect(AetherConfig {
        nats: NatsConfig {
            urls: vec![url.to_string()],
            ..NatsConfig::default()
        },
        ..AetherConfig::default()
    })
    .await
    .expect("connects to the test server")
}

fn observed(text: &str, family: &str) -> u64 {
    let series = format!("aether_gateway_waves_observed_total{{family=\"{family}\"}}");
    sample(text, &series).map_or(0, |value| value as u64)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_sees_orders_reserved_refused_confirmed_and_cancelled() {
    tokio::time::timeout(Duration::from_secs(30), flow())
        .await
        .expect("the flow within 30 s");
}

async fn flow() {
    let server = NatsServer::builder().start().await.expect("nats-server");
    let url = server.url();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("default.toml"),
        "[gateway]\nlisten = \"127.0.0.1:0\"\n",
    )
    .unwrap();
    let mut command = tokio::process::Command::new(PROGRAM);
    for (name, _) in std::env::vars() {
        if name.starts_with("AETHER") {
            command.env_remove(name);
        }
    }
    let mut gateway = command
        .arg("--config-dir")
        .arg(dir.path())
        .arg("--nats")
        .arg(&url)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(gateway.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(BOUND, lines.next_line())
        .await
        .expect("the address within 10 s")
        .unwrap()
        .expect("a line");
    let addr: std::net::SocketAddr = line
        .trim_start_matches("aether-gateway: serving http://")
        .trim_end_matches('/')
        .parse()
        .unwrap_or_else(|_| panic!("an address: {line}"));

    // The gateway subscribed on its own connection: wait until it hears
    // the bus.
    let probe_side = connect(&url).await;
    let probe = Vibrator::create("probe", &probe_side).await.unwrap();
    eventually("the gateway hears the bus", BOUND, || async {
        probe
            .emit_wave("probe.ping", serde_json::json!(0))
            .await
            .unwrap();
        let text = get(addr, "/metrics").await.body;
        (observed(&text, "probe.ping") > 0).then_some(())
    })
    .await;

    let stop_beta = Shutdown::new();
    let beta = tokio::spawn({
        let (aether, stop) = (connect(&url).await, stop_beta.clone());
        async move {
            aether_service_beta::run(&aether, &BetaSettings::default(), stop)
                .await
                .unwrap()
        }
    });
    let stop_alpha = Shutdown::new();
    let alpha = tokio::spawn({
        let (aether, stop) = (connect(&url).await, stop_alpha.clone());
        let settings = AlphaSettings {
            rate_per_s: 50.0,
            ..AlphaSettings::default()
        };
        async move {
            aether_service_alpha::run(&aether, &settings, stop)
                .await
                .unwrap()
        }
    });

    // Every step of the flow, through the gateway.
    eventually("every family of the flow in /metrics", BOUND, || async {
        let text = get(addr, "/metrics").await.body;
        FAMILIES
            .iter()
            .all(|family| observed(&text, family) > 0)
            .then_some(())
    })
    .await;

    stop_alpha.trigger();
    let alpha = alpha.await.unwrap();
    stop_beta.trigger();
    let beta = beta.await.unwrap();
    assert!(alpha.confirmed > 0 && alpha.cancelled > 0, "{alpha}");
    assert_eq!(
        (alpha.confirmed, alpha.cancelled),
        (beta.reserved, beta.insufficient),
        "{alpha}; {beta}"
    );
    // And the gateway's counts are the services' own.
    let want = [
        alpha.created,
        beta.reserved,
        beta.insufficient,
        alpha.confirmed,
        alpha.cancelled,
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

    let pid = Pid::from_raw(i32::try_from(gateway.id().unwrap()).unwrap());
    kill(pid, Signal::SIGTERM).unwrap();
    let status = tokio::time::timeout(BOUND, gateway.wait())
        .await
        .expect("it exits within 10 s of SIGTERM")
        .unwrap();
    assert!(status.success(), "{status}");
}
