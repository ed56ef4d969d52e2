//! The production deployment as shipped: three nats-server nodes started
//! with `config/nats/node.conf` (JetStream, TLS for clients and routes, a
//! user per program from `config/nats/users.conf`), and the gateway, beta
//! and alpha on the `production` overlay (`config/production.toml`), each
//! told by its environment where the cluster is and who it is.

mod support;

use std::{net::SocketAddr, path::Path, time::Duration};

use aether_core::{Aether, AetherConfig, config::NatsConfig};
use aether_testkit::{TestPki, nats_server_path};
use support::{
    eventually, get, observed,
    programs::{beta_ready, programs, stop_beta, stop_gateway, summary},
    sample, spawn_serving,
};
use tokio::process::{Child, Command};

const CONFIG: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../config");
const BOUND: Duration = Duration::from_secs(30);

/// A node of the cluster, started as an operator would, with its values in
/// its environment.
struct Node {
    child: Child,
    monitor: SocketAddr,
}

struct Cluster {
    nodes: Vec<Node>,
    urls: Vec<String>,
    _store: tempfile::TempDir,
}

fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<_> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect()
}

fn password(user: &str) -> String {
    format!("{user}-secret-{}", std::process::id())
}

async fn cluster(pki: &TestPki) -> Cluster {
    let ports = free_ports(9);
    let store = tempfile::tempdir().unwrap();
    let (client, route, monitor) = (&ports[0..3], &ports[3..6], &ports[6..9]);
    let mut nodes = Vec::new();
    for i in 0..3 {
        let others: Vec<String> = (0..3)
            .filter(|&j| j != i)
            .map(|j| {
                format!(
                    "nats-route://route:{}@127.0.0.1:{}",
                    password("route"),
                    route[j]
                )
            })
            .collect();
        let mut command = Command::new(nats_server_path().unwrap());
        command
            .arg("-c")
            .arg(Path::new(CONFIG).join("nats/node.conf"))
            .env("AETHER_NATS_NAME", format!("n{}", i + 1))
            .env("AETHER_NATS_CLIENT", format!("127.0.0.1:{}", client[i]))
            .env("AETHER_NATS_CLUSTER", format!("127.0.0.1:{}", route[i]))
            .env("AETHER_NATS_ROUTE_A", &others[0])
            .env("AETHER_NATS_ROUTE_B", &others[1])
            .env("AETHER_NATS_MONITOR", format!("127.0.0.1:{}", monitor[i]))
            .env(
                "AETHER_NATS_STORE",
                store.path().join(format!("n{}", i + 1)),
            )
            .env("AETHER_NATS_CERT", pki.node_cert_path())
            .env("AETHER_NATS_KEY", pki.node_key_path())
            .env("AETHER_NATS_CA", pki.ca_pem_path())
            .env("AETHER_NATS_ROUTE_PASSWORD", password("route"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true);
        for user in ["gateway", "alpha", "beta", "ops"] {
            command.env(
                format!("AETHER_NATS_{}_PASSWORD", user.to_uppercase()),
                password(user),
            );
        }
        nodes.push(Node {
            child: command.spawn().expect("nats-server"),
            monitor: SocketAddr::from(([127, 0, 0, 1], monitor[i])),
        });
    }
    // Each node is ready when JetStream is: the meta group has a leader.
    for node in &nodes {
        eventually("the node's JetStream is ready", BOUND, || async {
            tokio::net::TcpStream::connect(node.monitor).await.ok()?;
            (get(node.monitor, "/healthz").await.status == 200).then_some(())
        })
        .await;
    }
    Cluster {
        nodes,
        urls: client
            .iter()
            .map(|port| format!("tls://127.0.0.1:{port}"))
            .collect(),
        _store: store,
    }
}

/// A program on the production overlay, as `user` with `instance`.
fn program(bin: &str, settings: &Path, cluster: &Cluster, pki: &TestPki, user: &str) -> Command {
    let mut command = aether_testkit::program(bin);
    command
        .arg("--config-dir")
        .arg(settings)
        .env("AETHER_ENV", "production")
        .env("AETHER__AETHER__REPORT__INSTANCE", format!("{user}-1"))
        .env("AETHER__AETHER__NATS__URLS", cluster.urls.join(","))
        .env("AETHER__AETHER__NATS__TLS__CA_FILE", pki.ca_pem_path())
        .env("AETHER__AETHER__NATS__AUTH__USER", user)
        .env("AETHER__AETHER__NATS__AUTH__PASSWORD", password(user))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null());
    command
}

/// The shipped settings and the production overlay; the saga on a cluster
/// with TLS and a user per program: every order answered once, the stream
/// kept on the three nodes, the gateway's counts the services' own; a user
/// with a wrong password is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_saga_runs_on_the_shipped_production_cluster() {
    let (beta_bin, alpha_bin) = programs().await;
    tokio::time::timeout(Duration::from_secs(120), async {
        let pki = TestPki::generate().unwrap();
        let mut cluster = cluster(&pki).await;
        let settings = tempfile::tempdir().unwrap();
        for file in ["default.toml", "production.toml"] {
            std::fs::copy(Path::new(CONFIG).join(file), settings.path().join(file)).unwrap();
        }
        let mut gateway = program(
            support::programs::PROGRAM,
            settings.path(),
            &cluster,
            &pki,
            "gateway",
        );
        gateway.env("AETHER__GATEWAY__LISTEN", "127.0.0.1:0");
        let (gateway, addr) = spawn_serving(gateway, BOUND).await;
        let mut beta = program(&beta_bin, settings.path(), &cluster, &pki, "beta")
            .spawn()
            .unwrap();
        let mut lines = beta_ready(&mut beta).await;
        let mut alpha = program(&alpha_bin, settings.path(), &cluster, &pki, "alpha");
        alpha.args(["--count", "60", "--rate", "30"]);
        let alpha = summary(alpha.spawn().unwrap(), "service-alpha:", false).await;
        assert_eq!(alpha["created"], 60, "{alpha:?}");
        assert_eq!(
            (alpha["confirmed"] + alpha["cancelled"], alpha["unanswered"]),
            (60, 0),
            "{alpha:?}"
        );
        eventually("the gateway counts the orders", BOUND, || async {
            let text = get(addr, "/metrics").await.body;
            (observed(&text, "orders.created") == 60).then_some(())
        })
        .await;
        // The stream is kept on all three nodes.
        let jsz = get(
            cluster.nodes[0].monitor,
            "/jsz?accounts=true&streams=true&config=true",
        )
        .await
        .body
        .replace(char::is_whitespace, "");
        assert!(jsz.contains("\"num_replicas\":3"), "{jsz}");
        // The gateway exports the stream against its bounds.
        eventually("the gateway exports the stream", BOUND, || async {
            let text = get(addr, "/metrics").await.body;
            let replicas = sample(&text, "aether_stream_replicas{stream=\"AETHER\"}");
            let max = sample(&text, "aether_stream_max_bytes{stream=\"AETHER\"}");
            let bytes = sample(&text, "aether_stream_bytes{stream=\"AETHER\"}");
            // One stream (its leader, of three copies) answers the
            // question of which capture the durable channels.
            let captures = sample(&text, "aether_nats_durable_captures");
            (replicas == Some(3.0)
                && max == Some(1_073_741_824.0)
                && bytes.is_some_and(|b| b > 0.0)
                && captures == Some(1.0))
            .then_some(())
        })
        .await;
        // A wrong password is refused, with a typed error.
        let refused = Aether::connect(AetherConfig {
            nats: NatsConfig {
                urls: cluster.urls.clone(),
                connect_timeout: Duration::from_millis(2000),
                tls: aether_core::config::NatsTls {
                    required: true,
                    ca_file: Some(pki.ca_pem_path()),
                    ..Default::default()
                },
                auth: aether_core::config::NatsAuth {
                    user: Some("alpha".into()),
                    password: Some(aether_core::Secret::new("wrong")),
                    ..Default::default()
                },
                ..NatsConfig::default()
            },
            ..AetherConfig::default()
        })
        .await
        .expect_err("a wrong password");
        assert_eq!(
            refused.kind(),
            aether_core::ConnectErrorKind::Authorization,
            "{refused}"
        );
        // A program with a wrong password exits, saying why.
        let mut wrong = program(&beta_bin, settings.path(), &cluster, &pki, "beta");
        wrong
            .env("AETHER__AETHER__NATS__AUTH__PASSWORD", "wrong")
            .env("AETHER__AETHER__REPORT__INSTANCE", "beta-wrong")
            .stderr(std::process::Stdio::piped());
        let refused = tokio::time::timeout(BOUND, wrong.output())
            .await
            .expect("it exits")
            .unwrap();
        let said = String::from_utf8_lossy(&refused.stderr);
        assert_eq!(refused.status.code(), Some(1), "{said}");
        assert!(said.contains("not authorized"), "{said}");
        // The stream's copies, its leader and beta's consumer, exported.
        eventually(
            "the gateway exports the copies and the backlog",
            BOUND,
            || async {
                let text = get(addr, "/metrics").await.body;
                let current = sample(&text, "aether_stream_replicas_current{stream=\"AETHER\"}");
                let leader = text
                    .lines()
                    .any(|l| l.starts_with("aether_stream_leader{") && l.ends_with(" 1"));
                let consumer = text.lines().any(|l| {
                    l.starts_with("aether_consumer_pending_waves{consumer=\"")
                        && l.contains("stream=\"AETHER\"")
                });
                (current == Some(3.0) && leader && consumer).then_some(())
            },
        )
        .await;
        // A node lost for good: the stream is short of a copy, and says so.
        cluster.nodes[2].child.kill().await.unwrap();
        eventually(
            "the gateway sees the stream short of a copy",
            BOUND,
            || async {
                let text = get(addr, "/metrics").await.body;
                let current = sample(&text, "aether_stream_replicas_current{stream=\"AETHER\"}");
                let configured = sample(&text, "aether_stream_replicas{stream=\"AETHER\"}");
                (current == Some(2.0) && configured == Some(3.0)).then_some(())
            },
        )
        .await;
        let answered = stop_beta(&mut beta, &mut lines).await;
        assert_eq!(answered, 60, "each order answered once");
        stop_gateway(gateway).await;
        for node in &mut cluster.nodes {
            // The third is gone already.
            let _ = node.child.kill().await;
        }
    })
    .await
    .expect("bounded");
}

/// A raw `GET path` with `host` as its `Host` header; the status code.
async fn status_for_host(addr: SocketAddr, path: &str, host: &str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut head = [0u8; 12];
    tokio::time::timeout(BOUND, stream.read_exact(&mut head))
        .await
        .expect("an answer")
        .unwrap();
    String::from_utf8_lossy(&head[9..12]).parse().unwrap()
}

/// The production overlay answers only the names the gateway is reached
/// by: a page whose name was rebound to the gateway's address (DNS
/// rebinding) cannot read `/metrics` or `/snapshot`.
#[tokio::test]
async fn the_production_gateway_refuses_another_host_name() {
    let source = aether_ops::settings::SettingsSource::new(
        CONFIG,
        Some("production"),
        [("AETHER__GATEWAY__LISTEN", "127.0.0.1:0")],
    );
    let settings: aether_gateway::GatewaySettings = source.load().unwrap();
    let gateway = support::start(&Aether::default(), settings.gateway).await;
    let addr = gateway.addr();
    for path in ["/metrics", "/snapshot", "/"] {
        for host in [
            "evil.example".to_string(),
            format!("evil.example:{}", addr.port()),
        ] {
            assert_eq!(
                status_for_host(addr, path, &host).await,
                421,
                "{path} {host}"
            );
        }
        for host in [addr.to_string(), format!("localhost:{}", addr.port())] {
            assert_eq!(
                status_for_host(addr, path, &host).await,
                200,
                "{path} {host}"
            );
        }
    }
    gateway.stop().await.unwrap();
}
