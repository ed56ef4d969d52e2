//! Beta's stock, kept in the node-owned replicated map [`MAP`]: each beta
//! writes only its own keys (`node/<instance>/<item>`, the units left, a
//! JSON number), so every replica (another beta, `aether state list
//! stock`, a gateway) sees every beta's stock, and a beta started again
//! under the same instance name goes on from what it had: from its ledger
//! (with a data folder, `[service] data_dir`), or else from a live peer.
//!
//! The units of an order are taken in memory first (the answer depends on
//! them), then written; a write the map refuses for now (its own rate
//! limit, a full map) is kept and tried again at the next order or check,
//! so the map never stays behind for long, and the summary counts writes
//! still pending at exit.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
};

use aether_core::{
    Aether,
    state::{NodeState, StateMap},
};

use crate::BetaError;

/// The map every beta keeps its stock in.
pub const MAP: &str = "stock";

/// This beta's replica of [`MAP`], and its items not written yet.
pub(crate) struct Ledger {
    state: NodeState,
    pending: BTreeSet<String>,
}

impl Ledger {
    /// Opens this beta's replica, named after the aether's instance, with
    /// its ledger in `dir` (or in memory).
    pub(crate) async fn open(aether: &Aether, dir: Option<&Path>) -> Result<Self, BetaError> {
        let mut builder = StateMap::builder(MAP).node(aether.config().report.instance_name());
        if let Some(dir) = dir {
            builder = builder.state_dir(dir.join(MAP));
        }
        Ok(Self {
            state: NodeState::open_with(aether, builder).await?,
            pending: BTreeSet::new(),
        })
    }

    /// The stock to start from: what this beta kept for each item, the
    /// settings' units for items it never kept (written now).
    pub(crate) async fn start(
        &mut self,
        settings: &BTreeMap<String, u64>,
    ) -> BTreeMap<String, u64> {
        let me = self.state.node().to_string();
        let prefix = format!("node/{me}/");
        let mut stock: BTreeMap<String, u64> = self
            .state
            .map()
            .entries()
            .into_iter()
            .filter_map(|(key, value)| {
                let item = key.strip_prefix(&prefix)?;
                let units = std::str::from_utf8(&value).ok()?.parse().ok()?;
                Some((item.to_string(), units))
            })
            .collect();
        if !stock.is_empty() {
            tracing::info!(
                kept = ?stock,
                "service-beta: the stock goes on from the map {MAP} (node/{me}/...)"
            );
        }
        for (item, units) in settings {
            if !stock.contains_key(item) {
                stock.insert(item.clone(), *units);
                self.pending.insert(item.clone());
            }
        }
        self.save(&stock).await;
        stock
    }

    /// `item`'s units changed: written at the next [`Ledger::save`].
    pub(crate) fn changed(&mut self, item: &str) {
        self.pending.insert(item.to_string());
    }

    /// Writes the pending items of `stock`; those the map refuses stay
    /// pending (warned about once per refusal kind at debug level: the
    /// map's own counters and report count them).
    pub(crate) async fn save(&mut self, stock: &BTreeMap<String, u64>) {
        let pending = std::mem::take(&mut self.pending);
        for item in pending {
            let units = stock.get(&item).copied().unwrap_or(0);
            if let Err(error) = self.state.update(&item, units.to_string()).await {
                tracing::debug!(%error, item, "service-beta: stock not written yet");
                self.pending.insert(item);
            }
        }
    }

    /// Writes what is pending and closes the replica (its peers hear it
    /// go).
    pub(crate) async fn close(mut self, stock: &BTreeMap<String, u64>) -> usize {
        self.save(stock).await;
        self.state.close().await;
        self.pending.len()
    }
}
