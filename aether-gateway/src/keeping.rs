//! The gateway as a keeper (`[aether.state.keeper] maps`): the maps it
//! names kept on its disk for the bus, and its counts exported.

use std::time::Duration;

use aether_core::state::Keeper;
use aether_ops::shutdown::Shutdown;
use prometheus::{IntCounter, IntGauge, Registry};

/// How often the keeper's counts are read.
const LOOK_EVERY: Duration = Duration::from_secs(1);

/// The keeper's gauges and counters.
pub(crate) struct KeeperMetrics {
    maps: IntGauge,
    refused: IntCounter,
    failed: IntCounter,
}

impl KeeperMetrics {
    pub(crate) fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        let maps = IntGauge::new("aether_keeper_maps", "Maps the gateway keeps for the bus.")?;
        let refused = IntCounter::new(
            "aether_keeper_refused_maps_total",
            "Maps the keeper's patterns name that it did not keep: max_maps was reached.",
        )?;
        let failed = IntCounter::new(
            "aether_keeper_failed_maps_total",
            "Maps the keeper could not open (an unreadable ledger, a full disk).",
        )?;
        registry.register(Box::new(maps.clone()))?;
        registry.register(Box::new(refused.clone()))?;
        registry.register(Box::new(failed.clone()))?;
        Ok(Self {
            maps,
            refused,
            failed,
        })
    }

    /// Exports the keeper's counts until `stop`, then closes it.
    pub(crate) async fn run(self, keeper: Keeper, stop: Shutdown) {
        let mut tick = tokio::time::interval(LOOK_EVERY);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    let stats = keeper.stats();
                    self.maps.set(i64::try_from(stats.maps).unwrap_or(i64::MAX));
                    self.refused.inc_by(stats.refused_maps.saturating_sub(self.refused.get()));
                    self.failed.inc_by(stats.failed_maps.saturating_sub(self.failed.get()));
                }
                () = stop.wait() => break,
            }
        }
        keeper.close().await;
    }
}
