//! What the durable tests of both mediums share: bounded receiving, and
//! child processes (this test binary run again as a named test) whose
//! output lines are followed.

#![allow(dead_code)]

use std::{
    ffi::OsStr,
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
    time::Duration,
};

use aether_core::{Vibrator, Wave};
use tokio::{
    sync::mpsc,
    time::{Instant, timeout},
};

/// Each test fails rather than hangs past this.
pub const LIMIT: Duration = Duration::from_secs(90);

pub fn seq(wave: &Wave) -> u64 {
    wave.payload()["seq"].as_u64().expect("a sequence number")
}

/// Receives `n` waves, bounded.
pub async fn receive_n(rx: &mut Vibrator, n: usize) -> Vec<Wave> {
    let mut got = Vec::new();
    timeout(Duration::from_secs(30), async {
        while got.len() < n {
            got.push(rx.receive().await.expect("aether open"));
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{n} waves did not arrive; got {}", got.len()));
    got
}

/// Asserts that nothing more arrives within a short while.
pub async fn nothing_more(rx: &mut Vibrator) {
    nothing_more_within(rx, Duration::from_millis(500)).await;
}

/// Asserts that nothing more arrives within `limit`.
pub async fn nothing_more_within(rx: &mut Vibrator, limit: Duration) {
    if let Ok(Some(wave)) = timeout(limit, rx.receive()).await {
        panic!("an unexpected wave arrived: {wave:?}");
    }
}

/// A child process: this test binary running the test `program` with
/// `env`, its output lines followed; killed (SIGKILL) when dropped.
pub struct Process {
    child: Child,
    lines: mpsc::UnboundedReceiver<String>,
}

impl Process {
    pub fn start<K: AsRef<OsStr>, V: AsRef<OsStr>>(program: &str, env: &[(K, V)]) -> Self {
        let mut command = Command::new(std::env::current_exe().unwrap());
        command
            .args(["--exact", program, "--nocapture", "--test-threads=1"])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (key, value) in env {
            command.env(key, value);
        }
        let mut child = command.spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self { child, lines }
    }

    /// Waits (bounded) for the line `wanted`, giving every `emitted N` seen.
    pub async fn wait_for(&mut self, wanted: &str) -> Vec<u64> {
        let mut emitted = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let line = timeout(deadline - Instant::now(), self.lines.recv())
                .await
                .unwrap_or_else(|_| panic!("the process never said {wanted:?}"))
                .unwrap_or_else(|| panic!("the process ended before saying {wanted:?}"));
            // The test harness may start the line ("test NAME ... ").
            if let Some((_, n)) = line.split_once("emitted ") {
                emitted.push(n.parse().unwrap());
            }
            if line.ends_with(wanted) {
                return emitted;
            }
        }
    }

    /// After [`kill`](Self::kill): every `emitted N` the process printed
    /// and was not read yet.
    pub async fn rest(&mut self) -> Vec<u64> {
        let mut emitted = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        while let Ok(Some(line)) = timeout(deadline - Instant::now(), self.lines.recv()).await {
            if let Some((_, n)) = line.split_once("emitted ") {
                emitted.push(n.parse().unwrap());
            }
        }
        emitted
    }

    /// SIGKILL, and reap.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        self.child.wait().unwrap();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}
