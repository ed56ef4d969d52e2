//! Prometheus metrics: one [`prometheus::Registry`] with what the observer
//! counts as waves arrive, and what is read from the aether, its physics
//! engine and the process at each scrape (`metrics/scrape.rs`).
//!
//! Names follow Prometheus' conventions: base units (`_seconds`, `_bytes`),
//! `_total` on counters, a HELP text on each, and bounded labels (channel
//! families up to `max_channel_families`, then `other`; drop reasons,
//! interference patterns and connection states are fixed sets; resonance
//! edges are the `top_edges` busiest).
//!
//! | metric | type | labels | what |
//! | --- | --- | --- | --- |
//! | `aether_gateway_waves_observed_total` | counter | `family` | waves the gateway observed |
//! | `aether_gateway_waves_observed_by_phase_total` | counter | `phase` | the same by phase: `assert`, `retract`, `other` |
//! | `aether_gateway_wave_amplitude` | histogram | | amplitude of the waves observed, on arrival |
//! | `aether_gateway_wave_latency_seconds` | histogram | | emission to observation |
//! | `aether_gateway_observer_dropped_total` | counter | `reason` | waves the observer did not get (`queue_full` when it fell behind) |
//! | `aether_gateway_channel_families` | gauge | | family labels in use (at most `max_channel_families` + 1) |
//! | `aether_gateway_dashboard_clients` | gauge | | open `/events` streams |
//! | `aether_gateway_http_connections_closed_total` | counter | `reason` | HTTP connections the gateway closed for a limit: `address_capacity`, `capacity` (refused at once), `made_room` (closed for a new one), `stalled` (a peer that took nothing written for `write_stall_timeout_ms`: an `/events` stream or a page not read) |
//! | `aether_waves_emitted_total`, `…_delivered_total`, `…_unrouted_total`, `…_diffracted_total`, `…_reflected_total` | counter | | the gateway's aether (`Aether::stats`) |
//! | `aether_waves_dropped_total` | counter | `reason` | the same, drops by reason |
//! | `aether_emits_rate_limited_total` | counter | | emits refused by a vibrator's rate limit, on the gateway's aether |
//! | `aether_handler_panics_total` | counter | | waves on which a vibrator's wave handler (`on_wave`) panicked, on the gateway's aether |
//! | `aether_emits_refused_total` | counter | `reason` | every emit the gateway's aether refused, by the error's kind (`EmitErrorKind::as_str`) |
//! | `aether_reliability_retries_total`, `…_timeouts_total`, `…_breaker_opens_total`, `…_breaker_rejections_total` | counter | | `aether_core::reliable` policies on the gateway's aether |
//! | `aether_interference_events_total` | counter | `pattern` | `constructive`, `cancellation`, `standing_wave` (every event of the engine) |
//! | `aether_gateway_interference_events_total` | counter | `pattern`, `family` | the events the observer took, by the family of the channel they were correlated on |
//! | `aether_physics_observed_total`, `aether_physics_skipped_total` | counter | `reason` (skipped) | the physics engine's work |
//! | `aether_physics_events_lagged_total` | counter | | events followers missed |
//! | `aether_resonance_edges` | gauge | | edges of the resonance graph |
//! | `aether_resonance_edge_deliveries_per_second` | gauge | `emitter`, `resonator`, `family` | the busiest edges' decayed rates |
//! | `aether_nats_connection_state` | gauge | `state` | 1 for the state now: `embedded`, `connected`, `disconnected`, `closed` |
//! | `aether_nats_reconnects_total`, `aether_nats_disconnects_total` | counter | | connection changes |
//! | `aether_nats_slow_consumer_events_total` | counter | | messages the client dropped |
//! | `aether_nats_malformed_messages_total` | counter | | messages refused as not waves |
//! | `aether_nats_outbox_waves`, `aether_nats_outbox_capacity_waves`, `aether_nats_outbox_flushed_total` | gauge, gauge, counter | | waiting for the connection, most it holds; sent after reconnects |
//! | `aether_nats_frames_sent_total`, `aether_nats_waves_framed_total`, `aether_nats_frames_received_total` | counter | | batch frames out (and the waves in them) and in |
//! | `aether_instance_*` | gauge | `instance` (and `reason` for drops and refused emits) | each reporting instance's counts, from its reports ([`crate::instances`]) |
//! | `aether_gateway_instances`, `aether_gateway_instance_reports_refused_total`, `aether_gateway_instances_gone_total`, `aether_gateway_instances_left_total`, `aether_gateway_unobserved_waves_total` | gauge, counter | `reason` (refused) | the instances tracked, reports refused, instances gone without a word and left on purpose, what instances no longer listed sent unobserved |
//! | `aether_gateway_instance_gone` | gauge | `instance` | 1 for each instance gone without a word, until it reports again or for an hour |
//! | `aether_gateway_map_replicas_unexported` | gauge | `reason` | replicas listed in reports and not exported: past `max_maps_per_instance` or `max_map_series` |
//! | `aether_bridge_connections` | gauge | `map` | browser bridge connections open ([`crate::bridge`]) |
//! | `aether_bridge_refused_total` | counter | `reason` | connections refused or closed by a limit ([`crate::bridge::REFUSALS`]) |
//! | `aether_bridge_writes_total` | counter | `outcome` | pages' writes ([`crate::bridge::WRITE_OUTCOMES`]) |
//! | `aether_bridge_messages_total` | counter | `direction` | bridge messages in and out |
//! | `aether_bridge_resyncs_total`, `aether_bridge_values_not_json_total` | counter | | maps sent whole again to a page that fell behind; values not sent as not JSON |
//! | `process_resident_memory_bytes`, `process_virtual_memory_bytes`, `process_threads`, `process_open_fds` | gauge | | from `/proc/self` (Linux) |
//! | `aether_allocator_allocations_total`, `…_deallocations_total`, `…_reallocations_total`, `…_allocated_bytes_total`, `…_freed_bytes_total`, `aether_allocator_live_bytes` | counter, gauge | | when the counting allocator is installed ([`crate::allocator`]) |
//! | `aether_panics_total` | counter | | panics in the process (with the panic hook) |
//! | `aether_build_info` | gauge | `version` | always 1 |

pub(crate) mod scrape;

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

pub(crate) use scrape::Sources;

/// Upper bounds of the amplitude histogram.
pub const AMPLITUDE_BUCKETS: &[f64] =
    &[0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0];

/// Upper bounds of the latency histogram, in seconds: 50 µs to 10 s.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0,
];

/// The phases waves are counted by.
pub(crate) const PHASES: [&str; 3] = ["assert", "retract", "other"];

/// The gateway's registry and the metrics the observer updates.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    pub(crate) waves_observed: IntCounterVec,
    /// Interference events taken from the engine, by pattern and family.
    pub(crate) interference: IntCounterVec,
    pub(crate) by_phase: [IntCounter; 3],
    pub(crate) amplitude: Histogram,
    pub(crate) latency: Histogram,
    pub(crate) families: IntGauge,
    pub(crate) dashboard_clients: IntGauge,
    /// HTTP connections closed for a limit, by reason.
    pub(crate) http_connections_closed: IntCounterVec,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// The observer's metrics and the scrape-time ones read from `sources`.
    pub(crate) fn new(sources: Sources) -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let waves_observed = IntCounterVec::new(
            Opts::new(
                "aether_gateway_waves_observed_total",
                "Waves the gateway observed, by channel family (the first tokens of the \
                 channel; families past the configured limit count as \"other\").",
            ),
            &["family"],
        )?;
        let by_phase_vec = IntCounterVec::new(
            Opts::new(
                "aether_gateway_waves_observed_by_phase_total",
                "Waves the gateway observed, by phase: assert (0), retract (pi) or other.",
            ),
            &["phase"],
        )?;
        let by_phase = PHASES.map(|p| by_phase_vec.with_label_values(&[p]));
        let amplitude = Histogram::with_opts(
            HistogramOpts::new(
                "aether_gateway_wave_amplitude",
                "Amplitude (importance, 0 to 1) of the waves the gateway observed, on arrival.",
            )
            .buckets(AMPLITUDE_BUCKETS.to_vec()),
        )?;
        let latency = Histogram::with_opts(
            HistogramOpts::new(
                "aether_gateway_wave_latency_seconds",
                "Time from a wave's emission to its observation by the gateway, in seconds \
                 (across machines, as good as their clocks).",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
        )?;
        let interference = IntCounterVec::new(
            Opts::new(
                "aether_gateway_interference_events_total",
                "Interference events the gateway took from its physics engine, by pattern and \
                 by the family of the channel they were correlated on (families past the \
                 configured limit count as \"other\"; events it fell behind on are in \
                 aether_physics_events_lagged_total).",
            ),
            &["pattern", "family"],
        )?;
        let families = IntGauge::new(
            "aether_gateway_channel_families",
            "Channel family labels in use (at most the configured limit plus \"other\").",
        )?;
        let dashboard_clients = IntGauge::new(
            "aether_gateway_dashboard_clients",
            "Open live dashboard streams (/events).",
        )?;
        registry.register(Box::new(waves_observed.clone()))?;
        registry.register(Box::new(by_phase_vec))?;
        registry.register(Box::new(amplitude.clone()))?;
        registry.register(Box::new(latency.clone()))?;
        registry.register(Box::new(families.clone()))?;
        registry.register(Box::new(interference.clone()))?;
        registry.register(Box::new(dashboard_clients.clone()))?;
        let http_connections_closed = IntCounterVec::new(
            Opts::new(
                "aether_gateway_http_connections_closed_total",
                "HTTP connections the gateway closed for a limit: address_capacity \
                 (max_connections_per_address) and capacity (max_connections, every \
                 connection answering) refused at once, made_room (waiting for a request, \
                 closed for a new connection at max_connections), stalled (a peer that took \
                 nothing written to it for write_stall_timeout_ms).",
            ),
            &["reason"],
        )?;
        for reason in crate::http::connections::CLOSE_REASONS {
            http_connections_closed.with_label_values(&[reason]);
        }
        registry.register(Box::new(http_connections_closed.clone()))?;
        registry.register(Box::new(aether_ops::metrics::AetherCollector::new(
            sources.aether.clone(),
        )?))?;
        registry.register(Box::new(scrape::ScrapeCollector::new(sources)?))?;
        Ok(Self {
            registry,
            waves_observed,
            by_phase,
            amplitude,
            latency,
            families,
            interference,
            dashboard_clients,
            http_connections_closed,
        })
    }

    /// The registry, to add metrics of one's own.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Every metric now, in Prometheus' text format (version 0.0.4).
    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        // Encoding into memory fails only on a metric the registry refused
        // already; an empty answer is the safe fallback.
        if let Err(error) = TextEncoder::new().encode(&self.registry.gather(), &mut buffer) {
            tracing::warn!(%error, "could not encode the metrics");
        }
        String::from_utf8(buffer).unwrap_or_default()
    }
}

/// The content type of [`Metrics::render`].
pub const TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
