//! A bus on a LAN with nothing configured but one secret file: hosts are
//! network namespaces this test makes (a bridge in a namespace of its own,
//! one veth pair per host, addresses in 10.231.0.0/24; nothing in the
//! machine's own namespace). Each host runs `aether node`; the nodes find
//! each other by multicast DNS and form one NATS cluster; programs connect
//! with no URL. It needs root (to make namespaces) and `ip`; without them
//! it says so and passes over.

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::mpsc,
    time::{Duration, Instant, SystemTime},
};

use aether_core::lan::LanSecret;

const AETHER: &str = env!("CARGO_BIN_EXE_aether");
const BUS: &str = "lantest";
/// Writes timed from one host to another.
const WRITES: usize = 100;

/// Network namespaces on one bridge, removed when dropped.
struct Lan {
    bridge: String,
    hosts: Vec<String>,
}

fn ip(args: &[&str]) -> bool {
    Command::new("ip")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

impl Lan {
    /// `n` hosts, or none when namespaces cannot be made here.
    fn create(n: usize) -> Option<Self> {
        let tag = format!("ae{}", std::process::id() % 100_000);
        let bridge = format!("{tag}br");
        if !ip(&["netns", "add", &bridge]) {
            return None;
        }
        let mut lan = Self {
            bridge: bridge.clone(),
            hosts: Vec::new(),
        };
        let ok = ip(&["-n", &bridge, "link", "add", "br0", "type", "bridge"])
            && ip(&["-n", &bridge, "link", "set", "br0", "up"]);
        assert!(ok, "cannot make the bridge");
        for i in 0..n {
            lan.add_host(&tag, i);
        }
        Some(lan)
    }

    fn add_host(&mut self, tag: &str, i: usize) {
        let host = format!("{tag}h{i}");
        let (inside, outside) = (format!("{tag}v{i}"), format!("{tag}b{i}"));
        let address = format!("{}/24", self.address(i));
        let ok = ip(&["netns", "add", &host])
            && ip(&[
                "-n",
                &host,
                "link",
                "add",
                &inside,
                "type",
                "veth",
                "peer",
                "name",
                &outside,
                "netns",
                &self.bridge,
            ])
            && ip(&["-n", &self.bridge, "link", "set", &outside, "master", "br0"])
            && ip(&["-n", &self.bridge, "link", "set", &outside, "up"])
            && ip(&["-n", &host, "addr", "add", &address, "dev", &inside])
            && ip(&["-n", &host, "link", "set", &inside, "up", "multicast", "on"])
            && ip(&["-n", &host, "link", "set", "lo", "up"]);
        assert!(ok, "cannot make host {host}");
        self.hosts.push(host);
    }

    fn address(&self, i: usize) -> String {
        format!("10.231.0.{}", i + 1)
    }

    /// `program args` run on host `i`, with the host's own runtime folder.
    fn command(&self, i: usize, dir: &Path, program: &str, args: &[&str]) -> Command {
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", &self.hosts[i], program])
            .args(args)
            .env("AETHER_RUNTIME_DIR", dir.join(format!("run{i}")))
            .env("AETHER_BUS", BUS)
            .env_remove("AETHER_NATS")
            .env_remove("AETHER_SECRET_FILE")
            .stdin(Stdio::null());
        command
    }

    fn run(&self, i: usize, dir: &Path, args: &[&str]) -> Output {
        self.command(i, dir, AETHER, args)
            .output()
            .expect("aether runs")
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        for host in self.hosts.iter().chain([&self.bridge]) {
            ip(&["netns", "del", host]);
        }
    }
}

/// A long-running program whose standard error (or output) lines are
/// read as they come.
struct Running {
    child: Child,
    lines: mpsc::Receiver<(SystemTime, String)>,
    seen: Vec<String>,
    /// When each line of `seen` was read off the pipe.
    read_at: Vec<SystemTime>,
}

impl Running {
    fn start(mut command: Command, stdout: bool) -> Self {
        command.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = command.spawn().expect("starts");
        let (tx, lines) = mpsc::channel();
        let out = child.stdout.take().unwrap();
        let err = child.stderr.take().unwrap();
        let tx2 = tx.clone();
        // Both streams; the one not asked for is marked, for the
        // failure messages.
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                let _ = tx.send((
                    SystemTime::now(),
                    if stdout {
                        format!("stderr: {line}")
                    } else {
                        line
                    },
                ));
            }
        });
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx2.send((
                    SystemTime::now(),
                    if stdout {
                        line
                    } else {
                        format!("stdout: {line}")
                    },
                ));
            }
        });
        Self {
            child,
            lines,
            seen: Vec::new(),
            read_at: Vec::new(),
        }
    }

    /// Waits up to `limit` for a line that `wanted` accepts.
    fn wait_for(&mut self, limit: Duration, wanted: impl Fn(&str) -> bool) -> Option<String> {
        if let Some(line) = self.seen.iter().find(|l| wanted(l)) {
            return Some(line.clone());
        }
        let deadline = Instant::now() + limit;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok((at, line)) => {
                    self.seen.push(line.clone());
                    self.read_at.push(at);
                    if wanted(&line) {
                        return Some(line);
                    }
                }
                Err(_) => return None,
            }
        }
        None
    }

    /// Forgets the lines seen so far: the next waits look at new ones.
    fn forget(&mut self) {
        while self.lines.try_recv().is_ok() {}
        self.seen.clear();
        self.read_at.clear();
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.kill();
        // A failed run shows what every process said.
        if std::thread::panicking() {
            while let Ok((_, line)) = self.lines.try_recv() {
                self.seen.push(line);
            }
            eprintln!("--- process {} said:", self.child.id());
            for line in &self.seen {
                eprintln!("  {line}");
            }
        }
    }
}

fn node(lan: &Lan, i: usize, dir: &Path, secret: &Path) -> Running {
    let data = dir.join(format!("data{i}"));
    let mut command = lan.command(
        i,
        dir,
        AETHER,
        &[
            "node",
            "--secret-file",
            secret.to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
        ],
    );
    if let Some(server) = std::env::var_os("NATS_SERVER_BIN") {
        command.env("AETHER_NATS_SERVER", server);
    }
    Running::start(command, false)
}

/// Polls `aether node --status` on host `i` until it counts `n` nodes.
fn wait_members(lan: &Lan, i: usize, dir: &Path, n: usize, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        let out = lan.run(i, dir, &["node", "--status"]);
        if String::from_utf8_lossy(&out.stdout).contains(&format!("{n} nodes in all")) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    false
}

/// Kills the servers the nodes of `dir` run, when dropped (after the
/// nodes themselves: a server outlives a node killed with SIGKILL).
struct Servers(PathBuf);

impl Drop for Servers {
    fn drop(&mut self) {
        for i in 0..8 {
            if let Some(server) = leftover_server(&self.0, i) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(server),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
}

fn leftover_server(dir: &Path, i: usize) -> Option<i32> {
    std::fs::read_to_string(dir.join(format!("data{i}/nats-server.pid")))
        .ok()?
        .trim()
        .parse()
        .ok()
}

#[test]
fn three_hosts_form_one_bus_and_a_fourth_with_another_secret_is_kept_out() {
    let Some(mut lan) = Lan::create(3) else {
        eprintln!(
            "skipped: cannot make network namespaces here (needs root and `ip`); the LAN test \
             runs where it can"
        );
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let _servers = Servers(dir.path().to_path_buf());
    let secret = dir.path().join("secret");
    std::fs::write(&secret, LanSecret::generate()).unwrap();

    // Three nodes, started at once, become one cluster.
    let started = Instant::now();
    let mut nodes: Vec<Running> = (0..3).map(|i| node(&lan, i, dir.path(), &secret)).collect();
    for (i, node) in nodes.iter_mut().enumerate() {
        assert!(
            node.wait_for(Duration::from_secs(15), |l| l
                .contains("programs connect to"))
                .is_some(),
            "node {i} did not start: {:?}",
            node.seen
        );
    }
    for (i, node) in nodes.iter().enumerate() {
        assert!(
            wait_members(&lan, i, dir.path(), 3, Duration::from_secs(30)),
            "host {i} never saw 3 nodes: {:?}",
            node.seen
        );
    }
    eprintln!(
        "three nodes started and formed one cluster in {:?}",
        started.elapsed()
    );

    // A second node on host 0's data directory is refused, and the first
    // goes on.
    let second = lan.run(
        0,
        dir.path(),
        &[
            "node",
            "--no-scout",
            "--secret-file",
            secret.to_str().unwrap(),
            "--data",
            dir.path().join("data0").to_str().unwrap(),
        ],
    );
    assert!(!second.status.success());
    assert!(
        String::from_utf8_lossy(&second.stderr).contains("another aether node runs"),
        "{}",
        String::from_utf8_lossy(&second.stderr)
    );

    // Once formed, a cluster's servers read their configuration no more:
    // every route is there already (nats-server before 2.9.16 rebuilds its
    // accounts at a reload, and a program connecting at that instant can
    // lose its subscriptions).
    for node in &mut nodes {
        node.forget();
    }

    // Replicas on hosts 1 and 2; a write on host 0 reaches them.
    let mut watchers: Vec<Running> = (1..3)
        .map(|i| {
            Running::start(
                lan.command(i, dir.path(), AETHER, &["state", "watch", "home", "--json"]),
                true,
            )
        })
        .collect();
    for watcher in &mut watchers {
        assert!(
            watcher
                .wait_for(Duration::from_secs(15), |l| l.contains("watching"))
                .is_some(),
            "a replica did not open: {:?}",
            watcher.seen
        );
    }
    // Host 0 hears both replicas (their hellos cross the routes) before
    // it writes.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let peers = lan.run(0, dir.path(), &["state", "peers", "home"]);
        let peers = String::from_utf8_lossy(&peers.stdout);
        if watchers.iter().all(|w| {
            let name = format!("aether-cli-{}", w.child.id());
            peers.lines().any(|l| l.trim() == name)
        }) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "host 0 never heard the replicas of hosts 1 and 2"
        );
    }
    let set = lan.run(
        0,
        dir.path(),
        &["state", "set", "home", "living.temp", "24.5"],
    );
    assert!(
        set.status.success(),
        "{}",
        String::from_utf8_lossy(&set.stderr)
    );
    for watcher in &mut watchers {
        assert!(
            watcher
                .wait_for(Duration::from_secs(10), |l| l.contains("living.temp")
                    && l.contains("24.5"))
                .is_some(),
            "a replica did not hear the write: {:?}",
            watcher.seen
        );
    }
    let got = lan.run(2, dir.path(), &["state", "get", "home", "living.temp"]);
    assert_eq!(String::from_utf8_lossy(&got.stdout).trim(), "24.5");

    // From a write on host 0 to the change on host 2 (the stamp is the
    // writer's clock; the hosts share the machine's): a figure, not a
    // bound.
    let mut latencies = Vec::new();
    for i in 0..WRITES {
        let key = format!("lat.{i}");
        let set = lan.run(0, dir.path(), &["state", "set", "home", &key, "1"]);
        assert!(set.status.success());
        let quoted = format!("\"key\":\"{key}\"");
        let line = watchers[1]
            .wait_for(Duration::from_secs(10), |l| l.contains(&quoted))
            .unwrap_or_else(|| panic!("host 2 did not hear {key}"));
        let at = watchers[1].read_at[watchers[1].seen.iter().rposition(|l| *l == line).unwrap()];
        let change: serde_json::Value = serde_json::from_str(&line).unwrap();
        let stamp = change["stamp"].as_str().unwrap();
        let wall: f64 = stamp.split('+').next().unwrap().parse().unwrap();
        let written = SystemTime::UNIX_EPOCH + Duration::from_secs_f64(wall);
        latencies.push(at.duration_since(written).unwrap_or_default());
    }
    latencies.sort();
    eprintln!(
        "write on host 0 to the change on host 2, {WRITES} writes: p50 {:?}, p99 {:?}, max {:?}",
        latencies[WRITES / 2],
        latencies[WRITES * 99 / 100],
        latencies[WRITES - 1]
    );

    for (i, node) in nodes.iter_mut().enumerate() {
        let _ = node.wait_for(Duration::from_millis(200), |_| false);
        assert!(
            !node
                .seen
                .iter()
                .any(|l| l.contains("Reloaded server configuration")),
            "node {i} had its server reload after the cluster formed: {:?}",
            node.seen
        );
    }

    // Host 1's node is killed with its server: the others notice and go on.
    for node in &mut nodes {
        node.forget();
    }
    let lost = Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(nodes[1].child.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    if let Some(server) = leftover_server(dir.path(), 1) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(server),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    for i in [0, 2] {
        assert!(
            nodes[i]
                .wait_for(Duration::from_secs(30), |l| l.contains(" left "))
                .is_some(),
            "node {i} did not notice the loss: {:?}",
            nodes[i].seen
        );
    }
    eprintln!(
        "the survivors noticed the lost node in {:?}",
        lost.elapsed()
    );
    for i in [0, 2] {
        assert!(wait_members(
            &lan,
            i,
            dir.path(),
            2,
            Duration::from_secs(30)
        ));
    }
    let set = lan.run(0, dir.path(), &["state", "set", "home", "lights", "true"]);
    assert!(
        set.status.success(),
        "{}",
        String::from_utf8_lossy(&set.stderr)
    );
    assert!(
        watchers[1]
            .wait_for(Duration::from_secs(10), |l| l.contains("lights"))
            .is_some(),
        "host 2 did not hear a write made while host 1 was down: {:?} {:?}",
        watchers[1].seen,
        nodes.iter().map(|n| &n.seen).collect::<Vec<_>>()
    );

    // Host 1 comes back on the same ports; its replica catches up.
    nodes[1] = node(&lan, 1, dir.path(), &secret);
    assert!(wait_members(
        &lan,
        0,
        dir.path(),
        3,
        Duration::from_secs(30)
    ));
    assert!(
        watchers[0]
            .wait_for(Duration::from_secs(30), |l| l.contains("lights"))
            .is_some(),
        "host 1's replica did not catch up: {:?}",
        watchers[0].seen
    );

    // A fourth host with another secret: passed over, kept out.
    let other = dir.path().join("other-secret");
    std::fs::write(&other, LanSecret::generate()).unwrap();
    lan.add_host(&format!("ae{}", std::process::id() % 100_000), 3);
    let mut stranger = node(&lan, 3, dir.path(), &other);
    assert!(
        stranger
            .wait_for(Duration::from_secs(15), |l| l
                .contains("its secret differs"))
            .is_some(),
        "the stranger's node did not pass over the bus's nodes: {:?}",
        stranger.seen
    );
    let read = lan.run(3, dir.path(), &["state", "get", "home", "living.temp"]);
    assert!(!read.status.success(), "the stranger read the map");
    assert!(wait_members(&lan, 3, dir.path(), 1, Duration::from_secs(5)));
    // Straight at a node of the bus, trusting its own secret's authority:
    // the node's certificate is not one it accepts.
    let password = LanSecret::load(&other).unwrap().client_password();
    let url = format!("nats://{}:{}", lan.address(0), client_port(dir.path(), 0));
    let own_ca = LanSecret::load(&other)
        .unwrap()
        .authority()
        .write_in(&dir.path().join("stranger-ca"))
        .unwrap();
    let bus_ca = LanSecret::load(&secret)
        .unwrap()
        .authority()
        .write_in(&dir.path().join("bus-ca"))
        .unwrap();
    let direct = |ca: &Path| {
        lan.run(
            3,
            dir.path(),
            &[
                "--nats",
                &url,
                "--tls-ca",
                &ca.display().to_string(),
                "--user",
                aether_core::lan::CLIENT_USER,
                "--password",
                password.expose(),
                "state",
                "get",
                "home",
                "living.temp",
            ],
        )
    };
    let refused = direct(&own_ca);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("not signed by a trusted authority"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    // Even with the bus's authority (its certificate is public), its own
    // secret's password is refused.
    let refused = direct(&bus_ca);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("refused the credentials"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    // What a host on the LAN meets on either listener: TLS with a
    // certificate from the bus's authority (the client listener says only
    // its INFO line in the clear, and that it requires TLS).
    let info = lan
        .command(
            3,
            dir.path(),
            "timeout",
            &[
                "3",
                "bash",
                "-c",
                &format!(
                    "exec 3<>/dev/tcp/{}/{}; head -n 1 <&3",
                    lan.address(0),
                    client_port(dir.path(), 0)
                ),
            ],
        )
        .output()
        .unwrap();
    let info = String::from_utf8_lossy(&info.stdout);
    assert!(
        info.starts_with("INFO ") && info.contains("\"tls_required\":true"),
        "{info}"
    );
    // The cluster listener starts with TLS: its certificate checks out
    // against the bus's authority only.
    let cluster = ports_of(dir.path(), 0)["cluster"].as_u64().unwrap() as u16;
    for (port, ca, verified) in [(cluster, &bus_ca, true), (cluster, &own_ca, false)] {
        let out = lan
            .command(
                3,
                dir.path(),
                "timeout",
                &[
                    "5",
                    "openssl",
                    "s_client",
                    "-connect",
                    &format!("{}:{port}", lan.address(0)),
                    "-CAfile",
                    &ca.display().to_string(),
                    "-verify_return_error",
                ],
            )
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            text.contains("Verify return code: 0 (ok)"),
            verified,
            "port {port} with {}: {text}",
            ca.display()
        );
    }
    // And the bus still counts three.
    assert!(wait_members(&lan, 0, dir.path(), 3, Duration::from_secs(5)));
    drop(stranger);

    // What a one-shot command writes outlives every program and the other
    // nodes: the nodes keep every map. With no program holding the map, a
    // write on host 0 is held by the nodes' keepers; hosts 0 and 1 stop,
    // host 2's node starts again alone, and reads it from its own disk.
    drop(watchers);
    let set = lan.run(0, dir.path(), &["state", "set", "home", "door", "7"]);
    let said = String::from_utf8_lossy(&set.stderr);
    assert!(set.status.success() && said.contains("held by"), "{said}");
    for node in &mut nodes {
        node.forget();
    }
    for i in [0, 1, 2] {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(nodes[i].child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        assert!(
            nodes[i]
                .wait_for(Duration::from_secs(15), |l| l.contains("node stopped"))
                .is_some(),
            "node {i} did not stop: {:?}",
            nodes[i].seen
        );
    }
    nodes[2] = node(&lan, 2, dir.path(), &secret);
    assert!(
        nodes[2]
            .wait_for(Duration::from_secs(20), |l| l.contains("keeping maps"))
            .is_some(),
        "node 2's keeper did not start: {:?}",
        nodes[2].seen
    );
    let got = lan.run(2, dir.path(), &["state", "get", "home", "door"]);
    assert_eq!(
        String::from_utf8_lossy(&got.stdout).trim(),
        "7",
        "{}",
        String::from_utf8_lossy(&got.stderr)
    );
}

fn ports_of(dir: &Path, i: usize) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(dir.join(format!("data{i}/ports.json"))).unwrap())
        .unwrap()
}

fn client_port(dir: &Path, i: usize) -> u16 {
    ports_of(dir, i)["client"].as_u64().unwrap() as u16
}
