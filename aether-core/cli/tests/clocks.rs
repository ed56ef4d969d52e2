//! Processes whose clocks are off (libfaketime's `faketime`), against a
//! server of the test's own: what a device whose clock disagrees with the
//! others' is told.

mod support;

use support::{AETHER, run, server, start};
use tokio::process::Command;

/// `aether ARGS` on the server at `url`, its clock moved by `offset`
/// (`faketime` syntax: `+2h`, `-1d`). The library is preloaded as
/// `faketime` does, without `faketime`'s own process between (a signal
/// reaches `aether`).
fn skewed(offset: &str, url: &str, args: &[&str]) -> Option<Command> {
    which("faketime")?;
    let mut command = aether_testkit::program(AETHER);
    command
        .env("LD_PRELOAD", "/usr/$LIB/faketime/libfaketime.so.1")
        .env("FAKETIME", offset)
        // A clock set wrong moves the wall clock alone.
        .env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
        .args(args)
        .arg("--nats")
        .arg(url)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    Some(command)
}

fn which(program: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|dir| std::path::Path::new(dir).join(program))
        .find(|path| path.is_file())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_that_refused_entries_for_their_stamps_says_why() {
    let nats = server().await;
    let url = nats.url();
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path().to_str().unwrap();
    // A keeper and a writer two hours ahead of this machine.
    let Some(keep) = skewed("+2h", &url, &["keep", "--dir", dir, "--name", "ahead"]) else {
        eprintln!("skipped: faketime is not installed (apt-get install faketime)");
        return;
    };
    let keeper = start(keep, "keeping maps").await;
    let set = skewed("+2h", &url, &["state", "set", "clk", "k", "1"]).unwrap();
    let (status, _, stderr) = run(set).await;
    assert_eq!(status, 0, "held by the keeper ahead: {stderr}");
    // A reader that follows a time source nobody runs keeps its own
    // clock: the entry is two hours in its future, refused.
    let config = tempfile::tempdir().unwrap();
    std::fs::write(
        config.path().join("default.toml"),
        "[aether.clock]\nfollow = \"nobody\"\n",
    )
    .unwrap();
    let own_clock = |args: &[&str]| {
        let mut all = vec!["--config-dir", config.path().to_str().unwrap()];
        all.extend_from_slice(args);
        support::aether(&url, &all)
    };
    let (status, _, stderr) = run(own_clock(&["state", "get", "clk", "k"])).await;
    assert_eq!(status, 1, "{stderr}");
    assert!(
        stderr.contains("refused as stamped more than max_drift ahead")
            && stderr.contains("1 entries"),
        "says why the key is not there: {stderr}"
    );
    let (status, _, stderr) = run(own_clock(&["state", "list", "clk"])).await;
    assert_eq!(status, 0, "{stderr}");
    assert!(stderr.contains("not every entry is listed"), "{stderr}");
    // A reader that follows the bus's time reads it.
    let (status, out, stderr) = run(support::aether(&url, &["state", "get", "clk", "k"])).await;
    assert_eq!((status, out.trim()), (0, "1"), "{stderr}");
    drop(keeper);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_two_hours_apart_share_one_order() {
    let nats = server().await;
    let url = nats.url();
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path().to_str().unwrap();
    // The keeper, a time source, on this machine's clock; devices two hours
    // behind, on time and two hours ahead, each a one-shot command.
    let Some(_) = skewed("+0", &url, &["--version"]) else {
        eprintln!("skipped: faketime is not installed (apt-get install faketime)");
        return;
    };
    let keeper = start(
        support::keep(&url, std::path::Path::new(dir), "keeper", &[]),
        "keeping maps",
    )
    .await;
    let devices = [("b", "-2h"), ("a", "+0"), ("c", "+2h")];
    for (device, offset) in devices {
        let set = skewed(offset, &url, &["state", "set", "clk", device, "1"]).unwrap();
        let (status, _, stderr) = run(set).await;
        assert_eq!(status, 0, "device {device} ({offset}) writes: {stderr}");
        // A device hours off is told so; the one on time is not.
        let told = match offset {
            "-2h" => Some("behind"),
            "+2h" => Some("ahead of"),
            _ => None,
        };
        match told {
            Some(way) => assert!(
                stderr.contains(&format!("s {way} the bus's")),
                "device {device} ({offset}) not told: {stderr}"
            ),
            None => assert!(!stderr.contains("clock is"), "{stderr}"),
        }
    }
    // Every device reads every other's write.
    for (reader, offset) in devices {
        for (key, _) in devices {
            let get = skewed(offset, &url, &["state", "get", "clk", key]).unwrap();
            let (status, out, stderr) = run(get).await;
            assert_eq!(
                (status, out.trim()),
                (0, "1"),
                "device {reader} ({offset}) reads {key}: {stderr}"
            );
        }
    }
    // The later write by the bus's time wins, whatever the devices'
    // clocks say: the one ahead writes first, the one behind after it.
    for (value, offset) in [("\"first\"", "+2h"), ("\"second\"", "-2h")] {
        let set = skewed(offset, &url, &["state", "set", "clk", "last", value]).unwrap();
        let (status, _, stderr) = run(set).await;
        assert_eq!(status, 0, "{stderr}");
    }
    for (reader, offset) in devices {
        let get = skewed(offset, &url, &["state", "get", "clk", "last"]).unwrap();
        let (status, out, stderr) = run(get).await;
        assert_eq!(
            (status, out.trim()),
            (0, "\"second\""),
            "device {reader} ({offset}): {stderr}"
        );
    }
    // A delete made by the device behind stays a delete.
    let delete = skewed("-2h", &url, &["state", "delete", "clk", "c"]).unwrap();
    assert_eq!(run(delete).await.0, 0);
    let get = skewed("+2h", &url, &["state", "get", "clk", "c"]).unwrap();
    assert_eq!(run(get).await.0, 1, "deleted");
    drop(keeper);
}

/// Two keepers hold a map; one goes away, a key is deleted, two days pass
/// (faketime `+2d` for every process from then on), the one that stayed
/// starts again, then the one that was away with its old ledger: the
/// deleted key stays deleted (its tombstone is collected after a day).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keeper_back_after_two_days_does_not_bring_a_deleted_key_back() {
    let nats = server().await;
    let url = nats.url();
    let Some(_) = skewed("+0", &url, &["--version"]) else {
        eprintln!("skipped: faketime is not installed (apt-get install faketime)");
        return;
    };
    let (stays, away) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let keep = |offset: &str, dir: &tempfile::TempDir, name: &str| {
        let dir = dir.path().to_str().unwrap();
        skewed(offset, &url, &["keep", "--dir", dir, "--name", name]).unwrap()
    };
    let cli = |offset: &str, args: &[&str]| skewed(offset, &url, args).unwrap();
    let stayer = start(keep("+0", &stays, "stays"), "keeping maps").await;
    let goer = start(keep("+0", &away, "away"), "keeping maps").await;
    for (key, value) in [("gone", "\"a\""), ("kept", "\"x\"")] {
        let (status, _, stderr) = run(cli("+0", &["state", "set", "home", key, value])).await;
        assert_eq!(status, 0, "{stderr}");
    }
    // Both hold both keys (the live changes reach both at once).
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    support::terminate(goer).await;
    let (status, _, stderr) = run(cli("+0", &["state", "delete", "home", "gone"])).await;
    assert_eq!(status, 0, "{stderr}");
    support::terminate(stayer).await;
    // Two days later: the one that stayed first, its map open (it reads
    // `kept`), then the one that was away.
    let stayer = start(keep("+2d", &stays, "stays"), "keeping maps").await;
    let started = std::time::Instant::now();
    loop {
        let (status, out, _) = run(cli("+2d", &["state", "get", "home", "kept"])).await;
        if status == 0 && out.trim() == "\"x\"" {
            break;
        }
        assert!(started.elapsed().as_secs() < 15, "the map reopened");
    }
    let goer = start(keep("+2d", &away, "away"), "keeping maps").await;
    // Its map opened and caught up from the one that stayed (a map opens
    // well within this); then the one that was away alone: what it holds
    // is what it gives.
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    support::terminate(stayer).await;
    let (status, out, stderr) = run(cli("+2d", &["state", "get", "home", "gone"])).await;
    assert_eq!(
        status, 1,
        "the deleted key came back as {out:?} from the keeper that was away: {stderr}"
    );
    assert!(stderr.contains("not set"), "{stderr}");
    let (status, out, stderr) = run(cli("+2d", &["state", "get", "home", "kept"])).await;
    assert_eq!((status, out.trim()), (0, "\"x\""), "{stderr}");
    support::terminate(goer).await;
}

/// A time source alone on the bus (a keeper) whose clock is set back 30 s
/// as it runs (NTP correcting a clock that ran ahead), forward 3 hours and
/// back again, then started again on its ledgers with the clock still
/// back: the bus's time goes on from where it was, so each write made
/// after another, at once after a step too, wins over it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_sources_clock_set_back_does_not_take_the_bus_back() {
    let nats = server().await;
    let url = nats.url();
    let Some(_) = skewed("+0", &url, &["--version"]) else {
        eprintln!("skipped: faketime is not installed (apt-get install faketime)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    // The keeper's clock, read from this file at each reading.
    let time = dir.path().join("faketime");
    std::fs::write(&time, "+0").unwrap();
    let ledgers = dir.path().join("keeper");
    let keep = || {
        let ledgers = ledgers.to_str().unwrap();
        let mut command =
            skewed("+0", &url, &["keep", "--dir", ledgers, "--name", "alone"]).unwrap();
        command
            .env_remove("FAKETIME")
            .env("FAKETIME_TIMESTAMP_FILE", &time)
            .env("FAKETIME_NO_CACHE", "1");
        command
    };
    let write_then_read = |value: &'static str| {
        let url = url.clone();
        async move {
            let set = support::aether(&url, &["state", "set", "clk", "k", value]);
            let (status, _, stderr) = run(set).await;
            assert_eq!(status, 0, "{value} held: {stderr}");
            let (status, out, stderr) =
                run(support::aether(&url, &["state", "get", "clk", "k"])).await;
            assert_eq!(
                (status, out.trim()),
                (0, value),
                "the later write wins: {stderr}"
            );
        }
    };
    let keeper = start(keep(), "keeping maps").await;
    write_then_read("\"before\"").await;
    // Written at once after each step: the keeper sees a step when asked
    // for its time.
    std::fs::write(&time, "-30").unwrap();
    write_then_read("\"after the step back\"").await;
    std::fs::write(&time, "+10770").unwrap();
    write_then_read("\"after a step forward\"").await;
    std::fs::write(&time, "-30").unwrap();
    write_then_read("\"after the step back again\"").await;
    assert!(
        ledgers.join("stamped").is_file(),
        "the keeper keeps a time past its writes"
    );
    support::terminate(keeper).await;
    // Started again, its clock still 30 s behind the stamps it keeps.
    let keeper = start(keep(), "keeping maps").await;
    write_then_read("\"after a restart\"").await;
    support::terminate(keeper).await;
}
