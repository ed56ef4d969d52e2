//! The gateway on a LAN bus of `aether node`s, which run without JetStream
//! unless started with `--jetstream`:
//!
//! - on loopback, a node's server as `aether node` writes it (TLS from the
//!   bus's secret, its password, no JetStream) and its record: `--lan` with
//!   the shipped settings, whose durable channels need JetStream, starts
//!   without them and says so; `require_durable_channels` makes it exit;
//! - in network namespaces of the test's own, the guide's three steps: a
//!   value written into a map on one host (`aether state set`), the
//!   gateway with `--lan` on another, and a headless Chromium on that host
//!   showing the value on the gateway's `/map` page. It needs root and
//!   `ip`, Chromium, and the `aether` program (built here); without them it
//!   says so and passes over.

mod support;

use std::{
    net::TcpStream,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use aether_core::lan::{LanSecret, NodeRecord};
use aether_testkit::netns::{Lan, Running};
use support::{get, programs::PROGRAM};

const CONFIG: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../config");
const BUS: &str = "pagetest";

/// A settings folder holding the shipped files named.
fn shipped(files: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for file in files {
        std::fs::copy(Path::new(CONFIG).join(file), dir.path().join(file)).unwrap();
    }
    dir
}

/// A node's server on loopback as `aether node` configures it (TLS with a
/// certificate of the bus's authority, the password the secret gives, no
/// JetStream), and the record that tells this machine's programs of it.
struct FakeNode {
    server: std::process::Child,
    _dir: tempfile::TempDir,
    runtime: PathBuf,
}

impl FakeNode {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let secret_file = dir.path().join("secret");
        std::fs::write(&secret_file, LanSecret::generate()).unwrap();
        let secret = LanSecret::load(&secret_file).unwrap();
        let cert = secret
            .authority()
            .issue("node", &["127.0.0.1".parse().unwrap()]);
        std::fs::write(dir.path().join("node.pem"), &cert.cert_pem).unwrap();
        std::fs::write(dir.path().join("node-key.pem"), &cert.key_pem).unwrap();
        let port = aether_testkit::free_port().unwrap();
        let conf = dir.path().join("nats-server.conf");
        std::fs::write(
            &conf,
            format!(
                "listen: \"127.0.0.1:{port}\"\ntls {{\n  cert_file: {:?}\n  key_file: {:?}\n}}\n\
                 authorization {{\n  user: \"aether\"\n  password: {:?}\n}}\n",
                dir.path().join("node.pem"),
                dir.path().join("node-key.pem"),
                secret.client_password().expose(),
            ),
        )
        .unwrap();
        let server = Command::new(aether_testkit::nats_server_path().unwrap())
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "nats-server did not listen");
            std::thread::sleep(Duration::from_millis(20));
        }
        let runtime = dir.path().join("run");
        std::fs::create_dir(&runtime).unwrap();
        std::fs::set_permissions(
            &runtime,
            std::os::unix::fs::PermissionsExt::from_mode(0o700),
        )
        .unwrap();
        NodeRecord {
            bus: BUS.into(),
            name: "node".into(),
            url: format!("nats://127.0.0.1:{port}"),
            monitor: "http://127.0.0.1:1".into(),
            secret_file,
            pid: std::process::id(),
            data: None,
        }
        .write_in(&runtime.join("aether"))
        .unwrap();
        Self {
            server,
            _dir: dir,
            runtime,
        }
    }

    /// The gateway with `--lan` and the settings in `settings`, on this
    /// node's bus.
    fn gateway(&self, settings: &Path) -> tokio::process::Command {
        let mut command = aether_testkit::program(PROGRAM);
        command
            .args(["--lan", "--listen", "127.0.0.1:0", "--config-dir"])
            .arg(settings)
            .env("AETHER_BUS", BUS)
            .env("XDG_RUNTIME_DIR", &self.runtime)
            .env_remove("AETHER_RUNTIME_DIR")
            .stderr(Stdio::piped());
        command
    }
}

impl Drop for FakeNode {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
    }
}

/// `--lan` with the shipped settings on a bus without JetStream: the
/// gateway serves, having said once that the durable channels are off and
/// how to have them; asked to require them, it exits saying why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lan_bus_without_jetstream_starts_the_gateway_without_durable_channels() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let node = FakeNode::start();
        let settings = shipped(&["default.toml"]);
        let (mut gateway, addr) =
            support::spawn_serving(node.gateway(settings.path()), Duration::from_secs(20)).await;
        // Its log, read as it comes (a full pipe would stop it).
        let mut log = gateway.stderr.take().unwrap();
        let said = tokio::spawn(async move {
            let mut said = String::new();
            let _ = tokio::io::AsyncReadExt::read_to_string(&mut log, &mut said).await;
            said
        });
        assert_eq!(get(addr, "/ready").await.status, 200, "connected");
        support::programs::stop_gateway(gateway).await;
        let said = said.await.unwrap();
        let warnings: Vec<&str> = said
            .lines()
            .filter(|l| l.contains("no JetStream"))
            .collect();
        assert_eq!(warnings.len(), 1, "{said}");
        for words in ["WARN", "orders.*", "inventory.*", "aether node --jetstream"] {
            assert!(warnings[0].contains(words), "{words}: {said}");
        }

        // Required: it exits with status 1, saying why and what to do.
        let mut required = node.gateway(settings.path());
        required.env("AETHER__GATEWAY__REQUIRE_DURABLE_CHANNELS", "true");
        let out = tokio::time::timeout(Duration::from_secs(20), required.output())
            .await
            .expect("it exits")
            .unwrap();
        let said = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{said}");
        for words in [
            "durability.channels",
            "require_durable_channels",
            "--jetstream",
        ] {
            assert!(said.contains(words), "{words}: {said}");
        }
    })
    .await
    .expect("bounded");
}

/// `program args` on host `i` of the bus `BUS`, with the server of
/// `NATS_SERVER_BIN` when it is set.
fn on(lan: &Lan, i: usize, program: &Path, args: &[&str]) -> Command {
    let mut command = lan.command(i, program);
    command.args(args).env("AETHER_BUS", BUS);
    if let Some(server) = std::env::var_os("NATS_SERVER_BIN") {
        command.env("AETHER_NATS_SERVER", server);
    }
    command
}

/// Runs `command` to its end, within `limit`.
async fn output(command: Command, limit: Duration) -> std::process::Output {
    let mut command = tokio::process::Command::from(command);
    command.kill_on_drop(true);
    tokio::time::timeout(limit, command.output())
        .await
        .expect("it ends in time")
        .expect("it runs")
}

/// Kills the servers the nodes under `dir` run, when dropped (a server
/// outlives its node killed with SIGKILL).
struct Servers(PathBuf);

impl Drop for Servers {
    fn drop(&mut self) {
        for i in 0..2 {
            let pid = std::fs::read_to_string(self.0.join(format!("data{i}/nats-server.pid")));
            if let Some(pid) = pid.ok().and_then(|p| p.trim().parse().ok()) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
}

/// A TCP connection to `port` on host `host`'s loopback: made from a thread
/// that enters the host's network namespace first.
fn connect_in(host: &str, port: u16) -> std::io::Result<TcpStream> {
    let path = format!("/var/run/netns/{host}");
    std::thread::spawn(move || {
        let namespace = std::fs::File::open(path)?;
        nix::sched::setns(&namespace, nix::sched::CloneFlags::CLONE_NEWNET)
            .map_err(std::io::Error::other)?;
        TcpStream::connect(("127.0.0.1", port))
    })
    .join()
    .expect("the thread ends")
}

/// A Pi writes a map through its node; the PC runs a node and the gateway
/// with `--lan`; a browser on the PC shows the Pi's value on `/map`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_on_the_pc_shows_the_value_a_pi_wrote() {
    let dir = tempfile::tempdir().unwrap();
    if !Path::new(support::cdp::CHROMIUM).exists() {
        eprintln!("skipped: {} is not installed", support::cdp::CHROMIUM);
        return;
    }
    let Some(lan) = Lan::create(2, dir.path()) else {
        eprintln!(
            "skipped: cannot make network namespaces here (needs root and `ip`); the LAN page \
             test runs where it can"
        );
        return;
    };
    // The `aether` program (the workspace's build of it).
    let aether = tokio::task::spawn_blocking(|| {
        aether_testkit::workspace_program(PROGRAM, "aether-cli", "aether")
    })
    .await
    .unwrap();
    let _servers = Servers(dir.path().to_path_buf());
    let secret = dir.path().join("secret");
    std::fs::write(&secret, LanSecret::generate()).unwrap();
    let started = Instant::now();
    let bound = Duration::from_secs(120);

    // A node on each host, one bus.
    let mut nodes: Vec<Running> = (0..2)
        .map(|i| {
            let data = dir.path().join(format!("data{i}"));
            Running::start(
                on(
                    &lan,
                    i,
                    &aether,
                    &[
                        "node",
                        "--secret-file",
                        secret.to_str().unwrap(),
                        "--data",
                        data.to_str().unwrap(),
                    ],
                ),
                false,
            )
        })
        .collect();
    for (i, node) in nodes.iter_mut().enumerate() {
        assert!(
            node.wait_for(Duration::from_secs(20), |l| l
                .contains("programs connect to"))
                .is_some(),
            "node {i} did not start"
        );
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = on(&lan, 1, &aether, &["node", "--status"]);
        let out = output(status, Duration::from_secs(10)).await;
        if String::from_utf8_lossy(&out.stdout).contains("2 nodes in all") {
            break;
        }
        assert!(Instant::now() < deadline, "the nodes never met");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The Pi (host 0) writes; the command returns once a node holds it.
    let set = on(
        &lan,
        0,
        &aether,
        &["state", "set", "home", "living.temp", "24.5"],
    );
    let out = output(set, Duration::from_secs(20)).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The PC (host 1): the gateway as the guide starts it.
    let settings = shipped(&["default.toml", "lan.toml"]);
    let work = tempfile::tempdir().unwrap();
    let mut command = on(&lan, 1, Path::new(PROGRAM), &["--lan", "--config-dir"]);
    command
        .arg(settings.path())
        .env("AETHER_ENV", "lan")
        .current_dir(work.path());
    let mut gateway = Running::start(command, true);
    let line = gateway
        .wait_for(Duration::from_secs(30), |l| l.contains("map home: http://"))
        .unwrap_or_else(|| panic!("the gateway's page address: {:?}", gateway.seen));
    let page = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap()
        .to_string();
    assert!(
        page.contains("/map#token=") && page.ends_with("&map=home"),
        "{page}"
    );
    assert!(
        gateway.seen.iter().all(|l| !l.contains("no JetStream")),
        "the LAN overlay leaves the durable channels off: {:?}",
        gateway.seen
    );

    // A browser on the PC opens it.
    let profile = dir.path().join("chromium");
    let mut chromium = lan.command(1, support::cdp::CHROMIUM);
    chromium
        .args([
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-dev-shm-usage",
            "--remote-debugging-port=0",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(&page);
    let mut browser = Running::start(chromium, false);
    let devtools = browser
        .wait_for(Duration::from_secs(30), |l| {
            l.starts_with("DevTools listening on ")
        })
        .expect("chromium's DevTools address");
    let devtools = devtools.trim_start_matches("DevTools listening on ").trim();
    let port: u16 = devtools
        .trim_start_matches("ws://127.0.0.1:")
        .split('/')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let stream = connect_in(lan.host(1), port).expect("DevTools on the PC's loopback");
    stream.set_nonblocking(true).unwrap();
    let stream = tokio::net::TcpStream::from_std(stream).unwrap();
    let (socket, _) = tokio_tungstenite::client_async(devtools, stream)
        .await
        .expect("DevTools");
    let shown = tokio::time::timeout(
        bound.saturating_sub(started.elapsed()),
        shown_on_page(socket),
    )
    .await
    .expect("the page shows the value in time");
    assert_eq!(shown, "24.5", "the row of living.temp");
    eprintln!(
        "the Pi's value shown on the PC's page {:?} after the start",
        started.elapsed()
    );
}

/// Waits for the page (the browser's first tab) to show the row of
/// `living.temp`, and returns its value as shown.
async fn shown_on_page(
    socket: tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>,
) -> String {
    use futures_util::{SinkExt, StreamExt};
    use serde_json::{Value, json};
    use tokio_tungstenite::tungstenite::Message;

    let (mut sink, mut stream) = socket.split();
    let mut next = 0u64;
    let mut call = async |method: &str, params: Value, session: Option<&str>| -> Value {
        next += 1;
        let mut command = json!({"id": next, "method": method, "params": params});
        if let Some(session) = session {
            command["sessionId"] = json!(session);
        }
        sink.send(Message::text(command.to_string())).await.unwrap();
        while let Some(Ok(message)) = stream.next().await {
            let Ok(value) = serde_json::from_str::<Value>(message.to_text().unwrap_or("")) else {
                continue;
            };
            if value["id"] == json!(next) {
                return value;
            }
        }
        panic!("DevTools closed");
    };
    let session = loop {
        let targets = call("Target.getTargets", json!({}), None).await;
        let page = targets["result"]["targetInfos"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|t| t["type"] == "page" && t["url"].as_str().is_some_and(|u| u.contains("/map")))
            .cloned();
        if let Some(page) = page {
            let attached = call(
                "Target.attachToTarget",
                json!({"targetId": page["targetId"], "flatten": true}),
                None,
            )
            .await;
            break attached["result"]["sessionId"]
                .as_str()
                .unwrap()
                .to_string();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let read = "document.querySelector('tr[data-key=\"living.temp\"] td.value')?.textContent \
                ?? ''";
    loop {
        let answer = call(
            "Runtime.evaluate",
            json!({"expression": read, "returnByValue": true}),
            Some(&session),
        )
        .await;
        if let Some(text) = answer["result"]["result"]["value"].as_str()
            && !text.is_empty()
        {
            return text.to_string();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
