//! The `aether-service-beta` program as a process: `--help`, and a run
//! over a real nats-server, answering alpha (in this process, on its own
//! connection), until SIGTERM, which it exits on with status 0.

use std::{process::Stdio, time::Duration};

use aether_core::{Aether, AetherConfig};
use aether_ops::shutdown::Shutdown;
use aether_service_alpha::AlphaSettings;
use aether_testkit::{
    NatsServer,
    process::{self, StdoutLines},
};
use nix::sys::signal::Signal;

const PROGRAM: &str = env!("CARGO_BIN_EXE_aether-service-beta");
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

/// Beta started on `url` with the settings in `dir` (from `command`), once
/// its first line says it resonates: the lines after it.
async fn started_beta(
    command: tokio::process::Command,
    dir: &std::path::Path,
    url: &str,
    stderr: Stdio,
) -> (tokio::process::Child, StdoutLines) {
    let mut beta = process::spawn_on_nats(command, dir, url, stderr);
    let lines = process::ready(&mut beta, BOUND, "resonating").await;
    (beta, lines)
}

#[tokio::test]
async fn help_says_what_it_does() {
    process::assert_help_says(
        command(),
        &[
            "orders.*",
            "inventory.insufficient",
            "--nats",
            "--config-dir",
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_orders_over_nats_until_sigterm() {
    tokio::time::timeout(BOUND, answers())
        .await
        .expect("within 20 s");
}

/// A nats-server, beta on it with `settings` as its default.toml (once it
/// says it resonates), its stdout's lines, and an aether for alpha's side.
async fn beta_on_nats(
    settings: &str,
) -> (
    NatsServer,
    tempfile::TempDir,
    tokio::process::Child,
    StdoutLines,
    Aether,
) {
    let server = NatsServer::builder().start().await.expect("nats-server");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("default.toml"), settings).unwrap();
    let (beta, lines) = started_beta(command(), dir.path(), &server.url(), Stdio::null()).await;
    let alpha_side = connect(server.url()).await;
    (server, dir, beta, lines, alpha_side)
}

async fn answers() {
    let (_server, _dir, mut beta, mut lines, alpha_side) =
        beta_on_nats("[beta]\nstock = { gadget = 1 }\n").await;
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

    process::terminate(&mut beta).await;
    let report = lines.next_line().await.unwrap().expect("the report");
    assert!(
        report.contains(&format!("insufficient {}", alpha.cancelled)),
        "{report}; {alpha}"
    );
}

/// Beta's stock outlives it: with a data folder, beta killed with SIGKILL
/// and started again in the same working directory goes on from the stock
/// it left (its ledger), not from its settings.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn its_stock_outlives_a_kill() {
    tokio::time::timeout(Duration::from_secs(40), async {
        let server = NatsServer::builder().start().await.expect("nats-server");
        let dir = tempfile::tempdir().unwrap();
        let work = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("default.toml"),
            "[beta]\nstock = { gadget = 3 }\n[service]\ndata_dir = \"data\"\n",
        )
        .unwrap();
        let alpha_side = connect(server.url()).await;
        let mut confirmed = Vec::new();
        for _ in 0..2 {
            let mut command = command();
            command.current_dir(work.path());
            let (mut beta, _lines) =
                started_beta(command, dir.path(), &server.url(), Stdio::null()).await;
            // Two gadgets ordered each run, three in stock at the first.
            let settings = AlphaSettings {
                rate_per_s: 100.0,
                count: Some(2),
                items: vec!["gadget".into()],
                ..AlphaSettings::default()
            };
            let alpha = aether_service_alpha::run(&alpha_side, &settings, Shutdown::new())
                .await
                .unwrap();
            confirmed.push(alpha.confirmed);
            process::signal(&beta, Signal::SIGKILL);
            beta.wait().await.unwrap();
        }
        assert_eq!(confirmed, [2, 1], "the second beta had one gadget left");
        let held = std::fs::read_dir(work.path().join("data/aether-service-beta-1/state"))
            .unwrap()
            .count();
        assert_eq!(held, 1, "the stock map's ledger");
    })
    .await
    .expect("within 40 s");
}

/// A burst of orders over beta's rate limit (what an outbox sends at once
/// when NATS comes back): the limit shapes the answers, it does not drop
/// them. Every order is answered; none is counted as rate limited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limit_shapes_a_burst_and_answers_every_order() {
    tokio::time::timeout(Duration::from_secs(40), shaped())
        .await
        .expect("within 40 s");
}

async fn shaped() {
    let (_server, _dir, mut beta, mut lines, alpha_side) =
        beta_on_nats("[beta]\nstock = { gadget = 1000 }\n[service]\nrate_limit_per_s = 50\n").await;
    // 200 orders as fast as alpha makes them: four seconds of beta's limit.
    let settings = AlphaSettings {
        rate_per_s: 10_000.0,
        count: Some(200),
        items: vec!["gadget".into()],
        ..AlphaSettings::default()
    };
    let started = std::time::Instant::now();
    let alpha = aether_service_alpha::run(&alpha_side, &settings, Shutdown::new())
        .await
        .unwrap();
    assert_eq!((alpha.created, alpha.confirmed), (200, 200), "{alpha}");
    // Shaped: at 50 a second after a burst of 50, at least 2.5 s.
    assert!(
        started.elapsed() >= Duration::from_millis(2500),
        "{:?}",
        started.elapsed()
    );

    process::terminate(&mut beta).await;
    let report = lines.next_line().await.unwrap().expect("the report");
    assert!(report.contains("reserved 200,"), "{report}");
    assert!(report.contains("rate_limited 0,"), "{report}");
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
    let (mut beta, _out) = started_beta(command(), dir.path(), &server.url(), Stdio::piped()).await;
    let mut log =
        tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(beta.stderr.take().unwrap()));
    let mut until = async |words: &[&str]| loop {
        let line = log.next_line().await.unwrap().expect("a log line");
        if words.iter().all(|word| line.contains(word)) {
            return line;
        }
    };

    let aether = connect(server.url()).await;
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

    process::terminate(&mut beta).await;
}

/// Hostile but well-formed waves, published by a raw NATS client (not
/// aether-core): each is a valid envelope on `orders.created` whose payload
/// is no order. Beta refuses each, counts it by reason, warns at most once
/// per 10 s, goes on answering, and its summary counts them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_hostile_waves_counts_them_and_goes_on() {
    tokio::time::timeout(Duration::from_secs(60), hostile_waves())
        .await
        .expect("within 60 s");
}

/// Payloads of `orders.created` that are no order, each with the reason
/// beta refuses it for.
mod hostile {
    use aether_service_beta::{BAD_ITEM, BAD_QTY, refusals::*};
    use proptest::prelude::*;
    use serde_json::{Value, json};

    /// An order with `field` replaced by `value`, or left out if `None`.
    fn order_with(field: &str, value: Option<Value>) -> Vec<u8> {
        let mut order = json!({"order_id": "hostile", "item": "widget", "qty": 1});
        match value {
            Some(value) => order[field] = value,
            None => drop(order.as_object_mut().unwrap().remove(field)),
        }
        order.to_string().into_bytes()
    }

    /// The payloads written by hand.
    pub fn by_hand() -> Vec<(&'static str, Vec<u8>)> {
        let kib64 = "x".repeat(64 * 1024);
        vec![
            (BAD_ORDER_ID, order_with("order_id", Some(json!("")))),
            (
                BAD_ORDER_ID,
                order_with("order_id", Some(json!("o".repeat(300)))),
            ),
            (BAD_ORDER_ID, order_with("order_id", Some(json!(kib64)))),
            (BAD_ITEM, order_with("item", Some(json!(kib64)))),
            (BAD_ITEM, order_with("item", Some(json!("")))),
            (BAD_QTY, order_with("qty", Some(json!(0)))),
            (BAD_FIELDS, order_with("order_id", Some(json!(7)))),
            (BAD_FIELDS, order_with("qty", Some(json!("1")))),
            (BAD_FIELDS, order_with("qty", Some(json!(-1)))),
            (BAD_FIELDS, order_with("qty", Some(json!(1.5)))),
            (BAD_FIELDS, order_with("item", None)),
            (BAD_FIELDS, b"[1, 2, 3]".to_vec()),
            (BAD_FIELDS, b"\"an order\"".to_vec()),
            (BAD_FIELDS, b"null".to_vec()),
            (NOT_JSON, "[".repeat(10_000).into_bytes()),
            (NOT_JSON, b"\xff\xfe\xfd".to_vec()),
            (
                NOT_JSON,
                b"{\"order_id\": \"\xff\", \"item\": \"widget\", \"qty\": 1}".to_vec(),
            ),
            (NOT_JSON, Vec::new()),
        ]
    }

    /// A JSON value of any type but a string.
    fn not_a_string() -> impl Strategy<Value = Value> {
        prop_oneof![
            any::<i64>().prop_map(Value::from),
            any::<bool>().prop_map(Value::from),
            Just(Value::Null),
            prop::collection::vec(any::<i64>(), 0..4).prop_map(Value::from),
        ]
    }

    /// A string of 257 bytes to 64 KiB, or none.
    fn bad_length() -> impl Strategy<Value = String> {
        prop_oneof![
            Just(String::new()),
            (257usize..=64 * 1024).prop_map(|n| "x".repeat(n))
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
            not_a_string().prop_map(|v| (BAD_FIELDS, order_with("order_id", Some(v)))),
            not_a_string().prop_map(|v| (BAD_FIELDS, order_with("item", Some(v)))),
            prop_oneof![
                (i64::MIN..0).prop_map(Value::from),
                (0.001f64..1e9).prop_map(|q| Value::from(q.floor() + 0.5)),
                "[0-9]{1,5}".prop_map(Value::from),
            ]
            .prop_map(|v| (BAD_FIELDS, order_with("qty", Some(v)))),
            prop::sample::select(vec!["order_id", "item", "qty"])
                .prop_map(|field| (BAD_FIELDS, order_with(field, None))),
            bad_length().prop_map(|id| (BAD_ORDER_ID, order_with("order_id", Some(id.into())))),
            bad_length().prop_map(|item| (BAD_ITEM, order_with("item", Some(item.into())))),
        ]
    }
}

/// What the raw client publishes: `count` of the generated payloads.
fn generated_payloads(count: usize) -> Vec<(&'static str, Vec<u8>)> {
    use proptest::strategy::{Strategy, ValueTree};
    let mut runner = proptest::test_runner::TestRunner::default();
    (0..count)
        .map(|_| {
            hostile::generated()
                .new_tree(&mut runner)
                .unwrap()
                .current()
        })
        .collect()
}

/// The NATS body of a wave on `channel` with `payload`: a valid envelope.
fn envelope(channel: &str, payload: Vec<u8>) -> Vec<u8> {
    let wave = aether_core::Wave::builder(channel)
        .payload(payload)
        .build()
        .unwrap();
    aether_core::wire::encode(&wave).to_vec()
}

async fn hostile_waves() {
    use std::collections::BTreeMap;

    use aether_core::{Vibrator, Wave};
    use aether_testkit::RawNats;

    let server = NatsServer::builder().start().await.expect("nats-server");
    let dir = tempfile::tempdir().unwrap();
    write_settings(dir.path(), "[beta]\nstock = { widget = 100 }\n");
    let (mut beta, mut out) =
        started_beta(command(), dir.path(), &server.url(), Stdio::piped()).await;
    // Its log, read as it comes so that the pipe never fills.
    let log = process::collect_log(&mut beta);

    let aether = connect(server.url()).await;
    let mut shop = Vibrator::create("shop", &aether).await.unwrap();
    shop.resonate_on("inventory.*").await.unwrap();
    let order = |id: &str| {
        Wave::builder("orders.created")
            .correlation_key(id)
            .json(&serde_json::json!({"order_id": id, "item": "widget", "qty": 1}))
            .build()
            .unwrap()
    };
    // Beta may not resonate yet: order until it answers.
    loop {
        shop.emit(order("first")).await.unwrap();
        if let Ok(answer) = tokio::time::timeout(Duration::from_millis(200), shop.receive()).await {
            assert_eq!(answer.unwrap().payload()["order_id"], "first");
            break;
        }
    }

    let started = std::time::Instant::now();
    let mut raw = RawNats::connect(server.addr()).await.unwrap();
    let mut hostile = hostile::by_hand();
    hostile.extend(generated_payloads(64));
    let mut expected: BTreeMap<&'static str, u64> = BTreeMap::new();
    for (reason, payload) in hostile {
        *expected.entry(reason).or_default() += 1;
        let body = envelope("orders.created", payload);
        raw.publish("aether.orders.created", None, &body)
            .await
            .unwrap();
    }
    // Replies to requests beta never made, a reflection of a wave it never
    // emitted, and a body that is no envelope: the aether refuses or drops
    // them before beta, and beta goes on.
    for (subject, channel) in [
        (
            "aether._INBOX.00000000000000ab.7",
            "_INBOX.00000000000000ab.7",
        ),
        (
            "aether._reflect.service-beta.00000000000000ab",
            "_reflect.service-beta.00000000000000ab",
        ),
    ] {
        let body = envelope(channel, br#"{"order_id": "reply"}"#.to_vec());
        raw.publish(subject, None, &body).await.unwrap();
    }
    raw.publish("aether.orders.created", None, b"{\"order_id\": \"raw\"}")
        .await
        .unwrap();
    raw.ping().await.unwrap();

    // A valid order after them is still answered, and none of them was.
    shop.emit(order("last")).await.unwrap();
    loop {
        let answer = tokio::time::timeout(Duration::from_secs(10), shop.receive())
            .await
            .expect("an answer to the last order")
            .unwrap();
        let id = answer.payload()["order_id"].as_str().unwrap().to_string();
        assert!(id == "first" || id == "last", "answered {id}");
        if id == "last" {
            assert_eq!(answer.channel().as_str(), "inventory.reserved");
            break;
        }
    }
    let elapsed = started.elapsed();

    process::terminate(&mut beta).await;
    let report = out.next_line().await.unwrap().expect("the report");
    let refused = format!(
        "refused {}",
        aether_service_beta::refusals::summary(&expected)
    );
    assert!(report.contains(&refused), "{report}: {refused}");
    // One warning, then at most one per 10 s, however many were refused.
    let log = log.await.unwrap();
    process::assert_limited_warnings(&log, "bad waves refused", elapsed, Duration::from_secs(10));
}

/// An ACL that does not let beta resonate on its orders: beta says so and
/// exits 1, and never says it resonates.
#[tokio::test]
async fn a_denied_resonance_is_said_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("default.toml"),
        "[[aether.security.acl]]\nsource = \"service-beta\"\nemit = [\"inventory.*\"]\n\
         resonate = [\"payments.*\"]\n",
    )
    .unwrap();
    let mut beta = command();
    beta.arg("--config-dir").arg(dir.path());
    let output = process::output_within(beta, BOUND).await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(!stdout.contains("resonating"), "{stdout}");
    assert!(stderr.contains("resonance denied"), "{stderr}");
}

/// Shaped by its rate limit with a durable backlog far larger than its
/// queue, beta stops within its grace at SIGTERM: it takes no more orders
/// (they stay stored for the next start) and answers those queued as far
/// as the grace allows, then says what it did.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shaped_beta_with_a_backlog_stops_within_its_grace() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let server = NatsServer::builder()
            .jetstream(true)
            .start()
            .await
            .expect("nats-server");
        let durable = "[aether.durability]\nchannels = [\"orders.*\", \"inventory.*\"]\n";
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("default.toml"),
            format!(
                "{durable}[beta]\nstock = {{ gadget = 100000 }}\n[service]\n\
                 rate_limit_per_s = 20\nshutdown_grace_ms = 2000\n"
            ),
        )
        .unwrap();
        // 1,500 orders stored before beta starts: minutes of its limit.
        let mut config = AetherConfig::default();
        config.nats.urls = vec![server.url()];
        config.durability.channels = vec!["orders.*".into(), "inventory.*".into()];
        let alpha_side = Aether::connect(config).await.unwrap();
        let stop_alpha = Shutdown::new();
        let alpha = tokio::spawn({
            let stop = stop_alpha.clone();
            async move {
                let settings = AlphaSettings {
                    rate_per_s: 10_000.0,
                    count: Some(1500),
                    items: vec!["gadget".into()],
                    ..AlphaSettings::default()
                };
                aether_service_alpha::run(&alpha_side, &settings, stop).await
            }
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        let (mut beta, mut lines) =
            started_beta(command(), dir.path(), &server.url(), Stdio::null()).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let stopping = std::time::Instant::now();
        process::terminate(&mut beta).await;
        let took = stopping.elapsed();
        let report = lines.next_line().await.unwrap().expect("the report");
        assert!(report.starts_with("service-beta:"), "{report}");
        // Its grace (2 s) and the final drain (2 s), and a margin.
        assert!(took < Duration::from_secs(7), "stopped in {took:?}");
        stop_alpha.trigger();
        let _ = alpha.await;
    })
    .await
    .expect("within 60 s");
}
