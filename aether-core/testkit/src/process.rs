//! A program under test as a process: started with its settings folder, its
//! first line waited for, its log read as it comes, signalled and stopped.

use std::{path::Path, process::Stdio, time::Duration};

use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, BufReader, Lines},
    process::{Child, ChildStdout, Command},
    task::JoinHandle,
};

/// A program's standard output, line by line.
pub type StdoutLines = Lines<BufReader<ChildStdout>>;

/// Starts `command` with `--config-dir dir --nats url`, its stdout piped and
/// its stderr as `stderr`.
pub fn spawn_on_nats(mut command: Command, dir: &Path, url: &str, stderr: Stdio) -> Child {
    command
        .arg("--config-dir")
        .arg(dir)
        .args(["--nats", url])
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .expect("the program starts")
}

/// Takes `child`'s piped stdout and waits, within `bound`, for its first
/// line; returns the lines after it and the line.
pub async fn first_line(child: &mut Child, bound: Duration) -> (StdoutLines, String) {
    let mut lines = BufReader::new(child.stdout.take().expect("stdout piped")).lines();
    let line = tokio::time::timeout(bound, lines.next_line())
        .await
        .expect("the first line within the bound")
        .expect("stdout")
        .expect("a line");
    (lines, line)
}

/// Like [`first_line`], and checks that the line contains `words`.
pub async fn ready(child: &mut Child, bound: Duration, words: &str) -> StdoutLines {
    let (lines, line) = first_line(child, bound).await;
    assert!(line.contains(words), "{line}");
    lines
}

/// Takes `child`'s piped stderr and reads it as it comes (so that the pipe
/// never fills); the task ends with every line once the program closes it.
pub fn collect_log(child: &mut Child) -> JoinHandle<Vec<String>> {
    let stderr = child.stderr.take().expect("stderr piped");
    tokio::spawn(async move {
        let mut lines = BufReader::new(stderr).lines();
        let mut all = Vec::new();
        while let Ok(Some(line)) = lines.next_line().await {
            all.push(line);
        }
        all
    })
}

/// Sends `signal` to `child`.
pub fn signal(child: &Child, signal: Signal) {
    let pid = Pid::from_raw(i32::try_from(child.id().expect("running")).expect("a pid"));
    kill(pid, signal).expect("the signal is sent");
}

/// Sends SIGTERM to `child`, reads the rest of its piped stdout and checks
/// that it exits 0; returns what it wrote.
pub async fn terminate_with_stdout(child: &mut Child) -> String {
    signal(child, Signal::SIGTERM);
    let mut stdout = String::new();
    child
        .stdout
        .as_mut()
        .expect("stdout piped")
        .read_to_string(&mut stdout)
        .await
        .expect("stdout");
    let status = child.wait().await.expect("it exits");
    assert!(status.success(), "{stdout}");
    stdout
}

/// Sends SIGTERM to `child` and checks that it exits 0.
pub async fn terminate(child: &mut Child) {
    signal(child, Signal::SIGTERM);
    let status = child.wait().await.expect("it exits");
    assert!(status.success(), "{status}");
}

/// Checks that `log` holds a line containing `words` at least once and at
/// most once per `every` over `elapsed`: a warning that is rate limited.
pub fn assert_limited_warnings(log: &[String], words: &str, elapsed: Duration, every: Duration) {
    let warnings = log.iter().filter(|line| line.contains(words)).count();
    let most = 1 + elapsed.as_secs() / every.as_secs();
    assert!(
        (1..=most as usize).contains(&warnings),
        "{warnings} warnings in {elapsed:?}: {log:#?}"
    );
}

/// Runs `command --help` and checks that it succeeds and its help contains
/// each of `words`.
pub async fn assert_help_says(mut command: Command, words: &[&str]) {
    let output = command.arg("--help").output().await.expect("it runs");
    assert!(output.status.success());
    let help = String::from_utf8(output.stdout).expect("UTF-8");
    for words in words {
        assert!(help.contains(words), "{words}: {help}");
    }
}

/// Runs `command` to its end, within `bound`, and returns its output.
pub async fn output_within(mut command: Command, bound: Duration) -> std::process::Output {
    tokio::time::timeout(bound, command.output())
        .await
        .unwrap_or_else(|_| panic!("it exits within {bound:?}"))
        .expect("it runs")
}

/// Sends SIGTERM to `child` and waits, within `bound`, for it to exit;
/// returns its exit status.
pub async fn terminate_within(child: &mut Child, bound: Duration) -> std::process::ExitStatus {
    signal(child, Signal::SIGTERM);
    tokio::time::timeout(bound, child.wait())
        .await
        .unwrap_or_else(|_| panic!("it exits within {bound:?} of SIGTERM"))
        .expect("it exits")
}
