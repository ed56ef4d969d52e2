//! The bridge's metrics: connections, refusals by reason, writes by
//! outcome, messages, resyncs, values not JSON, snapshots built.

use super::*;

/// Why the bridge refused a connection or closed one, as counted.
pub const REFUSALS: [&str; 11] = [
    "unknown_map",
    "capacity",
    "address_capacity",
    "deadline",
    "evicted",
    "token",
    "replica_in_use",
    "malformed",
    "too_large",
    "rate_limited",
    "slow",
];

/// What became of a browser's writes, as counted: taken, lost to a newer
/// stamp, refused for the page's token (`forbidden`), or refused by the
/// core, named as it names the refusal ([`StateErrorKind::as_str`]; see
/// [`outcome_of`]).
pub const WRITE_OUTCOMES: [&str; 13] = [
    "applied",
    "stale",
    "forbidden",
    "invalid_name",
    "invalid_key",
    "too_large",
    "not_owner",
    "payload",
    "config",
    "closed",
    "stamp",
    "full",
    "not_held",
];

/// What a write the gateway's replica refused with `kind` comes to: taken
/// all the same when it is kept here and sent by anti-entropy later
/// (`not_sent`) or kept in memory and not on this disk (`ledger`), else
/// refused under the kind's own name.
pub fn outcome_of(kind: StateErrorKind) -> &'static str {
    match kind {
        StateErrorKind::NotSent | StateErrorKind::Ledger => "applied",
        kind => kind.as_str(),
    }
}

/// The bridge's metrics.
#[derive(Clone, Debug)]
pub(crate) struct BridgeMetrics {
    pub(super) connections: IntGaugeVec,
    pub(super) refused: IntCounterVec,
    pub(super) writes: IntCounterVec,
    pub(super) messages: IntCounterVec,
    pub(super) resyncs: IntCounter,
    pub(super) not_json: IntCounter,
    pub(super) snapshots: IntCounter,
}

impl BridgeMetrics {
    pub(super) fn new(registry: &Registry, maps: &[String]) -> Result<Self, prometheus::Error> {
        let connections = IntGaugeVec::new(
            Opts::new(
                "aether_bridge_connections",
                "Browser bridge connections open, by map",
            ),
            &["map"],
        )?;
        let refused = IntCounterVec::new(
            Opts::new(
                "aether_bridge_refused_total",
                "Browser bridge connections refused or closed by a limit, by reason",
            ),
            &["reason"],
        )?;
        let writes = IntCounterVec::new(
            Opts::new(
                "aether_bridge_writes_total",
                "Writes browsers sent through the bridge, by outcome",
            ),
            &["outcome"],
        )?;
        let messages = IntCounterVec::new(
            Opts::new(
                "aether_bridge_messages_total",
                "Bridge messages, by direction (in: from browsers, out: to them)",
            ),
            &["direction"],
        )?;
        let resyncs = IntCounter::new(
            "aether_bridge_resyncs_total",
            "Snapshots sent again to a connection that fell behind the map's changes",
        )?;
        let not_json = IntCounter::new(
            "aether_bridge_values_not_json_total",
            "Map values not sent to browsers because they are not JSON (written by a service as raw bytes)",
        )?;
        registry.register(Box::new(connections.clone()))?;
        registry.register(Box::new(refused.clone()))?;
        registry.register(Box::new(writes.clone()))?;
        registry.register(Box::new(messages.clone()))?;
        registry.register(Box::new(resyncs.clone()))?;
        let snapshots = IntCounter::new(
            "aether_bridge_snapshots_built_total",
            "Snapshot texts built (one per version of a map that a page asked for; pages share it)",
        )?;
        registry.register(Box::new(not_json.clone()))?;
        registry.register(Box::new(snapshots.clone()))?;
        for map in maps {
            connections.with_label_values(&[map.as_str()]).set(0);
        }
        for reason in REFUSALS {
            refused.with_label_values(&[reason]).reset();
        }
        for outcome in WRITE_OUTCOMES {
            writes.with_label_values(&[outcome]).reset();
        }
        for direction in ["in", "out"] {
            messages.with_label_values(&[direction]).reset();
        }
        Ok(Self {
            connections,
            refused,
            writes,
            messages,
            resyncs,
            not_json,
            snapshots,
        })
    }

    pub(super) fn refuse(&self, reason: &str) {
        self.refused.with_label_values(&[reason]).inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every kind of refusal is told to the page and counted by its own
    /// name (none passes as taken but the two that keep the write), and
    /// each name is one the metrics list.
    #[test]
    fn every_refusal_is_named_as_the_core_names_it() {
        for &kind in StateErrorKind::ALL {
            let outcome = outcome_of(kind);
            assert!(WRITE_OUTCOMES.contains(&outcome), "{kind:?}: {outcome}");
            if !matches!(kind, StateErrorKind::NotSent | StateErrorKind::Ledger) {
                assert_eq!(outcome, kind.as_str(), "{kind:?}");
            }
        }
        let named = StateErrorKind::ALL.len() - 2;
        assert_eq!(
            WRITE_OUTCOMES.len(),
            3 + named,
            "applied, stale, forbidden (the token's, before the core's) and each refusal"
        );
    }
}
