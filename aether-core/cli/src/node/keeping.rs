//! The node's keeper: every map on the bus (or those `--keep` names) kept
//! in `<data>/state`, so a map outlives the programs that wrote it. What
//! it does is said on stderr as it happens, written each second to
//! `<data>/keeper.json` (for `aether node --status`), in its connection's
//! instance reports (`node-<name>`, every 2 s unless `[aether.report]`
//! says; `aether stats`) and, with `--metrics-listen`, served as metrics
//! with its connection's.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use aether_core::{
    Aether, AetherConfig,
    lan::{LanOptions, NodeRecord},
    state::{Keeper, KeeperStats},
};
use aether_ops::{keeper::KeeperMetrics, metrics, shutdown::Shutdown};
use tokio::task::JoinHandle;

use super::write_private;
use crate::{Failure, keep::Told};

/// How long a node, as a time source, says it is settling after it
/// starts: its bus forms within seconds (other nodes found, measured).
const NODE_SETTLING: Duration = Duration::from_secs(8);

/// The file of the keeper's counts in the node's data directory.
const COUNTS: &str = "keeper.json";

/// A keeper being started, then running, on its own connection to the
/// node's server.
pub(super) struct Keeping {
    task: JoinHandle<Option<(Aether, Keeper)>>,
    stop: Shutdown,
}

impl Keeping {
    /// Starts it once the node's server listens (`record` is written):
    /// connects as a program of the bus does, then keeps the maps
    /// `patterns` names in `<data>/state`.
    pub(super) fn start(
        mut config: AetherConfig,
        record: &NodeRecord,
        runtime: &Path,
        data: &Path,
        metrics_listen: Option<SocketAddr>,
    ) -> Result<Self, Failure> {
        config.state.dir = Some(data.join("state"));
        config.nats.connection_name = Some(format!("aether node {} keeper", record.name));
        // The nodes are the bus's time sources.
        config.clock.source = true;
        // Infrastructure reports itself (`aether stats`) unless told how.
        if config.report.interval.is_zero() {
            config.report.interval = std::time::Duration::from_millis(crate::keep::REPORT_EVERY_MS);
        }
        if config.report.instance.is_none() {
            config.report.instance = Some(format!("node-{}", record.name));
        }
        config
            .state
            .validate()
            .map_err(|e| Failure::usage(format!("the node's keeper: {e}")))?;
        let lan = LanOptions {
            bus: record.bus.clone(),
            secret_file: Some(record.secret_file.clone()),
            runtime_dir: Some(PathBuf::from(runtime)),
            ..LanOptions::default()
        };
        let name = record.name.clone();
        let data = data.to_path_buf();
        let stop = Shutdown::new();
        let stopping = stop.clone();
        let task = tokio::spawn(async move {
            let config = match lan.resolve(config) {
                Ok(config) => config,
                Err(error) => {
                    eprintln!("node {name}: maps are not kept: {error}");
                    return None;
                }
            };
            let aether = match Aether::connect(config).await {
                Ok(aether) => aether,
                Err(error) => {
                    eprintln!("node {name}: maps are not kept: cannot connect: {error}");
                    return None;
                }
            };
            let dir = data.join("state");
            // Its bus is forming (the other nodes are found within
            // seconds): as a time source it says it is settling a while,
            // so that programs starting meanwhile wait for the bus's time.
            aether_core::bustime::settle_for(NODE_SETTLING);
            let keeper = match Keeper::start(&aether, name.as_str()).await {
                Ok(keeper) => keeper,
                Err(error) => {
                    eprintln!("node {name}: maps are not kept: {error}");
                    return None;
                }
            };
            let stats = keeper.stats();
            eprintln!(
                "node {name}: keeping maps {:?} in {} ({} open, {} opening; at most {} maps, \
                 {} bytes together)",
                keeper.config().keeper.maps,
                dir.display(),
                stats.maps,
                stats.waiting_maps,
                keeper.config().keeper.max_maps,
                keeper.config().keeper.max_bytes,
            );
            let exported = match metrics_listen {
                Some(listen) => serve(&aether, listen, &stopping, &name).await,
                None => None,
            };
            let mut told = Told::new(&keeper, "[aether.state.keeper] max_maps in --config-dir");
            let mut look = tokio::time::interval(Duration::from_secs(1));
            loop {
                tokio::select! {
                    _ = look.tick() => {
                        // Served and written before it is said: what the
                        // node says, its metrics and --status already show.
                        let now = keeper.stats();
                        if let Some(exported) = &exported {
                            exported.set(&now);
                        }
                        let clock = aether_core::bustime::status();
                        let written = Written {
                            keeper: now.clone(),
                            clock_offset_ms: clock.offset_ns / 1_000_000,
                            clock_uncertainty_ms: clock.uncertainty_ns / 1_000_000,
                            clock_sources: clock.sources as u64,
                        };
                        let _ = write_private(
                            &data.join(COUNTS),
                            &serde_json::to_vec_pretty(&written).expect("counts serialize"),
                        );
                        told.tell(&name, &keeper, &dir, now);
                    }
                    () = stopping.wait() => break,
                }
            }
            Some((aether, keeper))
        });
        Ok(Self { task, stop })
    }

    /// Closes the keeper's maps (they say goodbye; their ledgers close)
    /// and its connection.
    pub(super) async fn stop(self) {
        self.stop.trigger();
        if let Ok(Some((aether, keeper))) = self.task.await {
            keeper.close().await;
            aether.close();
        }
    }
}

/// Serves the keeper's connection's metrics and its own at `listen`.
async fn serve(
    aether: &Aether,
    listen: SocketAddr,
    stop: &Shutdown,
    name: &str,
) -> Option<KeeperMetrics> {
    let served = async {
        let registry = metrics::program_registry(aether, "aether-node")?;
        let exported = KeeperMetrics::new(&registry)?;
        Ok::<_, prometheus::Error>((registry, exported))
    };
    let (registry, exported) = match served.await {
        Ok(parts) => parts,
        Err(error) => {
            eprintln!("node {name}: no metrics: {error}");
            return None;
        }
    };
    match metrics::serve_registry(registry, listen, stop.clone()).await {
        Ok(addr) => {
            eprintln!("node {name}: metrics at http://{addr}/metrics");
            Some(exported)
        }
        Err(error) => {
            eprintln!("node {name}: no metrics: {error}");
            None
        }
    }
}

/// What the node's keeper writes each second: its counts, and the clock
/// of the node against the bus's time.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub(super) struct Written {
    pub(super) keeper: KeeperStats,
    pub(super) clock_offset_ms: i64,
    pub(super) clock_uncertainty_ms: u64,
    pub(super) clock_sources: u64,
}

/// What the node's keeper wrote last in `data`.
pub(super) fn read_counts(data: &Path) -> Option<Written> {
    serde_json::from_slice(&std::fs::read(data.join(COUNTS)).ok()?).ok()
}
