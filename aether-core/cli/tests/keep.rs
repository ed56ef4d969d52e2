//! Keepers as processes (`aether keep`) against a server of the test's
//! own: what one-shot commands write outlives them, acknowledged writes
//! survive a keeper's kill, a full disk and a damaged ledger.

mod support;

use std::{process::Stdio, time::Duration};

use aether_core::{
    Aether, AetherConfig,
    state::{HeldBy, StateErrorKind, StateMap},
};
use serde_json::Value;
use support::{aether, connect, keep, keeper, run, server, soon};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
};

/// A replica of `map` on its own connection, as another program's.
async fn replica(url: &str, map: &str, node: &str) -> (Aether, StateMap) {
    let bus = connect(url, AetherConfig::default()).await;
    let map = StateMap::builder(map).node(node).open(&bus).await.unwrap();
    (bus, map)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_state_set_fails_and_a_keeper_holds_what_one_shot_commands_write() {
    let nats = server().await;
    let url = nats.url();
    let (status, _, stderr) = run(aether(
        &url,
        &[
            "state",
            "set",
            "home",
            "living.temp",
            "24.5",
            "--wait",
            "1s",
        ],
    ))
    .await;
    assert_eq!(status, 1, "nobody holds it: {stderr}");
    assert!(
        stderr.contains("aether node") && stderr.contains("--no-wait"),
        "says what to run: {stderr}"
    );
    let (status, _, stderr) = run(aether(
        &url,
        &["state", "set", "home", "living.temp", "24.5", "--no-wait"],
    ))
    .await;
    assert_eq!(status, 0, "{stderr}");
    assert!(stderr.contains("held here only"), "{stderr}");

    let dir = tempfile::tempdir().unwrap();
    let mut keeping = keeper(&url, dir.path(), "keeper-one", &[]).await;
    let (status, _, stderr) = run(aether(
        &url,
        &["state", "set", "home", "living.temp", "24.5"],
    ))
    .await;
    assert_eq!(status, 0, "{stderr}");
    assert!(stderr.contains("held by keeper-one"), "{stderr}");
    let (status, out, stderr) = run(aether(&url, &["state", "get", "home", "living.temp"])).await;
    assert_eq!((status, out.trim()), (0, "24.5"), "{stderr}");
    let (status, out, _) = run(aether(&url, &["state", "list", "home", "--json"])).await;
    assert_eq!(status, 0);
    let all: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(all, serde_json::json!({"living.temp": 24.5}));
    let (status, _, stderr) = run(aether(&url, &["state", "delete", "home", "living.temp"])).await;
    assert_eq!(status, 0, "{stderr}");
    let (status, _, stderr) = run(aether(&url, &["state", "get", "home", "living.temp"])).await;
    assert_eq!(status, 1, "deleted: {stderr}");
    assert!(stderr.contains("is not set"), "{stderr}");
    // Zero keepers is no wait: refused, as bad usage.
    let (status, _, stderr) = run(aether(
        &url,
        &["state", "set", "home", "k", "1", "--keepers", "0"],
    ))
    .await;
    assert_eq!(status, 2, "{stderr}");
    // Waiting for two keepers with one running fails.
    let (status, _, stderr) = run(aether(
        &url,
        &[
            "state",
            "set",
            "home",
            "k",
            "1",
            "--keepers",
            "2",
            "--wait",
            "1s",
        ],
    ))
    .await;
    assert_eq!(status, 1, "{stderr}");
    assert!(stderr.contains("2 keeper(s)"), "{stderr}");
    keeping.start_kill().unwrap();
    let _ = keeping.wait().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keeper_killed_and_restarted_serves_every_acknowledged_write() {
    const ROUNDS: usize = 4;
    const WRITES: usize = 400;
    let nats = server().await;
    let url = nats.url();
    let dir = tempfile::tempdir().unwrap();
    let mut keeping = keeper(&url, dir.path(), "keeper", &[]).await;
    let mut acknowledged: Vec<(String, usize)> = Vec::new();
    let mut not_held = 0;
    for round in 0..ROUNDS {
        // A writer that waits for the keeper after each write, while the
        // keeper is killed under it and started again.
        let (bus, writer) = replica(&url, "home", &format!("writer-{round}")).await;
        let writing = tokio::spawn(async move {
            let mut acked = Vec::new();
            let mut failed = 0;
            for n in 0..WRITES {
                let key = format!("r{round}.k{n}");
                writer.set_json(&key, &n).await.unwrap();
                match writer
                    .flush_to(HeldBy::keepers(1), Duration::from_secs(3))
                    .await
                {
                    Ok(_) => acked.push((key, n)),
                    Err(e) if e.kind() == StateErrorKind::NotHeld => failed += 1,
                    Err(e) => panic!("{e}"),
                }
            }
            writer.close().await;
            (acked, failed)
        });
        tokio::time::sleep(Duration::from_millis(50 + 50 * round as u64)).await;
        assert!(!writing.is_finished(), "killed while the writer writes");
        keeping.kill().await.unwrap();
        keeping = keeper(&url, dir.path(), "keeper", &[]).await;
        let (acked, failed) = tokio::time::timeout(Duration::from_secs(60), writing)
            .await
            .expect("the writer ends")
            .unwrap();
        bus.close();
        not_held += failed;
        acknowledged.extend(acked);
        // Killed right after the last acknowledgement, with no other
        // replica alive: only its ledger has the writes.
        keeping.kill().await.unwrap();
        keeping = keeper(&url, dir.path(), "keeper", &[]).await;
        let (bus, reader) = replica(&url, "home", &format!("reader-{round}")).await;
        let lost: Vec<&String> = acknowledged
            .iter()
            .filter(|(key, n)| reader.get_json::<usize>(key).unwrap() != Some(*n))
            .map(|(key, _)| key)
            .collect();
        assert!(
            lost.is_empty(),
            "round {round}: {} of {} acknowledged writes lost: {:?}",
            lost.len(),
            acknowledged.len(),
            &lost[..lost.len().min(5)]
        );
        reader.close().await;
        bus.close();
    }
    eprintln!(
        "{} writes acknowledged, {not_held} not (while the keeper was down), 0 lost",
        acknowledged.len()
    );
    assert!(acknowledged.len() >= ROUNDS * WRITES / 2, "most were held");
    keeping.kill().await.unwrap();
}

/// Many writers in flight on one replica, their flushes taking turns (two
/// under way at once), and the keeper SIGKILLed among their
/// acknowledgements: every write a flush said was held before the kill
/// is on the keeper's disk when it starts again, the writer gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writers_in_flight_lose_no_acknowledged_write_through_a_keepers_kill() {
    use std::sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    };
    const WRITERS: usize = 16;
    const WRITES: usize = 400;
    let nats = server().await;
    let url = nats.url();
    let dir = tempfile::tempdir().unwrap();
    let mut keeping = keeper(&url, dir.path(), "keeper", &[]).await;
    let (bus, writer) = replica(&url, "home", "writer").await;
    let (done, stop) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicBool::new(false)),
    );
    let tasks: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (writer, done, stop) = (writer.clone(), done.clone(), stop.clone());
            tokio::spawn(async move {
                let mut acked = Vec::new();
                for n in 0..WRITES {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let key = format!("w{w}.k{}", n % 40);
                    writer.set_json(&key, &n).await.unwrap();
                    match writer
                        .flush_to(HeldBy::keepers(1), Duration::from_secs(1))
                        .await
                    {
                        Ok(_) => acked.push((key, n)),
                        Err(e) if e.kind() == StateErrorKind::NotHeld => {}
                        Err(e) => panic!("{e}"),
                    }
                    done.fetch_add(1, Ordering::Relaxed);
                }
                acked
            })
        })
        .collect();
    soon("a quarter of the writes", || {
        done.load(Ordering::Relaxed) >= WRITERS * WRITES / 4
    })
    .await;
    // Killed among the turns' acknowledgements, the writers still writing.
    keeping.kill().await.unwrap();
    stop.store(true, Ordering::Relaxed);
    // The last acknowledged write of each key (a later one replaces it).
    let mut last: std::collections::HashMap<String, usize> = Default::default();
    let mut acknowledged = 0;
    for task in tasks {
        let acked = tokio::time::timeout(Duration::from_secs(30), task)
            .await
            .expect("the writer ends")
            .unwrap();
        acknowledged += acked.len();
        for (key, n) in acked {
            let at = last.entry(key).or_default();
            *at = (*at).max(n);
        }
    }
    assert!(
        acknowledged < WRITERS * WRITES,
        "the kill came while the writers wrote"
    );
    writer.close().await;
    bus.close();
    // Only the keeper's ledger has the writes now.
    keeping = keeper(&url, dir.path(), "keeper", &[]).await;
    let (bus, reader) = replica(&url, "home", "reader").await;
    let lost: Vec<(&String, &usize)> = last
        .iter()
        .filter(|(key, n)| {
            reader
                .get_json::<usize>(key)
                .unwrap()
                .is_none_or(|held| held < **n)
        })
        .collect();
    assert!(
        lost.is_empty(),
        "{} of {} keys lost an acknowledged write: {:?}",
        lost.len(),
        last.len(),
        &lost[..lost.len().min(5)]
    );
    eprintln!("{acknowledged} writes acknowledged before the kill, 0 lost");
    reader.close().await;
    bus.close();
    keeping.kill().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_keepers_one_killed_for_good_the_other_serves_everything() {
    let nats = server().await;
    let url = nats.url();
    let (one, two) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut first = keeper(&url, one.path(), "keeper-a", &[]).await;
    let mut second = keeper(&url, two.path(), "keeper-b", &["home", "garage"]).await;
    let (bus, writer) = replica(&url, "home", "writer").await;
    for n in 0..100 {
        writer.set_json(&format!("k{n}"), &n).await.unwrap();
    }
    let held = writer
        .flush_to(HeldBy::keepers(2), Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(
        (held.writes, held.by.as_slice()),
        (100, &["keeper-a".to_string(), "keeper-b".to_string()][..])
    );
    writer.close().await;
    bus.close();
    first.kill().await.unwrap();
    let (bus, reader) = replica(&url, "home", "reader").await;
    assert_eq!(reader.len(), 100, "keeper-b had it all");
    assert_eq!(reader.get_json::<u32>("k99").unwrap(), Some(99));
    reader.close().await;
    bus.close();
    // A map keeper-b's patterns do not name, past keeper-a's death: held
    // by nobody, said so.
    let (status, _, stderr) = run(aether(
        &url,
        &["state", "set", "attic", "box", "1", "--wait", "1s"],
    ))
    .await;
    assert_eq!(status, 1, "{stderr}");
    assert!(second.try_wait().unwrap().is_none(), "keeper-b runs on");
    second.kill().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keeper_past_its_bound_refuses_the_next_map_and_keeps_running() {
    let nats = server().await;
    let url = nats.url();
    let dir = tempfile::tempdir().unwrap();
    let mut keeping = keeper(&url, dir.path(), "small", &["--max-maps", "1"]).await;
    let (status, _, stderr) = run(aether(&url, &["state", "set", "home", "k", "1"])).await;
    assert_eq!(status, 0, "{stderr}");
    let (status, _, stderr) = run(aether(
        &url,
        &["state", "set", "garage", "door", "\"shut\"", "--wait", "1s"],
    ))
    .await;
    assert_eq!(status, 1, "past max_maps: {stderr}");
    assert!(keeping.try_wait().unwrap().is_none(), "still running");
    let (status, out, stderr) = run(aether(&url, &["state", "get", "home", "k"])).await;
    assert_eq!((status, out.trim()), (0, "1"), "{stderr}");
    // It stops cleanly on SIGTERM.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(keeping.id().unwrap() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let output = tokio::time::timeout(Duration::from_secs(10), keeping.wait_with_output())
        .await
        .expect("it stops on SIGTERM")
        .unwrap();
    assert!(output.status.success());
}

/// A tmpfs of `size` mounted on `dir` for the test's life (none where
/// mounting is not allowed).
struct SmallDisk(std::path::PathBuf);

impl SmallDisk {
    fn mount(dir: &std::path::Path, size: &str) -> Option<Self> {
        std::fs::create_dir_all(dir).unwrap();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Self(dir.to_path_buf()))
    }

    fn resize(&self, size: &str) {
        let ok = std::process::Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.0)
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "cannot resize the tmpfs");
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keeper_on_a_full_disk_acknowledges_only_what_its_ledger_holds() {
    const WRITES: usize = 300;
    let parent = tempfile::tempdir().unwrap();
    let Some(disk) = SmallDisk::mount(&parent.path().join("disk"), "256k") else {
        eprintln!("skipped: cannot mount a tmpfs here (needs root)");
        return;
    };
    let nats = server().await;
    let url = nats.url();
    let dir = disk.0.join("maps");
    let mut keeping = keeper(&url, &dir, "keeper", &[]).await;
    let (bus, writer) = replica(&url, "home", "writer").await;
    let value = "x".repeat(1500);
    let (mut acked, mut refused) = (Vec::new(), 0);
    for n in 0..WRITES {
        let key = format!("k{n}");
        writer.set_json(&key, &value).await.unwrap();
        match writer
            .flush_to(HeldBy::keepers(1), Duration::from_secs(3))
            .await
        {
            Ok(_) => acked.push(key),
            Err(e) if e.kind() == StateErrorKind::Ledger => refused += 1,
            Err(e) => panic!("{e}"),
        }
    }
    assert!(
        refused > 0,
        "the disk never filled: {} acknowledged",
        acked.len()
    );
    eprintln!(
        "a full disk: {} writes acknowledged, {refused} refused as not written to the ledger",
        acked.len()
    );
    // Only its ledger has them.
    keeping.kill().await.unwrap();
    keeping = keeper(&url, &dir, "keeper", &[]).await;
    let (reader_bus, reader) = replica(&url, "home", "reader").await;
    let lost: Vec<&String> = acked
        .iter()
        .filter(|key| reader.get_json::<String>(key).unwrap().as_ref() != Some(&value))
        .collect();
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged writes lost: {:?}",
        lost.len(),
        acked.len(),
        &lost[..lost.len().min(5)]
    );
    reader.close().await;
    reader_bus.close();
    // Space comes back: the writer's writes not held are held once it
    // flushes again, and survive another restart.
    disk.resize("8m");
    writer
        .flush_to(HeldBy::keepers(1), Duration::from_secs(10))
        .await
        .expect("held once the disk has room");
    keeping.kill().await.unwrap();
    keeping = keeper(&url, &dir, "keeper", &[]).await;
    writer.close().await;
    bus.close();
    let (reader_bus, reader) = replica(&url, "home", "reader-2").await;
    let missing = (0..WRITES)
        .filter(|n| {
            reader
                .get_json::<String>(&format!("k{n}"))
                .unwrap()
                .as_ref()
                != Some(&value)
        })
        .count();
    assert_eq!(missing, 0, "every write held once the disk had room");
    reader.close().await;
    reader_bus.close();
    keeping.kill().await.unwrap();
}

/// One-shot commands writing at once to maps of a keeper on a full disk:
/// each that says its write is held names the keeper, and finds it there
/// after the keeper's SIGKILL and restart. Commands do not vouch for each
/// other's writes (they exit), and a keeper that cannot open a map on its
/// full disk tells the writer so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_shot_commands_at_once_on_a_full_disk_are_held_by_the_keeper_alone() {
    const MAPS: usize = 3;
    const KEYS: usize = 60;
    const AT_ONCE: usize = 24;
    let parent = tempfile::tempdir().unwrap();
    let Some(disk) = SmallDisk::mount(&parent.path().join("disk"), "256k") else {
        eprintln!("skipped: cannot mount a tmpfs here (needs root)");
        return;
    };
    let nats = server().await;
    let url = nats.url();
    let dir = disk.0.join("maps");
    let mut keeping = keeper(&url, &dir, "keeper", &[]).await;
    let value = format!("\"{}\"", "x".repeat(1500));
    let writes: Vec<(String, String)> = (0..KEYS)
        .flat_map(|k| (0..MAPS).map(move |m| (format!("full{m}"), format!("k{k}"))))
        .collect();
    let (mut acked, mut refused) = (Vec::new(), 0);
    for batch in writes.chunks(AT_ONCE) {
        let mut running = tokio::task::JoinSet::new();
        for (map, key) in batch.iter().cloned() {
            let command = aether(&url, &["state", "set", &map, &key, &value]);
            running.spawn(async move { (map, key, run(command).await) });
        }
        while let Some(done) = running.join_next().await {
            let (map, key, (status, _, stderr)) = done.unwrap();
            if status == 0 {
                assert!(
                    stderr.contains("held by keeper"),
                    "{map}/{key} said held by someone else: {stderr}"
                );
                acked.push((map, key));
            } else {
                refused += 1;
                assert!(
                    stderr.contains("ledger") || stderr.contains("not acknowledge"),
                    "{map}/{key}: {stderr}"
                );
            }
        }
    }
    eprintln!(
        "{} one-shot writes {AT_ONCE} at a time on a full disk: {} held by the keeper, {refused} refused",
        writes.len(),
        acked.len()
    );
    assert!(refused > 0, "the disk never filled");
    // A new map on the full disk, written by eight at once: the keeper
    // cannot open it, and tells every writer (each try leaves nothing
    // behind it, nothing called damaged).
    for _ in 0..2 {
        let mut running = tokio::task::JoinSet::new();
        for n in 0..8 {
            let command = aether(&url, &["state", "set", "late", &format!("k{n}"), "1"]);
            running.spawn(run(command));
        }
        while let Some(done) = running.join_next().await {
            let (status, _, stderr) = done.unwrap();
            assert_eq!(status, 1, "{stderr}");
            assert!(stderr.contains("ledger"), "the keeper said why: {stderr}");
        }
    }
    let damaged = walkdir(&dir)
        .into_iter()
        .filter(|p| p.ends_with("damaged"))
        .collect::<Vec<_>>();
    assert!(damaged.is_empty(), "{damaged:?}");
    // Nor a directory to open again at the next start.
    assert!(
        !dir.join("late").exists(),
        "{:?}",
        walkdir(&dir.join("late"))
    );
    keeping.kill().await.unwrap();
    keeping = keeper(&url, &dir, "keeper", &[]).await;
    let mut lost = Vec::new();
    for m in 0..MAPS {
        let map = format!("full{m}");
        let (bus, reader) = replica(&url, &map, "reader").await;
        for (_, key) in acked.iter().filter(|(of, _)| *of == map) {
            if reader.get(key).is_none() {
                lost.push(format!("{map}/{key}"));
            }
        }
        reader.close().await;
        bus.close();
    }
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged writes lost: {:?}",
        lost.len(),
        acked.len(),
        &lost[..lost.len().min(5)]
    );
    keeping.kill().await.unwrap();
}

/// A delete flushed to keepers when no keeper keeps the map is held by no
/// keeper's disk: it fails saying so, rather than count as held while the
/// key lives on in a keeper that is away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_no_keeper_keeps_is_not_acknowledged() {
    let nats = server().await;
    let url = nats.url();
    let (one, other) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let first = keeper(&url, one.path(), "first", &[]).await;
    let (status, _, stderr) = run(aether(&url, &["state", "set", "e2", "x", "1"])).await;
    assert_eq!(status, 0, "{stderr}");
    support::terminate(first).await;
    let second = keeper(&url, other.path(), "second", &[]).await;
    let delete = aether(&url, &["state", "delete", "e2", "x", "--keepers", "1"]);
    let (status, _, stderr) = run(delete).await;
    assert_eq!(status, 1, "{stderr}");
    assert!(stderr.contains("keeps nothing of this map"), "{stderr}");
    support::terminate(second).await;
}

/// Every path under `dir`, at any depth.
fn walkdir(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut all = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            all.extend(walkdir(&path));
        }
        all.push(path);
    }
    all
}

/// Like [`start`], keeping what it says after `ready`.
async fn start_logged(
    mut command: Command,
    ready: &str,
) -> (Child, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    let mut child = command.spawn().expect("it starts");
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let said = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            let done = line.contains(ready);
            said.lock().unwrap().push(line);
            if done {
                return;
            }
        }
        panic!("ended before saying {ready:?}");
    })
    .await
    .unwrap_or_else(|_| panic!("no {ready:?} within 20 s"));
    let keep = said.clone();
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            keep.lock().unwrap().push(line);
        }
    });
    (child, said)
}

/// The segment files under `dir`, at any depth.
fn segments_in(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(segments_in(&path));
        } else if path.extension().is_some_and(|e| e == "log") {
            found.push(path);
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_ledger_loses_only_the_damaged_record_and_says_so() {
    const KEYS: usize = 20;
    let nats = server().await;
    let url = nats.url();
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("keeper");
    let mut keeping = keeper(&url, dir.as_path(), "keeper", &[]).await;
    let (bus, writer) = replica(&url, "solo", "writer").await;
    for n in 0..KEYS {
        writer.set_json(&format!("k{n}"), &n).await.unwrap();
        writer
            .flush_to(HeldBy::keepers(1), Duration::from_secs(5))
            .await
            .unwrap();
    }
    writer.close().await;
    bus.close();
    processes_stop(&mut keeping).await;
    // The map's own: its folder 0700, its files 0600.
    let segments = segments_in(dir.as_path());
    assert_eq!(segments.len(), 1, "{segments:?}");
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&segments[0]), 0o600);
    assert_eq!(mode(segments[0].parent().unwrap()), 0o700);
    // The keeper's too: the directory it made, its lock, what each map
    // covers.
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&dir.join("keeper.lock")), 0o600);
    assert_eq!(mode(&segments[0].parent().unwrap().join("covers")), 0o600);
    // Four bytes zeroed inside the record in the middle of the map's
    // ledger (records follow the 24-byte segment header, each a 16-byte
    // header whose bytes 4 to 8 are its payload's length).
    let mut bytes = std::fs::read(&segments[0]).unwrap();
    let mut record = 24;
    for _ in 0..KEYS / 2 {
        let len = u32::from_le_bytes(bytes[record + 4..record + 8].try_into().unwrap());
        record += 16 + len as usize;
    }
    bytes[record + 20..record + 24].fill(0);
    std::fs::write(&segments[0], &bytes).unwrap();

    let (mut keeping, said) =
        start_logged(keep(&url, dir.as_path(), "keeper", &[]), "keeping maps").await;
    let (bus, reader) = replica(&url, "solo", "reader").await;
    let back = (0..KEYS)
        .filter(|n| reader.get_json::<usize>(&format!("k{n}")).unwrap() == Some(*n))
        .count();
    assert!(
        back >= KEYS - 1,
        "{back} of {KEYS} keys back: {:?}",
        said.lock().unwrap()
    );
    reader.close().await;
    bus.close();
    soon("the damage is logged", || {
        said.lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("ledger was damaged") && l.contains("solo"))
    })
    .await;
    // The damaged file as it was, kept aside.
    let aside: Vec<_> = segments_in(dir.as_path())
        .into_iter()
        .filter(|p| p.components().any(|c| c.as_os_str() == "damaged"))
        .collect();
    assert_eq!(aside.len(), 1, "{aside:?}");
    assert_eq!(std::fs::read(&aside[0]).unwrap(), bytes);
    processes_stop(&mut keeping).await;
    let said = said.lock().unwrap().join("\n");
    assert!(said.contains("1 ledgers found damaged"), "{said}");
}

/// A ledger whose segment was deleted (by hand, or by a file system
/// repair) starts empty, and says so, naming the map: its coverage file
/// remembers how many records it had written. One cut in the middle of a
/// record says how many records went, not only the torn one. A map whose
/// whole directory is gone is said too: the keeper's `kept` file names the
/// maps it held. A ledger without its count beside it says that it cannot
/// be checked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ledger_missing_its_records_says_so() {
    let nats = server().await;
    let url = nats.url();
    let dir = tempfile::tempdir().unwrap();
    let mut keeping = keeper(&url, dir.path(), "keeper", &[]).await;
    for map in ["solo", "gone", "torn", "uncounted"] {
        let (bus, writer) = replica(&url, map, "writer").await;
        for n in 0..5 {
            writer.set_json(&format!("k{n}"), &n).await.unwrap();
        }
        writer
            .flush_to(HeldBy::keepers(1), Duration::from_secs(5))
            .await
            .unwrap();
        writer.close().await;
        bus.close();
    }
    // The list is written within a second of the maps holding keys.
    soon("both maps are listed", || {
        std::fs::read_to_string(dir.path().join("kept")).is_ok_and(|list| {
            list.lines()
                .filter(|l| ["solo", "gone", "torn", "uncounted"].contains(l))
                .count()
                == 4
        })
    })
    .await;
    processes_stop(&mut keeping).await;
    for segment in segments_in(&dir.path().join("solo")) {
        std::fs::remove_file(segment).unwrap();
    }
    std::fs::remove_dir_all(dir.path().join("gone")).unwrap();
    let last = segments_in(&dir.path().join("torn"))
        .into_iter()
        .max()
        .unwrap();
    let length = std::fs::metadata(&last).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&last)
        .unwrap()
        .set_len(length / 2 + 3)
        .unwrap();
    std::fs::remove_file(dir.path().join("uncounted").join("covers")).unwrap();
    let (mut keeping, said) =
        start_logged(keep(&url, dir.path(), "keeper", &[]), "keeping maps").await;
    soon("every loss is logged", || {
        let said = said.lock().unwrap();
        let fewer = |map: &str| {
            said.iter()
                .any(|l| l.contains("fewer records than it had written") && l.contains(map))
        };
        fewer("solo")
            && fewer("torn")
            && said
                .iter()
                .any(|l| l.contains("is gone from its directory") && l.contains("gone"))
            && said
                .iter()
                .any(|l| l.contains("no record count beside it") && l.contains("uncounted"))
    })
    .await;
    processes_stop(&mut keeping).await;
    let said = said.lock().unwrap().join("\n");
    assert!(said.contains("3 ledgers found damaged"), "{said}");
}

/// SIGTERM, and the process's end.
async fn processes_stop(child: &mut Child) {
    let pid = nix::unistd::Pid::from_raw(child.id().unwrap() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("it stops")
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_snapshot_is_kept_aside_and_the_map_kept_on() {
    let nats = server().await;
    let url = nats.url();
    let dir = tempfile::tempdir().unwrap();
    let mut keeping = keeper(&url, dir.path(), "keeper", &[]).await;
    let (bus, writer) = replica(&url, "snap", "writer").await;
    // Records past 256 KiB make the ledger snapshot the map; then a key
    // after it.
    let value = "v".repeat(8 * 1024);
    for _ in 0..40 {
        writer.set_json("big", &value).await.unwrap();
        writer
            .flush_to(HeldBy::keepers(1), Duration::from_secs(5))
            .await
            .unwrap();
    }
    writer.set_json("after", &1).await.unwrap();
    writer
        .flush_to(HeldBy::keepers(1), Duration::from_secs(5))
        .await
        .unwrap();
    writer.close().await;
    bus.close();
    processes_stop(&mut keeping).await;
    let snapshot = dir.path().join("snap").join("snapshot.bin");
    let mut bytes = std::fs::read(&snapshot).expect("the ledger took a snapshot");
    let middle = bytes.len() / 2;
    bytes[middle..middle + 16].fill(0xff);
    std::fs::write(&snapshot, &bytes).unwrap();

    let (mut keeping, said) =
        start_logged(keep(&url, dir.path(), "keeper", &[]), "keeping maps").await;
    // The map is kept on: what the records after the snapshot hold is
    // back, and a new write is acknowledged.
    let (status, out, stderr) = run(aether(&url, &["state", "get", "snap", "after"])).await;
    assert_eq!((status, out.trim()), (0, "1"), "{stderr}");
    let (status, _, stderr) = run(aether(&url, &["state", "set", "snap", "new", "2"])).await;
    assert_eq!(status, 0, "{stderr}");
    soon("the damage is logged", || {
        said.lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("ledger was damaged") && l.contains("snap"))
    })
    .await;
    let aside = dir.path().join("snap").join("damaged");
    let kept: Vec<_> = std::fs::read_dir(&aside)
        .expect("kept aside")
        .flatten()
        .map(|e| e.path().join("snapshot.bin"))
        .collect();
    assert_eq!(kept.len(), 1);
    assert_eq!(std::fs::read(&kept[0]).unwrap(), bytes);
    processes_stop(&mut keeping).await;
}

/// A keeper reports itself under its name without being told to: an
/// operator's `aether stats` lists it, with its keeper's counts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keeper_is_listed_by_name_in_stats() {
    let nats = server().await;
    let url = nats.url();
    let dir = tempfile::tempdir().unwrap();
    let mut keeping = keeper(&url, dir.path(), "shelf", &[]).await;
    let (status, out, stderr) = run(aether(&url, &["stats", "--wait", "6s"])).await;
    assert_eq!(status, 0, "{stderr}");
    assert!(
        out.lines().any(|l| l.starts_with("keep-shelf")),
        "no keep-shelf in: {out}"
    );
    keeping.kill().await.unwrap();
}
