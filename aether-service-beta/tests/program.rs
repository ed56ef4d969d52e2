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

/// Hot reload on the running program: raising `[service] noise_floor` in
/// its settings file makes it deaf to weak orders without a restart; an
/// invalid value is refused, logged with the key, and the floor stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn its_noise_floor_changes_while_it_runs() {
    tokio::time::timeout(Duration::from_secs(40), noise_floor_reloads())
        .await
        .expect("within 40 s");
}

/// Writes the settings file the way an editor does (write, then rename).
fn write_settings(dir: &std::path::Path, text: &str) {
    let temp = dir.join("default.toml.new");
    std::fs::write(&temp, text).unwrap();
    std::fs::rename(temp, dir.join("default.toml")).unwrap();
}

async fn noise_floor_reloads() {
    use aether_core::{Vibrator, Wave};

    let server = NatsServer::builder().start().await.expect("nats-server");
    let dir = tempfile::tempdir().unwrap();
    let stock = "[beta]\nstock = { widget = 100 }\n";
    write_settings(dir.path(), stock);
    let mut beta = command()
        .arg("--config-dir")
        .arg(dir.path())
        .args(["--nats", &server.url()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(beta.stdout.take().unwrap()).lines();
    let ready = out.next_line().await.unwrap().expect("a line");
    assert!(ready.contains("resonating"), "{ready}");
    let mut log = BufReader::new(beta.stderr.take().unwrap()).lines();
    let mut until = async |words: &[&str]| loop {
        let line = log.next_line().await.unwrap().expect("a log line");
        if words.iter().all(|word| line.contains(word)) {
            return line;
        }
    };

    let aether = Aether::connect(AetherConfig {
        nats: NatsConfig {
            urls: vec![server.url()],
            ..NatsConfig::default()
        },
        ..AetherConfig::default()
    })
    .await
    .unwrap();
    let mut shop = Vibrator::create("shop", &aether).await.unwrap();
    shop.resonate_on("inventory.*").await.unwrap();
    let order = |id: &str, amplitude: f64| {
        Wave::builder("orders.created")
            .amplitude(amplitude)
            .json(&serde_json::json!({"order_id": id, "item": "widget", "qty": 1}))
            .build()
            .unwrap()
    };
    // Beta answers the orders of one emitter in order: the first answer
    // after a weak and a strong order says whether the weak one was heard.
    let mut first_answer = async |weak: &str, strong: &str| {
        shop.emit(order(weak, 0.3)).await.unwrap();
        shop.emit(order(strong, 1.0)).await.unwrap();
        let answer = shop.receive().await.unwrap();
        let id = answer.payload()["order_id"].as_str().unwrap().to_string();
        if id == weak {
            let strong_answer = shop.receive().await.unwrap();
            assert_eq!(strong_answer.payload()["order_id"], strong);
        }
        id
    };
    assert_eq!(first_answer("weak-1", "strong-1").await, "weak-1");

    write_settings(
        dir.path(),
        &format!("{stock}[service]\nnoise_floor = 0.5\n"),
    );
    until(&["settings applied", "noise_floor=0.5"]).await;
    assert_eq!(first_answer("weak-2", "strong-2").await, "strong-2");

    write_settings(dir.path(), &format!("{stock}[service]\nnoise_floor = 2\n"));
    let refusal = until(&["settings change refused"]).await;
    assert!(refusal.contains("service.noise_floor"), "{refusal}");
    assert_eq!(first_answer("weak-3", "strong-3").await, "strong-3");

    let pid = Pid::from_raw(i32::try_from(beta.id().unwrap()).unwrap());
    kill(pid, Signal::SIGTERM).unwrap();
    assert!(beta.wait().await.unwrap().success());
}
