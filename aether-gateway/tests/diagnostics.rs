//! Physics as diagnostics, end to end: the sample flow as processes over a
//! real nats-server, the gateway observing it, and a real Prometheus
//! scraping the gateway every second with the shipped alerting rules
//! (`config/prometheus/aether-alerts.yml`).
//!
//! With `--faults`, each fault (a retry storm, duplicates, a second decider
//! answering the other way) is found by the gateway's physics engine, shown
//! on its dashboard with the waves involved, exported, and fires its alert.
//! The plain flow raises no event and no alert. Every metric the shipped
//! rules and Grafana dashboard query is one the gateway exports.

mod support;

use std::{
    collections::BTreeSet,
    net::{SocketAddr, TcpListener},
    path::Path,
    process::Stdio,
    time::Duration,
};

use aether_testkit::NatsServer;
use serde_json::Value;
use support::{
    eventually, get,
    programs::{gateway, programs, service, shipped_bus, stop_gateway, summary},
    sample,
};
use tokio::process::Child;

const BOUND: Duration = Duration::from_secs(30);
const CONFIG: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../config");

/// The pattern each fault makes, and the alert it fires.
const FAULTS: [(&str, &str); 3] = [
    ("standing_wave", "AetherRetryStorm"),
    ("constructive", "AetherDuplicateMessages"),
    ("cancellation", "AetherConflictingMessages"),
];

/// A Prometheus scraping `gateway` every second, evaluating the shipped
/// rules every second; killed when dropped.
struct Prometheus {
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    async fn start(gateway: SocketAddr) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let rules = Path::new(CONFIG).join("prometheus/aether-alerts.yml");
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             rule_files:\n  - {rules}\n\
             scrape_configs:\n  - job_name: aether-gateway\n    honor_labels: true\n\
             \x20   static_configs:\n      - targets: [\"{gateway}\"]\n",
            rules = rules.display(),
        );
        std::fs::write(dir.path().join("prometheus.yml"), config).unwrap();
        let addr = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let child = tokio::process::Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                dir.path().join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("prometheus (Debian's package prometheus; .ci/test installs it)");
        eventually("prometheus is ready", BOUND, || async {
            let ready = tokio::net::TcpStream::connect(addr).await.is_ok()
                && get(addr, "/-/ready").await.status == 200;
            ready.then_some(())
        })
        .await;
        Self {
            child,
            addr,
            _dir: dir,
        }
    }

    /// The alerts now, as (name, state).
    async fn alerts(&self) -> BTreeSet<(String, String)> {
        let body: Value = serde_json::from_str(&get(self.addr, "/api/v1/alerts").await.body)
            .expect("JSON from /api/v1/alerts");
        body["data"]["alerts"]
            .as_array()
            .expect("alerts")
            .iter()
            .map(|alert| {
                (
                    alert["labels"]["alertname"].as_str().unwrap().to_string(),
                    alert["state"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    }

    /// The value of a PromQL `query` (URL-encoded) that gives one number,
    /// if it gives one.
    async fn value(&self, query: &str) -> Option<f64> {
        let body = get(self.addr, &format!("/api/v1/query?query={query}"))
            .await
            .body;
        let body: Value = serde_json::from_str(&body).unwrap();
        body["data"]["result"][0]["value"][1]
            .as_str()
            .and_then(|n| n.parse().ok())
    }

    /// How many times it scraped the gateway successfully.
    async fn scrapes(&self) -> u64 {
        self.value("sum_over_time(up%5B1h%5D)").await.unwrap_or(0.0) as u64
    }

    /// Waits until it has scraped the gateway's three interference
    /// counters (at 0 before any fault), and checks that it loaded the
    /// shipped rules, every one healthy.
    async fn watching(&self) {
        eventually("prometheus scrapes the gateway", BOUND, || async {
            let series = self.value("count(aether_interference_events_total)").await;
            (series == Some(3.0)).then_some(())
        })
        .await;
        let body: Value =
            serde_json::from_str(&get(self.addr, "/api/v1/rules").await.body).unwrap();
        let rules: Vec<&Value> = body["data"]["groups"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|group| group["rules"].as_array().unwrap())
            .collect();
        let shipped = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../config/prometheus/aether-alerts.yml"
        ))
        .unwrap()
        .lines()
        .filter(|l| l.trim().starts_with("- alert: "))
        .count();
        assert_eq!(rules.len(), shipped, "{body}");
        assert!(rules.iter().all(|rule| rule["health"] == "ok"), "{body}");
    }
}

/// Everything a flow needs: a nats-server with JetStream, the shipped
/// settings, the gateway, beta and a Prometheus.
struct Flow {
    _server: NatsServer,
    url: String,
    dir: tempfile::TempDir,
    gateway: Child,
    addr: SocketAddr,
    beta: Child,
    prometheus: Prometheus,
    alpha_bin: String,
}

impl Flow {
    async fn start(faults: bool) -> Self {
        let (beta_bin, alpha_bin) = programs().await;
        let (server, dir) = shipped_bus().await;
        let url = server.url();
        let (gateway, addr) = gateway(dir.path(), &url).await;
        let args: &[&str] = if faults { &["--faults"] } else { &[] };
        let beta = service(&beta_bin, dir.path(), &url, "beta-1", args);
        eventually("beta reports to the gateway", BOUND, || async {
            let text = get(addr, "/metrics").await.body;
            sample(&text, "aether_instance_up{instance=\"beta-1\"}")
        })
        .await;
        let prometheus = Prometheus::start(addr).await;
        prometheus.watching().await;
        Self {
            _server: server,
            url,
            dir,
            gateway,
            addr,
            beta,
            prometheus,
            alpha_bin,
        }
    }

    /// Runs alpha for `count` orders at 50 a second and returns its summary.
    async fn order(&self, count: u64, faults: bool) -> std::collections::HashMap<String, u64> {
        let count = count.to_string();
        let mut args = vec!["--rate", "50", "--count", &count];
        if faults {
            args.push("--faults");
        }
        let alpha = service(
            &self.alpha_bin,
            self.dir.path(),
            &self.url,
            "alpha-1",
            &args,
        );
        summary(alpha, "service-alpha:", false).await
    }

    async fn snapshot(&self) -> Value {
        serde_json::from_str(&get(self.addr, "/snapshot").await.body).unwrap()
    }

    async fn stop(self) -> std::collections::HashMap<String, u64> {
        let beta = summary(self.beta, "service-beta:", true).await;
        stop_gateway(self.gateway).await;
        drop(self.prometheus.child);
        beta
    }
}

/// The metric names a PromQL expression reads.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = expr;
    while let Some(start) = rest.find(|c: char| c.is_ascii_alphabetic() || c == '_') {
        let tail = &rest[start..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
            .unwrap_or(tail.len());
        let word = &tail[..end];
        // Label names and values in braces are skipped below; functions
        // and keywords are not metric names.
        if word.starts_with("aether_") || word.starts_with("process_") {
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| word.strip_suffix(suffix))
                .unwrap_or(word);
            names.insert(base.to_string());
        }
        rest = &tail[end..];
        if let Some(inside) = rest.strip_prefix('{') {
            rest = inside.split_once('}').map_or("", |(_, after)| after);
        }
    }
    names
}

/// Every metric the shipped rules and Grafana dashboard query.
fn queried_metrics() -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let rules =
        std::fs::read_to_string(Path::new(CONFIG).join("prometheus/aether-alerts.yml")).unwrap();
    for line in rules
        .lines()
        .filter(|line| !line.trim_start().starts_with('#'))
    {
        names.extend(metric_names(line.trim().trim_start_matches("expr:")));
    }
    assert!(names.len() >= 8, "the rules read {names:?}");
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(Path::new(CONFIG).join("grafana/aether-dashboard.json")).unwrap(),
    )
    .unwrap();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            names.extend(metric_names(target["expr"].as_str().unwrap()));
        }
    }
    names
}

#[test]
fn metric_names_are_read_from_queries() {
    assert_eq!(
        metric_names(
            "histogram_quantile(0.99, sum by (le) (rate(aether_gateway_wave_latency_seconds_bucket[5m])))"
        ),
        BTreeSet::from(["aether_gateway_wave_latency_seconds".to_string()])
    );
    assert_eq!(
        metric_names(
            "aether_instance_outbox_waves{instance=~\"aether_x\"} / (aether_nats_outbox_capacity_waves > 0)"
        ),
        BTreeSet::from([
            "aether_instance_outbox_waves".to_string(),
            "aether_nats_outbox_capacity_waves".to_string()
        ])
    );
}

/// Alpha and beta with `--faults` over NATS: each fault is found by the
/// gateway's engine, listed on the dashboard with its waves and sources,
/// counted in `/metrics`, and fires its alert in Prometheus.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_fault_is_found_shown_exported_and_alerted() {
    tokio::time::timeout(Duration::from_secs(150), async {
        let flow = Flow::start(true).await;
        let alpha = flow.order(200, true).await;
        eprintln!("alpha {alpha:?}");
        // 200 orders: 10 retried 8 times, 10 sent twice; a decider in
        // twenty answered the other way.
        assert_eq!(
            (alpha["created"], alpha["retried"], alpha["duplicated"]),
            (200, 80, 10)
        );
        assert!(alpha["conflicting"] > 0, "{alpha:?}");
        assert_eq!(alpha["confirmed"] + alpha["cancelled"], 200, "{alpha:?}");

        let firing = eventually(
            "every fault's alert fires",
            Duration::from_secs(60),
            || async {
                let alerts = flow.prometheus.alerts().await;
                FAULTS
                    .iter()
                    .all(|(_, alert)| alerts.contains(&(alert.to_string(), "firing".to_string())))
                    .then_some(alerts)
            },
        )
        .await;
        eprintln!("alerts {firing:?}");
        let text = get(flow.addr, "/metrics").await.body;
        for (pattern, _) in FAULTS {
            let series = format!("aether_interference_events_total{{pattern=\"{pattern}\"}}");
            assert!(sample(&text, &series).unwrap_or(0.0) > 0.0, "{series}");
        }
        // And by the family they were correlated on: the conflict on
        // beta's two answers as one.
        let by_family = |pattern: &str, family: &str| {
            text.lines()
                .filter(|line| line.starts_with("aether_gateway_interference_events_total{"))
                .filter(|line| {
                    line.contains(&format!("pattern=\"{pattern}\""))
                        && line.contains(&format!("family=\"{family}\""))
                })
                .filter_map(|line| line.rsplit_once(' ')?.1.parse::<f64>().ok())
                .sum::<f64>()
        };
        assert!(by_family("cancellation", "inventory.*") > 0.0, "{text}");
        assert!(by_family("standing_wave", "orders.created") > 0.0, "{text}");
        // The dashboard shows the waves involved and who emitted them.
        let snapshot = flow.snapshot().await;
        let events = snapshot["interference"].as_array().unwrap();
        let find = |pattern: &str| {
            events
                .iter()
                .find(|e| e["pattern"] == pattern)
                .unwrap_or_else(|| panic!("a {pattern} event on the dashboard: {events:?}"))
        };
        let conflict = find("cancellation");
        assert_eq!(conflict["channel"], "inventory.*", "{conflict}");
        let sources: BTreeSet<&str> = conflict["sources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap())
            .collect();
        assert_eq!(
            sources,
            BTreeSet::from(["service-beta", "service-beta-shadow"])
        );
        let phases: Vec<&str> = conflict["involved"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| w["phase"].as_str().unwrap())
            .collect();
        assert!(
            phases.contains(&"assert") && phases.contains(&"retract"),
            "{conflict}"
        );
        let storm = find("standing_wave");
        let period = storm["period_ms"].as_f64().unwrap();
        assert!(
            (80.0..=120.0).contains(&period),
            "retried every 100 ms: {storm}"
        );
        assert!(storm["involved"].as_array().unwrap().len() >= 4, "{storm}");
        assert!(
            find("constructive")["diagnosis"]
                .as_str()
                .unwrap()
                .contains("duplicate")
        );

        // Every metric the shipped rules and dashboard query is exported.
        let exported: BTreeSet<String> = text
            .lines()
            .filter_map(|line| line.strip_prefix("# HELP "))
            .filter_map(|line| line.split(' ').next())
            .map(str::to_string)
            .collect();
        // (Three have a series only when there is one to show: an
        // instance gone, an emit refused, a stream with a leader (a
        // cluster); this flow has none.)
        let shown_when_there = [
            "aether_gateway_instance_gone",
            "aether_instance_refused_emits",
            "aether_stream_leader",
        ];
        let missing: Vec<_> = queried_metrics()
            .difference(&exported)
            .filter(|m| !shown_when_there.contains(&m.as_str()))
            .cloned()
            .collect();
        assert!(missing.is_empty(), "queried but not exported: {missing:?}");
        let beta = flow.stop().await;
        assert!(beta["conflicting"] > 0 && beta["repeats"] > 0, "{beta:?}");
    })
    .await
    .expect("bounded");
}

/// The plain flow over NATS: no interference event, and not one alert,
/// pending or firing, after Prometheus evaluated the rules over the whole
/// run (alpha drains and leaves at its end: no alert for that). Then a
/// service killed with SIGKILL raises `AetherInstanceGone`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_plain_flow_raises_nothing() {
    tokio::time::timeout(Duration::from_secs(150), async {
        let flow = Flow::start(false).await;
        let alpha = flow.order(200, false).await;
        assert_eq!(alpha["confirmed"] + alpha["cancelled"], 200, "{alpha:?}");
        assert_eq!(
            (alpha["repeated"], alpha["conflicting"]),
            (0, 0),
            "{alpha:?}"
        );
        // The consumers' backlogs as the gateway shows them (it looks the
        // stream up every few seconds) drained to nothing: a backlog of
        // the flow's last orders, still shown, has grown since the run
        // began, which is what AetherConsumerBacklogGrowing looks for.
        eventually("the consumers' backlogs shown drained", BOUND, || async {
            let text = get(flow.addr, "/metrics").await.body;
            let backlogs: Vec<&str> = text
                .lines()
                .filter(|line| line.starts_with("aether_consumer_pending_waves{"))
                .collect();
            (!backlogs.is_empty() && backlogs.iter().all(|line| line.ends_with(" 0"))).then_some(())
        })
        .await;
        // Scrapes after that, so the rules saw it all.
        let scraped = flow.prometheus.scrapes().await;
        eventually("five more scrapes", BOUND, || async {
            (flow.prometheus.scrapes().await >= scraped + 5).then_some(())
        })
        .await;
        assert_eq!(flow.prometheus.alerts().await, BTreeSet::new());
        let snapshot = flow.snapshot().await;
        assert_eq!(snapshot["interference"], Value::Array(Vec::new()));
        let text = get(flow.addr, "/metrics").await.body;
        for (pattern, _) in FAULTS {
            let series = format!("aether_interference_events_total{{pattern=\"{pattern}\"}}");
            assert_eq!(sample(&text, &series), Some(0.0), "{series}");
        }
        // Alpha drained and left: counted as left, not gone.
        assert_eq!(
            sample(&text, "aether_gateway_instances_left_total"),
            Some(1.0)
        );
        assert_eq!(
            sample(&text, "aether_gateway_instances_gone_total"),
            Some(0.0)
        );
        // A second beta killed with SIGKILL: gone, and the alert fires.
        let (beta_bin, _) = programs().await;
        let mut killed = service(&beta_bin, flow.dir.path(), &flow.url, "beta-2", &[]);
        eventually("the second beta reports", BOUND, || async {
            let text = get(flow.addr, "/metrics").await.body;
            sample(&text, "aether_instance_up{instance=\"beta-2\"}")
        })
        .await;
        killed.start_kill().unwrap();
        let _ = killed.wait().await;
        let firing = eventually(
            "AetherInstanceGone fires",
            Duration::from_secs(30),
            || async {
                let alerts = flow.prometheus.alerts().await;
                alerts
                    .contains(&("AetherInstanceGone".to_string(), "firing".to_string()))
                    .then_some(alerts)
            },
        )
        .await;
        assert_eq!(firing.len(), 1, "only that alert: {firing:?}");
        let beta = flow.stop().await;
        assert_eq!((beta["repeats"], beta["conflicting"]), (0, 0), "{beta:?}");
    })
    .await
    .expect("bounded");
}
