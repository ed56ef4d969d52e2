//! The programs as processes: the gateway, the sample services, their
//! summaries.

use std::{collections::HashMap, path::Path, process::Stdio, time::Duration};

use aether_core::{Aether, AetherConfig, Vibrator, config::NatsConfig};
use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};
use tokio::{io::AsyncReadExt, process::Child};

use super::{eventually, get, observed};

/// The gateway program of these tests.
pub const PROGRAM: &str = env!("CARGO_BIN_EXE_aether-gateway");
const BOUND: Duration = Duration::from_secs(20);
/// The repository's settings, as shipped.
pub const SHIPPED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/default.toml");

/// A nats-server with JetStream, and a settings folder holding the shipped
/// settings (the saga's channels durable, beta's answers correlated).
pub async fn shipped_bus() -> (aether_testkit::NatsServer, tempfile::TempDir) {
    let server = aether_testkit::NatsServer::builder()
        .jetstream(true)
        .start()
        .await
        .expect("nats-server");
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(SHIPPED, dir.path().join("default.toml")).unwrap();
    (server, dir)
}

/// Stops the gateway program with SIGTERM and checks that it exits 0.
pub async fn stop_gateway(mut gateway: Child) {
    kill(pid(&gateway), Signal::SIGTERM).unwrap();
    let status = tokio::time::timeout(BOUND, gateway.wait())
        .await
        .expect("the gateway exits")
        .unwrap();
    assert!(status.success(), "{status}");
}

pub fn pid(child: &Child) -> Pid {
    Pid::from_raw(i32::try_from(child.id().unwrap()).unwrap())
}

/// Waits for a service program to exit (after SIGTERM if `terminate`),
/// checks it exits 0, and reads the counts of its summary, the stdout line
/// that starts with `prefix`.
pub async fn summary(mut child: Child, prefix: &str, terminate: bool) -> HashMap<String, u64> {
    let id = child.id();
    if terminate {
        kill(pid(&child), Signal::SIGTERM).unwrap();
    }
    let mut stdout = String::new();
    let mut pipe = child.stdout.take().unwrap();
    tokio::time::timeout(Duration::from_secs(60), pipe.read_to_string(&mut stdout))
        .await
        .expect("it reports")
        .unwrap();
    let status = tokio::time::timeout(BOUND, child.wait())
        .await
        .expect("it exits")
        .unwrap();
    if !status.success() {
        // Its stderr read to the end.
        tokio::time::sleep(Duration::from_millis(200)).await;
        panic!("{prefix} {status}: {:#?}", said_last(id));
    }
    let line = stdout
        .lines()
        .find_map(|line| line.strip_prefix(prefix))
        .unwrap_or_else(|| panic!("no summary in {stdout:?}"));
    super::summary_counts(line)
}

/// A nats-server, an aether on it, a service's replica of `map` on that
/// aether, a settings folder and a free loopback port: what the tests of
/// pages on the gateway program stand on.
pub struct BridgeBus {
    pub nats: aether_testkit::NatsServer,
    pub aether: Aether,
    pub service: aether_core::state::StateMap,
    pub settings: tempfile::TempDir,
    pub port: u16,
}

impl BridgeBus {
    pub async fn start(map: &str) -> Self {
        let nats = aether_testkit::NatsServer::start()
            .await
            .expect("nats-server starts");
        let aether = Aether::connect(AetherConfig {
            nats: NatsConfig {
                urls: vec![nats.url()],
                ..Default::default()
            },
            ..Default::default()
        })
        .await
        .unwrap();
        let service = aether_core::state::StateMap::builder(map)
            .node("service")
            .open(&aether)
            .await
            .unwrap();
        let port = {
            let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            probe.local_addr().unwrap().port()
        };
        Self {
            nats,
            aether,
            service,
            settings: tempfile::tempdir().unwrap(),
            port,
        }
    }

    /// The gateway program on the bus's port, bridging `maps`.
    pub async fn gateway(&self, maps: &[&str], token: &str) -> Child {
        bridging_gateway(
            self.settings.path(),
            &self.nats.url(),
            self.port,
            maps,
            token,
        )
        .await
    }
}

/// `aether-gateway --config-dir dir --nats url`.
fn gateway_command(dir: &Path, url: &str) -> tokio::process::Command {
    let mut command = aether_testkit::program(PROGRAM);
    command.arg("--config-dir").arg(dir).arg("--nats").arg(url);
    command
}

/// The gateway program on `port` over NATS at `url`, bridging `maps` with
/// `token` (a settings directory `dir`; the library's settings otherwise).
pub async fn bridging_gateway(
    dir: &Path,
    url: &str,
    port: u16,
    maps: &[&str],
    token: &str,
) -> Child {
    let maps: Vec<String> = maps.iter().map(|m| format!("{m:?}")).collect();
    std::fs::write(
        dir.join("default.toml"),
        format!("[gateway.bridge]\nmaps = [{}]\n", maps.join(", ")),
    )
    .unwrap();
    let mut command = gateway_command(dir, url);
    command
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .env("AETHER__GATEWAY__BRIDGE__TOKEN", token)
        .stderr(Stdio::inherit());
    let (child, addr) = super::spawn_serving(command, Duration::from_secs(30)).await;
    assert_eq!(addr.port(), port);
    child
}

/// The gateway on `url` with the settings in `dir`, once it hears the bus.
pub async fn gateway(dir: &Path, url: &str) -> (Child, std::net::SocketAddr) {
    let mut command = gateway_command(dir, url);
    command
        .env("AETHER__GATEWAY__LISTEN", "127.0.0.1:0")
        .env("AETHER__AETHER__REPORT__INSTANCE", "gateway-1")
        .stderr(Stdio::null());
    let (child, addr) = super::spawn_serving(command, BOUND).await;
    let probe_side = Aether::connect(AetherConfig {
        nats: NatsConfig {
            urls: vec![url.to_string()],
            ..NatsConfig::default()
        },
        ..AetherConfig::default()
    })
    .await
    .unwrap();
    let probe = Vibrator::create("probe", &probe_side).await.unwrap();
    let sent = std::sync::atomic::AtomicU64::new(0);
    eventually("the gateway hears the bus", BOUND, || async {
        // Each probe its own message (its own key): several, while the
        // gateway comes up, make no interference of their own.
        let n = sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let ping = aether_core::Wave::builder("probe.ping")
            .correlation_key(format!("probe-{n}"))
            .json(&0)
            .build()
            .unwrap();
        probe.emit(ping).await.unwrap();
        let text = get(addr, "/metrics").await.body;
        (observed(&text, "probe.ping") > 0).then_some(())
    })
    .await;
    probe_side.close();
    (child, addr)
}

pub fn service(bin: &str, dir: &Path, url: &str, instance: &str, args: &[&str]) -> Child {
    let mut command = aether_testkit::program(bin);
    command
        .arg("--config-dir")
        .arg(dir)
        .arg("--nats")
        .arg(url)
        .args(args)
        .env("AETHER__AETHER__REPORT__INSTANCE", instance)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().unwrap();
    keep_last_lines(&mut child);
    child
}

/// The last lines each service program wrote to stderr, by process id.
static LAST_LINES: std::sync::Mutex<Vec<(u32, std::collections::VecDeque<String>)>> =
    std::sync::Mutex::new(Vec::new());
const LINES_KEPT: usize = 20;

/// Reads `child`'s stderr to its end (so that it never blocks on a full
/// pipe), keeping its last lines for [`said_last`].
fn keep_last_lines(child: &mut Child) {
    use tokio::io::AsyncBufReadExt;
    let (Some(id), Some(stderr)) = (child.id(), child.stderr.take()) else {
        return;
    };
    LAST_LINES.lock().unwrap().push((id, Default::default()));
    tokio::spawn(async move {
        let mut lines = tokio::io::BufReader::new(stderr).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            let mut kept = LAST_LINES.lock().unwrap();
            if let Some((_, last)) = kept.iter_mut().find(|(pid, _)| *pid == id) {
                if last.len() == LINES_KEPT {
                    last.pop_front();
                }
                last.push_back(line);
            }
        }
    });
}

/// What a service program (by its process id) wrote last to stderr.
fn said_last(id: Option<u32>) -> Vec<String> {
    let kept = LAST_LINES.lock().unwrap();
    kept.iter()
        .find(|(pid, _)| Some(*pid) == id)
        .map(|(_, last)| last.iter().cloned().collect())
        .unwrap_or_default()
}

pub async fn programs() -> (String, String) {
    let [beta, alpha] = super::service_programs(PROGRAM).await;
    (beta, alpha)
}

/// Beta's standard output, line by line.
pub type Lines = aether_testkit::process::StdoutLines;

/// Beta's output, once its first line says it is connected and resonating
/// (within 30 s); its stdout must be piped.
pub async fn beta_ready(beta: &mut Child) -> Lines {
    aether_testkit::process::ready(beta, Duration::from_secs(30), "connected, resonating").await
}

/// Stops beta with SIGTERM, checks it exits 0, and returns the orders it
/// answered (reserved and insufficient, each order once).
pub async fn stop_beta(beta: &mut Child, lines: &mut Lines) -> u64 {
    kill(pid(beta), Signal::SIGTERM).unwrap();
    let mut counts = None;
    while let Some(line) = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .expect("beta reports")
        .unwrap()
    {
        if let Some(rest) = line.strip_prefix("service-beta:") {
            counts = Some(super::summary_counts(rest));
        }
    }
    assert!(beta.wait().await.unwrap().success());
    let counts = counts.expect("beta's summary");
    counts["reserved"] + counts["insufficient"]
}
