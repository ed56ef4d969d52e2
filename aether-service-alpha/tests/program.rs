//! The `aether-service-alpha` program as a process: `--help`, and a
//! bounded run (`--count`) over a real nats-server, answered by beta (in
//! this process, on its own connection), which exits with status 0.

use std::time::Duration;

use aether_core::{Aether, AetherConfig};
use aether_ops::shutdown::Shutdown;
use aether_service_beta::BetaSettings;
use aether_testkit::{NatsServer, process};

const PROGRAM: &str = env!("CARGO_BIN_EXE_aether-service-alpha");
const BOUND: Duration = Duration::from_secs(20);

fn command() -> tokio::process::Command {
    aether_testkit::program(PROGRAM)
}

/// An aether on the nats-server at `url`.
async fn connect(url: String) -> Aether {
    let mut config = AetherConfig::default();
    config.nats.urls = vec![url];
    Aether::connect(config).await.unwrap()
}

#[tokio::test]
async fn help_says_what_it_does() {
    process::assert_help_says(
        command(),
        &[
            "orders.created",
            "--nats",
            "--count",
            "--rate",
            "--config-dir",
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_over_nats_and_exits_0() {
    let server = NatsServer::builder().start().await.expect("nats-server");
    let beta_side = connect(server.url()).await;
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
    let mut alpha = command();
    alpha.arg("--config-dir").arg(dir.path()).args([
        "--nats",
        &server.url(),
        "--count",
        "30",
        "--rate",
        "100",
    ]);
    let output = process::output_within(alpha, BOUND).await;
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

/// A nats-server, the test's shop on it, and alpha on it with `settings`
/// as its default.toml (stdout and stderr piped).
async fn shop_and_alpha(
    settings: &str,
) -> (NatsServer, tempfile::TempDir, Shop, tokio::process::Child) {
    let server = NatsServer::builder().start().await.expect("nats-server");
    let aether = connect(server.url()).await;
    let mut ears = aether_core::Vibrator::create("ears", &aether)
        .await
        .unwrap();
    ears.resonate_on("orders.*").await.unwrap();
    let shop = Shop { aether, ears };

    let dir = tempfile::tempdir().unwrap();
    write_settings(dir.path(), settings);
    let alpha = process::spawn_on_nats(
        command(),
        dir.path(),
        &server.url(),
        std::process::Stdio::piped(),
    );
    (server, dir, shop, alpha)
}

async fn reloads() {
    use tokio::io::{AsyncBufReadExt, BufReader};

    let (_server, dir, mut shop, mut alpha) = shop_and_alpha("[alpha]\nrate_per_s = 1\n").await;
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
    // second, refusing at once (no wait for a turn), and the debug log
    // level, which says when an order is refused.
    write_settings(
        dir.path(),
        "[alpha]\nrate_per_s = 50\n[service]\nnoise_floor = 0.5\nrate_limit_per_s = 2\n\
         rate_limit_wait_ms = 0\n[log]\nlevel = \"debug\"\n",
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

    let stdout = process::terminate_with_stdout(&mut alpha).await;
    let limited: u64 = stdout
        .split("rate_limited ")
        .nth(1)
        .and_then(|rest| rest.split(',').next()?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{stdout}"));
    assert!(limited > 0, "{stdout}");
}

/// Hostile but well-formed answers, published by a raw NATS client (not
/// aether-core): valid envelopes on `inventory.reserved` and
/// `inventory.insufficient` whose payload is no answer, or an answer about
/// an order alpha never made. Alpha refuses or skips each, counts it, warns
/// at most once per 10 s, still confirms and cancels its own orders, and its
/// summary counts them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_hostile_answers_counts_them_and_goes_on() {
    tokio::time::timeout(Duration::from_secs(60), hostile_answers())
        .await
        .expect("within 60 s");
}

/// Payloads of answers that are no answer, each with the reason alpha
/// refuses it for, or [`UNMATCHED`] for an answer about an order it never
/// made.
mod hostile {
    use aether_service_alpha::refusals::*;
    use proptest::prelude::*;
    use serde_json::{Value, json};

    /// Not a refusal: counted as `unmatched`.
    pub const UNMATCHED: &str = "unmatched";

    fn answer(order_id: Value) -> Vec<u8> {
        json!({"order_id": order_id, "item": "widget", "qty": 1})
            .to_string()
            .into_bytes()
    }

    /// The payloads written by hand.
    pub fn by_hand() -> Vec<(&'static str, Vec<u8>)> {
        vec![
            (BAD_ORDER_ID, answer(json!(""))),
            (BAD_ORDER_ID, answer(json!("o".repeat(300)))),
            (BAD_ORDER_ID, answer(json!("x".repeat(64 * 1024)))),
            (BAD_FIELDS, answer(json!(7))),
            (BAD_FIELDS, answer(json!(null))),
            (BAD_FIELDS, b"{\"item\": \"widget\"}".to_vec()),
            (BAD_FIELDS, b"[7]".to_vec()),
            (NOT_JSON, "[".repeat(10_000).into_bytes()),
            (NOT_JSON, b"\xff\xfe\xfd".to_vec()),
            (NOT_JSON, b"{\"order_id\": \"\xff\"}".to_vec()),
            (NOT_JSON, Vec::new()),
            (UNMATCHED, answer(json!("never-made"))),
            (UNMATCHED, answer(json!("o".repeat(256)))),
        ]
    }

    /// Generated payloads, with their reasons.
    pub fn generated() -> impl Strategy<Value = (&'static str, Vec<u8>)> {
        prop_oneof![
            // Bytes no JSON text starts with.
            prop::collection::vec(any::<u8>(), 0..512).prop_map(|mut bytes| {
                bytes.insert(0, 0xff);
                (NOT_JSON, bytes)
            }),
            (129usize..=10_000).prop_map(|depth| (NOT_JSON, "[".repeat(depth).into_bytes())),
            prop_oneof![
                any::<i64>().prop_map(Value::from),
                any::<bool>().prop_map(Value::from),
                prop::collection::vec("[a-z]{0,8}", 0..4).prop_map(Value::from),
            ]
            .prop_map(|id| (BAD_FIELDS, answer(id))),
            (257usize..=64 * 1024).prop_map(|n| (BAD_ORDER_ID, answer("x".repeat(n).into()))),
            // Ids alpha never makes (its own are hex, a dash and a number).
            "never-[a-z0-9]{1,200}".prop_map(|id| (UNMATCHED, answer(id.into()))),
        ]
    }
}

/// `count` of the generated payloads, each on either answer channel.
fn generated_answers(count: usize) -> Vec<(&'static str, &'static str, Vec<u8>)> {
    use proptest::{
        prelude::*,
        strategy::{Strategy, ValueTree},
    };
    let mut runner = proptest::test_runner::TestRunner::default();
    let strategy = (
        prop::sample::select(vec!["inventory.reserved", "inventory.insufficient"]),
        hostile::generated(),
    );
    (0..count)
        .map(|_| {
            let (channel, (reason, payload)) = strategy.new_tree(&mut runner).unwrap().current();
            (channel, reason, payload)
        })
        .collect()
}

/// The NATS body of a wave on `channel` with `payload`, keyed `key`: a
/// valid envelope.
fn envelope(channel: &str, key: Option<&str>, payload: Vec<u8>) -> Vec<u8> {
    let mut wave = aether_core::Wave::builder(channel).payload(payload);
    if let Some(key) = key {
        wave = wave.correlation_key(key);
    }
    aether_core::wire::encode(&wave.build().unwrap()).to_vec()
}

async fn hostile_answers() {
    use std::collections::BTreeMap;

    use aether_testkit::RawNats;

    let (server, _dir, mut shop, mut alpha) =
        shop_and_alpha("[alpha]\nrate_per_s = 20\ndrain_ms = 100\n").await;
    // Its log, read as it comes so that the pipe never fills.
    let log = process::collect_log(&mut alpha);
    // Alpha resonates on the answers before it orders: once an order is
    // heard, its answers reach it.
    let ids = shop.orders(2).await;

    let started = std::time::Instant::now();
    let mut raw = RawNats::connect(server.addr()).await.unwrap();
    let mut hostile: Vec<_> = hostile::by_hand()
        .into_iter()
        .map(|(reason, payload)| ("inventory.reserved", reason, payload))
        .collect();
    hostile.extend(generated_answers(64));
    let mut refused: BTreeMap<&'static str, u64> = BTreeMap::new();
    let mut unmatched = 0;
    for (channel, reason, payload) in hostile {
        match reason {
            hostile::UNMATCHED => unmatched += 1,
            reason => *refused.entry(reason).or_default() += 1,
        }
        let body = envelope(channel, None, payload);
        raw.publish(&format!("aether.{channel}"), None, &body)
            .await
            .unwrap();
    }
    // A reply to a request alpha never made: the aether drops it.
    let reply = envelope("_INBOX.00000000000000ab.7", None, b"{}".to_vec());
    raw.publish("aether._INBOX.00000000000000ab.7", None, &reply)
        .await
        .unwrap();
    // Its own orders answered after them: confirmed and cancelled. The
    // answer to the first again: repeated; then the other answer to it:
    // conflicting (the first answer stands).
    let valid = |id: &str| serde_json::json!({"order_id": id}).to_string().into_bytes();
    for (channel, id) in [
        ("inventory.reserved", &ids[0]),
        ("inventory.insufficient", &ids[1]),
        ("inventory.reserved", &ids[0]),
        ("inventory.insufficient", &ids[0]),
    ] {
        let body = envelope(channel, Some(id), valid(id));
        raw.publish(&format!("aether.{channel}"), None, &body)
            .await
            .unwrap();
    }
    raw.ping().await.unwrap();
    let confirmed = shop.next_on("orders.confirmed").await;
    assert_eq!(confirmed.payload()["order_id"], ids[0].as_str());
    let cancelled = shop.next_on("orders.cancelled").await;
    assert_eq!(cancelled.payload()["order_id"], ids[1].as_str());
    // The duplicate answer is taken before an order made after it is
    // answered.
    let later = loop {
        let id = shop.orders(1).await.remove(0);
        if !ids.contains(&id) {
            break id;
        }
    };
    let body = envelope("inventory.reserved", Some(&later), valid(&later));
    raw.publish("aether.inventory.reserved", None, &body)
        .await
        .unwrap();
    let confirmed = shop.next_on("orders.confirmed").await;
    assert_eq!(confirmed.payload()["order_id"], later.as_str());
    let elapsed = started.elapsed();

    let stdout = process::terminate_with_stdout(&mut alpha).await;
    assert!(stdout.contains("confirmed 2, cancelled 1,"), "{stdout}");
    let counted = format!(
        "unmatched {unmatched}, repeated 1, conflicting 1, retried 0, duplicated 0, refused {}",
        aether_service_alpha::refusals::summary(&refused)
    );
    assert!(stdout.contains(&counted), "{stdout}: {counted}");
    // One warning, then at most one per 10 s, however many were refused.
    let log = log.await.unwrap();
    process::assert_limited_warnings(&log, "bad waves refused", elapsed, Duration::from_secs(10));
}

/// A negative number is a value, not an option: `--rate -5` is refused by
/// the settings' check (status 1, naming the key), `--count -5` by the
/// option's own (status 2), neither as an unexpected argument.
#[tokio::test]
async fn negative_numbers_are_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("default.toml"), "").unwrap();
    for (args, status, words) in [
        (["--rate", "-5"], 1, ["alpha.rate_per_s", "must be above 0"]),
        (["--count", "-5"], 2, ["--count", "0 or more"]),
    ] {
        let mut alpha = command();
        alpha.arg("--config-dir").arg(dir.path()).args(args);
        let output = process::output_within(alpha, BOUND).await;
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(status), "{args:?}: {stderr}");
        assert!(
            !stderr.contains("unexpected argument"),
            "{args:?}: {stderr}"
        );
        for word in words {
            assert!(stderr.contains(word), "{args:?}, {word}: {stderr}");
        }
    }
}

/// `GET /metrics` of the program listening at `addr`, or an empty text
/// while it does not answer.
async fn scrape(addr: std::net::SocketAddr) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(Ok(mut stream)) =
        tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(addr)).await
    else {
        return String::new();
    };
    let mut text = Vec::new();
    let asked = stream
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: metrics\r\n\r\n")
        .await;
    if asked.is_err() {
        return String::new();
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), stream.read_to_end(&mut text)).await;
    String::from_utf8_lossy(&text).into_owned()
}

/// The value of the series `series` (its name and labels, as exported) in
/// a scrape, if there.
fn series_value(scraped: &str, series: &str) -> Option<f64> {
    scraped
        .lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
}

/// An outage with a small durable outbox: the orders alpha emits past it
/// are refused, and it says so where an operator looks: its own /metrics
/// counts them by reason, and its log warns (once, not once an emit).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emits_a_full_outbox_refuses_are_counted_and_logged() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let mut server = NatsServer::builder()
            .jetstream(true)
            .start()
            .await
            .expect("nats-server");
        let dir = tempfile::tempdir().unwrap();
        write_settings(
            dir.path(),
            "[aether.durability]\nchannels = [\"orders.*\"]\noutbox_max_bytes = 4096\n\
             [alpha]\ndrain_ms = 500\n",
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let mut alpha = command();
        alpha.args(["--metrics-listen", &port.to_string(), "--rate", "200"]);
        let mut alpha = process::spawn_on_nats(
            alpha,
            dir.path(),
            &server.url(),
            std::process::Stdio::piped(),
        );
        let log = process::collect_log(&mut alpha);
        let connected = "aether_nats_connection_state{state=\"connected\"}";
        while series_value(&scrape(port).await, connected) != Some(1.0) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        server.kill().await.unwrap();
        let refused = "aether_emits_refused_total{reason=\"outbox_full\"}";
        let counted = loop {
            let scraped = scrape(port).await;
            match series_value(&scraped, refused) {
                Some(n) if n >= 20.0 => break scraped,
                _ => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        };
        // Refused as outbox_full, nothing else.
        for kind in aether_core::EmitErrorKind::ALL {
            let series = format!("aether_emits_refused_total{{reason=\"{}\"}}", kind.as_str());
            let n = series_value(&counted, &series).unwrap_or_else(|| panic!("{series} listed"));
            assert_eq!(
                n > 0.0,
                *kind == aether_core::EmitErrorKind::OutboxFull,
                "{series} {n}"
            );
        }
        process::terminate(&mut alpha).await;
        let log = log.await.unwrap();
        let warnings: Vec<&String> = log.iter().filter(|l| l.contains("emits refused")).collect();
        assert!(
            !warnings.is_empty() && warnings.len() <= 3,
            "warned once, at most once per 10 s: {log:#?}"
        );
        assert!(warnings[0].contains("outbox_full"), "{}", warnings[0]);
    })
    .await
    .expect("within 60 s");
}

/// Alpha with its durable outbox on disk, started while no server answers
/// on the port it is given (`--count 10`, `--rate` as asked): the port,
/// the settings folder, and alpha.
fn alpha_in_an_outage(
    drain_ms: u64,
    rate: &str,
    stderr: std::process::Stdio,
) -> (u16, tempfile::TempDir, tokio::process::Child) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    write_settings(
        dir.path(),
        &format!(
            "[aether.durability]\nchannels = [\"orders.*\", \"inventory.*\"]\n\
             outbox_dir = {:?}\n[alpha]\ndrain_ms = {drain_ms}\n",
            dir.path().join("outbox").display().to_string()
        ),
    );
    let mut alpha = command();
    alpha.args(["--count", "10", "--rate", rate]);
    let alpha = process::spawn_on_nats(
        alpha,
        dir.path(),
        &format!("nats://127.0.0.1:{port}"),
        stderr,
    );
    (port, dir, alpha)
}

/// Waits until the durable outbox in `dir` holds about ten orders.
async fn until_ten_orders_on_disk(dir: &std::path::Path) {
    let log_file = dir.join("outbox").join("durable-outbox.log");
    while std::fs::metadata(&log_file).map_or(0, |m| m.len()) < 10 * 100 {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A program whose durable outbox is on disk starts during an outage: it
/// says so, takes its orders into the outbox, and sends them once a server
/// answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starts_during_an_outage_with_its_outbox_on_disk() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let (port, dir, mut alpha) = alpha_in_an_outage(500, "50", std::process::Stdio::piped());
        let log = process::collect_log(&mut alpha);
        // Its ten orders wait on disk.
        until_ten_orders_on_disk(dir.path()).await;
        // The server comes: they are stored.
        let _server = NatsServer::builder()
            .port(port)
            .jetstream(true)
            .start()
            .await
            .expect("nats-server");
        let client = async_nats::connect(format!("nats://127.0.0.1:{port}"))
            .await
            .unwrap();
        let js = async_nats::jetstream::new(client);
        loop {
            if let Ok(mut stream) = js.get_stream("AETHER").await
                && let Ok(info) = stream.info().await
                && info.state.messages >= 10
            {
                assert_eq!(info.state.messages, 10);
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        process::terminate(&mut alpha).await;
        let log = log.await.unwrap();
        assert!(
            log.iter().any(|l| l.contains("starting all the same")),
            "said it started without a server: {log:#?}"
        );
    })
    .await
    .expect("within 60 s");
}

/// Alpha ending during an outage with its orders in the durable outbox on
/// disk says them apart: kept (sent by its next start), not unsent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ends_during_an_outage_with_its_orders_kept_on_disk() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let (_port, dir, mut alpha) = alpha_in_an_outage(200, "100", std::process::Stdio::null());
        // Its orders wait on disk; it waits for them to leave until it is
        // stopped.
        until_ten_orders_on_disk(dir.path()).await;
        let stdout = process::terminate_with_stdout(&mut alpha).await;
        let created: u64 = stdout
            .split("created ")
            .nth(1)
            .and_then(|rest| rest.split(',').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("a summary: {stdout}"));
        assert!(created >= 1, "{stdout}");
        assert!(
            stdout.contains(&format!("unsent 0, kept {created},")),
            "{stdout}"
        );
    })
    .await
    .expect("within 60 s");
}

/// A rate limit set for beta alone (`[service.programs.beta]`) leaves
/// alpha, reading the same folder, unlimited; alpha's own shapes it, and
/// its summary counts the orders that waited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limit_for_one_program_limits_that_one() {
    let server = NatsServer::builder().start().await.expect("nats-server");
    let beta_side = connect(server.url()).await;
    let stop_beta = Shutdown::new();
    let beta = tokio::spawn({
        let stop = stop_beta.clone();
        async move {
            aether_service_beta::run(&beta_side, &BetaSettings::default(), stop)
                .await
                .unwrap()
        }
    });
    let run = |limits: &'static str, count: u64| {
        let server = server.url();
        async move {
            let dir = tempfile::tempdir().unwrap();
            write_settings(dir.path(), &format!("[alpha]\ndrain_ms = 5000\n{limits}"));
            let mut alpha = command();
            alpha.arg("--config-dir").arg(dir.path()).args([
                "--nats",
                &server,
                "--count",
                &count.to_string(),
                "--rate",
                "400",
            ]);
            let output = process::output_within(alpha, BOUND).await;
            // The summary on stdout, the log on stderr.
            let text = String::from_utf8(output.stdout).unwrap()
                + &String::from_utf8(output.stderr).unwrap();
            assert!(output.status.success(), "{text}");
            assert!(text.contains(&format!("created {count},")), "{text}");
            text
        }
    };
    // Beta's limit: alpha's 40 orders go out as fast as it makes them.
    let other = run("[service.programs.beta]\nrate_limit_per_s = 5\n", 40).await;
    assert!(other.contains("shaped 0,"), "{other}");
    // Alpha's own: its orders wait for their turns.
    let own = run("[service.programs.alpha]\nrate_limit_per_s = 50\n", 40).await;
    assert!(
        !own.contains("shaped 0,") && own.contains("rate_limited 0,"),
        "{own}"
    );
    // Shaped for seconds, it says it orders below its rate.
    let slow = run("[service.programs.alpha]\nrate_limit_per_s = 40\n", 250).await;
    assert!(slow.contains("ordering below its rate"), "{slow}");
    assert!(!own.contains("ordering below its rate"), "{own}");
    stop_beta.trigger();
    beta.await.unwrap();
}
