//! What the `aether` binary's process tests share: the binary on a server
//! of the test's own, run to its end or started and waited for.

#![allow(dead_code)]

use std::{process::Stdio, time::Duration};

use aether_core::{Aether, AetherConfig, config::NatsConfig};
use aether_testkit::NatsServer;
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
};

pub const AETHER: &str = env!("CARGO_BIN_EXE_aether");

/// `aether ARGS` on the server at `url`.
pub fn aether(url: &str, args: &[&str]) -> Command {
    let mut command = aether_testkit::program(AETHER);
    command
        .args(args)
        .arg("--nats")
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

/// Runs to its end within 30 s: (status, stdout, stderr).
pub async fn run(mut command: Command) -> (i32, String, String) {
    let output = tokio::time::timeout(Duration::from_secs(30), command.output())
        .await
        .expect("the command ends within 30 s")
        .expect("it runs");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Starts a long-running command and waits for `ready` on its stderr.
pub async fn start(mut command: Command, ready: &str) -> Child {
    let mut child = command.spawn().expect("it starts");
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if line.contains(ready) {
                return;
            }
        }
        panic!("ended before saying {ready:?}");
    })
    .await
    .unwrap_or_else(|_| panic!("no {ready:?} within 20 s"));
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    child
}

/// The rest of a child's stdout once it exits (within 30 s), and its status.
pub async fn finish(child: Child) -> (i32, String) {
    let output = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .expect("it ends within 30 s")
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}

/// Waits, at most 5 s, until `check` holds: a change a command made reaches
/// a service's replica a moment after the command exits.
pub async fn soon(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !check() {
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: not within 5 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

pub async fn server() -> NatsServer {
    NatsServer::start().await.expect("nats-server starts")
}

pub async fn connect(url: &str, config: AetherConfig) -> Aether {
    Aether::connect(AetherConfig {
        nats: NatsConfig {
            urls: vec![url.to_string()],
            ..Default::default()
        },
        ..config
    })
    .await
    .unwrap()
}

/// `aether keep` on the server at `url`, named `name`, keeping every map
/// in `dir`, ready.
pub async fn keeper(url: &str, dir: &std::path::Path, name: &str, extra: &[&str]) -> Child {
    start(keep(url, dir, name, extra), "keeping maps").await
}

/// The command of `aether keep` on the server at `url`, named `name`,
/// keeping every map in `dir`.
pub fn keep(url: &str, dir: &std::path::Path, name: &str, extra: &[&str]) -> Command {
    let dir = dir.to_str().unwrap();
    let mut args = vec!["keep", "--dir", dir, "--name", name];
    args.extend_from_slice(extra);
    aether(url, &args)
}

/// SIGTERM, and what it said on stdout until its end, which is a success
/// within 10 s.
pub async fn terminate(child: Child) -> String {
    let pid = nix::unistd::Pid::from_raw(child.id().unwrap() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let output = tokio::time::timeout(Duration::from_secs(10), child.wait_with_output())
        .await
        .expect("it stops")
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    String::from_utf8_lossy(&output.stdout).into_owned()
}
