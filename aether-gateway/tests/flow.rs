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

use std::{collections::HashMap, process::Stdio, time::Duration};

use aether_core::{Aether, AetherConfig, Vibrator, config::NatsConfig};
use aether_testkit::NatsServer;
use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};
use support::{eventually, get, observed};
use tokio::io::AsyncReadExt;

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

/// Stops a service program with SIGTERM, checks it exits 0, and reads the
/// counts of its report, the stdout line that starts with `prefix`
/// (`service-alpha: created 3, confirmed 2, ...`).
async fn stop(mut child: tokio::process::Child, prefix: &str) -> HashMap<String, u64> {
    let pid = Pid::from_raw(i32::try_from(child.id().unwrap()).unwrap());
    kill(pid, Signal::SIGTERM).unwrap();
    let mut stdout = String::new();
    let mut pipe = child.stdout.take().unwrap();
    tokio::time::timeout(BOUND, pipe.read_to_string(&mut stdout))
        .await
        .expect("it reports within 10 s of SIGTERM")
        .unwrap();
    let status = tokio::time::timeout(BOUND, child.wait())
        .await
        .expect("it exits")
        .unwrap();
    assert!(status.success(), "{prefix} {status}");
    let report = stdout
        .lines()
        .find_map(|line| line.strip_prefix(prefix))
        .unwrap_or_else(|| panic!("no report in {stdout:?}"));
    report
        .split(", ")
        .filter_map(|part| {
            let (name, value) = part.trim().rsplit_once(' ')?;
            Some((name.to_string(), value.parse().ok()?))
        })
        .collect()
}

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
    std::fs::write(
        dir.path().join("default.toml"),
        "[gateway]\nlisten = \"127.0.0.1:0\"\n",
    )
    .unwrap();
    let mut command = aether_testkit::program(PROGRAM);
    command
        .arg("--config-dir")
        .arg(dir.path())
        .arg("--nats")
        .arg(&url)
        .stderr(Stdio::null());
    let (mut gateway, addr) = support::spawn_serving(command, BOUND).await;

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

    // Beta, then alpha, as the programs, on the same bus and settings.
    let service = |bin: &str, extra: &[&str]| {
        let mut command = aether_testkit::program(bin);
        command
            .arg("--config-dir")
            .arg(dir.path())
            .arg("--nats")
            .arg(&url)
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        command.spawn().unwrap()
    };
    let beta = service(beta_bin, &[]);
    let alpha = service(alpha_bin, &["--rate", "50"]);

    // Every step of the flow, through the gateway.
    eventually("every family of the flow in /metrics", BOUND, || async {
        let text = get(addr, "/metrics").await.body;
        FAMILIES
            .iter()
            .all(|family| observed(&text, family) > 0)
            .then_some(())
    })
    .await;

    let alpha = stop(alpha, "service-alpha:").await;
    let beta = stop(beta, "service-beta:").await;
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

    let pid = Pid::from_raw(i32::try_from(gateway.id().unwrap()).unwrap());
    kill(pid, Signal::SIGTERM).unwrap();
    let status = tokio::time::timeout(BOUND, gateway.wait())
        .await
        .expect("it exits within 10 s of SIGTERM")
        .unwrap();
    assert!(status.success(), "{status}");
}
