//! `aether node` on this machine alone (loopback, no multicast DNS): what
//! it refuses, how fast it stops when a terminal or systemd stops it with
//! its server, and a start that finds the node before it still stopping.

use std::{
    os::unix::process::CommandExt,
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use aether_core::lan::LanSecret;
use aether_testkit::netns::Running;
use nix::{
    sys::signal::{Signal, killpg},
    unistd::Pid,
};

const AETHER: &str = env!("CARGO_BIN_EXE_aether");

/// `aether args` with a home and runtime folder of the test's own, ended
/// past 30 s.
fn aether(dir: &Path, args: &[&str]) -> Command {
    let mut command = Command::new("timeout");
    command.args(["-s", "KILL", "30", AETHER]);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("AETHER_") {
            command.env_remove(key);
        }
    }
    std::fs::create_dir_all(dir.join("home")).unwrap();
    std::fs::create_dir_all(dir.join("run")).unwrap();
    command
        .args(args)
        .env("HOME", dir.join("home"))
        .env("XDG_RUNTIME_DIR", dir.join("run"))
        .stdin(Stdio::null());
    if let Some(server) = std::env::var_os("NATS_SERVER_BIN") {
        command.env("AETHER_NATS_SERVER", server);
    }
    command
}

/// A node on loopback, in a process group of its own (as a terminal's
/// job is: Ctrl-C signals the node and its server together), started.
fn node(dir: &Path, secret: &Path) -> Running {
    let mut node = spawn_node(dir, secret);
    ready(&mut node);
    node
}

fn ready(node: &mut Running) {
    assert!(
        node.wait_for(Duration::from_secs(20), |l| l.contains("keeping maps"))
            .is_some(),
        "the node did not start: {:?}",
        node.seen
    );
}

/// The same, not waited for.
fn spawn_node(dir: &Path, secret: &Path) -> Running {
    spawn_node_with(dir, secret, &[])
}

/// The same, with more arguments.
fn spawn_node_with(dir: &Path, secret: &Path, extra: &[&str]) -> Running {
    let data = dir.join("data");
    let mut args = vec![
        "node",
        "--no-scout",
        "--listen",
        "127.0.0.1",
        "--secret-file",
        secret.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let mut command = aether(dir, &args);
    command.process_group(0);
    Running::start(command, false)
}

fn secret_in(dir: &Path) -> std::path::PathBuf {
    let secret = dir.join("secret");
    std::fs::write(&secret, LanSecret::generate()).unwrap();
    std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    secret
}

#[test]
fn a_secret_file_that_never_ends_is_refused_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let out = aether(
        dir.path(),
        &["node", "--no-scout", "--secret-file", "/dev/zero"],
    )
    .output()
    .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{said}");
    assert!(said.contains("not a secret file"), "{said}");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(out.status.code(), Some(2), "a usage error: {said}");
}

#[test]
fn a_new_secret_makes_its_folder_for_its_owner_only() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("home/.config/aether/secret");
    let out = aether(
        dir.path(),
        &["node", "--new-secret", path.to_str().unwrap()],
    )
    .output()
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    use std::os::unix::fs::PermissionsExt;
    let folder = std::fs::metadata(path.parent().unwrap()).unwrap();
    assert_eq!(folder.permissions().mode() & 0o777, 0o700);
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert!(LanSecret::load(&path).is_ok());
}

#[test]
fn a_node_stopped_with_its_server_stops_within_two_seconds_and_the_next_start_waits() {
    let dir = tempfile::tempdir().unwrap();
    let secret = secret_in(dir.path());
    for (round, signal) in [Signal::SIGINT, Signal::SIGTERM].into_iter().enumerate() {
        let mut first = node(dir.path(), &secret);
        // A map kept, so that the keeper has something to close.
        let set = aether(
            dir.path(),
            &["state", "set", "home", &format!("round{round}"), "1"],
        )
        .output()
        .unwrap();
        assert!(
            set.status.success(),
            "{}",
            String::from_utf8_lossy(&set.stderr)
        );
        // Ctrl-C in a terminal, `systemctl stop`: the node and its server
        // signalled together.
        let stopped = Instant::now();
        killpg(Pid::from_raw(first.child.id() as i32), signal).unwrap();
        // Started again at once on the same directory: it waits for the
        // node before it, if that is still stopping, and never refuses.
        let mut second = spawn_node(dir.path(), &secret);
        let status = first.child.wait().unwrap();
        let took = stopped.elapsed();
        ready(&mut second);
        first.drain(Duration::from_millis(100));
        assert!(
            first.seen.iter().any(|l| l.contains("node stopped")),
            "{signal}: {:?}",
            first.seen
        );
        assert!(
            took < Duration::from_secs(2),
            "{signal}: the node took {took:?} to stop: {:?}",
            first.seen
        );
        assert!(status.success(), "{signal}: {status}");
        assert!(
            !second
                .seen
                .iter()
                .any(|l| l.contains("another aether node runs")),
            "{:?}",
            second.seen
        );
        // The map is served by the node started again.
        let got = aether(
            dir.path(),
            &["state", "get", "home", &format!("round{round}")],
        )
        .output()
        .unwrap();
        assert_eq!(String::from_utf8_lossy(&got.stdout).trim(), "1");
        killpg(Pid::from_raw(second.child.id() as i32), Signal::SIGTERM).unwrap();
        second.child.wait().unwrap();
        second.drain(Duration::from_millis(100));
    }
}

/// `GET http://addr/metrics`'s body.
fn scrape(addr: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    write!(stream, "GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut body = String::new();
    stream.read_to_string(&mut body).unwrap();
    body
}

/// A metric's value in a scrape.
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn a_node_says_serves_and_prints_what_its_keeper_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let secret = secret_in(dir.path());
    // A keeper small enough to fill: settings as a user writes them.
    let config = dir.path().join("config");
    std::fs::create_dir_all(&config).unwrap();
    std::fs::write(
        config.join("default.toml"),
        "[aether.state]\nmax_value_bytes = 1000\n[aether.state.keeper]\nmax_bytes = 3000\n",
    )
    .unwrap();
    let mut node = spawn_node_with(
        dir.path(),
        &secret,
        &[
            "--metrics-listen",
            "127.0.0.1:0",
            "--config-dir",
            config.to_str().unwrap(),
        ],
    );
    ready(&mut node);
    let line = node
        .wait_for(Duration::from_secs(10), |l| {
            l.contains("metrics at http://")
        })
        .expect("the node says where its metrics are");
    let addr = line
        .split("http://")
        .nth(1)
        .unwrap()
        .trim_end_matches("/metrics")
        .to_string();
    let set = |key: &str| {
        let value = format!("\"{}\"", "x".repeat(900));
        aether(dir.path(), &["state", "set", "home", key, &value])
            .output()
            .unwrap()
    };
    assert!(set("a").status.success());
    assert!(set("b").status.success());
    let full = set("c");
    let said = String::from_utf8_lossy(&full.stderr);
    assert!(!full.status.success(), "past max_bytes: {said}");
    assert!(said.contains("max_bytes"), "{said}");
    // Said on its stderr, served, and printed by --status.
    assert!(
        node.wait_for(Duration::from_secs(5), |l| l.contains("refused as full"))
            .is_some(),
        "{:?}",
        node.seen
    );
    // The export follows the keeper's counts within its next look (a second).
    let deadline = Instant::now() + Duration::from_secs(5);
    let text = loop {
        let text = scrape(&addr);
        if sample(&text, "aether_keeper_full_writes_total").unwrap_or(0.0) >= 1.0
            || Instant::now() > deadline
        {
            break text;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(sample(&text, "aether_keeper_maps"), Some(1.0), "{text}");
    assert!(
        sample(&text, "aether_keeper_full_writes_total").unwrap_or(0.0) >= 1.0,
        "{text}"
    );
    assert_eq!(sample(&text, "aether_keeper_max_bytes"), Some(3000.0));
    let status = aether(dir.path(), &["node", "--status"]).output().unwrap();
    let printed = String::from_utf8_lossy(&status.stdout);
    assert!(printed.contains("keeper: 1 maps kept"), "{printed}");
    assert!(printed.contains("writes refused as full"), "{printed}");
    // And in its instance reports, which `aether stats` gathers.
    let stats = aether(dir.path(), &["stats", "--wait", "6s"])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&stats.stdout);
    assert!(table.contains("keeper node-"), "{table}");
    assert!(table.contains("writes refused as full"), "{table}");
    killpg(Pid::from_raw(node.child.id() as i32), Signal::SIGTERM).unwrap();
    node.child.wait().unwrap();
}
