//! The gateway's journal with real processes: the `aether-gateway` program
//! journals the waves of a NATS bus, is killed with SIGKILL mid-stream,
//! and restarted: its journal holds exactly a prefix of what was emitted,
//! in order, with no gap and no damaged record; its counters resume; and
//! `aether-gateway replay` gives back exactly those waves, one hop further.

mod support;

use std::{
    net::SocketAddr,
    path::Path,
    process::Stdio,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use aether_core::{Aether, AetherConfig, Vibrator, WaveId, config::NatsConfig};
use aether_gateway::journal::decode_record;
use aether_journal::Reader;
use aether_testkit::NatsServer;
use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};
use support::{eventually, get, sample};
use tokio::process::Child;

const PROGRAM: &str = env!("CARGO_BIN_EXE_aether-gateway");
const BOUND: Duration = Duration::from_secs(20);
const ORDERS: &str = "aether_gateway_waves_observed_total{family=\"orders.created\"}";

async fn connect(url: &str) -> Aether {
    Aether::connect(AetherConfig {
        nats: NatsConfig {
            urls: vec![url.to_string()],
            reconnect_delay_max: Duration::from_millis(100),
            ..Default::default()
        },
        ..Default::default()
    })
    .await
    .expect("connects to the test server")
}

/// The gateway program on `config_dir` over the NATS server at `url`, and
/// the address it serves.
async fn start_gateway(config_dir: &Path, url: &str) -> (Child, SocketAddr) {
    let mut command = aether_testkit::program(PROGRAM);
    command
        .arg("--config-dir")
        .arg(config_dir)
        .arg("--nats")
        .arg(url)
        .stderr(Stdio::inherit());
    support::spawn_serving(command, BOUND).await
}

fn pid(child: &Child) -> Pid {
    Pid::from_raw(i32::try_from(child.id().expect("running")).expect("a pid"))
}

/// The valid records of the journal in `dir`, as waves, read without
/// changing anything.
fn journaled(dir: &Path) -> Vec<aether_core::Wave> {
    let reader = Reader::open(dir).expect("the journal reads");
    reader
        .records(0)
        .map(|record| decode_record(&record.expect("readable").payload).expect("a wave"))
        .collect()
}

/// The probe waves a dashboard snapshot counted, less one.
fn probes(snapshot: &serde_json::Value) -> u64 {
    let families = snapshot["families"].as_array().unwrap();
    let probe = families
        .iter()
        .find(|f| f["family"] == "probe.ping")
        .unwrap();
    probe["waves"].as_u64().unwrap() - 1
}

/// The sum of every series of `prefix` (a metric name and its `{`).
fn events(text: &str, prefix: &str) -> f64 {
    text.lines()
        .filter(|line| line.starts_with(prefix))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn metric(addr: SocketAddr, series: &str) -> Option<f64> {
    sample(&get(addr, "/metrics").await.body, series)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_mid_stream_it_keeps_a_prefix_resumes_its_counters_and_replays_it() {
    tokio::time::timeout(Duration::from_secs(120), scenario())
        .await
        .expect("the scenario ends within 120 s");
}

async fn scenario() {
    let server = NatsServer::start().await.expect("nats-server starts");
    let url = server.url();
    let settings = tempfile::tempdir().unwrap();
    let journal_dir = settings.path().join("journal");
    std::fs::write(
        settings.path().join("default.toml"),
        format!(
            "[gateway]\nlisten = \"127.0.0.1:0\"\nsnapshot_interval_ms = 100\n\
             [gateway.journal]\nenabled = true\ndir = {:?}\nchannels = [\"orders.*\"]\n\
             fsync = \"never\"\nsnapshot_interval_ms = 200\nsegment_bytes = 65536\n",
            journal_dir.to_str().unwrap()
        ),
    )
    .unwrap();
    let (gateway, addr) = start_gateway(settings.path(), &url).await;

    // The shop emits numbered orders once the gateway hears the bus.
    let shop_aether = connect(&url).await;
    let shop = Vibrator::create("shop", &shop_aether).await.unwrap();
    eventually("the gateway hears the bus", BOUND, || async {
        shop.emit_wave("probe.ping", 0).await.unwrap();
        let seen = metric(
            addr,
            "aether_gateway_waves_observed_total{family=\"probe.ping\"}",
        )
        .await;
        seen.is_some_and(|n| n >= 1.0).then_some(())
    })
    .await;
    let emitted: Arc<Mutex<Vec<WaveId>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let emitting = {
        let (emitted, stop) = (emitted.clone(), stop.clone());
        tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let id = shop.emit_wave("orders.created", n).await.expect("emitted");
                emitted.lock().unwrap().push(id);
                n += 1;
                if n.is_multiple_of(20) {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            }
            shop
        })
    };

    // Mid-stream: a snapshot written, hundreds of waves observed and on
    // disk; then SIGKILL while the waves still flow.
    let observed_before = eventually("waves observed and a snapshot", BOUND, || async {
        let text = get(addr, "/metrics").await.body;
        let observed = sample(&text, ORDERS).unwrap_or(0.0);
        let snapshots = sample(&text, "aether_gateway_journal_snapshots_total").unwrap_or(0.0);
        (observed >= 500.0 && snapshots >= 2.0).then_some(observed as usize)
    })
    .await;
    // Interference counted so far (waves without a key correlate on their
    // channel), then two more snapshots, so that one holds at least that.
    let text = get(addr, "/metrics").await.body;
    let engine_events = events(&text, "aether_interference_events_total{");
    let gateway_events = events(&text, "aether_gateway_interference_events_total{");
    assert!(engine_events > 0.0 && gateway_events > 0.0, "{text}");
    let snapshots = sample(&text, "aether_gateway_journal_snapshots_total").unwrap_or(0.0);
    eventually("two more snapshots", BOUND, || async {
        let text = get(addr, "/metrics").await.body;
        (sample(&text, "aether_gateway_journal_snapshots_total").unwrap_or(0.0) >= snapshots + 2.0)
            .then_some(())
    })
    .await;
    eventually("the observed waves in the journal", BOUND, || async {
        (journaled(&journal_dir).len() >= observed_before).then_some(())
    })
    .await;
    kill(pid(&gateway), Signal::SIGKILL).unwrap();
    let mut gateway = gateway;
    let status = tokio::time::timeout(BOUND, gateway.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(!status.success(), "killed: {status}");
    tokio::time::sleep(Duration::from_millis(50)).await; // a few more waves nobody journals
    stop.store(true, Ordering::Relaxed);
    let _shop = emitting.await.unwrap();
    let emitted = emitted.lock().unwrap().clone();

    // What the journal holds is a prefix of what was emitted: in order, no
    // gap, every record whole.
    let waves = journaled(&journal_dir);
    assert!(
        waves.len() >= observed_before,
        "{} < {observed_before}",
        waves.len()
    );
    assert!(waves.len() < emitted.len(), "the kill came mid-stream");
    for (n, wave) in waves.iter().enumerate() {
        assert_eq!(wave.id(), emitted[n], "record {n}");
        assert_eq!(wave.channel().as_str(), "orders.created");
        assert_eq!(wave.json::<u64>().unwrap(), n as u64, "record {n}");
        assert_eq!(wave.source(), Some("shop"));
        assert_eq!(wave.propagation_count(), 0);
    }
    let kept = waves.len();

    // Restarted, it resumes its counters: the snapshot plus the journal
    // after it, exactly what was journaled.
    let (gateway, addr) = start_gateway(settings.path(), &url).await;
    let text = get(addr, "/metrics").await.body;
    assert_eq!(sample(&text, ORDERS), Some(kept as f64), "{text}");
    assert!(sample(&text, ORDERS).unwrap() >= observed_before as f64);
    assert!(
        sample(
            &text,
            "aether_gateway_waves_observed_total{family=\"probe.ping\"}"
        )
        .is_some_and(|n| n >= 1.0),
        "counted before the last snapshot, not journaled"
    );
    assert_eq!(
        sample(&text, "aether_gateway_journal_records_total"),
        Some(kept as f64)
    );
    // The interference counters start again, as Prometheus expects of a
    // restarted process (one restored a little below what was scraped
    // before the kill would read as a reset with a huge increase); the
    // dashboard's totals go on from the last snapshot.
    for (series, before) in [
        ("aether_interference_events_total{", engine_events),
        ("aether_gateway_interference_events_total{", gateway_events),
    ] {
        let after = events(&text, series);
        assert!(
            after < before,
            "{series}: {after} after the restart, {before} before"
        );
    }
    assert_eq!(
        sample(
            &text,
            "aether_gateway_journal_dropped_total{reason=\"queue_full\"}"
        ),
        Some(0.0)
    );
    let snapshot = eventually("the dashboard's first snapshot", BOUND, || async {
        let body = get(addr, "/snapshot").await.body;
        let snapshot: serde_json::Value = serde_json::from_str(&body).unwrap();
        (snapshot["at_ms"].as_u64() > Some(0)).then_some(snapshot)
    })
    .await;
    assert_eq!(
        snapshot["waves_observed"].as_u64(),
        Some(kept as u64 + 1 + probes(&snapshot))
    );
    let totals: f64 = snapshot["interference_totals"]
        .as_object()
        .unwrap()
        .values()
        .map(|n| n.as_f64().unwrap())
        .sum();
    assert!(
        totals >= engine_events,
        "{totals} on the dashboard, {engine_events} before the kill"
    );
    // No order flowed since the restart: the gateway's own edge is the
    // previous run's, each order it journaled counted once (the waves it
    // had taken when the last snapshot was written, then the journal
    // after it), however far ahead of the journal the engine counted.
    let edges = snapshot["edges"].as_array().unwrap();
    assert!(
        edges.iter().any(|e| e["emitter"] == "shop"
            && e["resonator"] == "gateway"
            && e["channel"] == "orders.created"
            && e["deliveries"].as_u64() == Some(kept as u64)),
        "the resonance graph resumes with {kept} deliveries: {edges:?}"
    );
    kill(pid(&gateway), Signal::SIGTERM).unwrap();
    let mut gateway = gateway;
    let status = tokio::time::timeout(BOUND, gateway.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status}");
    let snapshot = aether_journal::read_snapshot(&journal_dir)
        .unwrap()
        .unwrap();
    assert_eq!(
        snapshot.position, kept as u64,
        "a clean stop snapshots everything"
    );

    // Replayed, a listener gets exactly those waves again, one hop further.
    let listener_aether = connect(&url).await;
    let mut listener = Vibrator::builder("listener")
        .queue_capacity(100_000)
        .create(&listener_aether)
        .await
        .unwrap();
    listener.resonate_on("orders.*").await.unwrap();
    let probe_aether = connect(&url).await;
    let probe = Vibrator::create("probe", &probe_aether).await.unwrap();
    let deadline = tokio::time::Instant::now() + BOUND;
    loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the listener hears the bus"
        );
        probe.emit_wave("orders.probe", 0).await.unwrap();
        let heard = tokio::time::timeout(Duration::from_millis(100), listener.receive()).await;
        if heard.is_ok_and(|w| w.is_some()) {
            break;
        }
    }
    let output = aether_testkit::program(PROGRAM)
        .arg("--config-dir")
        .arg(settings.path())
        .args(["replay", "--nats", &url, "--channels", "orders.created"])
        .args(["--from", "0", "--to", "9999999999999"])
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains(&format!("replayed {kept} waves (0 refused)")),
        "{stdout}"
    );
    let mut n = 0;
    while n < kept {
        let wave = tokio::time::timeout(BOUND, listener.receive())
            .await
            .expect("the replayed waves within the bound")
            .expect("the listener is open");
        if wave.channel().as_str() == "orders.probe" {
            continue;
        }
        assert_eq!(wave.id(), emitted[n], "replayed {n}");
        assert_eq!(wave.json::<u64>().unwrap(), n as u64);
        assert_eq!(wave.source(), Some("shop"));
        assert_eq!(wave.propagation_count(), 1, "a re-emission is one hop");
        assert!(
            (wave.amplitude().value() - 0.95).abs() < 1e-9,
            "attenuated once"
        );
        n += 1;
    }
    // Nothing more than what was journaled.
    let extra = tokio::time::timeout(Duration::from_millis(300), listener.receive()).await;
    assert!(
        extra.map_or(true, |w| w
            .is_some_and(|w| w.channel().as_str() == "orders.probe")),
        "no wave beyond the journal"
    );

    // `journal` counts them without emitting.
    let output = aether_testkit::program(PROGRAM)
        .arg("--config-dir")
        .arg(settings.path())
        .args(["journal", "--channels", "orders.*"])
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success());
    assert!(
        stdout.contains(&format!("{kept} waves selected of {kept} records read")),
        "{stdout}"
    );
}

/// In one process: the writer's queue is bounded and counts what it drops
/// (every emit succeeds regardless), only the configured channels are
/// journaled, and a clean stop snapshots everything written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_journal_drops_and_counts_and_never_slows_the_bus() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = support::config();
    config.observer_rest_ms = 0;
    config.journal = aether_gateway::JournalConfig {
        enabled: true,
        dir: dir.path().to_path_buf(),
        channels: vec!["orders.*".into()],
        fsync: aether_gateway::settings::FsyncMode::Always,
        queue_capacity: 1,
        ..Default::default()
    };
    let aether = Aether::default();
    let gateway = support::start(&aether, config).await;
    let shop = Vibrator::create("shop", &aether).await.unwrap();
    for n in 0..2000u64 {
        shop.emit_wave("orders.created", n)
            .await
            .expect("never refused");
        shop.emit_wave("stock.changed", n)
            .await
            .expect("never refused");
    }
    eventually("every wave observed", BOUND, || async {
        (sample(&gateway.metrics_text(), ORDERS) == Some(2000.0)).then_some(())
    })
    .await;
    let metrics = gateway.metrics().clone();
    gateway.stop().await.unwrap();
    // Read once stopped: a scrape reads each metric at its own moment.
    let text = metrics.render();
    let written = sample(&text, "aether_gateway_journal_records_total").unwrap();
    let dropped = sample(
        &text,
        "aether_gateway_journal_dropped_total{reason=\"queue_full\"}",
    )
    .unwrap();
    assert!(dropped > 0.0, "a queue of 1 before fsyncs drops");
    let waves = journaled(dir.path());
    assert!(
        waves
            .iter()
            .all(|w| w.channel().as_str() == "orders.created")
    );
    assert_eq!(waves.len() as f64, written);
    assert_eq!(written + dropped, 2000.0, "every wave written or counted");
    let snapshot = aether_journal::read_snapshot(dir.path()).unwrap().unwrap();
    assert_eq!(snapshot.position, waves.len() as u64);
    // Journaled in order, with gaps only where drops were counted.
    let numbers: Vec<u64> = waves.iter().map(|w| w.json().unwrap()).collect();
    assert!(numbers.windows(2).all(|p| p[0] < p[1]), "in order");
}

/// A gateway that holds a sealed channel's key journals that channel's
/// payloads sealed, as they travelled: the secret is nowhere in the
/// journal's files, the record decodes as a sealed wave, and a replay with
/// the key gives the payload back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sealed_payloads_stay_sealed_in_the_journal() {
    tokio::time::timeout(Duration::from_secs(60), async {
        const KEY: &str = "5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed";
        const SECRET: &str = "the-combination-is-1234";
        let server = NatsServer::start().await.expect("nats-server starts");
        let url = server.url();
        let settings = tempfile::tempdir().unwrap();
        let journal_dir = settings.path().join("journal");
        let sealing =
            format!("[[aether.security.encryption]]\nchannels = [\"vault.*\"]\nkey = \"{KEY}\"\n");
        std::fs::write(
            settings.path().join("default.toml"),
            format!(
                "{sealing}[gateway]\nlisten = \"127.0.0.1:0\"\nsnapshot_interval_ms = 100\n\
                 [gateway.journal]\nenabled = true\ndir = {:?}\nchannels = [\"vault.*\"]\n\
                 fsync = \"always\"\n",
                journal_dir.to_str().unwrap()
            ),
        )
        .unwrap();
        let (mut gateway, addr) = start_gateway(settings.path(), &url).await;
        let mut config = AetherConfig {
            nats: NatsConfig {
                urls: vec![url.clone()],
                reconnect_delay_max: Duration::from_millis(100),
                ..Default::default()
            },
            ..Default::default()
        };
        config.security.encryption = vec![aether_core::config::EncryptionRule {
            channels: vec!["vault.*".into()],
            key: Some(aether_core::Secret::new(KEY)),
            key_file: None,
            key_env: None,
        }];
        let aether = Aether::connect(config.clone()).await.unwrap();
        let shop = Vibrator::create("shop", &aether).await.unwrap();
        eventually("the gateway journals a sealed wave", BOUND, || async {
            shop.emit_wave("vault.opened", SECRET).await.unwrap();
            let seen = metric(addr, "aether_gateway_journal_records_total").await;
            seen.is_some_and(|n| n >= 1.0).then_some(())
        })
        .await;
        gateway.kill().await.unwrap();
        let mut files = Vec::new();
        for entry in std::fs::read_dir(&journal_dir).unwrap() {
            files.push(std::fs::read(entry.unwrap().path()).unwrap());
        }
        assert!(!files.is_empty());
        for bytes in &files {
            assert!(
                !bytes.windows(SECRET.len()).any(|w| w == SECRET.as_bytes()),
                "the secret payload is in the journal in clear"
            );
        }
        let waves = journaled(&journal_dir);
        assert!(!waves.is_empty());
        assert!(waves.iter().all(|w| w.is_sealed()), "journaled sealed");

        // Replayed by a gateway with the key: the payload, opened.
        let mut listener = Vibrator::create("listener", &aether).await.unwrap();
        listener.resonate_on("vault.*").await.unwrap();
        let output = aether_testkit::program(PROGRAM)
            .arg("--config-dir")
            .arg(settings.path())
            .args(["replay", "--nats", &url, "--channels", "vault.*"])
            .args(["--from", "0", "--to", "9999999999999"])
            .output()
            .await
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "{stdout}");
        assert!(stdout.contains("0 refused"), "{stdout}");
        let wave = tokio::time::timeout(BOUND, listener.receive())
            .await
            .expect("the replayed wave")
            .unwrap();
        assert_eq!(wave.json::<String>().unwrap(), SECRET);
    })
    .await
    .expect("bounded");
}
