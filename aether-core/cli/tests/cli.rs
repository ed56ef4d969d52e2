//! The `aether` binary as a process, against real nats-server processes
//! (and the embedded medium for `bench --embedded`): what it prints, what
//! it exits with, and what the bus sees. Keepers are in `keep.rs`.

mod support;

use std::{process::Stdio, time::Duration};

use aether_core::{AetherConfig, state::StateMap};
use aether_testkit::{Auth, NatsServer};
use serde_json::Value;
use support::{AETHER, aether, connect, finish, run, server, soon, start};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::Command,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_prints_the_waves_emit_sends_with_their_properties() {
    let nats = server().await;
    let url = nats.url();
    let listener = start(
        aether(&url, &["listen", "orders.*", "--json", "--count", "3"]),
        "listening on",
    )
    .await;
    let (status, _, stderr) = run(aether(
        &url,
        &[
            "emit",
            "orders.created",
            r#"{"id": 7}"#,
            "--count",
            "2",
            "--amplitude",
            "0.8",
            "--phase",
            "retract",
            "--key",
            "order-7",
        ],
    ))
    .await;
    assert_eq!(status, 0, "{stderr}");
    assert!(
        stderr.contains("emitted 2 waves on orders.created"),
        "{stderr}"
    );
    // Payloads from standard input, a line a wave; text that is not JSON
    // goes as text.
    let mut piped = aether(&url, &["emit", "orders.noted"]);
    piped.stdin(Stdio::piped());
    let mut child = piped.spawn().unwrap();
    {
        use tokio::io::AsyncWriteExt;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"plain words\n").await.unwrap();
    }
    assert_eq!(finish(child).await.0, 0);

    let (status, out) = finish(listener).await;
    assert_eq!(status, 0);
    let waves: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(waves.len(), 3, "{out}");
    for wave in &waves[..2] {
        assert_eq!(wave["channel"], "orders.created");
        assert_eq!(wave["payload"], serde_json::json!({"id": 7}));
        assert_eq!(wave["phase"], "retract");
        assert_eq!(wave["key"], "order-7");
        assert_eq!(wave["source"], "aether-cli");
        assert_eq!(wave["hops"], 0);
        let amplitude = wave["amplitude"].as_f64().unwrap();
        assert!((amplitude - 0.8).abs() < 1e-6, "{wave}");
    }
    assert_eq!(waves[2]["channel"], "orders.noted");
    assert_eq!(waves[2]["text"], "plain words");
}

/// The server goes away under `aether emit`: it waits for room while the
/// outbox is full, then for the connection up to `--wait`, and exits with
/// status 1 counting the waves it abandons, never in silence.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emit_counts_what_it_abandons_when_the_server_is_gone() {
    use tokio::io::AsyncWriteExt;
    let mut nats = server().await;
    let url = nats.url();
    let mut piped = aether(&url, &["emit", "orders.created", "--wait", "1s"]);
    piped.stdin(Stdio::piped());
    let mut child = piped.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"0\n").await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    nats.stop().await.unwrap();
    // More than the outbox holds (10,000).
    let lines: String = (1..=10_100).map(|n| format!("{n}\n")).collect();
    stdin.write_all(lines.as_bytes()).await.unwrap();
    drop(stdin);
    let output = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .expect("it ends within 30 s")
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("outbox"),
        "the emit it could not make: {stderr}"
    );
    assert!(
        stderr.contains("10000 not sent after waiting 1.0s") && stderr.contains("abandoned"),
        "{stderr}"
    );
}

/// SIGTERM or SIGINT under a long `aether emit`: it stops emitting, says
/// how many waves it emitted and that all were sent, and exits 143 or 130;
/// with the server gone, it counts what it abandons, and a second signal
/// ends its wait.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emit_stopped_by_a_signal_says_what_it_sent() {
    use nix::{
        sys::signal::{Signal, kill},
        unistd::Pid,
    };
    let mut nats = server().await;
    let url = nats.url();
    for (signal, status) in [(Signal::SIGTERM, 143), (Signal::SIGINT, 130)] {
        let mut command = aether(
            &url,
            &[
                "emit",
                "load.x",
                "1",
                "--count",
                "100000000",
                "--rate",
                "1000",
            ],
        );
        let child = command.spawn().unwrap();
        tokio::time::sleep(Duration::from_millis(700)).await;
        let started = std::time::Instant::now();
        kill(Pid::from_raw(child.id().unwrap() as i32), signal).unwrap();
        let output = tokio::time::timeout(Duration::from_secs(10), child.wait_with_output())
            .await
            .expect("it stops")
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(status), "{stderr}");
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
        assert!(stderr.contains("interrupted by"), "{stderr}");
        assert!(
            stderr.contains("waves on load.x, all sent"),
            "it says what it emitted: {stderr}"
        );
    }
    // The server gone: what is unsent is counted as abandoned; a second
    // SIGINT ends the wait at once.
    let mut command = aether(
        &url,
        &[
            "emit",
            "load.x",
            "1",
            "--count",
            "100000000",
            "--rate",
            "1000",
            "--wait",
            "60s",
        ],
    );
    let child = command.spawn().unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    nats.stop().await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let pid = Pid::from_raw(child.id().unwrap() as i32);
    kill(pid, Signal::SIGINT).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    kill(pid, Signal::SIGINT).unwrap();
    let output = tokio::time::timeout(Duration::from_secs(10), child.wait_with_output())
        .await
        .expect("the second signal ends the wait")
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(130), "{stderr}");
    assert!(
        stderr.contains("interrupted by SIGINT") && stderr.contains("abandoned"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_human_form_escapes_what_could_drive_a_terminal() {
    let nats = server().await;
    let url = nats.url();
    let listener = start(
        aether(&url, &["listen", "x.*", "--count", "1"]),
        "listening on",
    )
    .await;
    let hostile = "ok\u{1b}[2J\u{7}bell";
    let (status, _, _) = run(aether(&url, &["emit", "x.y", hostile])).await;
    assert_eq!(status, 0);
    let (_, out) = finish(listener).await;
    assert!(
        out.contains("x.y  amplitude 1.000  phase assert  hops 0  from aether-cli"),
        "{out}"
    );
    assert!(out.contains("ok\\u{1b}[2J\\u{7}bell"), "{out}");
    assert!(!out.chars().any(|c| c.is_control() && c != '\n'), "{out:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_gets_the_answer_of_reply_and_says_when_nobody_answers() {
    let nats = server().await;
    let url = nats.url();
    // Nobody answers yet: a clear error, status 1.
    let (status, _, stderr) = run(aether(
        &url,
        &["request", "text.upper", "x", "--timeout", "2s"],
    ))
    .await;
    assert_eq!(status, 1, "{stderr}");
    assert!(stderr.contains("nobody answers on text.upper"), "{stderr}");

    let replier = start(
        aether(
            &url,
            &[
                "reply",
                "text.upper",
                "--command",
                "tr a-z A-Z",
                "--count",
                "1",
            ],
        ),
        "answering on",
    )
    .await;
    let (status, out, stderr) = run(aether(
        &url,
        &["request", "text.upper", r#""hello""#, "--json"],
    ))
    .await;
    assert_eq!(status, 0, "{stderr}");
    let reply: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(reply["payload"], "HELLO");
    assert_eq!(finish(replier).await.0, 0);

    let fixed = start(
        aether(
            &url,
            &[
                "reply",
                "stock.check",
                "--payload",
                r#"{"ok": true}"#,
                "--count",
                "1",
            ],
        ),
        "answering on",
    )
    .await;
    let (status, out, _) = run(aether(&url, &["request", "stock.check", "{}"])).await;
    assert_eq!(status, 0);
    assert!(out.contains("\"ok\": true"), "{out}");
    assert_eq!(finish(fixed).await.0, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_say_what_to_do() {
    let nats = server().await;
    let url = nats.url();
    let (status, _, stderr) = run(aether("nats://127.0.0.1:1", &["emit", "a.b", "x"])).await;
    assert_eq!(status, 1);
    assert!(
        stderr.contains("is a nats-server running there?"),
        "{stderr}"
    );
    let (status, _, stderr) = run(aether(&url, &["emit", "a..b", "x"])).await;
    assert_eq!(status, 2);
    assert!(stderr.contains("channel \"a..b\""), "{stderr}");
    let (status, _, stderr) = run(aether(&url, &["emit", "a.b", "x", "--amplitude", "3"])).await;
    assert_eq!(status, 2, "{stderr}");
    let (status, _, stderr) = run(aether(&url, &["emit", "a.b", "x", "--phase", "sideways"])).await;
    assert_eq!(status, 2);
    assert!(stderr.contains("assert, retract, or radians"), "{stderr}");
    let (status, _, stderr) =
        run(aether(&url, &["request", "a.b", "x", "--timeout", "soon"])).await;
    assert_eq!(status, 2);
    assert!(stderr.contains("not a duration"), "{stderr}");
    // A server that wants a token: refused without it, and it says so.
    let guarded = NatsServer::builder()
        .auth(Auth::Token("s3cret-token".into()))
        .start()
        .await
        .unwrap();
    let (status, _, stderr) = run(aether(&guarded.url(), &["emit", "a.b", "x"])).await;
    assert_eq!(status, 1);
    assert!(stderr.contains("--token"), "{stderr}");
    let mut with_token = aether(&guarded.url(), &["emit", "a.b", "x"]);
    with_token.env("AETHER_NATS_TOKEN", "s3cret-token");
    let (status, _, stderr) = run(with_token).await;
    assert_eq!(status, 0, "{stderr}");
    assert!(!stderr.contains("s3cret-token"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_commands_read_and_write_a_map_a_service_holds() {
    let nats = server().await;
    let url = nats.url();
    let bus = connect(&url, AetherConfig::default()).await;
    let service = StateMap::builder("home")
        .node("service")
        .open(&bus)
        .await
        .unwrap();
    service.set_json("hall.light", &"off").await.unwrap();

    let watcher = start(
        aether(
            &url,
            &[
                "state", "watch", "home", "living.*", "--json", "--count", "1",
            ],
        ),
        "watching",
    )
    .await;
    let (status, _, stderr) = run(aether(
        &url,
        &["state", "set", "home", "living.temp", "21.5"],
    ))
    .await;
    assert_eq!(status, 0, "{stderr}");
    soon("the service sees the set", || {
        service.get_json::<f64>("living.temp").unwrap() == Some(21.5)
    })
    .await;
    let (_, out) = finish(watcher).await;
    let change: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(
        (change["key"].clone(), change["value"].clone()),
        ("living.temp".into(), 21.5.into())
    );

    let (status, out, _) = run(aether(&url, &["state", "get", "home", "hall.light"])).await;
    assert_eq!((status, out.trim()), (0, "\"off\""));
    let (status, out, _) = run(aether(&url, &["state", "list", "home", "--json"])).await;
    assert_eq!(status, 0);
    let all: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(
        all,
        serde_json::json!({"hall.light": "off", "living.temp": 21.5})
    );
    let (status, _, _) = run(aether(&url, &["state", "delete", "home", "hall.light"])).await;
    assert_eq!(status, 0);
    soon("the service sees the delete", || {
        service.get("hall.light").is_none()
    })
    .await;
    let (status, _, stderr) = run(aether(&url, &["state", "get", "home", "hall.light"])).await;
    assert_eq!(status, 1);
    assert!(stderr.contains("is not set"), "{stderr}");
    // The map has keys, so a replica answered: nothing said of being alone.
    assert!(!stderr.contains("no other replica"), "{stderr}");
    // Every command says where it connected.
    assert!(stderr.contains(&format!("connected to {url}")), "{stderr}");
    // A map nobody holds on this bus: said so, naming the server.
    let (status, _, stderr) = run(aether(&url, &["state", "get", "elsewhere", "k"])).await;
    assert_eq!(status, 1);
    assert!(
        stderr.contains(&format!(
            "no other replica of map \"elsewhere\" answered on {url}"
        )),
        "{stderr}"
    );
    let (status, out, stderr) = run(aether(&url, &["state", "list", "elsewhere"])).await;
    assert_eq!((status, out.as_str()), (0, ""));
    assert!(stderr.contains("no other replica"), "{stderr}");
    let (status, out, _) = run(aether(&url, &["state", "peers", "home"])).await;
    assert_eq!(status, 0);
    assert!(out.lines().any(|l| l == "service"), "{out}");
    // Another node's keys are refused, status 2.
    let (status, _, stderr) = run(aether(
        &url,
        &["state", "set", "home", "node/service/x", "1"],
    ))
    .await;
    assert_eq!(status, 2, "{stderr}");
    service.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_tabulates_what_instances_report() {
    let nats = server().await;
    let url = nats.url();
    let mut config = AetherConfig::default();
    config.report.interval = Duration::from_millis(200);
    config.report.instance = Some("probe-1".into());
    let reporting = connect(&url, config).await;
    let (status, out, stderr) = run(aether(&url, &["stats", "--wait", "1s"])).await;
    assert_eq!(status, 0, "{stderr}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("INSTANCE"), "{out}");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("probe-1") && l.contains("nats")),
        "{out}"
    );
    let (status, out, _) = run(aether(&url, &["stats", "--wait", "1s", "--json"])).await;
    assert_eq!(status, 0);
    let report: Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!(report["instance"], "probe-1");
    drop(reporting);
}

/// `aether stream` shows the durable stream as the server reports it, and
/// each durable consumer's backlog, and changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_shows_the_stream_its_copies_and_backlogs() {
    let nats = NatsServer::builder().jetstream(true).start().await.unwrap();
    let url = nats.url();
    let mut config = AetherConfig::default();
    config.durability.channels = vec!["orders.*".into()];
    let shop = connect(&url, config).await;
    let mut billing = aether_core::Vibrator::create("billing", &shop)
        .await
        .unwrap();
    billing.resonate_on("orders.*").await.unwrap();
    let tx = aether_core::Vibrator::create("shop", &shop).await.unwrap();
    for n in 0..5 {
        tx.emit_wave("orders.created", serde_json::json!({ "n": n }))
            .await
            .unwrap();
    }
    let (status, out, stderr) = run(aether(&url, &["stream"])).await;
    assert_eq!(status, 0, "{stderr}");
    assert!(out.starts_with("stream AETHER: 5 waves (1 to 5)"), "{out}");
    assert!(
        out.contains("copies: 1 configured, 1 current, 0 lagging, 0 offline"),
        "{out}"
    );
    assert!(out.contains("CONSUMER") && out.contains("PENDING"), "{out}");
    let (status, out, _) = run(aether(&url, &["stream", "--json"])).await;
    assert_eq!(status, 0);
    let stream: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(stream["waves"], 5);
    let backlogs = stream["consumer_backlogs"].as_array().unwrap();
    assert_eq!(backlogs.len(), 1, "{stream}");
    let waiting =
        backlogs[0]["pending"].as_u64().unwrap() + backlogs[0]["ack_pending"].as_u64().unwrap();
    assert_eq!(waiting, 5, "{stream}");
    // A stream that is not there: said, exit 1.
    let bare = server().await;
    let (status, _, stderr) = run(aether(&bare.url(), &["stream"])).await;
    assert_eq!(status, 1, "{stderr}");
    assert!(
        stderr.contains("stream: ") && stderr.contains("AETHER"),
        "{stderr}"
    );
    drop(billing);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_reports_rates_latency_and_loss() {
    let nats = server().await;
    let url = nats.url();
    let (status, out, stderr) = run(aether(&url, &["bench", "--count", "5000", "--json"])).await;
    assert_eq!(status, 0, "{stderr}");
    let report: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(
        (report["mode"].clone(), report["lost"].clone()),
        ("emit".into(), 0.into())
    );
    assert!(report["sent_per_s"].as_f64().unwrap() > 0.0);
    assert!(
        report["latency_ms"]["p99"].as_f64().unwrap()
            >= report["latency_ms"]["p50"].as_f64().unwrap()
    );
    let (status, out, _) = run(aether(
        &url,
        &["bench", "--mode", "request", "--count", "200"],
    ))
    .await;
    assert_eq!(status, 0);
    assert!(
        out.contains("answered  200") && out.contains("failed    0"),
        "{out}"
    );
    let mut embedded = aether_testkit::program(AETHER);
    embedded.args(["bench", "--embedded", "--count", "5000"]);
    let (status, out, _) = run(embedded).await;
    assert_eq!(status, 0);
    assert!(
        out.contains("embedded") && out.contains("loss      0 (0.00%)"),
        "{out}"
    );
}

#[tokio::test]
async fn help_has_examples_and_completions_are_generated() {
    let mut help = aether_testkit::program(AETHER);
    help.arg("--help");
    let (status, out, _) = run(help).await;
    assert_eq!(status, 0);
    assert!(
        out.contains("Examples:") && out.contains("aether listen"),
        "{out}"
    );
    for shell in ["bash", "zsh", "fish"] {
        let mut completions = aether_testkit::program(AETHER);
        completions.args(["completions", shell]);
        let (status, out, _) = run(completions).await;
        assert_eq!(status, 0);
        assert!(
            out.contains("listen") && out.contains("state"),
            "{shell}: {out}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_trusted_ca_and_a_clear_refusal_without() {
    let pki = aether_testkit::TestPki::generate().unwrap();
    let nats = NatsServer::builder().tls(&pki, true).start().await.unwrap();
    let url = nats.url();
    let ca = pki.ca_pem_path();
    let (cert, key) = (pki.client_cert_path(), pki.client_key_path());
    let mut args = vec!["emit", "secure.ping", "x", "--tls-ca"];
    let (ca, cert, key) = (
        ca.to_str().unwrap(),
        cert.to_str().unwrap(),
        key.to_str().unwrap(),
    );
    args.extend([ca, "--tls-cert", cert, "--tls-key", key]);
    let (status, _, stderr) = run(aether(&url, &args)).await;
    assert_eq!(status, 0, "{stderr}");
    // Without the client certificate the server refuses; the error says
    // what to check.
    let (status, _, stderr) =
        run(aether(&url, &["emit", "secure.ping", "x", "--tls-ca", ca])).await;
    assert_eq!(status, 1);
    assert!(stderr.contains("--tls-cert"), "{stderr}");
}

/// Credentials in a URL never show: not in the hint of any command that
/// cannot reach the server, nor in `--help` with `AETHER_NATS` set.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_in_urls_never_show() {
    const PASSWORD: &str = "hunter2-do-not-print";
    let url = format!("nats://alice:{PASSWORD}@127.0.0.1:1");
    for args in [
        &["emit", "a.b", "x"][..],
        &["listen", "a.*", "--count", "1"],
        &["request", "a.b", "x"],
        &["state", "get", "home", "k"],
        &["stats", "--wait", "100ms"],
        &["bench", "--count", "10"],
    ] {
        let (status, stdout, stderr) = run(aether(&url, args)).await;
        assert_eq!(status, 1, "{args:?}: {stderr}");
        assert!(
            !stdout.contains(PASSWORD) && !stderr.contains(PASSWORD),
            "{args:?}: {stderr}"
        );
        assert!(
            stderr.contains("127.0.0.1:1"),
            "{args:?} names the server: {stderr}"
        );
    }
    // Several servers in one value, a token in a query: none shown.
    for url in [
        format!("nats://alice:{PASSWORD}@127.0.0.1:1,nats://bob:{PASSWORD}@127.0.0.1:2"),
        format!("nats://127.0.0.1:1?token={PASSWORD}"),
        format!("nats://alice:a/{PASSWORD}@127.0.0.1:1"),
        format!("nats:/alice:{PASSWORD}@127.0.0.1:1"),
    ] {
        let (_, stdout, stderr) = run(aether(&url, &["emit", "a.b", "x"])).await;
        assert!(
            !stdout.contains(PASSWORD) && !stderr.contains(PASSWORD),
            "{url}: {stderr}"
        );
    }
    let mut help = Command::new(env!("CARGO_BIN_EXE_aether"));
    help.arg("--help").env("AETHER_NATS", &url);
    let (status, stdout, stderr) = run(help).await;
    assert_eq!(status, 0);
    assert!(
        !stdout.contains(PASSWORD) && !stderr.contains(PASSWORD),
        "{stdout}"
    );
}

/// A listener whose output is not read falls behind a fast emitter: what
/// it drops is said on its standard error (`queue_full`, counted), and,
/// once stopped, how many it heard and dropped in all. An emit from
/// standard input counts the empty lines it skips.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_that_falls_behind_says_what_it_drops() {
    let nats = server().await;
    let url = nats.url();
    let mut listen = aether(&url, &["listen", "fast.>"]);
    // Its standard output is a pipe nobody reads: it fills, and the
    // listener stops taking waves off its queue.
    let mut listener = listen.spawn().expect("it starts");
    let mut errors = BufReader::new(listener.stderr.take().unwrap()).lines();
    let (said, mut lines) = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(line) = errors.next_line().await.unwrap() {
            if line.contains("listening on") {
                return (line, errors);
            }
        }
        panic!("the listener ended before listening");
    })
    .await
    .expect("it listens within 20 s");
    assert!(said.contains("fast.>"));
    let mut piped = aether(&url, &["emit", "fast.lane"]);
    piped.stdin(Stdio::piped());
    let mut emitter = piped.spawn().unwrap();
    {
        use tokio::io::AsyncWriteExt;
        let mut stdin = emitter.stdin.take().unwrap();
        let mut text = String::from("\n\n");
        for i in 0..150_000 {
            text.push_str(&format!("wave number {i} with some words\n"));
        }
        stdin.write_all(text.as_bytes()).await.unwrap();
    }
    let output = tokio::time::timeout(Duration::from_secs(60), emitter.wait_with_output())
        .await
        .expect("the emitter ends within 60 s")
        .unwrap();
    let emitted = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{emitted}");
    assert!(
        emitted.contains("emitted 150000 waves on fast.lane (2 empty lines skipped)"),
        "{emitted}"
    );
    let dropping = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if line.starts_with("dropped ") {
                return line;
            }
        }
        panic!("the listener ended without saying what it dropped");
    })
    .await
    .expect("the listener says what it drops within 10 s");
    assert!(dropping.contains("queue_full"), "{dropping}");
    // Everything emitted has reached it (the emitter flushed before it
    // exited; a moment for the server to pass the last on).
    tokio::time::sleep(Duration::from_secs(1)).await;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(listener.id().unwrap() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    // Its queue is still full: the output is read now, so it can end.
    let mut out = listener.stdout.take().unwrap();
    tokio::spawn(async move {
        let mut sink = tokio::io::sink();
        let _ = tokio::io::copy(&mut out, &mut sink).await;
    });
    let mut rest = Vec::new();
    let ended = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            rest.push(line);
        }
        listener.wait().await.unwrap()
    })
    .await
    .expect("the listener ends within 30 s of SIGINT");
    assert!(ended.success(), "{rest:?}");
    let all = rest
        .iter()
        .find(|l| l.starts_with("dropped ") && l.contains(" waves in all "))
        .unwrap_or_else(|| panic!("no total of drops: {rest:?}"));
    let summary = rest
        .iter()
        .find_map(|l| l.strip_prefix("heard "))
        .unwrap_or_else(|| panic!("no count heard: {rest:?}"));
    let numbers: Vec<u64> = summary
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse().ok())
        .collect();
    let (heard, unprinted) = (numbers[0], numbers.get(1).copied().unwrap_or(0));
    let dropped: u64 = all
        .strip_prefix("dropped ")
        .and_then(|l| l.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap();
    assert!(dropped > 0 && heard > 0, "{rest:?}");
    // Every wave emitted is accounted for: printed, dropped (counted), or
    // received and left unprinted when it stopped (said).
    assert_eq!(
        heard + dropped + unprinted,
        150_000,
        "heard {heard}, dropped {dropped}, unprinted {unprinted}: {rest:?}"
    );
}
