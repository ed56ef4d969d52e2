//! `/metrics` on an embedded aether: waves by family, histograms, drops,
//! bounded labels, hop attribution, physics, and the exposition format.

mod support;

use std::{collections::HashSet, time::Duration};

use aether_core::{
    Aether, AetherConfig, Phase, Secret, Vibrator, Wave,
    config::HoppingConfig,
    state::{HeldBy, StateConfig, StateMap},
};
use aether_gateway::{GatewayConfig, settings::HoppingBase};
use support::{config, eventually, get, label_values, sample, start};

const BOUND: Duration = Duration::from_secs(10);

async fn scrape(gateway: &aether_gateway::Gateway) -> String {
    let response = get(gateway.addr(), "/metrics").await;
    assert_eq!(response.status, 200);
    assert!(
        response
            .headers
            .contains("content-type: text/plain; version=0.0.4"),
        "{}",
        response.headers
    );
    response.body
}

#[tokio::test]
async fn counts_waves_by_family_with_histograms_and_drops() {
    let aether = Aether::default();
    let gateway = start(&aether, config()).await;
    let shop = Vibrator::create("shop", &aether).await.unwrap();
    for _ in 0..3 {
        shop.emit_wave("orders.created.eu", serde_json::json!({}))
            .await
            .unwrap();
    }
    for _ in 0..2 {
        let wave = Wave::builder("payments.settled")
            .amplitude(0.3)
            .build()
            .unwrap();
        shop.emit(wave).await.unwrap();
    }
    // Under min_amplitude: dropped at emission, never observed.
    let weak = Wave::builder("orders.noise")
        .amplitude(0.005)
        .build()
        .unwrap();
    shop.emit(weak).await.unwrap();

    let text = eventually("five waves observed", BOUND, || async {
        let text = scrape(&gateway).await;
        (sample(&text, "aether_gateway_wave_amplitude_count") == Some(5.0)).then_some(text)
    })
    .await;
    let observed = |family: &str| {
        sample(
            &text,
            &format!("aether_gateway_waves_observed_total{{family=\"{family}\"}}"),
        )
    };
    assert_eq!(observed("orders.created"), Some(3.0));
    assert_eq!(observed("payments.settled"), Some(2.0));
    assert_eq!(observed("orders.noise"), None);
    let bucket = |le: &str| {
        sample(
            &text,
            &format!("aether_gateway_wave_amplitude_bucket{{le=\"{le}\"}}"),
        )
    };
    assert_eq!(bucket("0.2"), Some(0.0));
    assert_eq!(bucket("0.3"), Some(2.0));
    assert_eq!(bucket("0.95"), Some(2.0));
    assert_eq!(bucket("1"), Some(5.0));
    assert_eq!(bucket("+Inf"), Some(5.0));
    assert_eq!(
        sample(&text, "aether_gateway_wave_latency_seconds_count"),
        Some(5.0)
    );
    let latency_sum = sample(&text, "aether_gateway_wave_latency_seconds_sum").unwrap();
    assert!((0.0..5.0).contains(&latency_sum), "{latency_sum}");
    assert_eq!(
        sample(
            &text,
            "aether_gateway_waves_observed_by_phase_total{phase=\"assert\"}"
        ),
        Some(5.0)
    );
    assert_eq!(sample(&text, "aether_waves_emitted_total"), Some(6.0));
    assert_eq!(
        sample(&text, "aether_waves_dropped_total{reason=\"expired\"}"),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, "aether_nats_connection_state{state=\"embedded\"}"),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, "aether_build_info{version=\"0.1.0\"}"),
        Some(1.0)
    );
    assert!(sample(&text, "process_resident_memory_bytes").unwrap() > 0.0);
    assert!(sample(&text, "process_virtual_memory_bytes").unwrap() > 0.0);
    gateway.stop().await.unwrap();
}

/// Rate-limited emits, the reliability layer's retries, timeouts and
/// breaker, and a wave handler's panics are counted by the aether and
/// exported.
#[tokio::test]
async fn rate_limits_and_reliability_are_exported() {
    use aether_core::{
        RateLimit,
        reliable::{ReliabilityConfig, Reliable},
    };
    let aether = Aether::default();
    let gateway = start(&aether, config()).await;
    let limit = RateLimit::per_second(0.001).unwrap().with_burst(1).unwrap();
    let shop = Vibrator::builder("shop")
        .rate_limit(limit)
        .create(&aether)
        .await
        .unwrap();
    shop.emit_wave("orders.created", serde_json::json!({}))
        .await
        .unwrap();
    for _ in 0..2 {
        let refused = shop
            .emit_wave("orders.created", serde_json::json!({}))
            .await;
        assert!(refused.is_err());
    }
    shop.set_rate_limit(None);
    let mut fragile = Vibrator::builder("fragile")
        .on_wave(|_| panic!("a handler that fails on every wave"))
        .create(&aether)
        .await
        .unwrap();
    fragile.resonate_on("fragile.in").await.unwrap();
    for _ in 0..2 {
        shop.emit_wave("fragile.in", 1).await.unwrap();
    }
    assert_eq!(fragile.stats().handler_panics, 2);
    let reliability = ReliabilityConfig {
        attempts: 2,
        base_backoff_ms: 1,
        max_backoff_ms: 1,
        timeout_ms: 50,
        breaker_failures: 2,
        ..ReliabilityConfig::default()
    };
    let reliable = Reliable::new(reliability, &aether).unwrap();
    // The gateway's observer hears the request and never answers: two
    // tries time out, and the breaker opens.
    let ask = Wave::builder("pricing.quote").build().unwrap();
    assert!(reliable.request(&shop, ask).await.is_err());
    let ask = Wave::builder("pricing.quote").build().unwrap();
    assert!(reliable.request(&shop, ask).await.is_err()); // the breaker is open
    let text = scrape(&gateway).await;
    for (name, value) in [
        ("aether_emits_rate_limited_total", 2.0),
        ("aether_handler_panics_total", 2.0),
        ("aether_reliability_retries_total", 1.0),
        ("aether_reliability_timeouts_total", 2.0),
        ("aether_reliability_breaker_opens_total", 1.0),
        ("aether_reliability_breaker_rejections_total", 1.0),
    ] {
        assert_eq!(sample(&text, name), Some(value), "{name}: {text}");
    }
}

#[tokio::test]
async fn the_observer_sheds_and_counts_instead_of_slowing_the_bus() {
    // One thread: the observer cannot run while the shop emits.
    let aether = Aether::default();
    let gateway = start(
        &aether,
        GatewayConfig {
            observer_queue_capacity: 8,
            ..config()
        },
    )
    .await;
    let shop = Vibrator::create("shop", &aether).await.unwrap();
    for n in 0..100u32 {
        shop.emit_wave("orders.created", n).await.unwrap();
    }
    let text = eventually("the drops counted", BOUND, || async {
        let text = scrape(&gateway).await;
        let dropped = sample(
            &text,
            "aether_gateway_observer_dropped_total{reason=\"queue_full\"}",
        );
        (dropped == Some(92.0)).then_some(text)
    })
    .await;
    assert_eq!(
        sample(
            &text,
            "aether_gateway_waves_observed_total{family=\"orders.created\"}"
        ),
        Some(8.0)
    );
    assert_eq!(sample(&text, "aether_waves_emitted_total"), Some(100.0));
    assert_eq!(
        sample(&text, "aether_waves_dropped_total{reason=\"queue_full\"}"),
        Some(92.0)
    );
    assert_eq!(gateway.snapshot().observer_dropped, 92);
    gateway.stop().await.unwrap();
}

#[tokio::test]
async fn label_cardinality_is_bounded() {
    let aether = Aether::default();
    let gateway = start(
        &aether,
        GatewayConfig {
            max_channel_families: 10,
            family_depth: 1,
            ..config()
        },
    )
    .await;
    let shop = Vibrator::create("shop", &aether).await.unwrap();
    for n in 0..500 {
        shop.emit_wave(format!("family{n}.created"), n)
            .await
            .unwrap();
    }
    // The families gauge is set at each snapshot (`snapshot_interval_ms`),
    // the counters at each wave.
    let text = eventually("500 waves observed and a snapshot after", BOUND, || async {
        let text = scrape(&gateway).await;
        (sample(&text, "aether_gateway_wave_amplitude_count") == Some(500.0)
            && sample(&text, "aether_gateway_channel_families") == Some(11.0))
        .then_some(text)
    })
    .await;
    let families = label_values(&text, "aether_gateway_waves_observed_total", "family");
    assert_eq!(families.len(), 11, "{families:?}");
    assert!(families.contains(&"other".to_string()));
    let total: f64 = families
        .iter()
        .map(|f| {
            sample(
                &text,
                &format!("aether_gateway_waves_observed_total{{family=\"{f}\"}}"),
            )
            .unwrap()
        })
        .sum();
    assert_eq!(total, 500.0);
    assert_eq!(
        sample(
            &text,
            "aether_gateway_waves_observed_total{family=\"other\"}"
        ),
        Some(490.0)
    );
    assert_eq!(sample(&text, "aether_gateway_channel_families"), Some(11.0));
    gateway.stop().await.unwrap();
}

#[tokio::test]
async fn hopping_waves_count_under_their_base_with_the_secret() {
    let aether = Aether::new(AetherConfig {
        hopping: HoppingConfig {
            secret: Some(Secret::new("sixteen byte key")),
            ..Default::default()
        },
        ..Default::default()
    })
    .unwrap();
    let gateway = start(
        &aether,
        GatewayConfig {
            hopping: vec![HoppingBase {
                base: "orders.created".into(),
                hop_count: 4,
            }],
            ..config()
        },
    )
    .await;
    let sender = Vibrator::create("sender", &aether).await.unwrap();
    for n in 0..3u32 {
        let wave = Wave::builder("orders.created").json(&n).build().unwrap();
        sender.emit_hopping(wave, 4).await.unwrap();
    }
    for n in 0..2u32 {
        let wave = Wave::builder("payments.secret").json(&n).build().unwrap();
        sender.emit_hopping(wave, 4).await.unwrap();
    }
    let text = eventually("five hopping waves observed", BOUND, || async {
        let text = scrape(&gateway).await;
        (sample(&text, "aether_gateway_wave_amplitude_count") == Some(5.0)).then_some(text)
    })
    .await;
    let mut families = label_values(&text, "aether_gateway_waves_observed_total", "family");
    families.sort();
    assert_eq!(families, ["hopping", "orders.created"]);
    assert_eq!(
        sample(
            &text,
            "aether_gateway_waves_observed_total{family=\"orders.created\"}"
        ),
        Some(3.0)
    );
    assert_eq!(
        sample(
            &text,
            "aether_gateway_waves_observed_total{family=\"hopping\"}"
        ),
        Some(2.0)
    );
    gateway.stop().await.unwrap();
}

#[tokio::test]
async fn interference_and_resonance_are_exported() {
    let aether = Aether::default();
    let gateway = start(&aether, config()).await;
    let mut inventory = Vibrator::create("inventory", &aether).await.unwrap();
    inventory.resonate_on("orders.*").await.unwrap();
    let review = Vibrator::create("review", &aether).await.unwrap();
    for phase in [Phase::ASSERT, Phase::RETRACT] {
        let verdict = Wave::builder("orders.review")
            .correlation_key("order-42")
            .phase(phase)
            .build()
            .unwrap();
        review.emit(verdict).await.unwrap();
    }
    let text = eventually("a cancellation and two edges", BOUND, || async {
        let text = scrape(&gateway).await;
        let cancellations = sample(
            &text,
            "aether_interference_events_total{pattern=\"cancellation\"}",
        );
        let edges = sample(&text, "aether_resonance_edges");
        (cancellations == Some(1.0) && edges == Some(2.0)).then_some(text)
    })
    .await;
    let emitters = label_values(
        &text,
        "aether_resonance_edge_deliveries_per_second",
        "emitter",
    );
    assert_eq!(emitters, ["review", "review"]);
    let resonators: HashSet<String> = label_values(
        &text,
        "aether_resonance_edge_deliveries_per_second",
        "resonator",
    )
    .into_iter()
    .collect();
    assert!(resonators.contains("inventory") && resonators.contains("gateway"));
    assert_eq!(
        sample(
            &text,
            "aether_gateway_waves_observed_by_phase_total{phase=\"retract\"}"
        ),
        Some(1.0)
    );
    let snapshot = eventually("the event on the dashboard", BOUND, || async {
        let snapshot = gateway.snapshot();
        (!snapshot.interference.is_empty()).then_some(snapshot)
    })
    .await;
    let event = &snapshot.interference[0];
    assert_eq!(
        (event.pattern, event.correlation_key.as_str()),
        ("cancellation", "order-42")
    );
    assert_eq!(event.sources, ["review"]);
    gateway.stop().await.unwrap();
}

/// Every sample belongs to a family with HELP and TYPE; counters end in
/// `_total`; histograms have their `+Inf` bucket equal to their count; no
/// series twice. `promtool check metrics` too, when installed.
#[tokio::test]
async fn the_exposition_passes_the_format_checks() {
    let aether = Aether::default();
    let gateway = start(&aether, config()).await;
    let mut inventory = Vibrator::create("inventory", &aether).await.unwrap();
    inventory.resonate_on("orders.*").await.unwrap();
    let shop = Vibrator::create("shop", &aether).await.unwrap();
    for n in 0..20u32 {
        let wave = Wave::builder("orders.created")
            .correlation_key(format!("order-{}", n / 2))
            .amplitude(0.05 * f64::from(n % 20) + 0.01)
            .json(&n)
            .build()
            .unwrap();
        shop.emit(wave).await.unwrap();
    }
    let text = eventually("edges and events", BOUND, || async {
        let text = scrape(&gateway).await;
        let edges = sample(&text, "aether_resonance_edges").unwrap_or(0.0);
        let observed = sample(&text, "aether_gateway_wave_amplitude_count").unwrap_or(0.0);
        (edges >= 2.0 && observed == 20.0).then_some(text)
    })
    .await;
    check_exposition(&text);
    promtool_check(&text);
    gateway.stop().await.unwrap();
}

fn check_exposition(text: &str) {
    use std::collections::HashMap;
    let mut help = HashSet::new();
    let mut types: HashMap<String, String> = HashMap::new();
    let mut series = HashSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, text) = rest.split_once(' ').expect("HELP name text");
            assert!(!text.trim().is_empty(), "empty HELP for {name}");
            assert!(help.insert(name.to_string()), "HELP twice for {name}");
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE name kind");
            assert!(
                ["counter", "gauge", "histogram"].contains(&kind),
                "{name}: {kind}"
            );
            assert!(help.contains(name), "TYPE before HELP for {name}");
            if kind == "counter" {
                assert!(
                    name.ends_with("_total"),
                    "counter {name} must end in _total"
                );
            } else {
                assert!(
                    !name.ends_with("_total"),
                    "{kind} {name} must not end in _total"
                );
            }
            types.insert(name.to_string(), kind.to_string());
            continue;
        }
        assert!(!line.starts_with('#'), "unexpected comment: {line}");
        if line.is_empty() {
            continue;
        }
        let (key, value) = line.rsplit_once(' ').expect("sample value");
        value
            .parse::<f64>()
            .unwrap_or_else(|_| panic!("bad value: {line}"));
        assert!(series.insert(key.to_string()), "series twice: {key}");
        let name = key.split('{').next().unwrap();
        assert!(
            name.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
            "{name} is not snake_case"
        );
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| {
                let base = name.strip_suffix(suffix)?;
                (types.get(base).map(String::as_str) == Some("histogram")).then_some(base)
            })
            .unwrap_or(name);
        assert!(types.contains_key(family), "{name} has no TYPE");
        for unit in ["milliseconds", "microseconds", "kilobytes", "megabytes"] {
            assert!(!name.contains(unit), "{name}: not a base unit");
        }
    }
    for (name, kind) in &types {
        if kind == "histogram" {
            let inf = sample(text, &format!("{name}_bucket{{le=\"+Inf\"}}"));
            assert_eq!(inf, sample(text, &format!("{name}_count")), "{name}");
            assert!(inf.is_some(), "{name} has no +Inf bucket");
        }
    }
}

fn promtool_check(text: &str) {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(_) => {
            eprintln!(
                "note: promtool is not installed, so `promtool check metrics` was skipped \
                 (Debian: apt-get install prometheus); the format was checked by hand"
            );
            return;
        }
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_with_keeper_maps_keeps_them_and_exports_its_counts() {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = AetherConfig::default();
    settings.state.dir = Some(dir.path().into());
    settings.state.keeper.maps = vec!["home".into(), "garage".into()];
    settings.state.keeper.max_maps = 1;
    let aether = Aether::new(settings).unwrap();
    let gateway = start(&aether, config()).await;
    // The other replicas in memory: the directory is the gateway's.
    let open = |name: &'static str| {
        StateMap::builder(name)
            .config(StateConfig::default())
            .open(&aether)
    };
    let script = open("home").await.unwrap();
    script.set("hall.light", "on").await.unwrap();
    let held = script
        .flush_to(HeldBy::keepers(1), Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(held.by, ["gateway"]);
    // The keeper's replica answers catch-ups once its own open is done (it
    // acknowledges writes before that).
    eventually("the keeper keeps the map", BOUND, || async {
        (sample(&scrape(&gateway).await, "aether_keeper_maps") == Some(1.0)).then_some(())
    })
    .await;
    script.close().await;
    // Held on the gateway's disk: a late replica catches up from it.
    let late = open("home").await.unwrap();
    assert_eq!(late.get("hall.light").as_deref(), Some(&b"on"[..]));
    // A second map the patterns name, past max_maps: counted.
    let garage = open("garage").await.unwrap();
    garage.set("door", "shut").await.unwrap();
    let text = eventually("the keeper's counts exported", BOUND, || async {
        let text = scrape(&gateway).await;
        (sample(&text, "aether_keeper_maps") == Some(1.0)
            && sample(&text, "aether_keeper_refused_maps_total") == Some(1.0))
        .then_some(text)
    })
    .await;
    assert_eq!(sample(&text, "aether_keeper_failed_maps_total"), Some(0.0));
}
