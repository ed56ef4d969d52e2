//! How a benchmark program of the workspace was started.
//!
//! Each benchmark is a program of its own (`harness = false`): `cargo bench`
//! passes `--bench` and it measures; run as a test (`cargo test --benches`,
//! or `cargo nextest run --benches` with the workspace's other tests) it
//! makes one small smoke run of each case. nextest first asks a test
//! program for its tests (`--list --format terse`): a benchmark names its
//! one test, `smoke`, and ends there.

use std::time::Duration;

/// Whether this benchmark program measures (`cargo bench`), rather than
/// making its smoke run. Under nextest's listing it prints its one test
/// and ends the process: call it before the program starts anything.
pub fn measuring() -> bool {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--list") {
        // Its one test is not ignored: the list of ignored ones is empty.
        if !args.iter().any(|a| a == "--ignored") {
            println!("smoke: test");
        }
        std::process::exit(0);
    }
    args.iter().any(|a| a == "--bench")
}

/// The CPU time (user and system) a process has spent, from
/// `/proc/<pid>/stat` (`pid` "self" for this one), in clock ticks of
/// 10 ms; zero if it cannot be read.
pub fn cpu_of(pid: &str) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command's closing parenthesis (the name may hold
    // spaces): utime is the 12th, stime the 13th.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i)?.parse::<u64>().ok())
        .sum();
    Duration::from_millis(ticks * 10)
}
