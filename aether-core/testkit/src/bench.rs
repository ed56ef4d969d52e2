//! How a benchmark program of the workspace was started.
//!
//! Each benchmark is a program of its own (`harness = false`): `cargo bench`
//! passes `--bench` and it measures; run as a test (`cargo test --benches`,
//! or `cargo nextest run --benches` with the workspace's other tests) it
//! makes one small smoke run of each case. nextest first asks a test
//! program for its tests (`--list --format terse`): a benchmark names its
//! one test, `smoke`, and ends there.

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
