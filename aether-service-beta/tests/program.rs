//! The `aether-service-beta` program as a process: `--help`, and a run
//! over a real nats-server, answering alpha (in this process, on its own
//! connection), until SIGTERM, which it exits on with status 0.

use std::{process::Stdio, time::Duration};

use aether_core::{Aether, AetherConfig, config::NatsConfig};
use aether_ops::shutdown::Shutdown;
use aether_service_alpha::AlphaSettings;
use aether_testkit::NatsServer;
use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};
use tokio::io::{AsyncBufReadExt, BufReader};

const PROGRAM: &str = env!("CARGO_BIN_EXE_aether-service-beta");
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
        "orders.*",
        "inventory.insufficient",
        "--nats",
        "--config-dir",
    ] {
        assert!(help.contains(words), "{words}: {help}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_orders_over_nats_until_sigterm() {
    tokio::time::timeout(BOUND, answers())
        .await
        .expect("within 20 s");
}

async fn answers() {
    let server = NatsServer::builder().start().await.expect("nats-server");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("default.toml"),
        "[beta]\nstock = { gadget = 1 }\n",
    )
    .unwrap();
    let mut beta = command()
        .arg("--config-dir")
        .arg(dir.path())
        .args(["--nats", &server.url()])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(beta.stdout.take().unwrap()).lines();
    let ready = lines.next_line().await.unwrap().expect("a line");
    assert!(ready.contains("resonating"), "{ready}");

    let alpha_side = Aether::connect(AetherConfig {
        nats: NatsConfig {
            urls: vec![server.url()],
            ..NatsConfig::default()
        },
        ..AetherConfig::default()
    })
    .await
    .unwrap();
    // Items gadget and widget in turn; beta has 1 gadget and no widget.
    let settings = AlphaSettings {
        rate_per_s: 100.0,
        count: Some(20),
        items: vec!["gadget".into(), "widget".into()],
        ..AlphaSettings::default()
    };
    let alpha = aether_service_alpha::run(&alpha_side, &settings, Shutdown::new())
        .await
        .unwrap();
    assert_eq!(alpha.created, 20);
    assert!(alpha.confirmed <= 1 && alpha.cancelled > 0, "{alpha}");

    let pid = Pid::from_raw(i32::try_from(beta.id().unwrap()).unwrap());
    kill(pid, Signal::SIGTERM).unwrap();
    let status = beta.wait().await.unwrap();
    assert!(status.success(), "{status}");
    let report = lines.next_line().await.unwrap().expect("the report");
    assert!(
        report.contains(&format!("insufficient {}", alpha.cancelled)),
        "{report}; {alpha}"
    );
}
