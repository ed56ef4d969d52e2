//! The shipped monitoring files: the Prometheus alerting rules pass
//! `promtool check rules` and their unit tests (`promtool test rules`), the
//! example Prometheus configuration passes `promtool check config`, and the
//! Grafana dashboard parses, has a query in every panel, and each query is
//! valid PromQL (checked by promtool as a recording rule).
//!
//! That every metric they query is one the gateway exports is checked
//! against a live gateway in `diagnostics.rs`.

use std::{path::Path, process::Command};

use serde_json::Value;

const PROMETHEUS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/prometheus");
const GRAFANA: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../config/grafana/aether-dashboard.json"
);

/// Runs `promtool ARGS` in `dir` and fails with its output unless it
/// succeeds.
fn promtool(dir: &Path, args: &[&str]) -> String {
    let output = Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("promtool (Debian's package prometheus; .ci/test installs it)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "promtool {args:?}: {text}");
    text
}

#[test]
fn the_alerting_rules_pass_promtool_and_their_unit_tests() {
    let dir = Path::new(PROMETHEUS);
    let checked = promtool(dir, &["check", "rules", "aether-alerts.yml"]);
    let rules = std::fs::read_to_string(dir.join("aether-alerts.yml")).unwrap();
    let tests = std::fs::read_to_string(dir.join("aether-alerts.test.yml")).unwrap();
    let alerts: Vec<&str> = rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
        .collect();
    assert!(
        checked.contains(&format!("SUCCESS: {} rules found", alerts.len())),
        "{checked}"
    );
    // Every alert has a unit test.
    for alert in &alerts {
        assert!(
            tests.contains(&format!("alertname: {alert}\n")),
            "{alert} has no unit test"
        );
    }
    let tested = promtool(dir, &["test", "rules", "aether-alerts.test.yml"]);
    assert!(tested.contains("SUCCESS"), "{tested}");
    promtool(dir, &["check", "config", "prometheus.yml"]);
}

/// A unit test that expects the wrong thing fails: the unit tests can fail.
#[test]
fn a_wrong_expectation_fails_the_rule_tests() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        Path::new(PROMETHEUS).join("aether-alerts.yml"),
        dir.path().join("aether-alerts.yml"),
    )
    .unwrap();
    let tests = std::fs::read_to_string(Path::new(PROMETHEUS).join("aether-alerts.test.yml"))
        .unwrap()
        .replace("severity: \"critical\"", "severity: \"info\"");
    std::fs::write(dir.path().join("wrong.test.yml"), tests).unwrap();
    let status = Command::new("promtool")
        .args(["test", "rules", "wrong.test.yml"])
        .current_dir(dir.path())
        .output()
        .expect("promtool")
        .status;
    assert!(!status.success());
}

#[test]
fn the_grafana_dashboard_parses_and_every_query_is_promql() {
    let dashboard: Value =
        serde_json::from_str(&std::fs::read_to_string(GRAFANA).unwrap()).expect("JSON");
    assert_eq!(dashboard["uid"], "aether-bus");
    let panels = dashboard["panels"].as_array().expect("panels");
    assert!(panels.len() >= 10, "{} panels", panels.len());
    let mut rules = String::from("groups:\n  - name: grafana\n    rules:\n");
    let mut ids = std::collections::BTreeSet::new();
    for panel in panels {
        let title = panel["title"].as_str().expect("a title");
        assert!(
            ids.insert(panel["id"].as_u64().expect("an id")),
            "{title}: id twice"
        );
        for key in ["h", "w", "x", "y"] {
            assert!(panel["gridPos"][key].is_u64(), "{title}: gridPos.{key}");
        }
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{title}: no query");
        for target in targets {
            assert_eq!(target["datasource"]["uid"], "${datasource}", "{title}");
            let expr = target["expr"].as_str().expect("an expr");
            assert!(!expr.trim().is_empty(), "{title}");
            rules.push_str(&format!(
                "      - record: grafana:panel_{}:{}\n        expr: {}\n",
                panel["id"],
                target["refId"].as_str().expect("a refId"),
                serde_json::to_string(expr).unwrap()
            ));
        }
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("queries.yml"), rules).unwrap();
    promtool(dir.path(), &["check", "rules", "queries.yml"]);
}
