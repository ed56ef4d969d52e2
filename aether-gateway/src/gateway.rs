//! The gateway at work: the observer, the HTTP server and the resource
//! checks, started together on an aether and stopped together.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex, atomic::AtomicU64},
    time::Duration,
};

use aether_core::{Aether, Channel, ConnectionState, Vibrator, hopping::HopKey};
use aether_ops::{
    resources::{ResourceLimits, ResourceMonitor, RssSampler},
    settings::validate_section,
    shutdown::Shutdown,
};
use tokio::{net::TcpListener, sync::watch, task::JoinHandle};

use crate::{
    GatewayConfig, GatewayError,
    family::HopAttribution,
    http::{AllowedHosts, AppState, EventStreams, ServeLimits, router, serve_http},
    instances::Instances,
    journal::{JournalLink, JournalMetrics, restore, run_writer},
    metrics::{Metrics, Sources},
    observer::{Observer, ObserverParts},
    snapshot::{Published, Snapshot},
};

pub use crate::observer::OBSERVER_NAME;

/// How often resource usage is checked against `[resources]`.
const RESOURCE_CHECK_EVERY: Duration = Duration::from_secs(10);

/// Options of a gateway beyond its `[gateway]` section; see
/// [`Gateway::builder`].
#[derive(Debug)]
pub struct GatewayBuilder {
    config: GatewayConfig,
    panics: Option<Arc<AtomicU64>>,
    resource_limits: ResourceLimits,
}

impl GatewayBuilder {
    /// Exports this counter (fed by `aether_ops::panic::install_panic_hook`)
    /// as `aether_panics_total`.
    pub fn panic_counter(mut self, panics: Arc<AtomicU64>) -> Self {
        self.panics = Some(panics);
        self
    }

    /// Checks the process against these limits every 10 s, logging a
    /// warning for each one exceeded ([`Gateway::set_resource_limits`]
    /// changes them while it runs).
    pub fn resource_limits(mut self, limits: ResourceLimits) -> Self {
        self.resource_limits = limits;
        self
    }

    /// Starts observing `aether` and serving HTTP; returns once the address
    /// is bound and the observer resonates. Everything stops when
    /// `shutdown` is triggered, or on [`Gateway::stop`], or when the
    /// `Gateway` is dropped.
    pub async fn start(self, aether: &Aether, shutdown: Shutdown) -> Result<Gateway, GatewayError> {
        let config = self.config;
        validate_section("gateway", &config)?;
        let hops = hop_attribution(aether, &config)?;
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| GatewayError::Bind {
                    addr: config.listen,
                    source,
                })?;
        let addr = listener.local_addr().map_err(|source| GatewayError::Bind {
            addr: config.listen,
            source,
        })?;
        let mut vibrator = Vibrator::builder(OBSERVER_NAME)
            .queue_capacity(config.observer_queue_capacity)
            .create(aether)
            .await?;
        // Durable channels first, read from their stream through the
        // gateway's own durable consumers, so that it misses none of their
        // waves across its reconnects; every other channel through `*`,
        // which leaves the durable ones to those older resonances.
        for pattern in &aether.config().durability.channels {
            vibrator.resonate_on(Channel::new(pattern.as_str())).await?;
        }
        vibrator.resonate_on(Channel::new("*")).await?;
        let physics = config.physics.then(|| aether.physics());
        let observer_stats = Arc::new(Mutex::new(vibrator.stats()));
        let events_before = Arc::new(Default::default());
        let metrics = Metrics::new(Sources {
            aether: aether.clone(),
            physics: physics.clone(),
            observer: observer_stats.clone(),
            panics: self.panics,
            top_edges: config.top_edges,
            family_depth: config.family_depth,
        })?;
        let (snapshot_tx, snapshots) =
            watch::channel(Arc::new(Published::new(Snapshot::default())));

        // The journal: repaired and read before the observer counts, so
        // the counters resume where the previous run left them.
        let (journal, restored, writer) = if config.journal.enabled {
            let (link, restored, writer) = open_journal(aether, &config, &metrics).await?;
            (Some(link), Some(restored), Some(writer))
        } else {
            (None, None, None)
        };

        let stop = own_stop(shutdown);
        let medium = match aether.connection().state {
            ConnectionState::Embedded => "embedded",
            _ => "nats",
        };
        let observer = Observer::new(ObserverParts {
            vibrator,
            metrics: metrics.clone(),
            family_depth: config.family_depth,
            max_families: config.max_channel_families,
            hops,
            physics,
            recent_events: config.recent_events,
            top_edges: config.top_edges,
            interval: config.snapshot_interval(),
            rest: Duration::from_millis(config.observer_rest_ms),
            medium,
            observer_stats,
            snapshots: snapshot_tx,
            events_before,
            journal,
            instances: Instances::new(
                metrics.registry(),
                config.max_instances,
                Duration::from_millis(config.instance_gone_ms),
            )?
            .map_limits(config.max_maps_per_instance, config.max_map_series),
        });
        let mut observer = observer;
        if let Some((state, tail)) = restored {
            observer.restore(&state, &tail);
        }
        let observer = tokio::spawn(observer.run(stop.clone()));
        let tls = match (&config.tls.cert, &config.tls.key) {
            (Some(cert), Some(key)) => {
                Some(crate::http::tls_acceptor(cert, key).map_err(GatewayError::Tls)?)
            }
            _ => None,
        };
        let bridge =
            crate::bridge::Bridge::start(aether, &config.bridge, metrics.registry(), stop.clone())
                .await?;
        if !aether.config().state.keeper.maps.is_empty() {
            start_keeper(aether, &metrics, &stop).await?;
        }
        if let Some(bridge) = &bridge {
            say_bridged_pages(&config, bridge, tls.is_some(), addr);
        }
        let app = router(AppState {
            metrics: metrics.clone(),
            aether: aether.clone(),
            snapshots: snapshots.clone(),
            shutdown: stop.clone(),
            event_streams: EventStreams::new(
                config.max_event_streams,
                config.max_event_streams_per_address,
            ),
            bridge: bridge.clone(),
            allowed_hosts: AllowedHosts::new(
                &config
                    .allowed_hosts
                    .iter()
                    .cloned()
                    // Once hosts are listed, the public address's is one.
                    .chain(
                        config
                            .public_url
                            .as_deref()
                            .and_then(crate::settings::public_host)
                            .filter(|_| !config.allowed_hosts.is_empty())
                            .map(str::to_string),
                    )
                    .collect::<Vec<_>>(),
                addr,
            ),
        });
        let limits = ServeLimits {
            header_read_timeout: config.header_read_timeout(),
            write_stall_timeout: config.write_stall_timeout(),
            max_connections: config.max_connections,
            max_connections_per_address: config.max_connections_per_address,
        };
        let server = tokio::spawn(serve_http(
            listener,
            app,
            limits,
            tls,
            metrics.http_connections_closed.clone(),
            stop.clone(),
        ));
        if medium == "nats" && aether.config().durability.is_enabled() {
            let gauges = crate::stream::StreamGauges::new(metrics.registry())?;
            tokio::spawn(gauges.run(aether.clone(), stop.clone()));
        }
        let (limits, limits_rx) = watch::channel(self.resource_limits);
        tokio::spawn(check_resources(limits_rx, stop.clone()));
        tracing::info!(%addr, medium, "gateway listening");
        Ok(Gateway {
            addr,
            bridge,
            stop,
            metrics,
            snapshots,
            limits,
            tasks: Some((observer, server)),
            writer,
        })
    }
}

/// The hopping families the gateway attributes hops to, when it names any.
fn hop_attribution(
    aether: &Aether,
    config: &GatewayConfig,
) -> Result<Option<HopAttribution>, GatewayError> {
    if config.hopping.is_empty() {
        return Ok(None);
    }
    let hopping = &aether.config().hopping;
    let key = HopKey::new(hopping.secret.as_ref());
    Ok(Some(HopAttribution::new(
        &key,
        &config.hopping,
        hopping.hop_interval_ms,
        config.family_depth,
    )?))
}

/// What the journal holds: the counters' state and the waves after its
/// snapshot.
type RestoredState = (crate::journal::JournalState, Vec<aether_core::Wave>);

/// Opens the journal (repaired and read), and starts its writer thread:
/// the link the observer journals through, what it restored, the writer.
async fn open_journal(
    aether: &Aether,
    config: &GatewayConfig,
    metrics: &Metrics,
) -> Result<(JournalLink, RestoredState, std::thread::JoinHandle<()>), GatewayError> {
    let journal_config = config.journal.clone();
    let restored = tokio::task::spawn_blocking(move || restore(&journal_config))
        .await
        .map_err(|e| GatewayError::Task(e.to_string()))??;
    let journal_metrics = JournalMetrics::new(metrics.registry())?;
    journal_metrics
        .repaired_bytes
        .inc_by(restored.recovery.truncated_bytes);
    let (sender, receiver) = std::sync::mpsc::sync_channel(config.journal.queue_capacity);
    let link = JournalLink {
        sender,
        aether: aether.clone(),
        patterns: config.journal.patterns(),
        metrics: journal_metrics.clone(),
        snapshot_interval: Duration::from_millis(config.journal.snapshot_interval_ms),
    };
    let file = restored.journal;
    let writer = std::thread::Builder::new()
        .name("aether-journal".into())
        .spawn(move || run_writer(file, receiver, journal_metrics))
        .map_err(|e| GatewayError::Task(e.to_string()))?;
    Ok((link, (restored.state, restored.tail), writer))
}

/// The gateway's own stop: triggered by the program's `shutdown`, by
/// [`Gateway::stop`], or on drop, without triggering the program's.
fn own_stop(shutdown: Shutdown) -> Shutdown {
    let stop = Shutdown::new();
    let own = stop.clone();
    tokio::spawn(async move {
        tokio::select! {
            () = shutdown.wait() => own.trigger(),
            () = own.wait() => {}
        }
    });
    stop
}

/// Keeps the maps `[aether.state.keeper] maps` names, exported on the
/// gateway's metrics, until `stop`.
async fn start_keeper(
    aether: &Aether,
    metrics: &Metrics,
    stop: &Shutdown,
) -> Result<(), GatewayError> {
    let keeper_metrics = crate::keeping::KeeperMetrics::new(metrics.registry())?;
    let keeper = aether_core::state::Keeper::start(aether, "gateway")
        .await
        .map_err(|e| GatewayError::Keeper(e.to_string()))?;
    tracing::info!(maps = ?keeper.maps(), "keeping maps for the bus");
    tokio::spawn(keeper_metrics.run(keeper, stop.clone()));
    Ok(())
}

/// Logs where each bridged map's page is served, with the bridge's token
/// when it was made at random.
fn say_bridged_pages(
    config: &GatewayConfig,
    bridge: &crate::bridge::Bridge,
    tls: bool,
    addr: SocketAddr,
) {
    let base = config.pages_base(tls, addr);
    for (page, what) in [
        ("board", "collaborative board"),
        ("kanban", "kanban board"),
        ("notebook", "notebook"),
    ] {
        if !config.bridge.maps.iter().any(|m| m == page) {
            continue;
        }
        if config.bridge.token.is_none() {
            tracing::info!(
                "{what}: {base}{page}#token={} (a random bridge token; set [gateway.bridge] token to choose one)",
                bridge.token()
            );
        } else {
            tracing::info!("{what}: {base}{page}#token=<your bridge token>");
        }
    }
    // Every other bridged map, on the page that shows any map.
    for map in &config.bridge.maps {
        if ["board", "kanban", "notebook"].contains(&map.as_str()) {
            continue;
        }
        if config.bridge.token.is_none() {
            tracing::info!(
                "map {map}: {base}map#token={}&map={map} (a random bridge token; set [gateway.bridge] token to choose one)",
                bridge.token()
            );
        } else {
            tracing::info!("map {map}: {base}map#token=<your bridge token>&map={map}");
        }
    }
}

/// Checks resource usage against the limits every 10 s until `stop`.
async fn check_resources(mut limits: watch::Receiver<ResourceLimits>, stop: Shutdown) {
    let mut monitor = ResourceMonitor::new(
        *limits.borrow_and_update(),
        RssSampler::new(Duration::from_secs(3600), 30),
    );
    let mut every = tokio::time::interval(RESOURCE_CHECK_EVERY);
    loop {
        tokio::select! {
            () = stop.wait() => return,
            Ok(()) = limits.changed() => monitor.set_limits(*limits.borrow_and_update()),
            _ = every.tick() => {
                // Off Linux there is nothing to read: nothing to check.
                let _ = monitor.check();
            }
        }
    }
}

/// A running gateway: observer, HTTP server and resource checks.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use aether_core::{Aether, Vibrator};
/// use aether_gateway::{Gateway, GatewayConfig};
/// use aether_ops::shutdown::Shutdown;
///
/// let aether = Aether::default();
/// let config = GatewayConfig { listen: "127.0.0.1:0".parse()?, ..Default::default() };
/// let gateway = Gateway::start(&aether, config, Shutdown::new()).await?;
/// println!("metrics at http://{}/metrics", gateway.addr());
///
/// let shop = Vibrator::create("shop", &aether).await?;
/// shop.emit_wave("orders.created", serde_json::json!({"order_id": 1})).await?;
/// # for _ in 0..200 {
/// #     if gateway.metrics_text().contains("family=\"orders.created\"} 1") { break }
/// #     tokio::time::sleep(std::time::Duration::from_millis(10)).await;
/// # }
/// assert!(gateway.metrics_text().contains("aether_gateway_waves_observed_total{family=\"orders.created\"} 1"));
/// gateway.stop().await?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Gateway {
    addr: SocketAddr,
    bridge: Option<Arc<crate::bridge::Bridge>>,
    stop: Shutdown,
    metrics: Metrics,
    snapshots: watch::Receiver<Arc<Published>>,
    limits: watch::Sender<ResourceLimits>,
    #[allow(clippy::type_complexity)]
    tasks: Option<(JoinHandle<()>, JoinHandle<std::io::Result<()>>)>,
    /// The journal's writer thread, when it journals.
    writer: Option<std::thread::JoinHandle<()>>,
}

impl Gateway {
    /// A gateway with `config` and no further options.
    pub fn builder(config: GatewayConfig) -> GatewayBuilder {
        GatewayBuilder {
            config,
            panics: None,
            resource_limits: ResourceLimits::default(),
        }
    }

    /// Starts a gateway with `config` on `aether`: see
    /// [`GatewayBuilder::start`].
    pub async fn start(
        aether: &Aether,
        config: GatewayConfig,
        shutdown: Shutdown,
    ) -> Result<Self, GatewayError> {
        Self::builder(config).start(aether, shutdown).await
    }

    /// The token browsers give the bridge (`[gateway.bridge] token`, or
    /// the random one made at start); `None` when no map is bridged.
    pub fn bridge_token(&self) -> Option<&str> {
        self.bridge.as_ref().map(|b| b.token())
    }

    /// The address it serves HTTP on (the port chosen, if 0 was asked).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Every metric now, in Prometheus' text format: what `/metrics` says.
    pub fn metrics_text(&self) -> String {
        self.metrics.render()
    }

    /// The latest snapshot for the dashboard: what `/snapshot` says.
    pub fn snapshot(&self) -> Snapshot {
        self.snapshots.borrow().snapshot.clone()
    }

    /// Changes the resource limits it checks (after a settings reload).
    pub fn set_resource_limits(&self, limits: ResourceLimits) {
        self.limits.send_replace(limits);
    }

    /// Stops it: the observer stops resonating, open dashboards are ended,
    /// the server stops taking connections and finishes the requests it
    /// has. Returns once all that is done.
    pub async fn stop(self) -> Result<(), GatewayError> {
        self.stop.trigger();
        self.wait().await
    }

    /// Waits until it has stopped (after the program's shutdown was
    /// triggered, or the aether was closed and a shutdown followed).
    pub async fn wait(mut self) -> Result<(), GatewayError> {
        let Some((observer, server)) = self.tasks.take() else {
            return Ok(());
        };
        let observed = observer.await;
        // The observer ends with the aether too; the server then has no
        // more reason to run.
        self.stop.trigger();
        let served = server.await;
        // The bridged replicas say goodbye to their peers.
        if let Some(bridge) = self.bridge.take() {
            bridge.close().await;
        }
        // The observer dropped its end of the journal's queue: the writer
        // writes what is left, the last snapshot, and ends.
        if let Some(writer) = self.writer.take() {
            tokio::task::spawn_blocking(move || writer.join())
                .await
                .map_err(|e| GatewayError::Task(e.to_string()))?
                .map_err(|_| GatewayError::Task("the journal writer panicked".into()))?;
        }
        observed.map_err(|e| GatewayError::Task(e.to_string()))?;
        served
            .map_err(|e| GatewayError::Task(e.to_string()))?
            .map_err(GatewayError::Serve)
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        // Stops the tasks of a gateway nobody waits for; a no-op after
        // `wait` (already triggered).
        self.stop.trigger();
    }
}

/// Runs a gateway on `aether` until `shutdown` is triggered, then stops it:
/// the entry point for a program that runs the gateway beside other work
/// (the `aether-gateway` program calls [`Gateway::builder`] for its extra
/// options).
pub async fn serve(
    aether: Aether,
    config: GatewayConfig,
    shutdown: Shutdown,
) -> Result<(), GatewayError> {
    Gateway::start(&aether, config, shutdown)
        .await?
        .wait()
        .await
}
