//! Failover of a three-node NATS cluster under the sample saga, with the
//! shipped settings (`config/default.toml`): the gateway, beta and alpha as
//! processes on a JetStream cluster. While orders flow, beta's node is
//! killed (SIGKILL) and restarted 3 s later, then alpha's node is killed
//! for good; the whole sequence three times, each on a new cluster. Two of
//! three nodes keep the stream's quorum: no order is lost, each is answered
//! once (answers later than alpha's 15 s deadline are counted, not failed),
//! and the gateway's counts are the services'. When a kill takes the
//! stream's leader, durable emits wait for the cluster to elect another
//! (nats-server's followers wait 4 to 9 s for a lost leader); the programs
//! send again within a bound of the new leader, measured unless the next
//! kill comes first. The test prints what it
//! measures (`failover: [seconds] ...`): the programs' connections, the
//! stream's replicas and leader, the reconnections after each kill, the
//! time from the new leader to each program's first acknowledged durable
//! wave, the longest pause of the orders, and the counts.

mod support;

use std::{
    collections::{HashMap, HashSet},
    fs::File,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Stdio,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};

use aether_core::{Aether, AetherConfig, Vibrator, config::NatsConfig};
use aether_testkit::{NatsCluster, RawNats};
use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};
use support::{eventually, get, observed, sample};
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    process::{Child, Command},
    sync::mpsc,
    task::JoinHandle,
    time::Instant,
};

const PROGRAM: &str = env!("CARGO_BIN_EXE_aether-gateway");
/// The shipped settings.
const SETTINGS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/default.toml");
const ORDERS: u64 = 2000;
const RATE: &str = "200";
/// The whole test, cluster included.
const WHOLE: Duration = Duration::from_secs(150);
const BOUND: Duration = Duration::from_secs(20);
const PROGRAMS: [&str; 3] = ["gateway", "beta", "alpha"];
/// The whole sequence, each time on a new cluster.
const ROUNDS: usize = 3;
/// Longest time from the stream's new leader to a program's first durable
/// wave acknowledged after it: an attempt's timeout (1 s) and a retry's
/// delay, with room for two loaded cores.
const RESUME_BOUND: Duration = Duration::from_millis(2500);
/// Plain waves of beta's (answers, its map's changes) that may be in flight
/// to a node when it is killed, lost with it.
const LOST_AT_A_KILL: i64 = 64;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_order_is_lost_when_cluster_nodes_fail() {
    // Built before the clock starts: a first build takes a while.
    let [beta_bin, alpha_bin] = support::service_programs(PROGRAM).await;
    for round in 1..=ROUNDS {
        eprintln!("failover: round {round} of {ROUNDS}");
        let deadline = Instant::now() + WHOLE;
        let mut cluster =
            tokio::time::timeout_at(deadline, NatsCluster::builder(3).jetstream(true).start())
                .await
                .expect("the cluster within the bound")
                .expect("a three-node JetStream cluster");
        let dir = tempfile::tempdir().unwrap();
        // Declared after the cluster: on a failure it prints the logs while
        // the nodes' logs are still there.
        let _evidence = Evidence {
            files: PROGRAMS
                .map(|name| dir.path().join(format!("{name}.log")))
                .into_iter()
                .chain((0..cluster.len()).map(|i| cluster.node(i).log_path().to_path_buf()))
                .collect(),
        };
        tokio::time::timeout_at(
            deadline,
            saga(&mut cluster, dir.path(), &beta_bin, &alpha_bin, deadline),
        )
        .await
        .expect("the saga and its failovers within 150 s");
    }
}

async fn saga(
    cluster: &mut NatsCluster,
    dir: &Path,
    beta_bin: &str,
    alpha_bin: &str,
    deadline: Instant,
) {
    let started = Instant::now();
    std::fs::copy(SETTINGS, dir.join("default.toml")).unwrap();
    let urls = cluster.urls();
    let nodes: Vec<Node> = (0..cluster.len())
        .map(|i| Node {
            addr: cluster.node(i).addr(),
            name: cluster.node(i).server_name().to_string(),
        })
        .collect();

    let gateway = program(PROGRAM, dir, &urls, "gateway", &[]);
    let (mut gateway, addr) = support::spawn_serving(gateway, BOUND).await;

    // The gateway subscribed on its own connection: wait until it hears
    // the bus.
    let probe_side = Aether::connect(AetherConfig {
        nats: NatsConfig {
            urls: urls.clone(),
            ..NatsConfig::default()
        },
        ..AetherConfig::default()
    })
    .await
    .expect("connects to the cluster");
    let probe = Vibrator::create("probe", &probe_side).await.unwrap();
    eventually("the gateway hears the bus", BOUND, || async {
        probe
            .emit_wave("probe.ping", serde_json::json!(0))
            .await
            .unwrap();
        let text = get(addr, "/metrics").await.body;
        (observed(&text, "probe.ping") > 0).then_some(())
    })
    .await;
    probe_side.close();

    let stock = [
        ("AETHER__BETA__STOCK__WIDGET", "100000"),
        ("AETHER__BETA__STOCK__GADGET", "100000"),
        // The gizmos run out midway: both answers flow.
        ("AETHER__BETA__STOCK__GIZMO", "300"),
    ];
    let mut beta = program(beta_bin, dir, &urls, "beta", &stock)
        .spawn()
        .unwrap();
    let mut beta_lines = lines(&mut beta);
    line_starting(&mut beta_lines, "aether-service-beta: connected", BOUND).await;

    let watch = Watch::start(addr, nodes, started);
    watch.add("gateway", gateway.id().unwrap());
    watch.add("beta", beta.id().unwrap());
    // The shipped answer deadline (15 s): alpha waits for each order that
    // long, counts the later answers overdue, and is done when every order
    // is answered (or the last one's deadline passed).
    let mut alpha = program(alpha_bin, dir, &urls, "alpha", &[])
        .args(["--rate", RATE, "--count", &ORDERS.to_string()])
        .spawn()
        .unwrap();
    watch.add("alpha", alpha.id().unwrap());
    let mut alpha_lines = lines(&mut alpha);
    let alpha_started = Instant::now();

    // Beta's node down and back 3 s later, then alpha's node down for
    // good, orders still flowing.
    tokio::time::sleep_until(alpha_started + Duration::from_secs(3)).await;
    let first = watch.victim(cluster, "beta", None);
    let first_killed = watch.note(format!("node {first} killed"));
    let first_election = Election::after_kill(&watch, cluster, first);
    cluster.kill(first).await.unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let restarting = Instant::now();
    cluster.restart(first).await.expect("the node rejoins");
    watch.note(format!(
        "node {first} restarted, its routes and JetStream back in {:.2?}",
        restarting.elapsed()
    ));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let second = watch.victim(cluster, "alpha", Some(first));
    let second_killed = watch.note(format!("node {second} killed, left down"));
    let second_election = Election::after_kill(&watch, cluster, second);
    let second_kill_at = SystemTime::now();
    cluster.kill(second).await.unwrap();

    // Alpha stops by itself after its orders and their answers.
    let bound = deadline
        .saturating_duration_since(Instant::now())
        .saturating_sub(Duration::from_secs(3));
    let Some(summary) = next_line_starting(&mut alpha_lines, "service-alpha:", bound).await else {
        panic!(
            "alpha did not finish within {bound:.0?} of the second kill; the gateway observed \
             {} orders; the stream: {:?}",
            watch.orders(),
            watch.stream()
        );
    };
    watch.note(summary.clone());
    let alpha_counts = counts(&summary);
    let status = tokio::time::timeout(BOUND, alpha.wait())
        .await
        .expect("alpha exits after its summary")
        .unwrap();
    assert!(status.success(), "alpha: {status}");
    watch.print(&[(first, first_killed), (second, second_killed)]);
    // Each election is measured unless the next kill came within the
    // resend bound of its new leader (then what is measured is that kill).
    for (election, next_kill) in [
        (first_election, Some(second_kill_at)),
        (second_election, None),
    ] {
        if let Some(election) = election {
            election.check_resumed(&watch, dir, next_kill).await;
        }
    }
    // Every order made; each confirmed, cancelled, or (when the stream's
    // consumers recovered slower than alpha's shipped 15 s answer
    // deadline, which two elections on two loaded cores can exceed)
    // unanswered in alpha's time, and answered all the same: the gateway
    // observes every answer once below.
    let alpha = |name: &str| alpha_counts.get(name).copied().unwrap_or(u64::MAX);
    assert_eq!(alpha("created"), ORDERS, "{alpha_counts:?}");
    for name in ["failed", "unmatched"] {
        assert_eq!(alpha(name), 0, "{name}: {alpha_counts:?}");
    }
    assert_eq!(
        alpha("confirmed") + alpha("cancelled") + alpha("unanswered"),
        ORDERS,
        "{alpha_counts:?}"
    );
    watch.note(format!(
        "answered past alpha's deadline: {} overdue, {} still unanswered when it stopped",
        alpha("overdue"),
        alpha("unanswered")
    ));

    // The gateway observed every answer, and beta's reports follow them: at
    // least every answer published (its stock map's waves are published
    // too), and unobserved no more than the map's beat or two in flight
    // between a report and the observer, and the plain waves in flight to
    // a node when it died (core NATS delivers at most once; at beta's rate
    // tens of milliseconds of them: [`LOST_AT_A_KILL`] per kill).
    let answers = tokio::time::timeout(BOUND, async {
        loop {
            let text = get(addr, "/metrics").await.body;
            let seen =
                observed(&text, "inventory.reserved") + observed(&text, "inventory.insufficient");
            if seen == ORDERS {
                return seen;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert!(answers.is_ok(), "the gateway observed every answer once");
    let beta_report = tokio::time::timeout(BOUND, async {
        loop {
            match watch.latest("beta-1") {
                Some(report)
                    if report.published >= ORDERS
                        && report.unobserved <= 2 + 2 * LOST_AT_A_KILL =>
                {
                    return report;
                }
                _ => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    })
    .await;
    watch.note(format!(
        "beta-1 reports (last ones): {:?}",
        tail(&watch.reports("beta-1"))
    ));
    beta_report.unwrap_or_else(|_| {
        panic!(
            "beta-1: the gateway's reconciliation is not every answer published, none \
             unobserved but a beat of its map in flight: {:?}",
            watch.latest("beta-1")
        )
    });

    terminate(&beta);
    let summary = line_starting(&mut beta_lines, "service-beta:", BOUND).await;
    watch.note(summary.clone());
    let beta_counts = counts(&summary);
    let status = tokio::time::timeout(BOUND, beta.wait())
        .await
        .expect("beta exits after its summary")
        .unwrap();
    assert!(status.success(), "beta: {status}");

    // Each order answered once: every answer alpha heard is one of beta's,
    // and the answers alpha did not hear in its time are the orders it
    // counted unanswered (the gateway observed them above).
    let beta = |name: &str| beta_counts.get(name).copied().unwrap_or(u64::MAX);
    assert_eq!(
        beta("reserved") + beta("insufficient"),
        ORDERS,
        "{beta_counts:?}"
    );
    assert!(
        beta("reserved") >= alpha("confirmed") && beta("insufficient") >= alpha("cancelled"),
        "alpha heard answers beta did not give: {alpha_counts:?}; {beta_counts:?}"
    );
    assert_eq!(
        (beta("reserved") - alpha("confirmed")) + (beta("insufficient") - alpha("cancelled")),
        alpha("unanswered"),
        "{alpha_counts:?}; {beta_counts:?}"
    );

    // The gateway reads the durable channels through its own consumer: it
    // may be behind, not short.
    let want = [
        ("orders.created", ORDERS),
        ("inventory.reserved", beta("reserved")),
        ("inventory.insufficient", beta("insufficient")),
        ("orders.confirmed", alpha("confirmed")),
        ("orders.cancelled", alpha("cancelled")),
    ];
    let mut last = String::new();
    let agreed = tokio::time::timeout(BOUND, async {
        loop {
            let text = get(addr, "/metrics").await.body;
            let seen = want.map(|(family, _)| (family, observed(&text, family)));
            last = format!("{seen:?}");
            if seen == want {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    watch.note(format!("the gateway observed {last}"));
    assert!(
        agreed.is_ok(),
        "the gateway's counts {last} are not the services' {want:?}"
    );

    // Alpha's last report, as the gateway held it until it marked alpha
    // gone. The gateway reckons what alpha sent and it did not observe again
    // at every snapshot while alpha is listed; when alpha's node dies just
    // before alpha ends, the gateway's own durable consumer may still be
    // catching up when alpha is marked gone. What counts, that nothing alpha
    // sent is missing, is the agreement of the counts above; this prints it.
    tokio::time::timeout(BOUND, async {
        while !watch.gone("alpha-1") {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("the gateway marks alpha gone once its reports stop");
    let reports = watch.reports("alpha-1");
    watch.note(format!("alpha-1 reports (last ones): {:?}", tail(&reports)));
    let alpha_report = reports.last().copied().expect("alpha reported");
    assert!(alpha_report.published > 0, "alpha-1: {alpha_report:?}");

    watch.stop().await;
    terminate(&gateway);
    let status = tokio::time::timeout(BOUND, gateway.wait())
        .await
        .expect("the gateway exits within 20 s of SIGTERM")
        .unwrap();
    assert!(status.success(), "gateway: {status}");
}

/// A command for `bin` on the cluster with the shared settings directory,
/// named `<name>-1`, with `env` over the settings; its stderr goes to
/// `<dir>/<name>.log`, its stdout is piped.
fn program(bin: &str, dir: &Path, urls: &[String], name: &str, env: &[(&str, &str)]) -> Command {
    let mut command = aether_testkit::program(bin);
    command.arg("--config-dir").arg(dir);
    for url in urls {
        command.arg("--nats").arg(url);
    }
    let log = File::create(dir.join(format!("{name}.log"))).unwrap();
    command
        .env("AETHER__AETHER__REPORT__INSTANCE", format!("{name}-1"))
        .env("AETHER__GATEWAY__LISTEN", "127.0.0.1:0")
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log));
    command
}

/// The lines of a child's stdout, as they come.
fn lines(child: &mut Child) -> mpsc::UnboundedReceiver<String> {
    let stdout = child.stdout.take().expect("stdout piped");
    let (send, receive) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut lines = BufReader::new(stdout).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if send.send(line).is_err() {
                break;
            }
        }
    });
    receive
}

/// The next line that starts with `prefix`, if one comes within `bound`.
async fn next_line_starting(
    lines: &mut mpsc::UnboundedReceiver<String>,
    prefix: &str,
    bound: Duration,
) -> Option<String> {
    tokio::time::timeout(bound, async {
        while let Some(line) = lines.recv().await {
            if line.starts_with(prefix) {
                return Some(line);
            }
        }
        None
    })
    .await
    .ok()
    .flatten()
}

/// The next line that starts with `prefix`, within `bound`.
async fn line_starting(
    lines: &mut mpsc::UnboundedReceiver<String>,
    prefix: &str,
    bound: Duration,
) -> String {
    next_line_starting(lines, prefix, bound)
        .await
        .unwrap_or_else(|| panic!("{prefix}: no such line within {bound:?}"))
}

/// The counts of a summary (`service-alpha: created 3, confirmed 2, ...`).
fn counts(summary: &str) -> HashMap<String, u64> {
    let (_, counts) = summary.split_once(": ").expect("a summary");
    support::summary_counts(counts)
}

fn terminate(child: &Child) {
    let pid = Pid::from_raw(i32::try_from(child.id().expect("running")).unwrap());
    kill(pid, Signal::SIGTERM).unwrap();
}

/// The gateway's `/metrics`, or none if it does not answer within 2 s.
async fn scrape(addr: SocketAddr) -> Option<String> {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
        let request = format!("GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n");
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.ok()?;
        let (head, body) = answer.split_once("\r\n\r\n")?;
        (head.split_whitespace().nth(1) == Some("200")).then(|| body.to_string())
    };
    tokio::time::timeout(Duration::from_secs(2), exchange)
        .await
        .ok()
        .flatten()
}

/// A kill of the stream's leader, and when the stream had a leader again.
struct Election {
    killed_at: SystemTime,
    node: usize,
    /// When the stream answered again, with its new leader.
    leader_back: JoinHandle<Option<SystemTime>>,
    /// What `leader_back` ended with, once awaited.
    back: Option<Option<SystemTime>>,
}

impl Election {
    /// Watches for the stream's new leader if `victim` (about to be killed)
    /// leads it; none otherwise (durable emits do not wait then).
    fn after_kill(watch: &Watch, cluster: &NatsCluster, victim: usize) -> Option<Election> {
        let stream = watch.stream()?;
        if stream.leader != Some(victim) {
            watch.note(format!(
                "node {victim} does not lead the stream: durable emits need no election"
            ));
            return None;
        }
        // Every other node is asked, each time round: the one asked first
        // may be the next to be killed while the election still runs.
        let others: Vec<SocketAddr> = (0..cluster.len())
            .filter(|&i| i != victim)
            .map(|i| cluster.node(i).addr())
            .collect();
        if others.is_empty() {
            return None;
        }
        let killed_at = SystemTime::now();
        let leader_back = tokio::spawn(async move {
            let until = Instant::now() + Duration::from_secs(30);
            // After the kill: the old leader may answer until then.
            tokio::time::sleep(Duration::from_millis(50)).await;
            while Instant::now() < until {
                for addr in &others {
                    if let Some(info) = stream_info_within(*addr, Duration::from_millis(150)).await
                        && info["cluster"]["leader"].is_string()
                    {
                        return Some(SystemTime::now());
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            None
        });
        Some(Election {
            killed_at,
            node: victim,
            leader_back,
            back: None,
        })
    }

    /// When the stream had a leader again (none if not within 30 s).
    async fn leader_back(&mut self) -> Option<SystemTime> {
        if self.back.is_none() {
            self.back = Some((&mut self.leader_back).await.unwrap());
        }
        self.back.flatten()
    }

    /// Prints, for each program that emits durably, the time from the new
    /// leader to its first durable wave acknowledged after it, and checks it
    /// is within [`RESUME_BOUND`].
    async fn check_resumed(mut self, watch: &Watch, dir: &Path, next_kill: Option<SystemTime>) {
        let leader_back = self
            .leader_back()
            .await
            .expect("the stream has a leader again within 30 s of the kill");
        if let Some(next) = next_kill
            && next < leader_back + RESUME_BOUND
        {
            watch.note(format!(
                "node {}, the stream's leader, killed: a new leader {:.0} ms later, and the next \
                 kill {:.0} ms after it: the resend is not measured against this election",
                self.node,
                millis_between(self.killed_at, leader_back),
                millis_between(leader_back, next)
            ));
            return;
        }
        watch.note(format!(
            "node {}, the stream's leader, killed: the stream had a new leader {:.0} ms later",
            self.node,
            millis_between(self.killed_at, leader_back)
        ));
        for name in ["alpha", "beta"] {
            let log = std::fs::read_to_string(dir.join(format!("{name}.log"))).unwrap();
            // The first stall that ended after the kill and began before
            // the new leader.
            let resumed = log
                .lines()
                .filter(|line| line.contains("the stream acknowledges durable waves again"))
                .filter_map(|line| Some((log_time(line)?, stalled_ms(line)?)))
                .find(|&(at, stalled)| {
                    at > self.killed_at && at - Duration::from_millis(stalled) < leader_back
                })
                .map(|(at, _)| at);
            let Some(resumed) = resumed else {
                watch.note(format!(
                    "{name} had no durable wave waiting for the election"
                ));
                continue;
            };
            let after = millis_between(leader_back, resumed);
            watch.note(format!(
                "{name}'s durable outbox was acknowledged again {after:.0} ms after the new leader"
            ));
            assert!(
                after < RESUME_BOUND.as_millis() as f64,
                "{name} sent its durable outbox {after:.0} ms after the stream's new leader"
            );
        }
    }
}

/// `b - a` in ms, negative when `b` is earlier.
fn millis_between(a: SystemTime, b: SystemTime) -> f64 {
    match b.duration_since(a) {
        Ok(d) => d.as_secs_f64() * 1000.0,
        Err(e) => -e.duration().as_secs_f64() * 1000.0,
    }
}

/// The `stalled_ms` a program's log line names.
fn stalled_ms(line: &str) -> Option<u64> {
    let (_, rest) = line.split_once("stalled_ms=")?;
    rest.split_whitespace().next()?.parse().ok()
}

/// The time a program's log line starts with (RFC 3339, UTC).
fn log_time(line: &str) -> Option<SystemTime> {
    let stamp = line.split_whitespace().next()?;
    let at =
        time::OffsetDateTime::parse(stamp, &time::format_description::well_known::Rfc3339).ok()?;
    Some(SystemTime::UNIX_EPOCH + Duration::from_nanos(at.unix_timestamp_nanos() as u64))
}

/// A cluster node, for the questions asked of it while the test holds the
/// cluster.
#[derive(Clone, Debug)]
struct Node {
    addr: SocketAddr,
    name: String,
}

/// The stream `AETHER` as the cluster describes it.
#[derive(Clone, Debug, PartialEq)]
struct Stream {
    /// Its configured replicas.
    replicas: u64,
    /// Its leader's node.
    leader: Option<usize>,
    /// The nodes of its other replicas, and whether each is current.
    followers: Vec<(Option<usize>, bool)>,
}

/// Asks the nodes, in turn, about the stream `AETHER`; none if none
/// answers.
async fn stream_state(nodes: &[Node]) -> Option<Stream> {
    let node_of = |name: &str| nodes.iter().position(|node| node.name == name);
    for node in nodes {
        let Some(info) = stream_info(node.addr).await else {
            continue;
        };
        let cluster = &info["cluster"];
        let followers = cluster["replicas"]
            .as_array()
            .map(|replicas| {
                replicas
                    .iter()
                    .map(|replica| {
                        (
                            replica["name"].as_str().and_then(node_of),
                            replica["current"].as_bool().unwrap_or(false),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        return Some(Stream {
            replicas: info["config"]["num_replicas"].as_u64().unwrap_or(0),
            leader: cluster["leader"].as_str().and_then(node_of),
            followers,
        });
    }
    None
}

/// `$JS.API.STREAM.INFO.AETHER`, asked of `addr`, when it answers within
/// 1 s without an error.
async fn stream_info(addr: SocketAddr) -> Option<serde_json::Value> {
    stream_info_within(addr, Duration::from_secs(1)).await
}

/// `$JS.API.STREAM.INFO.AETHER`, asked of `addr`, when it answers within
/// `limit` without an error.
async fn stream_info_within(addr: SocketAddr, limit: Duration) -> Option<serde_json::Value> {
    let mut raw = RawNats::connect(addr).await.ok()?;
    raw.subscribe("_INBOX.failover", 1, None).await.ok()?;
    raw.publish("$JS.API.STREAM.INFO.AETHER", Some("_INBOX.failover"), b"")
        .await
        .ok()?;
    let answer = raw.next_message(limit).await.ok()??;
    let info: serde_json::Value = serde_json::from_slice(&answer.payload).ok()?;
    info.get("error").is_none().then_some(info)
}

/// The client port of a cluster node (one of `ports`) that process `pid`
/// has an established TCP connection to, read from `/proc`.
fn connected_port(pid: u32, ports: &[u16]) -> Option<u16> {
    let sockets: HashSet<u64> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .ok()?
        .filter_map(|entry| std::fs::read_link(entry.ok()?.path()).ok())
        .filter_map(|link| {
            link.to_str()?
                .strip_prefix("socket:[")?
                .strip_suffix(']')?
                .parse()
                .ok()
        })
        .collect();
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (_, port) = fields.get(2)?.split_once(':')?;
        let port = u16::from_str_radix(port, 16).ok()?;
        // 01: established.
        let established = *fields.get(3)? == "01";
        let inode: u64 = fields.get(9)?.parse().ok()?;
        (established && sockets.contains(&inode) && ports.contains(&port)).then_some(port)
    })
}

/// An instance's report as the gateway exports it.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Report {
    published: u64,
    unobserved: i64,
}

/// The last few of `reports`.
fn tail(reports: &[Report]) -> &[Report] {
    &reports[reports.len().saturating_sub(6)..]
}

/// What the watcher saw; times in seconds since the test started.
#[derive(Debug, Default)]
struct Seen {
    /// The programs' pids.
    pids: Vec<(&'static str, u32)>,
    /// The node each program is connected to now.
    nodes: HashMap<&'static str, Option<usize>>,
    /// Each program's connection changes: when, from which node, to which.
    moves: Vec<(f64, &'static str, Option<usize>, Option<usize>)>,
    /// The gateway's connection state (`aether_nats_connection_state`).
    gateway_state: String,
    /// Orders the gateway observed so far, on change.
    orders: Vec<(f64, u64)>,
    /// Each instance's reports, on change.
    reports: HashMap<&'static str, Vec<Report>>,
    /// Each instance's report in the last scrape (none: no series).
    latest: HashMap<&'static str, Option<Report>>,
    /// The stream, as last described.
    stream: Option<Stream>,
}

/// Watches, in tasks, the programs' connections (every 25 ms), the
/// gateway's metrics (every 100 ms) and the stream (every 500 ms), and
/// prints each change as it comes.
struct Watch {
    started: Instant,
    seen: Arc<Mutex<Seen>>,
    tasks: [JoinHandle<()>; 2],
}

impl Watch {
    fn start(addr: SocketAddr, nodes: Vec<Node>, started: Instant) -> Watch {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let ports: Vec<u16> = nodes.iter().map(|node| node.addr.port()).collect();
        let connections = tokio::spawn({
            let seen = seen.clone();
            async move {
                let mut ticks = tokio::time::interval(Duration::from_millis(25));
                for tick in 0u64.. {
                    ticks.tick().await;
                    let now = started.elapsed().as_secs_f64();
                    seen.lock().unwrap().take_connections(now, &ports);
                    if tick % 4 == 0
                        && let Some(text) = scrape(addr).await
                    {
                        seen.lock().unwrap().take_metrics(now, &text);
                    }
                }
            }
        });
        let stream = tokio::spawn({
            let seen = seen.clone();
            async move {
                let mut ticks = tokio::time::interval(Duration::from_millis(500));
                loop {
                    ticks.tick().await;
                    let stream = stream_state(&nodes).await;
                    let mut seen = seen.lock().unwrap();
                    if stream.is_some() && stream != seen.stream {
                        let now = started.elapsed().as_secs_f64();
                        eprintln!("failover: [{now:.2}] stream {stream:?}");
                        seen.stream = stream;
                    }
                }
            }
        });
        Watch {
            started,
            seen,
            tasks: [connections, stream],
        }
    }

    fn add(&self, name: &'static str, pid: u32) {
        self.seen.lock().unwrap().pids.push((name, pid));
    }

    /// Prints `what` with the time; returns the time.
    fn note(&self, what: impl std::fmt::Display) -> f64 {
        let now = self.started.elapsed().as_secs_f64();
        eprintln!("failover: [{now:.2}] {what}");
        now
    }

    /// The node to kill: the one most programs are connected to, the
    /// stream's leader breaking ties, never `spare`.
    /// The node `program` is connected to, if it is running; else the one
    /// with the most programs (the stream's leader first), not `spare`.
    fn victim(&self, cluster: &NatsCluster, program: &str, spare: Option<usize>) -> usize {
        let seen = self.seen.lock().unwrap();
        let leader = seen.stream.as_ref().and_then(|stream| stream.leader);
        let running = |i: usize| cluster.node(i).is_running();
        let chosen = seen
            .nodes
            .get(program)
            .copied()
            .flatten()
            .filter(|&i| running(i))
            .or_else(|| {
                (0..cluster.len())
                    .filter(|&i| Some(i) != spare && running(i))
                    .max_by_key(|&i| {
                        let programs = seen.nodes.values().filter(|node| **node == Some(i)).count();
                        (programs, leader == Some(i))
                    })
            })
            .expect("a node to kill");
        let (at, stream) = (seen.nodes.clone(), seen.stream.clone());
        drop(seen);
        self.note(format!(
            "programs on nodes {at:?}, stream {stream:?}: node {chosen} is to die"
        ));
        chosen
    }

    fn orders(&self) -> u64 {
        let seen = self.seen.lock().unwrap();
        seen.orders.last().map_or(0, |(_, n)| *n)
    }

    fn stream(&self) -> Option<Stream> {
        self.seen.lock().unwrap().stream.clone()
    }

    /// The instance's report in the last scrape.
    fn latest(&self, instance: &str) -> Option<Report> {
        let seen = self.seen.lock().unwrap();
        seen.latest.get(instance).copied().flatten()
    }

    /// Whether the instance reported, and its series are gone since.
    fn gone(&self, instance: &str) -> bool {
        self.seen.lock().unwrap().latest.get(instance) == Some(&None)
    }

    fn reports(&self, instance: &str) -> Vec<Report> {
        let seen = self.seen.lock().unwrap();
        seen.reports.get(instance).cloned().unwrap_or_default()
    }

    /// Prints how long each program was without a connection after each
    /// kill, and the longest pause of the orders.
    fn print(&self, kills: &[(usize, f64)]) {
        self.seen.lock().unwrap().print(kills);
    }

    async fn stop(self) {
        for task in self.tasks {
            task.abort();
            let _ = task.await;
        }
    }
}

impl Seen {
    fn take_connections(&mut self, now: f64, ports: &[u16]) {
        for (name, pid) in self.pids.clone() {
            let node =
                connected_port(pid, ports).and_then(|port| ports.iter().position(|p| *p == port));
            let before = self.nodes.insert(name, node).flatten();
            if before != node {
                eprintln!("failover: [{now:.2}] {name} connected to node {node:?}");
                self.moves.push((now, name, before, node));
            }
        }
    }

    fn take_metrics(&mut self, now: f64, text: &str) {
        let state = ["connected", "disconnected", "closed", "embedded"]
            .into_iter()
            .find(|state| {
                let series = format!("aether_nats_connection_state{{state=\"{state}\"}}");
                sample(text, &series) == Some(1.0)
            })
            .unwrap_or("none");
        if self.gateway_state != state {
            eprintln!("failover: [{now:.2}] the gateway's connection: {state}");
            self.gateway_state = state.to_string();
        }
        let orders = observed(text, "orders.created");
        if self.orders.last().map(|(_, n)| *n) != Some(orders) {
            self.orders.push((now, orders));
        }
        for instance in ["alpha-1", "beta-1"] {
            let gauge = |name: &str| sample(text, &format!("{name}{{instance=\"{instance}\"}}"));
            let (Some(published), Some(unobserved)) = (
                gauge("aether_instance_published_waves"),
                gauge("aether_instance_unobserved_waves"),
            ) else {
                if self.latest.contains_key(instance) {
                    self.latest.insert(instance, None);
                }
                continue;
            };
            let report = Report {
                published: published as u64,
                unobserved: unobserved as i64,
            };
            self.latest.insert(instance, Some(report));
            let reports = self.reports.entry(instance).or_default();
            if reports.last() != Some(&report) {
                reports.push(report);
            }
        }
    }

    fn print(&self, kills: &[(usize, f64)]) {
        for &(node, at) in kills {
            eprintln!("failover: node {node}, killed at {at:.2} s:");
            for name in PROGRAMS {
                // A SIGKILL closes its sockets at once: a connection to it
                // ends within a second.
                let lost = self.moves.iter().find(|(t, who, from, _)| {
                    *who == name && (at..at + 1.0).contains(t) && *from == Some(node)
                });
                let Some(&(lost_at, _, _, to)) = lost else {
                    eprintln!("failover:   {name} was not connected to it");
                    continue;
                };
                // Seen connected elsewhere at once, or later.
                let back = match to {
                    Some(_) => lost,
                    None => self
                        .moves
                        .iter()
                        .find(|(t, who, _, to)| *who == name && *t > lost_at && to.is_some()),
                };
                match back {
                    Some(&(back_at, _, _, Some(to))) => eprintln!(
                        "failover:   {name} lost its connection {:.0} ms after the kill and \
                         was connected to node {to} {:.0} ms after it",
                        (lost_at - at) * 1000.0,
                        (back_at - at) * 1000.0
                    ),
                    _ => eprintln!("failover:   {name} lost its connection for good"),
                }
            }
        }
        // The longest time the gateway saw no new order while they flowed.
        let pause = self
            .orders
            .windows(2)
            .filter(|pair| pair[0].1 > 0 && pair[0].1 < ORDERS)
            .map(|pair| (pair[1].0 - pair[0].0, pair[0].0, pair[0].1))
            .max_by(|a, b| a.0.total_cmp(&b.0));
        if let Some((pause, from, count)) = pause {
            eprintln!(
                "failover: the longest pause of the orders the gateway saw: {:.0} ms from \
                 {from:.2} s, at {count} orders",
                pause * 1000.0
            );
        }
        if let (Some(first), Some(last)) =
            (self.orders.iter().find(|(_, n)| *n > 0), self.orders.last())
        {
            eprintln!(
                "failover: the gateway saw orders from {:.2} s to {:.2} s ({} orders)",
                first.0, last.0, last.1
            );
        }
    }
}

/// On a failure, prints the programs' and nodes' logs.
struct Evidence {
    files: Vec<PathBuf>,
}

impl Drop for Evidence {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        for file in &self.files {
            let text = std::fs::read_to_string(file).unwrap_or_default();
            let lines: Vec<&str> = text
                .lines()
                // The nodes retry their routes to a dead node every second.
                .filter(|line| !line.contains("Error trying to connect to route"))
                .collect();
            eprintln!(
                "===== {} (last {} of {} lines) =====",
                file.display(),
                lines.len().min(60),
                lines.len()
            );
            for line in &lines[lines.len().saturating_sub(60)..] {
                eprintln!("{line}");
            }
        }
    }
}
