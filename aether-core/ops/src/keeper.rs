//! A keeper's counts ([`aether_core::state::KeeperStats`]) as Prometheus
//! metrics, one set for every program that keeps maps (the gateway,
//! `aether node`):
//!
//! | metric | type | what |
//! | --- | --- | --- |
//! | `aether_keeper_maps` | gauge | maps kept open |
//! | `aether_keeper_waiting_maps` | gauge | maps on its disk not open yet (a start opens them) |
//! | `aether_keeper_refused_maps_total` | counter | maps written to and not kept: `max_maps` reached |
//! | `aether_keeper_refused_writer_maps_total` | counter | maps not kept: their writer brought `max_maps_per_writer` |
//! | `aether_keeper_failed_maps_total` | counter | maps that did not open (an unreadable ledger, a full disk) |
//! | `aether_keeper_forgotten_maps_total` | counter | maps closed and removed because they stayed empty |
//! | `aether_keeper_full_writes_total` | counter | writes refused as `full` (`max_bytes` of all maps, or a map's own caps) |
//! | `aether_keeper_future_writes_total` | counter | refusals of changes stamped more than `max_drift` ahead of the bus's time (a change offered again counts again) |
//! | `aether_keeper_ledger_failed_total` | counter | changes a ledger could not write (the writer was not acknowledged) |
//! | `aether_keeper_ledgers_damaged_total` | counter | ledgers found damaged on opening (repaired, the damage kept aside) |
//! | `aether_keeper_bytes` | gauge | keys and values its maps hold together |
//! | `aether_keeper_max_bytes` | gauge | what they may hold (`max_bytes`) |

use aether_core::state::KeeperStats;
use prometheus::{IntCounter, IntGauge, Registry};

use crate::metrics::{raise, saturating_i64};

/// The keeper's gauges and counters, registered in one registry.
#[derive(Debug)]
pub struct KeeperMetrics {
    maps: IntGauge,
    waiting: IntGauge,
    refused: IntCounter,
    refused_writer: IntCounter,
    failed: IntCounter,
    forgotten: IntCounter,
    full_writes: IntCounter,
    future_writes: IntCounter,
    ledger_failed: IntCounter,
    ledgers_damaged: IntCounter,
    bytes: IntGauge,
    max_bytes: IntGauge,
}

impl KeeperMetrics {
    /// Registers them in `registry`.
    pub fn new(registry: &Registry) -> prometheus::Result<Self> {
        let gauge = |name: &str, help: &str| -> prometheus::Result<IntGauge> {
            let g = IntGauge::new(name, help)?;
            registry.register(Box::new(g.clone()))?;
            Ok(g)
        };
        let counter = |name: &str, help: &str| -> prometheus::Result<IntCounter> {
            let c = IntCounter::new(name, help)?;
            registry.register(Box::new(c.clone()))?;
            Ok(c)
        };
        Ok(Self {
            maps: gauge("aether_keeper_maps", "Maps the keeper keeps open.")?,
            waiting: gauge(
                "aether_keeper_waiting_maps",
                "Maps on the keeper's disk not open yet (a start opens them).",
            )?,
            refused: counter(
                "aether_keeper_refused_maps_total",
                "Maps written to and not kept: max_maps was reached.",
            )?,
            refused_writer: counter(
                "aether_keeper_refused_writer_maps_total",
                "Maps not kept: the writer that brought them brought max_maps_per_writer.",
            )?,
            failed: counter(
                "aether_keeper_failed_maps_total",
                "Maps the keeper could not open (an unreadable ledger, a full disk).",
            )?,
            forgotten: counter(
                "aether_keeper_forgotten_maps_total",
                "Maps closed and removed because they stayed empty.",
            )?,
            full_writes: counter(
                "aether_keeper_full_writes_total",
                "Writes refused as full: max_bytes of all maps, or a map's max_keys or max_map_bytes.",
            )?,
            future_writes: counter(
                "aether_keeper_future_writes_total",
                "Changes refused as stamped more than max_drift ahead of the bus's time (a clock off, or two buses that settled apart).",
            )?,
            ledger_failed: counter(
                "aether_keeper_ledger_failed_total",
                "Changes a map's ledger could not write (a full disk); their writers were not acknowledged.",
            )?,
            ledgers_damaged: counter(
                "aether_keeper_ledgers_damaged_total",
                "Ledgers found damaged when their map opened (repaired; the damaged files kept aside).",
            )?,
            bytes: gauge(
                "aether_keeper_bytes",
                "Bytes of keys and values the keeper's maps hold together.",
            )?,
            max_bytes: gauge(
                "aether_keeper_max_bytes",
                "Bytes of keys and values the keeper's maps may hold together (max_bytes).",
            )?,
        })
    }

    /// Sets them to `stats` (counters only rise).
    pub fn set(&self, stats: &KeeperStats) {
        self.maps.set(saturating_i64(stats.maps as u64));
        self.waiting.set(saturating_i64(stats.waiting_maps as u64));
        raise(&self.refused, stats.refused_maps);
        raise(&self.refused_writer, stats.refused_writer_maps);
        raise(&self.failed, stats.failed_maps);
        raise(&self.forgotten, stats.forgotten_maps);
        raise(&self.full_writes, stats.full_writes);
        raise(&self.future_writes, stats.future_writes);
        raise(&self.ledger_failed, stats.ledger_failed);
        raise(&self.ledgers_damaged, stats.ledgers_damaged);
        self.bytes.set(saturating_i64(stats.bytes));
        self.max_bytes.set(saturating_i64(stats.max_bytes));
    }
}
