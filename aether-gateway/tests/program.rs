//! The `aether-gateway` program: `--help`, a run on the embedded medium
//! with its demo until SIGTERM (exit 0), and bad settings refused.

mod support;

use std::{process::Stdio, time::Duration};

use aether_testkit::process;
use support::{eventually, get, sample};

const PROGRAM: &str = env!("CARGO_BIN_EXE_aether-gateway");
const BOUND: Duration = Duration::from_secs(15);

fn settings_dir(toml: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("default.toml"), toml).unwrap();
    dir
}

fn command() -> tokio::process::Command {
    aether_testkit::program(PROGRAM)
}

/// The gateway with its demo, the settings in `dir` and the variables
/// `vars`, once it serves (its log piped): the process and its address.
async fn demo(
    dir: &tempfile::TempDir,
    vars: &[(&str, &str)],
) -> (tokio::process::Child, std::net::SocketAddr) {
    let mut command = command();
    command
        .arg("--config-dir")
        .arg(dir.path())
        .arg("--demo")
        .envs(vars.iter().copied())
        .stderr(Stdio::piped());
    support::spawn_serving(command, BOUND).await
}

/// The gateway's /metrics at `addr` once they count the demo's orders.
async fn demo_waves(addr: std::net::SocketAddr) -> String {
    eventually("the demo's waves", BOUND, || async {
        let text = get(addr, "/metrics").await.body;
        let seen = sample(
            &text,
            "aether_gateway_waves_observed_total{family=\"orders.created\"}",
        );
        (seen.unwrap_or(0.0) > 0.0).then_some(text)
    })
    .await
}

#[tokio::test]
async fn help_says_what_it_does() {
    process::assert_help_says(
        command(),
        &[
            "Observes every wave",
            "/metrics",
            "--nats",
            "--config-dir",
            "9464",
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_until_sigterm_and_exits_0() {
    let dir = settings_dir("[gateway]\nlisten = \"127.0.0.1:0\"\nsnapshot_interval_ms = 100\n");
    let (mut child, addr) = demo(&dir, &[]).await;
    assert_eq!(get(addr, "/health").await.status, 200);
    assert_eq!(get(addr, "/ready").await.status, 200);
    let text = demo_waves(addr).await;
    // The program counts its allocations.
    assert!(sample(&text, "aether_allocator_live_bytes").unwrap() > 0.0);
    assert!(sample(&text, "aether_allocator_allocations_total").unwrap() > 0.0);
    assert_eq!(sample(&text, "aether_panics_total"), Some(0.0));

    let status = process::terminate_within(&mut child, BOUND).await;
    assert!(status.success(), "{status}");
}

#[tokio::test]
async fn bad_settings_are_refused_naming_the_key() {
    let dir = settings_dir("");
    let output = command()
        .arg("--config-dir")
        .arg(dir.path())
        .env("AETHER__GATEWAY__FAMILY_DEPTH", "0")
        .output()
        .await
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.contains("gateway.family_depth"), "{stderr}");

    let output = command()
        .arg("--config-dir")
        .arg(dir.path().join("missing"))
        .output()
        .await
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.contains("default.toml"), "{stderr}");
}

/// Secrets given through the environment (the hopping secret, a signing
/// key) appear nowhere the gateway shows: not in its logs at TRACE, not in
/// /metrics, /snapshot or the dashboard.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_show_nowhere() {
    const HOPPING: &str = "hop-secret-0f3c9a5e-never-shown";
    const SIGNING: &str = "signing-key-7b2d4e1a-never-shown";
    let dir = settings_dir(
        "[gateway]\nlisten = \"127.0.0.1:0\"\nsnapshot_interval_ms = 100\n\
         [[gateway.hopping]]\nbase = \"orders.created\"\nhop_count = 4\n\
         [log]\nlevel = \"trace\"\n",
    );
    let (child, addr) = demo(
        &dir,
        &[
            ("AETHER__AETHER__HOPPING__SECRET", HOPPING),
            ("AETHER__AETHER__SECURITY__SIGNING_KEYS__GATEWAY", SIGNING),
        ],
    )
    .await;
    let metrics = demo_waves(addr).await;
    let snapshot = get(addr, "/snapshot").await.body;
    let dashboard = get(addr, "/").await.body;
    process::signal(&child, nix::sys::signal::Signal::SIGTERM);
    let output = tokio::time::timeout(BOUND, child.wait_with_output())
        .await
        .expect("it exits within 15 s of SIGTERM")
        .unwrap();
    assert!(output.status.success(), "{}", output.status);
    let logs = String::from_utf8_lossy(&output.stderr).into_owned()
        + &String::from_utf8_lossy(&output.stdout);
    // The settings were logged, with the secrets in them redacted.
    assert!(
        logs.contains("settings") && logs.contains("[redacted]"),
        "{logs}"
    );
    for (what, text) in [
        ("logs", &logs),
        ("/metrics", &metrics),
        ("/snapshot", &snapshot),
        ("the dashboard", &dashboard),
    ] {
        for secret in [HOPPING, SIGNING] {
            assert!(!text.contains(secret), "{secret} in {what}");
        }
    }
}

/// The exit status and standard error of `program` with `args`, within
/// the bound.
async fn refusal(program: &str, args: &[&str]) -> (Option<i32>, String) {
    let mut command = aether_testkit::program(program);
    command.args(args);
    let output = process::output_within(command, BOUND).await;
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    (output.status.code(), stderr)
}

/// A negative number is a value, not an option: each numeric option's own
/// check refuses it with its reason (status 2), never as an unexpected
/// argument.
#[tokio::test]
async fn negative_numbers_are_refused_with_the_reason() {
    let dir = settings_dir("");
    let config = dir.path().to_str().unwrap();
    for (args, words) in [
        (vec!["replay", "--amplitude", "-0.5"], "from 0 to 1"),
        (vec!["replay", "--from", "-5"], "Unix milliseconds"),
        (vec!["journal", "--to", "-5"], "Unix milliseconds"),
    ] {
        let args: Vec<&str> = ["--config-dir", config].into_iter().chain(args).collect();
        let (status, stderr) = refusal(PROGRAM, &args).await;
        assert_eq!(status, Some(2), "{args:?}: {stderr}");
        assert!(
            !stderr.contains("unexpected argument"),
            "{args:?}: {stderr}"
        );
        assert!(stderr.contains(words), "{args:?}: {stderr}");
    }
}
