//! Edge deployments as shipped (`config/edge/`, `config/leaf.toml`): a hub
//! with JetStream in the domain "hub", leaf nodes with and without a
//! JetStream of their own (each leaf's link through a proxy that can be
//! cut), and two regions joined by gateways. Beta runs at the hub, alpha at
//! the edge; every order is answered once, across a cut.

mod support;

use std::{
    collections::HashSet,
    net::SocketAddr,
    path::Path,
    time::{Duration, Instant},
};

use aether_core::{
    Aether, AetherConfig,
    config::{DurabilityConfig, NatsConfig},
    state::StateMap,
};
use aether_testkit::{TcpProxy, TestPki, nats_server_path};
use futures_util::StreamExt;
use support::{
    eventually, get,
    programs::{beta_ready, programs, stop_beta, summary},
};
use tokio::process::{Child, Command};

const CONFIG: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../config");
const BOUND: Duration = Duration::from_secs(30);

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn leaf_password() -> String {
    format!("leaf-secret-{}", std::process::id())
}

/// A nats-server started from a shipped file with its values in its
/// environment, as an operator would.
struct Server {
    child: Child,
    client: u16,
    monitor: SocketAddr,
}

impl Server {
    async fn start(file: &str, env: &[(&str, String)]) -> Server {
        let (client, monitor) = (free_port(), free_port());
        let mut command = Command::new(nats_server_path().unwrap());
        command
            .arg("-c")
            .arg(Path::new(CONFIG).join("edge").join(file))
            .env("AETHER_NATS_CLIENT", format!("127.0.0.1:{client}"))
            .env("AETHER_NATS_MONITOR", format!("127.0.0.1:{monitor}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true);
        for (key, value) in env {
            command.env(key, value);
        }
        let server = Server {
            child: command.spawn().expect("nats-server"),
            client,
            monitor: SocketAddr::from(([127, 0, 0, 1], monitor)),
        };
        eventually("the server is ready", BOUND, || async {
            tokio::net::TcpStream::connect(server.monitor).await.ok()?;
            (get(server.monitor, "/healthz").await.status == 200).then_some(())
        })
        .await;
        server
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.client)
    }

    async fn leaves(&self) -> usize {
        let body = get(self.monitor, "/leafz").await.body;
        serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["leafnodes"].as_u64())
            .unwrap_or(0) as usize
    }
}

/// The hub, its leaf listener at `listener`; it tells its leaves
/// to reconnect at `advertise` (the proxy in front of it, where there is
/// one: a leaf that learned the listener's own address would go round a
/// cut).
async fn hub(
    pki: &TestPki,
    store: &Path,
    listener: SocketAddr,
    advertise: Option<SocketAddr>,
) -> Server {
    Server::start(
        "hub.conf",
        &[
            ("AETHER_NATS_NAME", "hub-1".into()),
            ("AETHER_NATS_STORE", store.join("hub").display().to_string()),
            ("AETHER_NATS_LEAF", listener.to_string()),
            (
                "AETHER_NATS_LEAF_ADVERTISE",
                advertise.unwrap_or(listener).to_string(),
            ),
            ("AETHER_NATS_LEAF_PASSWORD", leaf_password()),
            (
                "AETHER_NATS_CERT",
                pki.server_cert_path().display().to_string(),
            ),
            (
                "AETHER_NATS_KEY",
                pki.server_key_path().display().to_string(),
            ),
            ("AETHER_NATS_CA", pki.ca_pem_path().display().to_string()),
        ],
    )
    .await
}

/// A leaf joined to the hub's leaf listener at `to`; with `domain`, a
/// JetStream of its own in that domain.
async fn leaf(pki: &TestPki, to: SocketAddr, domain: Option<&str>, store: &Path) -> Server {
    let mut env = vec![
        ("AETHER_NATS_NAME", "shop-1".to_string()),
        (
            "AETHER_NATS_HUB",
            format!("tls://leaf:{}@{to}", leaf_password()),
        ),
        ("AETHER_NATS_CA", pki.ca_pem_path().display().to_string()),
    ];
    let file = match domain {
        Some(domain) => {
            env.push(("AETHER_NATS_DOMAIN", domain.to_string()));
            env.push((
                "AETHER_NATS_STORE",
                store.join("leaf").display().to_string(),
            ));
            "leaf-jetstream.conf"
        }
        None => "leaf.conf",
    };
    Server::start(file, &env).await
}

/// A settings folder with the shipped settings and the leaf overlay.
fn settings() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for file in ["default.toml", "leaf.toml"] {
        std::fs::copy(Path::new(CONFIG).join(file), dir.path().join(file)).unwrap();
    }
    dir
}

/// A service program on `url`; `AETHER_ENV=leaf` with `at_leaf`; its data
/// folder in `work`.
fn program(bin: &str, settings: &Path, url: &str, at_leaf: bool, work: &Path) -> Command {
    let mut command = aether_testkit::program(bin);
    command
        .arg("--config-dir")
        .arg(settings)
        .arg("--nats")
        .arg(url)
        .current_dir(work)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    if at_leaf {
        command.env("AETHER_ENV", "leaf");
    }
    command
}

async fn connect(url: &str) -> Aether {
    Aether::connect(AetherConfig {
        nats: NatsConfig {
            urls: vec![url.to_string()],
            ..NatsConfig::default()
        },
        ..AetherConfig::default()
    })
    .await
    .expect("connects")
}

/// A leaf without JetStream: alpha there stores its orders in the hub's
/// stream (domain "hub"); the leaf's link is cut for 6 s while it emits,
/// its durable outbox keeps what it emits meanwhile, and after the heal
/// beta at the hub answers every order once. Maps written on both sides
/// during the cut converge. Without the overlay, alpha at the leaf says to
/// set the domain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leaf_without_jetstream_stores_in_the_hub_across_a_cut() {
    let (beta_bin, alpha_bin) = programs().await;
    tokio::time::timeout(Duration::from_secs(150), async {
        let pki = TestPki::generate().unwrap();
        let store = tempfile::tempdir().unwrap();
        let leaf_listener = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let proxy = TcpProxy::start(leaf_listener).await.unwrap();
        let hub = hub(&pki, store.path(), leaf_listener, Some(proxy.addr())).await;
        let leaf = leaf(&pki, proxy.addr(), None, store.path()).await;
        eventually("the leaf joins the hub", BOUND, || async {
            (hub.leaves().await == 1).then_some(())
        })
        .await;
        let settings = settings();
        let work = tempfile::tempdir().unwrap();

        // The shipped settings alone at the leaf: a clear refusal.
        let plain = tokio::time::timeout(
            BOUND,
            aether_testkit::program(&alpha_bin)
                .arg("--config-dir")
                .arg(settings.path())
                .arg("--nats")
                .arg(leaf.url())
                .args(["--count", "1"])
                .current_dir(work.path())
                .env("AETHER__AETHER__REPORT__INSTANCE", "alpha-plain")
                .output(),
        )
        .await
        .expect("alpha exits")
        .unwrap();
        let said = String::from_utf8_lossy(&plain.stderr);
        assert_eq!(plain.status.code(), Some(1), "{said}");
        assert!(said.contains("durability.domain"), "{said}");

        let mut beta = program(&beta_bin, settings.path(), &hub.url(), false, work.path())
            .spawn()
            .unwrap();
        let mut beta_lines = beta_ready(&mut beta).await;

        // Every order as it reaches the hub, by its wave id.
        let watcher = async_nats::connect(hub.url()).await.unwrap();
        let mut orders = watcher.subscribe("aether.orders.created").await.unwrap();
        let (arrived_tx, mut arrived) = tokio::sync::mpsc::unbounded_channel();
        let watch = tokio::spawn(async move {
            while let Some(message) = orders.next().await {
                let id = message
                    .headers
                    .as_ref()
                    .and_then(|h| h.get("Nats-Msg-Id").map(|v| v.to_string()));
                let _ = arrived_tx.send((id, Instant::now()));
            }
        });

        // Replicas of one map at the hub and at the edge.
        let at_hub = connect(&hub.url()).await;
        let at_edge = connect(&leaf.url()).await;
        let hub_map = StateMap::open(&at_hub, "edge-home").await.unwrap();
        let edge_map = StateMap::open(&at_edge, "edge-home").await.unwrap();

        // Each answer waited for 2 s, less than the cut: orders that left
        // the outbox after the heal get their whole deadline from then.
        let alpha = program(&alpha_bin, settings.path(), &leaf.url(), true, work.path())
            .args(["--count", "40", "--rate", "10"])
            .env("AETHER__ALPHA__ANSWER_DEADLINE_MS", "2000")
            .spawn()
            .unwrap();
        tokio::time::sleep(Duration::from_secs(1)).await;
        proxy.refuse(true);
        proxy.cut();
        eventually("the hub sees the leaf gone", BOUND, || async {
            (hub.leaves().await == 0).then_some(())
        })
        .await;
        // From here nothing crosses until the heal (what was in flight at
        // the cut arrived before the hub saw the leaf gone).
        let cut = Instant::now();
        edge_map.set("porch.light", "on").await.unwrap();
        hub_map.set("thermostat", "21").await.unwrap();
        tokio::time::sleep(Duration::from_secs(6)).await;
        proxy.refuse(false);
        let healed = Instant::now();

        let alpha = summary(alpha, "service-alpha:", false).await;
        assert_eq!(alpha["created"], 40, "{alpha:?}");
        assert_eq!(
            (alpha["confirmed"] + alpha["cancelled"], alpha["unanswered"]),
            (40, 0),
            "{alpha:?}"
        );
        assert_eq!(stop_beta(&mut beta, &mut beta_lines).await, 40);

        // Every order reached the hub; the last of those held at the edge
        // arrived this long after the heal.
        let mut ids = HashSet::new();
        let (mut before_the_cut, mut after_the_heal, mut last) = (0, 0, healed);
        while let Ok(Some((id, at))) =
            tokio::time::timeout(Duration::from_millis(200), arrived.recv()).await
        {
            ids.insert(id.expect("a durable wave has its id"));
            last = last.max(at);
            if at < cut {
                before_the_cut += 1;
            } else {
                // Nothing crosses while the link is cut.
                assert!(at >= healed, "an order reached the hub during the cut");
                after_the_heal += 1;
            }
        }
        assert_eq!(ids.len(), 40);
        eprintln!(
            "orders at the hub: {before_the_cut} before the cut, {after_the_heal} after the heal"
        );
        // The cut came while alpha emitted: orders waited at the edge.
        assert!(
            after_the_heal > 0 && before_the_cut > 0,
            "{before_the_cut} {after_the_heal}"
        );
        eprintln!(
            "from the heal to the last order held at the edge reaching the hub: {:?}",
            last.duration_since(healed)
        );
        eventually(
            "the map converges across the healed link",
            BOUND,
            || async {
                (hub_map.get("porch.light").as_deref() == Some(&b"on"[..])
                    && edge_map.get("thermostat").as_deref() == Some(&b"21"[..]))
                .then_some(())
            },
        )
        .await;
        watch.abort();
        drop(leaf);
        drop(hub);
    })
    .await
    .expect("bounded");
}

/// A leaf with a JetStream of its own (domain "shop"): a stream there that
/// captures the saga's channels too makes alpha refuse to start, naming
/// it; without it, alpha's orders are stored in the hub and answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leaf_with_its_own_jetstream_refuses_a_second_capture() {
    let (beta_bin, alpha_bin) = programs().await;
    tokio::time::timeout(Duration::from_secs(120), async {
        let pki = TestPki::generate().unwrap();
        let store = tempfile::tempdir().unwrap();
        let leaf_listener = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let hub = hub(&pki, store.path(), leaf_listener, None).await;
        let leaf = leaf(&pki, leaf_listener, Some("shop"), store.path()).await;
        eventually("the leaf joins the hub", BOUND, || async {
            (hub.leaves().await == 1).then_some(())
        })
        .await;
        let settings = settings();
        let work = tempfile::tempdir().unwrap();
        let local = async_nats::jetstream::new(async_nats::connect(leaf.url()).await.unwrap());
        local
            .create_stream(async_nats::jetstream::stream::Config {
                name: "SHOP".into(),
                // Narrower than the durable channels, and overlapping them.
                subjects: vec!["aether.*.created".into()],
                ..Default::default()
            })
            .await
            .unwrap();
        let refused = tokio::time::timeout(
            BOUND,
            program(&alpha_bin, settings.path(), &leaf.url(), true, work.path())
                .args(["--count", "1"])
                .output(),
        )
        .await
        .expect("alpha exits")
        .unwrap();
        let said = String::from_utf8_lossy(&refused.stderr);
        assert_eq!(refused.status.code(), Some(1), "{said}");
        assert!(
            said.contains("\"SHOP\"") && said.contains("also captures"),
            "{said}"
        );
        local.delete_stream("SHOP").await.unwrap();

        let mut beta = program(&beta_bin, settings.path(), &hub.url(), false, work.path())
            .spawn()
            .unwrap();
        let mut beta_lines = beta_ready(&mut beta).await;
        let alpha = program(&alpha_bin, settings.path(), &leaf.url(), true, work.path())
            .args(["--count", "20", "--rate", "40"])
            .spawn()
            .unwrap();
        let alpha = summary(alpha, "service-alpha:", false).await;
        assert_eq!(
            (alpha["created"], alpha["confirmed"] + alpha["cancelled"]),
            (20, 20),
            "{alpha:?}"
        );
        assert_eq!(stop_beta(&mut beta, &mut beta_lines).await, 20);
        // Stored in the hub, and nowhere at the leaf.
        let hub_js = async_nats::jetstream::new(async_nats::connect(hub.url()).await.unwrap());
        let mut stream = hub_js.get_stream("AETHER").await.unwrap();
        assert!(stream.info().await.unwrap().state.messages >= 40);
        let mut names = local.stream_names();
        assert!(names.next().await.is_none(), "a stream at the leaf");

        // Without the overlay a program at the leaf makes the stream in the
        // leaf's own domain: two streams capture the orders, and programs
        // on both sides say so (and report it: the alert
        // AetherDurableStoredTwice).
        let durable = |url: String| AetherConfig {
            nats: NatsConfig {
                urls: vec![url],
                ..NatsConfig::default()
            },
            durability: DurabilityConfig {
                channels: vec!["orders.*".into()],
                ..DurabilityConfig::default()
            },
            ..AetherConfig::default()
        };
        let observer = connect(&hub.url()).await;
        let mut everything = aether_core::Vibrator::create("observer", &observer)
            .await
            .unwrap();
        everything.resonate_on("*").await.unwrap();
        let at_leaf = Aether::connect(durable(leaf.url())).await.unwrap();
        let at_hub = Aether::connect(durable(hub.url())).await.unwrap();
        eventually(
            "both sides see two streams capture the orders",
            BOUND,
            || async {
                (at_leaf.connection().durable_captures == 2
                    && at_hub.connection().durable_captures == 2)
                    .then_some(())
            },
        )
        .await;
        let mut names = local.stream_names();
        assert_eq!(
            names.next().await.transpose().unwrap().as_deref(),
            Some("AETHER")
        );
        // The questions were heard by a vibrator resonating on everything,
        // and passed over, not counted as malformed.
        assert_eq!(observer.connection().malformed, 0);
        assert!(
            tokio::time::timeout(Duration::from_millis(200), everything.receive())
                .await
                .is_err(),
            "a probe handed out as a wave"
        );
    })
    .await
    .expect("bounded");
}

/// Two regions, each a cluster (`config/edge/region.conf`), joined by
/// gateways: beta in one, alpha in the other, every order answered once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_regions_joined_by_gateways_run_the_saga() {
    let (beta_bin, alpha_bin) = programs().await;
    tokio::time::timeout(Duration::from_secs(120), async {
        let store = tempfile::tempdir().unwrap();
        let gateways = [free_port(), free_port()];
        let routes = [free_port(), free_port()];
        let names = ["east", "west"];
        let mut regions = Vec::new();
        for i in 0..2 {
            // One node per region here: its routes name itself (JetStream
            // in a cluster needs routes to start).
            let route = format!("nats-route://127.0.0.1:{}", routes[i]);
            let (client, monitor) = (free_port(), free_port());
            let child = Command::new(nats_server_path().unwrap())
                .arg("-c")
                .arg(Path::new(CONFIG).join("edge/region.conf"))
                .env("AETHER_NATS_NAME", format!("{}-1", names[i]))
                .env("AETHER_NATS_REGION", names[i])
                .env("AETHER_NATS_CLIENT", format!("127.0.0.1:{client}"))
                .env("AETHER_NATS_MONITOR", format!("127.0.0.1:{monitor}"))
                .env("AETHER_NATS_STORE", store.path().join(names[i]))
                .env("AETHER_NATS_CLUSTER", format!("127.0.0.1:{}", routes[i]))
                .env("AETHER_NATS_ROUTE_A", &route)
                .env("AETHER_NATS_ROUTE_B", &route)
                .env("AETHER_NATS_GATEWAY", format!("127.0.0.1:{}", gateways[i]))
                .env(
                    "AETHER_NATS_GATEWAY_ADVERTISE",
                    format!("127.0.0.1:{}", gateways[i]),
                )
                .env("AETHER_NATS_OTHER_REGION", names[1 - i])
                .env(
                    "AETHER_NATS_OTHER_GATEWAY",
                    format!("nats://127.0.0.1:{}", gateways[1 - i]),
                )
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .expect("nats-server");
            regions.push(Server {
                child,
                client,
                monitor: SocketAddr::from(([127, 0, 0, 1], monitor)),
            });
        }
        for region in &regions {
            eventually("the region's JetStream is ready", BOUND, || async {
                tokio::net::TcpStream::connect(region.monitor).await.ok()?;
                (get(region.monitor, "/healthz").await.status == 200).then_some(())
            })
            .await;
        }
        let settings = settings();
        let work = tempfile::tempdir().unwrap();
        let mut beta = program(
            &beta_bin,
            settings.path(),
            &regions[0].url(),
            false,
            work.path(),
        )
        .spawn()
        .unwrap();
        let mut beta_lines = beta_ready(&mut beta).await;
        let alpha = program(
            &alpha_bin,
            settings.path(),
            &regions[1].url(),
            false,
            work.path(),
        )
        .args(["--count", "30", "--rate", "40"])
        .spawn()
        .unwrap();
        let alpha = summary(alpha, "service-alpha:", false).await;
        assert_eq!(
            (
                alpha["created"],
                alpha["confirmed"] + alpha["cancelled"],
                alpha["unanswered"]
            ),
            (30, 30, 0),
            "{alpha:?}"
        );
        assert_eq!(stop_beta(&mut beta, &mut beta_lines).await, 30);
        for mut region in regions {
            region.child.kill().await.unwrap();
        }
    })
    .await
    .expect("bounded");
}
