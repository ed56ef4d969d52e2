//! A real SIGTERM (and SIGINT) ends a program that waits on
//! `Shutdown::on_signals()`, through its drain, with exit status 0.
//!
//! The program is this test binary itself, run again with only
//! `child_waits_for_a_signal` selected and `AETHER_OPS_SIGNAL_CHILD` set.

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use aether_ops::shutdown::{Shutdown, ShutdownOutcome, run_until_shutdown};
use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};

const CHILD: &str = "AETHER_OPS_SIGNAL_CHILD";
const READY: &str = "aether-ops-child-ready";
const BOUND: Duration = Duration::from_secs(10);

/// In the child only: waits for a signal, drains, returns (the test passes,
/// the process exits 0).
#[test]
fn child_waits_for_a_signal() {
    if std::env::var_os(CHILD).is_none() {
        return;
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let shutdown = Shutdown::on_signals().unwrap();
        println!("{READY}");
        let work = {
            let shutdown = shutdown.clone();
            async move {
                shutdown.wait().await;
                tokio::time::sleep(Duration::from_millis(50)).await; // draining
                "drained"
            }
        };
        let outcome = run_until_shutdown(work, &shutdown, Duration::from_secs(5)).await;
        assert_eq!(outcome, ShutdownOutcome::Drained("drained"));
    });
}

fn signal_ends_the_child_with_status_0(signal: Signal) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_waits_for_a_signal",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (ready, is_ready) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if line.is_ok_and(|line| line.contains(READY)) {
                let _ = ready.send(());
            }
        }
    });
    if is_ready.recv_timeout(BOUND).is_err() {
        let _ = child.kill();
        panic!("the child did not get ready within {BOUND:?}");
    }
    let sent = Instant::now();
    kill(Pid::from_raw(child.id() as i32), signal).unwrap();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if sent.elapsed() > BOUND {
            let _ = child.kill();
            panic!("the child did not exit within {BOUND:?} of {signal}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(status.success(), "{signal}: {status}");
}

#[test]
fn sigterm_ends_the_program_with_status_0() {
    signal_ends_the_child_with_status_0(Signal::SIGTERM);
}

#[test]
fn sigint_ends_the_program_with_status_0() {
    signal_ends_the_child_with_status_0(Signal::SIGINT);
}
