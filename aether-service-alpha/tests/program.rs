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

/// Hot reload on the running program, over a nats-server of its own: an
/// edit of its settings file changes the order rate, the vibrator's noise
/// floor and its emit rate limit without a restart; an invalid edit is
/// refused, logged with the key, and the settings in force stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_change_while_it_runs_and_a_bad_change_is_refused() {
    tokio::time::timeout(Duration::from_secs(60), reloads())
        .await
        .expect("within 60 s");
}

/// The test's side of the bus: hears orders and outcomes, answers orders.
struct Shop {
    aether: Aether,
    ears: aether_core::Vibrator,
}

impl Shop {
    /// The next wave on `channel`, skipping others.
    async fn next_on(&mut self, channel: &str) -> aether_core::Wave {
        loop {
            let wave = self.ears.receive().await.expect("the aether is open");
            if wave.channel().as_str() == channel {
                return wave;
            }
        }
    }

    /// Waits for `n` orders and returns their ids.
    async fn orders(&mut self, n: usize) -> Vec<String> {
        let mut ids = Vec::new();
        while ids.len() < n {
            let order = self.next_on("orders.created").await;
            ids.push(order.payload()["order_id"].as_str().unwrap().to_string());
        }
        ids
    }

    /// Answers `order_id` as reserved, with `amplitude`.
    async fn answer(&self, order_id: &str, amplitude: f64) {
        let answerer = aether_core::Vibrator::create("answerer", &self.aether)
            .await
            .unwrap();
        let wave = aether_core::Wave::builder("inventory.reserved")
            .amplitude(amplitude)
            .correlation_key(order_id)
            .json(&serde_json::json!({"order_id": order_id}))
            .build()
            .unwrap();
        answerer.emit(wave).await.unwrap();
        self.aether.flush(Duration::from_secs(5)).await.unwrap();
    }
}

/// The program's log lines, as they come.
struct Log {
    lines: tokio::sync::mpsc::UnboundedReceiver<String>,
    seen: Vec<String>,
}

impl Log {
    /// Waits for a line containing every one of `words`.
    async fn until(&mut self, words: &[&str]) -> String {
        loop {
            let line = self
                .lines
                .recv()
                .await
                .unwrap_or_else(|| panic!("{words:?} never logged: {:#?}", self.seen));
            self.seen.push(line.clone());
            if words.iter().all(|word| line.contains(word)) {
                return line;
            }
        }
    }
}

/// Writes the settings file the way an editor does (write, then rename),
/// so the program never reads it half written.
fn write_settings(dir: &std::path::Path, text: &str) {
    let temp = dir.join("default.toml.new");
    std::fs::write(&temp, text).unwrap();
    std::fs::rename(temp, dir.join("default.toml")).unwrap();
}

async fn reloads() {
    use std::process::Stdio;
    use tokio::io::{AsyncBufReadExt, BufReader};

    let server = NatsServer::builder().start().await.expect("nats-server");
    let aether = Aether::connect(AetherConfig {
        nats: NatsConfig {
            urls: vec![server.url()],
            ..NatsConfig::default()
        },
        ..AetherConfig::default()
    })
    .await
    .unwrap();
    let mut ears = aether_core::Vibrator::create("ears", &aether)
        .await
        .unwrap();
    ears.resonate_on("orders.*").await.unwrap();
    let mut shop = Shop { aether, ears };

    let dir = tempfile::tempdir().unwrap();
    write_settings(dir.path(), "[alpha]\nrate_per_s = 1\n");
    let mut alpha = command()
        .arg("--config-dir")
        .arg(dir.path())
        .args(["--nats", &server.url()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (send, lines) = tokio::sync::mpsc::unbounded_channel();
    let stderr = alpha.stderr.take().unwrap();
    tokio::spawn(async move {
        let mut stderr = BufReader::new(stderr).lines();
        while let Ok(Some(line)) = stderr.next_line().await {
            let _ = send.send(line);
        }
    });
    let mut log = Log {
        lines,
        seen: Vec::new(),
    };
    log.until(&["service-alpha orders", "rate_per_s=1"]).await;

    // At the start: one order a second, and a weak answer is heard.
    let first = shop.orders(1).await.remove(0);
    shop.answer(&first, 0.3).await;
    let confirmed = shop.next_on("orders.confirmed").await;
    assert_eq!(confirmed.payload()["order_id"], first.as_str());

    // Faster orders and a noise floor above the weak answers.
    write_settings(
        dir.path(),
        "[alpha]\nrate_per_s = 50\n[service]\nnoise_floor = 0.5\n",
    );
    log.until(&["settings applied", "rate_per_s=50", "noise_floor=0.5"])
        .await;
    let started = std::time::Instant::now();
    let ids = shop.orders(30).await;
    let numbers: Vec<u64> = ids
        .iter()
        .map(|id| id.rsplit('-').next().unwrap().parse().unwrap())
        .collect();
    assert!(
        numbers.windows(2).all(|pair| pair[1] == pair[0] + 1),
        "no limit yet, none refused: {numbers:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "30 orders took {:?}: the rate did not change",
        started.elapsed()
    );
    // Under the floor: not heard. The strong answer after it is, and
    // alpha answers in order, so no confirmation of the weak one came first.
    shop.answer(&ids[0], 0.3).await;
    shop.answer(&ids[1], 1.0).await;
    let confirmed = shop.next_on("orders.confirmed").await;
    assert_eq!(confirmed.payload()["order_id"], ids[1].as_str());

    // Refused: the old settings stay, and orders keep coming fast.
    write_settings(
        dir.path(),
        "[alpha]\nrate_per_s = 0\n[service]\nnoise_floor = 0.5\n",
    );
    let refusal = log
        .until(&["settings change refused", "alpha.rate_per_s"])
        .await;
    assert!(refusal.contains("WARN"), "{refusal}");
    let started = std::time::Instant::now();
    shop.orders(30).await;
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the rate stays"
    );

    // An emit rate limit of 2 a second (burst 2) over orders at 50 a
    // second, and the debug log level, which says when an order is refused.
    write_settings(
        dir.path(),
        "[alpha]\nrate_per_s = 50\n[service]\nnoise_floor = 0.5\nrate_limit_per_s = 2\n\
         [log]\nlevel = \"debug\"\n",
    );
    log.until(&["log level changed", "debug"]).await;
    log.until(&["settings applied", "rate_limit_per_s=Some(2.0)"])
        .await;
    // Alpha numbers its orders in turn, refused ones included: once the
    // limit holds, each order heard comes after about 24 refused.
    let sequence = |id: &str| -> u64 { id.rsplit('-').next().unwrap().parse().unwrap() };
    let mut last = sequence(&shop.orders(1).await[0]);
    loop {
        let next = sequence(&shop.orders(1).await[0]);
        let gap = next - last;
        last = next;
        if gap > 1 {
            break; // the first refusal
        }
    }
    for _ in 0..3 {
        let next = sequence(&shop.orders(1).await[0]);
        assert!(next - last >= 5, "orders {last} then {next}: not limited");
        last = next;
    }
    log.until(&["DEBUG", "order not emitted", "rate limit"])
        .await;

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(alpha.id().unwrap() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let mut stdout = String::new();
    tokio::io::AsyncReadExt::read_to_string(alpha.stdout.as_mut().unwrap(), &mut stdout)
        .await
        .unwrap();
    let status = alpha.wait().await.unwrap();
    assert!(status.success(), "{stdout}");
    let limited: u64 = stdout
        .split("rate_limited ")
        .nth(1)
        .and_then(|rest| rest.split(',').next()?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{stdout}"));
    assert!(limited > 0, "{stdout}");
}
