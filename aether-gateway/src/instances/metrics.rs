//! The series the gateway exports for the instances that report, and for
//! the replicas of replicated maps their reports list.

#[allow(clippy::wildcard_imports)]
use super::*;

/// The instances' series.
pub(super) struct InstanceMetrics {
    pub(super) up: IntGaugeVec,
    pub(super) connected: IntGaugeVec,
    pub(super) emitted: IntGaugeVec,
    pub(super) delivered: IntGaugeVec,
    pub(super) published: IntGaugeVec,
    pub(super) observed: IntGaugeVec,
    pub(super) unobserved: IntGaugeVec,
    pub(super) dropped: IntGaugeVec,
    pub(super) refused_emits: IntGaugeVec,
    pub(super) queued: IntGaugeVec,
    pub(super) queue_capacity: IntGaugeVec,
    pub(super) outbox: IntGaugeVec,
    pub(super) outbox_capacity: IntGaugeVec,
    pub(super) durable_outbox: IntGaugeVec,
    pub(super) durable_outbox_bytes: IntGaugeVec,
    pub(super) durable_outbox_capacity: IntGaugeVec,
    pub(super) durable_captures: IntGaugeVec,
    pub(super) malformed: IntGaugeVec,
    pub(super) rate_limited: IntGaugeVec,
    pub(super) instances: IntGauge,
    pub(super) refused: IntCounterVec,
    pub(super) gone: IntCounter,
    pub(super) gone_now: IntGaugeVec,
    pub(super) left: IntCounter,
    pub(super) unobserved_total: IntCounter,
    pub(super) unexported: IntGaugeVec,
    pub(super) maps: MapMetrics,
}

/// The series of replicated maps, by instance, map and node.
pub(super) struct MapMetrics {
    pub(super) keys: IntGaugeVec,
    pub(super) tombstones: IntGaugeVec,
    pub(super) peers: IntGaugeVec,
    pub(super) applied: IntGaugeVec,
    pub(super) repaired: IntGaugeVec,
    pub(super) collected: IntGaugeVec,
    pub(super) watch_lagged: IntGaugeVec,
    pub(super) ledger_failed: IntGaugeVec,
    pub(super) refused: IntGaugeVec,
}

impl MapMetrics {
    pub(super) fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        let per = |name: &str, help: &str| -> Result<IntGaugeVec, prometheus::Error> {
            let gauge = IntGaugeVec::new(Opts::new(name, help), &["instance", "map", "node"])?;
            registry.register(Box::new(gauge.clone()))?;
            Ok(gauge)
        };
        let refused = IntGaugeVec::new(
            Opts::new(
                "aether_state_refused",
                format!(
                    "What a replica of a replicated map refused since it opened, by reason \
                     ({}), as of its last report.",
                    aether_core::report::MAP_REFUSALS.join(", ")
                ),
            ),
            &["instance", "map", "node", "reason"],
        )?;
        registry.register(Box::new(refused.clone()))?;
        Ok(Self {
            keys: per(
                "aether_state_keys",
                "Keys set in a replica of a replicated map.",
            )?,
            tombstones: per(
                "aether_state_tombstones",
                "Deleted keys a replica keeps until the tombstone horizon.",
            )?,
            peers: per("aether_state_peers", "Live peers a replica sees.")?,
            applied: per(
                "aether_state_changes_applied",
                "Changes applied to a replica since it opened (local and remote).",
            )?,
            repaired: per(
                "aether_state_repaired_entries",
                "Entries anti-entropy brought to a replica since it opened.",
            )?,
            collected: per(
                "aether_state_tombstones_collected",
                "Tombstones a replica collected past the horizon since it opened.",
            )?,
            watch_lagged: per(
                "aether_state_watch_lagged_changes",
                "Changes a replica's watchers missed because they fell behind.",
            )?,
            ledger_failed: per(
                "aether_state_ledger_failed_changes",
                "Changes a replica applied but could not write to its ledger.",
            )?,
            refused,
        })
    }

    pub(super) fn gauges(&self) -> [&IntGaugeVec; 8] {
        [
            &self.keys,
            &self.tombstones,
            &self.peers,
            &self.applied,
            &self.repaired,
            &self.collected,
            &self.watch_lagged,
            &self.ledger_failed,
        ]
    }

    pub(super) fn set(&self, instance: &str, map: &aether_core::report::MapReport) {
        let labels = [instance, map.map.as_str(), map.node.as_str()];
        let values = [
            map.keys,
            map.tombstones,
            map.peers,
            map.applied,
            map.repaired,
            map.collected,
            map.watch_lagged,
            map.ledger_failed,
        ];
        for (gauge, n) in self.gauges().into_iter().zip(values) {
            gauge
                .with_label_values(&labels)
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
        for (reason, n) in &map.refused {
            self.refused
                .with_label_values(&[instance, &map.map, &map.node, reason])
                .set(i64::try_from(*n).unwrap_or(i64::MAX));
        }
    }

    pub(super) fn remove(&self, instance: &str, map: &aether_core::report::MapReport) {
        let labels = [instance, map.map.as_str(), map.node.as_str()];
        for gauge in self.gauges() {
            let _ = gauge.remove_label_values(&labels);
        }
        for reason in map.refused.keys() {
            let _ = self
                .refused
                .remove_label_values(&[instance, &map.map, &map.node, reason]);
        }
    }
}

impl InstanceMetrics {
    pub(super) fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        let per = |name: &str, help: &str| -> Result<IntGaugeVec, prometheus::Error> {
            let gauge = IntGaugeVec::new(Opts::new(name, help), &["instance"])?;
            registry.register(Box::new(gauge.clone()))?;
            Ok(gauge)
        };
        let dropped = IntGaugeVec::new(
            Opts::new(
                "aether_instance_dropped_waves",
                "Waves an instance dropped since it started, by reason, as of its last report.",
            ),
            &["instance", "reason"],
        )?;
        registry.register(Box::new(dropped.clone()))?;
        let refused_emits = IntGaugeVec::new(
            Opts::new(
                "aether_instance_refused_emits",
                "Emits an instance refused since it started, by the error's kind (outbox_full, \
                 rate_limited, too_large, ...; nothing sent, the emitting code told), as of \
                 its last report.",
            ),
            &["instance", "reason"],
        )?;
        registry.register(Box::new(refused_emits.clone()))?;
        let instances = IntGauge::new(
            "aether_gateway_instances",
            "Instances reporting to the gateway (at most max_instances).",
        )?;
        registry.register(Box::new(instances.clone()))?;
        let refused = IntCounterVec::new(
            Opts::new(
                "aether_gateway_instance_reports_refused_total",
                "Instance reports refused: malformed, or from one instance more than \
                 max_instances.",
            ),
            &["reason"],
        )?;
        registry.register(Box::new(refused.clone()))?;
        // Every reason from the start, at 0: rules and dashboards see the
        // series before the first refusal.
        for reason in ["malformed", "not_its_own", "too_many_instances"] {
            refused.with_label_values(&[reason]);
        }
        let gone = IntCounter::new(
            "aether_gateway_instances_gone_total",
            "Instances marked gone after their reports stopped for instance_gone_ms without a \
             leaving report: crashed, killed or cut off.",
        )?;
        registry.register(Box::new(gone.clone()))?;
        let gone_now = IntGaugeVec::new(
            Opts::new(
                "aether_gateway_instance_gone",
                "1 for an instance marked gone (its reports stopped without a leaving report), \
                 until it reports again or for an hour.",
            ),
            &["instance"],
        )?;
        registry.register(Box::new(gone_now.clone()))?;
        let left = IntCounter::new(
            "aether_gateway_instances_left_total",
            "Instances that drained and sent a leaving report: gone on purpose.",
        )?;
        registry.register(Box::new(left.clone()))?;
        let unobserved_total = IntCounter::new(
            "aether_gateway_unobserved_waves_total",
            "Waves that instances now gone or left sent and the gateway never observed, as \
             last reckoned: the gap of a short-lived emitter, kept after its series go.",
        )?;
        registry.register(Box::new(unobserved_total.clone()))?;
        let unexported = IntGaugeVec::new(
            Opts::new(
                "aether_gateway_map_replicas_unexported",
                "Replicas of replicated maps listed in instance reports and not exported, by \
                 the bound they are past: max_maps_per_instance or max_map_series.",
            ),
            &["reason"],
        )?;
        registry.register(Box::new(unexported.clone()))?;
        for reason in UNEXPORTED {
            unexported.with_label_values(&[reason]).set(0);
        }
        Ok(Self {
            up: per(
                "aether_instance_up",
                "1 for an instance that reports; its series go when it is gone.",
            )?,
            connected: per(
                "aether_instance_connected",
                "1 if the instance is connected to its medium (embedded counts as connected).",
            )?,
            emitted: per(
                "aether_instance_emitted_waves",
                "Waves the instance's aether accepted for emission since it started.",
            )?,
            delivered: per(
                "aether_instance_delivered_waves",
                "Waves put in the instance's receive queues since it started.",
            )?,
            published: per(
                "aether_instance_published_waves",
                "Waves the instance's vibrators sent out on the medium since they started.",
            )?,
            observed: per(
                "aether_instance_observed_waves",
                "Of the waves the instance's vibrators sent, those the gateway observed.",
            )?,
            unobserved: per(
                "aether_instance_unobserved_waves",
                "Waves the instance sent that the gateway did not observe, as of its last \
                 report: a gap in what the gateway counts.",
            )?,
            dropped,
            refused_emits,
            queued: per(
                "aether_instance_queued_waves",
                "Waves waiting in the instance's receive queues.",
            )?,
            queue_capacity: per(
                "aether_instance_queue_capacity_waves",
                "Total capacity of the instance's receive queues.",
            )?,
            outbox: per(
                "aether_instance_outbox_waves",
                "Waves waiting in the instance's outbox for the connection.",
            )?,
            outbox_capacity: per(
                "aether_instance_outbox_capacity_waves",
                "Most waves the instance's outbox holds (0 on the embedded medium).",
            )?,
            durable_outbox: per(
                "aether_instance_durable_outbox_waves",
                "Waves of durable channels the instance accepted and JetStream has not stored yet.",
            )?,
            durable_outbox_bytes: per(
                "aether_instance_durable_outbox_bytes",
                "Bytes of those waves, against durability.outbox_max_bytes.",
            )?,
            durable_outbox_capacity: per(
                "aether_instance_durable_outbox_capacity_bytes",
                "Most bytes the instance's durable outbox holds (0 without durable channels).",
            )?,
            durable_captures: per(
                "aether_instance_durable_captures",
                "JetStream streams that capture one of the instance's durable channels (1 when all is well; more: streams in several domains each store every wave).",
            )?,
            malformed: per(
                "aether_instance_malformed_messages",
                "Messages the instance refused as not waves since it started.",
            )?,
            rate_limited: per(
                "aether_instance_rate_limited_emits",
                "Emits the instance refused over a vibrator's rate limit since it started \
                 (not sent; the emitting code was told).",
            )?,
            instances,
            refused,
            gone,
            gone_now,
            left,
            unobserved_total,
            unexported,
            maps: MapMetrics::new(registry)?,
        })
    }

    pub(super) fn set(&self, name: &str, instance: &Instance) {
        let report = &instance.report;
        let labels = &[name];
        self.up.with_label_values(labels).set(1);
        self.connected
            .with_label_values(labels)
            .set(i64::from(matches!(
                report.connection.as_str(),
                "connected" | "embedded"
            )));
        let set = |gauge: &IntGaugeVec, n: u64| {
            gauge
                .with_label_values(labels)
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        };
        set(&self.emitted, report.emitted);
        set(&self.delivered, report.delivered);
        set(&self.published, published(report));
        set(&self.observed, instance.observed);
        self.unobserved
            .with_label_values(labels)
            .set(instance.unobserved);
        set(&self.queued, report.queued);
        set(&self.queue_capacity, report.queue_capacity);
        set(&self.outbox, report.outbox_len);
        set(&self.outbox_capacity, report.outbox_capacity);
        set(&self.durable_outbox, report.durable_outbox_len);
        set(&self.durable_outbox_bytes, report.durable_outbox_bytes);
        set(
            &self.durable_outbox_capacity,
            report.durable_outbox_max_bytes,
        );
        set(&self.durable_captures, report.durable_captures);
        set(&self.malformed, report.malformed);
        set(&self.rate_limited, report.rate_limited);
        // Every reason from the first report, at 0 until it counts: a
        // series that starts at 0 lets `delta()` see the first drops.
        for reason in aether_core::DropReason::ALL {
            self.dropped
                .with_label_values(&[name, reason.as_str()])
                .add(0);
        }
        for (reason, n) in &report.dropped {
            self.dropped
                .with_label_values(&[name, reason])
                .set(i64::try_from(*n).unwrap_or(i64::MAX));
        }
        // Only the kinds it refused (250 instances x every kind would
        // weigh a scrape); a series that appears is alerted on as new.
        for (kind, n) in &report.refused_emits {
            self.refused_emits
                .with_label_values(&[name, kind])
                .set(i64::try_from(*n).unwrap_or(i64::MAX));
        }
        for map in instance.exported_maps() {
            self.maps.set(name, map);
        }
    }

    /// Removes the series `old` had and `new` does not: replicas gone (or
    /// no longer exported), and refusal reasons a replica no longer lists.
    pub(super) fn forget_maps(&self, name: &str, old: &Instance, new: &Instance) {
        for map in old.exported_maps() {
            match new
                .exported_maps()
                .find(|m| m.map == map.map && m.node == map.node)
            {
                None => self.maps.remove(name, map),
                Some(now) => {
                    for reason in map.refused.keys().filter(|r| !now.refused.contains_key(*r)) {
                        let _ = self
                            .maps
                            .refused
                            .remove_label_values(&[name, &map.map, &map.node, reason]);
                    }
                }
            }
        }
    }

    pub(super) fn remove(&self, name: &str, instance: &Instance) {
        let report = &instance.report;
        for gauge in [
            &self.up,
            &self.connected,
            &self.emitted,
            &self.delivered,
            &self.published,
            &self.observed,
            &self.unobserved,
            &self.queued,
            &self.queue_capacity,
            &self.outbox,
            &self.outbox_capacity,
            &self.durable_outbox,
            &self.durable_outbox_bytes,
            &self.durable_outbox_capacity,
            &self.durable_captures,
            &self.malformed,
            &self.rate_limited,
        ] {
            let _ = gauge.remove_label_values(&[name]);
        }
        for reason in aether_core::DropReason::ALL {
            let _ = self.dropped.remove_label_values(&[name, reason.as_str()]);
        }
        for reason in report.dropped.keys() {
            let _ = self.dropped.remove_label_values(&[name, reason]);
        }
        for kind in aether_core::EmitErrorKind::ALL {
            let _ = self
                .refused_emits
                .remove_label_values(&[name, kind.as_str()]);
        }
        for map in instance.exported_maps() {
            self.maps.remove(name, map);
        }
    }
}
