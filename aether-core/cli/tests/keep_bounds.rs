//! A keeper's bounds as processes (`aether keep`): replicas that only say
//! hello open nothing, a keeper of many maps answers soon after it starts
//! and costs little while they are idle, and a keeper on a machine of little memory holds its maps within one
//! byte budget, refusing the rest as full.

mod support;

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use aether_core::{
    AetherConfig,
    state::{HeldBy, StateErrorKind, StateMap},
};
use support::{aether, connect, keep, keeper, run, server, start, terminate};

/// The map directories a keeper's directory holds, sorted.
fn maps_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_type().unwrap().is_dir())
        .map(|e| e.file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

/// Bytes of the files under `dir`, at any depth.
fn bytes_under(dir: &Path) -> u64 {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let meta = entry.metadata().unwrap();
        total += if meta.is_dir() {
            bytes_under(&entry.path())
        } else {
            meta.len()
        };
    }
    total
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_that_only_read_open_no_map_on_a_keeper() {
    let nats = server().await;
    let url = nats.url();
    let dir = tempfile::tempdir().unwrap();
    let keeping = keeper(&url, dir.path(), "keeper", &[]).await;
    // Twenty programs open made-up maps, read, and go, writing nothing.
    let reads = (0..20).map(|n| {
        let map = format!("junk-{n}");
        let url = url.clone();
        async move { run(aether(&url, &["state", "get", &map, "k"])).await }
    });
    for (status, _, stderr) in futures_util::future::join_all(reads).await {
        assert_eq!(status, 1, "not set: {stderr}");
    }
    // One writes: its map is kept.
    let (status, _, stderr) = run(aether(&url, &["state", "set", "home", "k", "1"])).await;
    assert_eq!(status, 0, "held by the keeper: {stderr}");
    assert_eq!(maps_in(dir.path()), ["home"]);
    let (status, out, stderr) = run(aether(&url, &["state", "get", "home", "k"])).await;
    assert_eq!((status, out.trim()), (0, "1"), "{stderr}");
    terminate(keeping).await;
}

/// Maps a keeper keeps: a keeper's directory holding `home` and
/// `MAPS - 1` copies of it (`m000`, `m001`, ...), each with `k` = "v".
const MAPS: usize = 256;

async fn kept_maps(url: &str, dir: &Path) {
    kept_maps_of(url, dir, MAPS).await;
}

/// [`kept_maps`] with `maps` maps.
async fn kept_maps_of(url: &str, dir: &Path, maps: usize) {
    let keeping = keeper(url, dir, "keeper", &[]).await;
    let (status, _, stderr) = run(aether(url, &["state", "set", "home", "k", "\"v\""])).await;
    assert_eq!(status, 0, "{stderr}");
    terminate(keeping).await;
    // The same ledger under 255 more names: 256 maps, max_maps.
    for n in 0..maps - 1 {
        let to = dir.join(format!("m{n:03}"));
        std::fs::create_dir(&to).unwrap();
        for file in std::fs::read_dir(dir.join("home")).unwrap().flatten() {
            std::fs::copy(file.path(), to.join(file.file_name())).unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keeper_of_256_maps_answers_within_five_seconds_of_its_start() {
    let nats = server().await;
    let url = nats.url();
    let dir = tempfile::tempdir().unwrap();
    kept_maps(&url, dir.path()).await;
    let started = Instant::now();
    let keeping = keeper(&url, dir.path(), "keeper", &[]).await;
    let ready = started.elapsed();
    // The last map in name order, the first a program asks for: read by a
    // one-shot command as soon as the keeper has it.
    let mut answered = None;
    while started.elapsed() < Duration::from_secs(15) {
        let (status, out, stderr) = run(aether(&url, &["state", "get", "m254", "k"])).await;
        // Once the keeper says it is ready, never a wrong answer.
        assert!(!stderr.contains("is not set"), "{stderr}");
        if status == 0 && out.trim() == "\"v\"" {
            answered = Some(started.elapsed());
            break;
        }
    }
    let answered = answered.expect("the map is read within 15 s");
    eprintln!("{MAPS} maps: the keeper said it was ready in {ready:?}, answered in {answered:?}");
    assert!(
        answered < Duration::from_secs(5),
        "a keeper of {MAPS} maps answered only after {answered:?}"
    );
    terminate(keeping).await;
}

/// Maps of the smaller keeper the next test compares with.
const FEW: usize = 64;

/// A keeper of 256 maps of one small key each, idle, costs little: a map
/// nobody watches holds no watchers' buffers, an idle ledger no write
/// buffer; and what it does grows with its maps, not with their square
/// (the keeper's messages are read without visiting every map's
/// subscriptions for each). The second is a ratio of two keepers on one
/// machine in one run, whatever that machine's speed: four times the maps
/// are four times the messages (a lone replica says hello every few
/// heartbeats), where a sweep of every subscription for each message made
/// it sixteen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keeper_of_many_small_maps_costs_little_while_idle() {
    let nats = server().await;
    let url = nats.url();
    let (few, many) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    kept_maps_of(&url, few.path(), FEW).await;
    kept_maps_of(&url, many.path(), MAPS).await;
    let (_, few_share) = idle(&url, few.path(), FEW).await;
    let (resident, share) = idle(&url, many.path(), MAPS).await;
    eprintln!(
        "{MAPS} idle maps: {} MiB resident, {:.1} % of a core; {FEW} maps: {:.1} %",
        resident >> 20,
        share * 100.0,
        few_share * 100.0
    );
    // 152-156 MiB when each map held a watcher's buffers and a journal
    // buffer (about 0.5 MB a map); about 44 MiB since.
    assert!(resident < 80 << 20, "{resident} bytes resident");
    // Unoptimised builds: 3.5 % and 13-15 % on an AMD EPYC (2 vCPU), a
    // ratio of about 4; 3-5 % for 256 maps on a faster machine.
    let ratio = share / few_share.max(0.001);
    assert!(
        ratio < 8.0,
        "{MAPS} maps cost {ratio:.1} times what {FEW} cost idle"
    );
    assert!(share < 0.35, "{:.1} % of a core idle", share * 100.0);
}

/// A keeper of `maps` maps kept in `dir` (the last named `m{maps - 2}`),
/// once they are open and idle: its resident bytes, and the share of a
/// core it takes over 5 s.
async fn idle(url: &str, dir: &Path, maps: usize) -> (u64, f64) {
    let keeping = keeper(url, dir, "keeper", &[]).await;
    let pid = keeping.id().unwrap();
    let last = format!("m{:03}", maps - 2);
    let started = Instant::now();
    loop {
        let (status, out, _) = run(aether(url, &["state", "get", &last, "k"])).await;
        if status == 0 && out.trim() == "\"v\"" {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(15), "{last} read");
    }
    // Every map open (they open within about 2.5 s of the start).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let resident = memory(pid, "VmRSS:");
    let (cpu, wall) = (cpu_ns(pid), Instant::now());
    tokio::time::sleep(Duration::from_secs(5)).await;
    let share = (cpu_ns(pid) - cpu) as f64 / wall.elapsed().as_nanos() as f64;
    terminate(keeping).await;
    (resident, share)
}

/// Nanoseconds process `pid`'s threads have run on a CPU.
fn cpu_ns(pid: u32) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("schedstat")).ok())
        .filter_map(|stat| stat.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// Reads while a keeper of many maps is still opening them, from the
/// moment it is on the bus: each waits for the keeper's replica rather
/// than say the key is not set.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_while_a_keeper_opens_its_maps_wait_for_it() {
    let nats = server().await;
    let url = nats.url();
    let dir = tempfile::tempdir().unwrap();
    kept_maps(&url, dir.path()).await;
    let command = keep(&url, dir.path(), "keeper", &[]);
    // From the moment it says it is connected.
    let keeping = start(command, "connected to").await;
    let on_bus = Instant::now();
    // Maps far apart in name order, each read once, all at once: the
    // keeper opens what is asked for first.
    let maps = [
        "m000", "m031", "m064", "m127", "m200", "m230", "m249", "m254", "home",
    ];
    let reads = maps.map(|map| {
        let url = url.clone();
        async move { (map, run(aether(&url, &["state", "get", map, "k"])).await) }
    });
    for (map, (status, out, stderr)) in futures_util::future::join_all(reads).await {
        assert_eq!((status, out.trim()), (0, "\"v\""), "{map}: {stderr}");
    }
    eprintln!(
        "nine reads as the keeper opened {MAPS} maps: {:?}",
        on_bus.elapsed()
    );
    terminate(keeping).await;
}

/// A memory cgroup (v1) of `limit` bytes for the test's life, or none where
/// one cannot be made.
struct Cgroup(PathBuf);

impl Cgroup {
    fn make(limit: u64) -> Option<Self> {
        let path = PathBuf::from(format!(
            "/sys/fs/cgroup/memory/aether-test-{}",
            std::process::id()
        ));
        std::fs::create_dir(&path).ok()?;
        let group = Self(path);
        std::fs::write(group.0.join("memory.limit_in_bytes"), limit.to_string()).ok()?;
        Some(group)
    }

    fn take(&self, pid: u32) {
        std::fs::write(self.0.join("cgroup.procs"), pid.to_string()).unwrap();
    }

    /// Processes the kernel killed in it for lack of memory.
    fn oom_kills(&self) -> u64 {
        std::fs::read_to_string(self.0.join("memory.oom_control"))
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("oom_kill "))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        // Empty once its processes ended.
        for _ in 0..50 {
            if std::fs::remove_dir(&self.0).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// The peak resident memory of process `pid` (VmHWM), bytes.
fn peak_rss(pid: u32) -> u64 {
    memory(pid, "VmHWM:")
}

/// A memory figure of process `pid` from its status, bytes.
fn memory(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .expect("VmHWM")
        * 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keeper_short_of_memory_holds_its_maps_within_its_budget() {
    const BUDGET: u64 = 16 << 20;
    const LIMIT: u64 = 96 << 20;
    let Some(group) = Cgroup::make(LIMIT) else {
        eprintln!("skipped: cannot make a memory cgroup here (needs root and cgroup v1)");
        return;
    };
    let nats = server().await;
    let url = nats.url();
    let dir = tempfile::tempdir().unwrap();
    let keeping = keeper(&url, dir.path(), "keeper", &["--max-bytes", "16MiB"]).await;
    let pid = keeping.id().unwrap();
    group.take(pid);
    let idle = memory(pid, "VmRSS:");
    // Three programs fill a map each with 32 KiB values until the keeper
    // refuses their writes as full.
    let value = "x".repeat(32 * 1024 - 2);
    let mut held = 0u64;
    let mut data = 0u64;
    let mut full = 0;
    let mut writers = Vec::new();
    for map in ["kitchen", "garden", "garage"] {
        let bus = connect(&url, AetherConfig::default()).await;
        let replica = StateMap::builder(map)
            .node(format!("{map}-writer"))
            .open(&bus)
            .await
            .unwrap();
        writers.push((bus, replica));
    }
    'fill: for n in 0..400 {
        for (_, replica) in &writers {
            replica.set_json(&format!("k{n}"), &value).await.unwrap();
            match replica
                .flush_to(HeldBy::keepers(1), Duration::from_secs(5))
                .await
            {
                // Its key, its value as JSON, and what an entry costs.
                Ok(_) => {
                    held += 1;
                    data += (format!("k{n}").len() + value.len() + 2) as u64
                        + aether_core::config::ENTRY_BYTES;
                }
                Err(e) if e.kind() == StateErrorKind::Full => {
                    assert!(e.to_string().contains("max_bytes"), "{e}");
                    full += 1;
                    if full >= 6 {
                        break 'fill;
                    }
                }
                Err(e) => panic!("{e}"),
            }
        }
    }
    assert!(full >= 6, "the budget was never reached: {held} held");

    let rss = peak_rss(pid);
    let now = memory(pid, "VmRSS:");
    let disk = bytes_under(dir.path());
    eprintln!(
        "{held} writes of 32 KiB held ({data} bytes), {full} refused as full; the keeper's \
         memory {idle} bytes idle, {now} holding them, {rss} at its peak; its disk {disk} bytes"
    );
    assert!(data <= BUDGET, "{data} bytes held past the budget");
    assert!(data >= BUDGET * 9 / 10, "the budget is used: {data}");
    assert_eq!(group.oom_kills(), 0, "the keeper ran out of memory");
    // Memory near the data (and the process's own), disk about twice it.
    assert!(rss <= 2 * BUDGET + (24 << 20), "peak memory {rss}");
    assert!(disk <= 2 * BUDGET + 3 * (2 << 20), "disk {disk}");
    // Still keeping, and what it held it still holds after a restart.
    let said = terminate(keeping).await;
    drop(said);
    let keeping = keeper(&url, dir.path(), "keeper", &["--max-bytes", "16MiB"]).await;
    for (bus, replica) in writers {
        replica.close().await;
        bus.close();
    }
    let (status, out, stderr) = run(aether(&url, &["state", "get", "garage", "k0"])).await;
    assert_eq!(status, 0, "{stderr}");
    assert_eq!(out.trim().len(), value.len() + 2);
    terminate(keeping).await;
}
