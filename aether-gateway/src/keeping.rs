//! The gateway as a keeper (`[aether.state.keeper] maps`): the maps it
//! names kept on its disk for the bus, and its counts exported.

use std::time::Duration;

use aether_core::state::Keeper;
use aether_ops::shutdown::Shutdown;
use prometheus::Registry;

/// How often the keeper's counts are read.
const LOOK_EVERY: Duration = Duration::from_secs(1);

/// The keeper's gauges and counters.
pub(crate) struct KeeperMetrics(aether_ops::keeper::KeeperMetrics);

impl KeeperMetrics {
    pub(crate) fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        aether_ops::keeper::KeeperMetrics::new(registry).map(Self)
    }

    /// Exports the keeper's counts until `stop`, then closes it.
    pub(crate) async fn run(self, keeper: Keeper, stop: Shutdown) {
        let mut tick = tokio::time::interval(LOOK_EVERY);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    self.0.set(&keeper.stats());
                }
                () = stop.wait() => break,
            }
        }
        keeper.close().await;
    }
}
