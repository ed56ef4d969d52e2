use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use tokio::time::{Instant, sleep};

use crate::raw::RawNats;
use crate::server::{
    ClusterConfig, NatsServer, is_bind_failure, jetstream_api_ready, js_request, unique_suffix,
};
use crate::{Error, free_ports};

/// Default bound for route formation (and clustered JetStream readiness).
const DEFAULT_FORMATION_TIMEOUT: Duration = Duration::from_secs(20);
/// How many times a whole cluster start is retried when a node could not bind its ports.
const CLUSTER_ATTEMPTS: usize = 3;

/// Options for [`NatsCluster`]; create with [`NatsCluster::builder`].
#[derive(Clone, Debug)]
pub struct NatsClusterBuilder {
    nodes: usize,
    jetstream: bool,
    no_advertise: bool,
    formation_timeout: Duration,
}

impl NatsClusterBuilder {
    /// Enables JetStream on every node (each with its own store); start then also waits
    /// until `$JS.API.INFO` answers on every node.
    pub fn jetstream(mut self, enabled: bool) -> Self {
        self.jetstream = enabled;
        self
    }

    /// `no_advertise: true`: clients are not told about the other nodes' URLs (useful when
    /// clients must stay behind a [`TcpProxy`](crate::TcpProxy)).
    pub fn no_advertise(mut self, enabled: bool) -> Self {
        self.no_advertise = enabled;
        self
    }

    /// Bounds the wait for route formation (default 20 s).
    pub fn formation_timeout(mut self, limit: Duration) -> Self {
        self.formation_timeout = limit;
        self
    }

    /// Starts the nodes and waits until every node answers and the full mesh of routes works.
    pub async fn start(self) -> Result<NatsCluster, Error> {
        if self.nodes == 0 {
            return Err(Error::Protocol("a cluster needs at least one node".into()));
        }
        let mut last_err = None;
        for attempt in 0..CLUSTER_ATTEMPTS {
            if attempt > 0 {
                sleep(Duration::from_millis(100)).await;
            }
            match self.try_start().await {
                Ok(cluster) => return Ok(cluster),
                Err(e) => {
                    let retry = is_bind_failure(&e);
                    last_err = Some(e);
                    if !retry {
                        break;
                    }
                }
            }
        }
        Err(last_err.expect("at least one attempt"))
    }

    async fn try_start(&self) -> Result<NatsCluster, Error> {
        let n = self.nodes;
        let ports = free_ports(2 * n)?;
        let route_addr = |i: usize| SocketAddr::from((Ipv4Addr::LOCALHOST, ports[2 * i + 1]));
        let name = format!("testkit-cluster-{}", unique_suffix());
        let mut nodes = Vec::with_capacity(n);
        for i in 0..n {
            let routes = (0..n).filter(|&j| j != i).map(route_addr).collect();
            let node = NatsServer::builder()
                .server_name(format!("{name}-n{i}"))
                .port(ports[2 * i])
                .jetstream(self.jetstream)
                .cluster(ClusterConfig {
                    name: name.clone(),
                    port: Some(ports[2 * i + 1]),
                    routes,
                    no_advertise: self.no_advertise,
                })
                .start()
                .await?;
            nodes.push(node);
        }
        let cluster = NatsCluster {
            nodes,
            jetstream: self.jetstream,
            formation_timeout: self.formation_timeout,
        };
        cluster.wait_for_routes(self.formation_timeout).await?;
        Ok(cluster)
    }
}

/// A cluster of `nats-server` processes on loopback with full-mesh routes.
#[derive(Debug)]
pub struct NatsCluster {
    nodes: Vec<NatsServer>,
    jetstream: bool,
    formation_timeout: Duration,
}

impl NatsCluster {
    /// A builder for an `n`-node cluster.
    pub fn builder(n: usize) -> NatsClusterBuilder {
        NatsClusterBuilder {
            nodes: n,
            jetstream: false,
            no_advertise: false,
            formation_timeout: DEFAULT_FORMATION_TIMEOUT,
        }
    }

    /// Starts an `n`-node cluster with defaults and waits until routes are formed.
    pub async fn start(n: usize) -> Result<NatsCluster, Error> {
        Self::builder(n).start().await
    }

    /// Client URLs of all nodes (killed ones included), in node order.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(NatsServer::url).collect()
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Always `false` (a cluster has at least one node).
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Node `i`. Panics when out of range.
    pub fn node(&self, i: usize) -> &NatsServer {
        &self.nodes[i]
    }

    /// Kills node `i` with SIGKILL.
    pub async fn kill(&mut self, i: usize) -> Result<(), Error> {
        self.nodes[i].kill().await
    }

    /// Restarts node `i` (same ports and store) and waits until the routes between all
    /// running nodes work again.
    pub async fn restart(&mut self, i: usize) -> Result<(), Error> {
        self.nodes[i].restart().await?;
        self.wait_for_routes(self.formation_timeout).await
    }

    /// Waits (bounded) until a message published on any running node reaches a subscriber on
    /// every other running node, and with JetStream until `$JS.API.INFO` answers on each.
    pub async fn wait_for_routes(&self, limit: Duration) -> Result<(), Error> {
        let deadline = Instant::now() + limit;
        let running: Vec<&NatsServer> = self.nodes.iter().filter(|n| n.is_running()).collect();
        let addrs: Vec<SocketAddr> = running.iter().map(|n| n.addr()).collect();
        if addrs.is_empty() {
            return Ok(());
        }
        if let Err(e) = check_mesh(&addrs, deadline).await {
            return Err(with_logs(e, &running));
        }
        if self.jetstream {
            for node in &running {
                if let Err(e) = wait_jetstream(node.addr(), deadline).await {
                    return Err(with_logs(e, &running));
                }
            }
            // `$JS.API.INFO` answers once a meta leader exists, but placing replicated
            // streams needs every peer to have reported in: prove it with a throw-away stream.
            if let Err(e) = wait_placement(addrs[0], running.len().min(5), deadline).await {
                return Err(with_logs(e, &running));
            }
        }
        Ok(())
    }
}

fn with_logs(e: Error, nodes: &[&NatsServer]) -> Error {
    let mut log_tail = String::new();
    for node in nodes {
        log_tail.push_str(&format!("=== {} ===\n", node.server_name()));
        log_tail.push_str(&crate::server::tail(&node.log(), 15));
        log_tail.push('\n');
    }
    Error::StartFailed {
        reason: format!("cluster not ready: {e}"),
        log_tail,
    }
}

/// Full-mesh check: one raw client per node subscribes to a unique subject; every node
/// publishes its index until every subscriber has seen every index.
async fn check_mesh(addrs: &[SocketAddr], deadline: Instant) -> Result<(), Error> {
    let n = addrs.len();
    if n <= 1 {
        for addr in addrs {
            RawNats::connect(*addr).await?.ping().await?;
        }
        return Ok(());
    }
    let subject = format!("_TESTKIT.routes.{}", unique_suffix());
    let mut clients = Vec::with_capacity(n);
    for addr in addrs {
        let mut c = RawNats::connect(*addr).await?;
        c.subscribe(&subject, 1, None).await?;
        c.ping().await?;
        clients.push(c);
    }
    let mut seen: Vec<HashSet<usize>> = vec![HashSet::new(); n];
    loop {
        if seen.iter().all(|s| s.len() == n) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            let missing: Vec<String> = seen
                .iter()
                .enumerate()
                .map(|(i, s)| {
                    let m: Vec<usize> = (0..n).filter(|j| !s.contains(j)).collect();
                    format!("node {i} missing messages from {m:?}")
                })
                .collect();
            return Err(Error::Timeout(format!(
                "routes not formed: {}",
                missing.join("; ")
            )));
        }
        for (j, c) in clients.iter_mut().enumerate() {
            c.publish(&subject, None, j.to_string().as_bytes()).await?;
        }
        for (i, c) in clients.iter_mut().enumerate() {
            while let Some(m) = c.next_message(Duration::from_millis(50)).await? {
                if let Some(j) = std::str::from_utf8(&m.payload)
                    .ok()
                    .and_then(|s| s.parse::<usize>().ok())
                {
                    seen[i].insert(j);
                }
            }
        }
    }
}

async fn wait_jetstream(addr: SocketAddr, deadline: Instant) -> Result<(), Error> {
    let mut raw = RawNats::connect(addr).await?;
    loop {
        match jetstream_api_ready(&mut raw).await {
            Ok(()) => return Ok(()),
            Err(e) if Instant::now() >= deadline => {
                return Err(Error::Timeout(format!(
                    "JetStream on {addr} not ready: {e}"
                )));
            }
            Err(Error::Timeout(_)) | Err(Error::Protocol(_)) => {
                sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Creates and deletes an R`replicas` memory stream, retrying until it works (bounded).
async fn wait_placement(addr: SocketAddr, replicas: usize, deadline: Instant) -> Result<(), Error> {
    let mut raw = RawNats::connect(addr).await?;
    let name = format!("TESTKIT_READY_{}", unique_suffix().replace('-', "_"));
    let config = serde_json::json!({
        "name": name,
        "subjects": [format!("_TESTKIT.jsready.{name}")],
        "storage": "memory",
        "num_replicas": replicas,
        "max_msgs": 1,
    });
    let config = config.to_string();
    loop {
        let created = js_request(
            &mut raw,
            &format!("$JS.API.STREAM.CREATE.{name}"),
            config.as_bytes(),
            Duration::from_secs(5),
        )
        .await;
        match created {
            Ok(_) => break,
            Err(e) if Instant::now() >= deadline => {
                return Err(Error::Timeout(format!(
                    "JetStream cannot place an R{replicas} stream: {e}"
                )));
            }
            Err(Error::Timeout(_)) | Err(Error::Protocol(_)) => {
                sleep(Duration::from_millis(200)).await;
            }
            Err(e) => return Err(e),
        }
    }
    js_request(
        &mut raw,
        &format!("$JS.API.STREAM.DELETE.{name}"),
        b"",
        Duration::from_secs(5),
    )
    .await
    .map(|_| ())
}
