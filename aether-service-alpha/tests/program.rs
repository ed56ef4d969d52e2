//! The `aether-service-alpha` program as a process: `--help`, and a
//! bounded run (`--count`) over a real nats-server, answered by beta (in
//! this process, on its own connection), which exits with status 0.

use std::time::Duration;

use aether_core::{Aether, AetherConfig, config::NatsConfig};
use aether_ops::shutdown::Shutdown;
use aether_service_beta::BetaSettings;
use aether_testkit::NatsServer;

const PROGRAM: &str = env!("CARGO_BIN_EXE_aether-service-alpha");
const BOUND: Duration = Duration::from_secs(20);

fn command() -> tokio::process::Command {
    aether_testkit::program(PROGRAM)
}

#[tokio::test]
async fn help_says_what_it_does() {
    let output = command().arg("--help").output().await.unwrap();
    assert!(output.status.success());
    let help = String::from_utf8(output.stdout).unwrap();
    for words in [
        "orders.created",
        "--nats",
        "--count",
        "--rate",
        "--config-dir",
    ] {
        assert!(help.contains(words), "{words}: {help}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_over_nats_and_exits_0() {
    let server = NatsServer::builder().start().await.expect("nats-server");
    let beta_side = Aether::connect(AetherConfig {
        nats: NatsConfig {
            urls: vec![server.url()],
            ..NatsConfig::default()
        },
        ..AetherConfig::default()
    })
    .await
    .unwrap();
    let stop_beta = Shutdown::new();
    let beta = tokio::spawn({
        let stop = stop_beta.clone();
        async move {
            aether_service_beta::run(&beta_side, &BetaSettings::default(), stop)
                .await
                .unwrap()
        }
    });
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("default.toml"),
        "[alpha]\ndrain_ms = 5000\n",
    )
    .unwrap();
    let output = tokio::time::timeout(
        BOUND,
        command()
            .arg("--config-dir")
            .arg(dir.path())
            .args(["--nats", &server.url(), "--count", "30", "--rate", "100"])
            .output(),
    )
    .await
    .expect("it exits within 20 s")
    .unwrap();
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(output.status.success(), "{stdout}");
    assert!(stdout.contains("created 30,"), "{stdout}");
    stop_beta.trigger();
    let beta = beta.await.unwrap();
    // 10 gadgets ordered (unless beta missed the first orders), 3 in stock.
    assert!(beta.reserved > 0 && beta.insufficient > 0, "{beta}");
    let report = format!(
        "confirmed {}, cancelled {}",
        beta.reserved, beta.insufficient
    );
    assert!(stdout.contains(&report), "{report}: {stdout}");
}
