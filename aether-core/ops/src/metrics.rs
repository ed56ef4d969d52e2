//! A process's own Prometheus metrics: what its aether counts (waves
//! emitted and delivered, drops by reason, rate-limit refusals, the
//! reliability policies, the NATS connection and its outbox) and the
//! process itself (memory, threads, open files), read at each scrape.
//!
//! The gateway registers an [`AetherCollector`] for its own aether; a
//! service program serves one on `[service] metrics_listen` ([`serve`]), so
//! that its outbox, its drops and its connection are visible when the bus,
//! and so the gateway that hears the instance reports, is not. The names
//! are the same in both places, so one set of alerting rules
//! (`AetherNatsDisconnected`, `AetherOutboxFilling`) covers every target.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use aether_ops::{metrics, shutdown::Shutdown};
//!
//! let aether = aether_core::Aether::default();
//! let stop = Shutdown::new();
//! let addr = metrics::serve(aether, "my-service", "127.0.0.1:0".parse()?, stop.clone()).await?;
//! println!("Prometheus scrapes http://{addr}/metrics");
//! stop.trigger();
//! # Ok(()) }
//! ```

use std::{
    io,
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use aether_core::{Aether, ConnectionState, DropReason, EmitErrorKind};
use prometheus::{
    Encoder, Gauge, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
    core::{Collector, Desc},
    proto::MetricFamily,
};

use crate::{resources::ResourceUsage, shutdown::Shutdown};

/// The states of a connection, as `aether_nats_connection_state` labels.
pub const CONNECTION_STATES: [ConnectionState; 4] = [
    ConnectionState::Embedded,
    ConnectionState::Connected,
    ConnectionState::Disconnected,
    ConnectionState::Closed,
];

/// Makes metrics and keeps them in a list, to describe and gather them
/// together (a [`Collector`] made of parts).
pub struct Maker<'a>(pub &'a mut Vec<Box<dyn Collector>>);

impl std::fmt::Debug for Maker<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Maker")
            .field("parts", &self.0.len())
            .finish()
    }
}

impl Maker<'_> {
    /// A counter.
    pub fn counter(&mut self, name: &str, help: &str) -> prometheus::Result<IntCounter> {
        let metric = IntCounter::new(name, help)?;
        self.0.push(Box::new(metric.clone()));
        Ok(metric)
    }

    /// A counter by `label`, every one of `values` shown from the start, at 0.
    pub fn counters(
        &mut self,
        name: &str,
        help: &str,
        label: &str,
        values: &[&str],
    ) -> prometheus::Result<IntCounterVec> {
        let metric = IntCounterVec::new(Opts::new(name, help), &[label])?;
        for value in values {
            metric.with_label_values(&[value]);
        }
        self.0.push(Box::new(metric.clone()));
        Ok(metric)
    }

    /// A gauge.
    pub fn gauge(&mut self, name: &str, help: &str) -> prometheus::Result<IntGauge> {
        let metric = IntGauge::new(name, help)?;
        self.0.push(Box::new(metric.clone()));
        Ok(metric)
    }

    /// A gauge of a fractional value (seconds).
    pub fn float_gauge(&mut self, name: &str, help: &str) -> prometheus::Result<Gauge> {
        let metric = Gauge::new(name, help)?;
        self.0.push(Box::new(metric.clone()));
        Ok(metric)
    }
}

/// Metrics made with a [`Maker`], described and gathered together, one
/// scrape at a time (each brings its counters up to their sources first).
pub struct Parts {
    list: Vec<Box<dyn Collector>>,
    scraping: Mutex<()>,
}

impl std::fmt::Debug for Parts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Parts")
            .field("parts", &self.list.len())
            .finish()
    }
}

impl Parts {
    /// The metrics of `list`.
    pub fn new(list: Vec<Box<dyn Collector>>) -> Self {
        Self {
            list,
            scraping: Mutex::new(()),
        }
    }

    /// What [`Collector::desc`] gives.
    pub fn desc(&self) -> Vec<&Desc> {
        self.list.iter().flat_map(|part| part.desc()).collect()
    }

    /// What [`Collector::collect`] gives, once `refresh` has run.
    pub fn collect_after(&self, refresh: impl FnOnce()) -> Vec<MetricFamily> {
        let _one_at_a_time = self.scraping.lock().unwrap_or_else(|e| e.into_inner());
        refresh();
        self.list.iter().flat_map(|part| part.collect()).collect()
    }
}

/// Brings `counter` up to `value`, the count its source keeps (never down).
pub fn raise(counter: &IntCounter, value: u64) {
    let current = counter.get();
    if value > current {
        counter.inc_by(value - current);
    }
}

/// `value` as a gauge's value.
pub fn saturating_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

struct Bus {
    emitted: IntCounter,
    delivered: IntCounter,
    unrouted: IntCounter,
    diffracted: IntCounter,
    reflected: IntCounter,
    rate_limited: IntCounter,
    rate_limit_waits: IntCounter,
    handler_panics: IntCounter,
    retries: IntCounter,
    timeouts: IntCounter,
    breaker_opens: IntCounter,
    breaker_rejections: IntCounter,
    dropped: IntCounterVec,
    refused: IntCounterVec,
}

struct Connection {
    state: IntGaugeVec,
    reconnects: IntCounter,
    disconnects: IntCounter,
    slow_consumer: IntCounter,
    malformed: IntCounter,
    outbox: IntGauge,
    outbox_capacity: IntGauge,
    durable_outbox: IntGauge,
    durable_outbox_bytes: IntGauge,
    durable_outbox_capacity: IntGauge,
    durable_captures: IntGauge,
    clock_offset: Gauge,
    clock_uncertainty: Gauge,
    clock_sources: IntGauge,
    flushed: IntCounter,
    frames_sent: IntCounter,
    waves_framed: IntCounter,
    frames_received: IntCounter,
}

struct Process {
    rss: IntGauge,
    vms: IntGauge,
    threads: IntGauge,
    open_fds: IntGauge,
}

/// The metrics of one aether and of the process, brought up to their
/// sources at each scrape.
pub struct AetherCollector {
    aether: Aether,
    bus: Bus,
    connection: Connection,
    process: Option<Process>,
    parts: Parts,
}

impl std::fmt::Debug for AetherCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AetherCollector")
            .field("aether", &self.aether)
            .field("parts", &self.parts)
            .finish_non_exhaustive()
    }
}

impl AetherCollector {
    /// The collector of `aether`'s counts and of this process.
    pub fn new(aether: Aether) -> prometheus::Result<Self> {
        let mut parts: Vec<Box<dyn Collector>> = Vec::new();
        let mut m = Maker(&mut parts);
        let reasons: Vec<&str> = DropReason::ALL.iter().map(|r| r.as_str()).collect();
        let refusals: Vec<&str> = EmitErrorKind::ALL.iter().map(|k| k.as_str()).collect();
        let bus = Bus {
            emitted: m.counter(
                "aether_waves_emitted_total",
                "Waves accepted for emission by the process's aether (reflections included).",
            )?,
            delivered: m.counter(
                "aether_waves_delivered_total",
                "Waves the process's aether put in receive queues, once per receiver.",
            )?,
            unrouted: m.counter(
                "aether_waves_unrouted_total",
                "Waves of the process's aether that no vibrator resonated on.",
            )?,
            diffracted: m.counter(
                "aether_waves_diffracted_total",
                "Bends of diffracting waves to a parent channel, one per level.",
            )?,
            reflected: m.counter(
                "aether_waves_reflected_total",
                "Reflections sent back to their source by the process's aether.",
            )?,
            rate_limited: m.counter(
                "aether_emits_rate_limited_total",
                "Emits refused because a vibrator of the process's aether was over its rate \
                 limit (past any wait the limit allows).",
            )?,
            rate_limit_waits: m.counter(
                "aether_emits_rate_limit_waits_total",
                "Emits that waited for their turn under a vibrator's rate limit that shapes, \
                 then went out.",
            )?,
            handler_panics: m.counter(
                "aether_handler_panics_total",
                "Waves on which a vibrator's wave handler (on_wave) panicked; the handler \
                 gets the next wave as before.",
            )?,
            retries: m.counter(
                "aether_reliability_retries_total",
                "Retries made by reliability policies on the process's aether.",
            )?,
            timeouts: m.counter(
                "aether_reliability_timeouts_total",
                "Tries of reliability policies on the process's aether that timed out.",
            )?,
            breaker_opens: m.counter(
                "aether_reliability_breaker_opens_total",
                "Times a circuit breaker on the process's aether opened.",
            )?,
            breaker_rejections: m.counter(
                "aether_reliability_breaker_rejections_total",
                "Calls failed at once by an open circuit breaker on the process's aether.",
            )?,
            dropped: m.counters(
                "aether_waves_dropped_total",
                "Waves the process's aether did not deliver, by reason.",
                "reason",
                &reasons,
            )?,
            refused: m.counters(
                "aether_emits_refused_total",
                "Emits the process's aether refused, by the error's kind (outbox_full, \
                 rate_limited, too_large, ...): nothing sent, the emitting code told.",
                "reason",
                &refusals,
            )?,
        };
        let states: Vec<&str> = CONNECTION_STATES.iter().map(|s| s.as_str()).collect();
        let connection = Connection {
            state: {
                let metric = IntGaugeVec::new(
                    Opts::new(
                        "aether_nats_connection_state",
                        "The connection to the medium: 1 for the state it is in \
                         (embedded, connected, disconnected, closed), 0 for the others.",
                    ),
                    &["state"],
                )?;
                for state in &states {
                    metric.with_label_values(&[state]);
                }
                m.0.push(Box::new(metric.clone()));
                metric
            },
            reconnects: m.counter(
                "aether_nats_reconnects_total",
                "Times the NATS connection was established again after a loss.",
            )?,
            disconnects: m.counter(
                "aether_nats_disconnects_total",
                "Times the NATS connection was lost.",
            )?,
            slow_consumer: m.counter(
                "aether_nats_slow_consumer_events_total",
                "Messages the NATS client dropped because a subscription's buffer was full.",
            )?,
            malformed: m.counter(
                "aether_nats_malformed_messages_total",
                "Messages that arrived from NATS but were not valid waves, refused.",
            )?,
            outbox: m.gauge(
                "aether_nats_outbox_waves",
                "Waves waiting in the outbox for the NATS connection to come back.",
            )?,
            outbox_capacity: m.gauge(
                "aether_nats_outbox_capacity_waves",
                "Most waves the outbox holds (nats.outbox_capacity; 0 on the embedded medium).",
            )?,
            durable_outbox: m.gauge(
                "aether_nats_durable_outbox_waves",
                "Waves of durable channels accepted and not stored by JetStream yet.",
            )?,
            durable_outbox_bytes: m.gauge(
                "aether_nats_durable_outbox_bytes",
                "Bytes of those waves, against durability.outbox_max_bytes.",
            )?,
            durable_outbox_capacity: m.gauge(
                "aether_nats_durable_outbox_capacity_bytes",
                "Most bytes the durable outbox holds (durability.outbox_max_bytes; 0 without durable channels).",
            )?,
            durable_captures: m.gauge(
                "aether_nats_durable_captures",
                "JetStream streams that capture one durable channel (1 when all is well; more: streams in several domains each store every wave).",
            )?,
            clock_offset: m.float_gauge(
                "aether_clock_offset_seconds",
                "This process's clock's offset from the bus's time (the bus's time is its clock plus it), from the bus's time sources.",
            )?,
            clock_uncertainty: m.float_gauge(
                "aether_clock_uncertainty_seconds",
                "How far that offset may be off: half the round trip it was measured with.",
            )?,
            clock_sources: m.gauge(
                "aether_clock_sources",
                "The bus's time sources heard at the last measurement (0: the clock is this machine's own).",
            )?,
            flushed: m.counter(
                "aether_nats_outbox_flushed_total",
                "Waves sent from the outbox after reconnects.",
            )?,
            frames_sent: m.counter(
                "aether_nats_frames_sent_total",
                "Batch frames published: NATS messages that carried several waves.",
            )?,
            waves_framed: m.counter(
                "aether_nats_waves_framed_total",
                "Waves sent inside batch frames.",
            )?,
            frames_received: m.counter(
                "aether_nats_frames_received_total",
                "Batch frames received (each wave in one counted as if it came alone).",
            )?,
        };
        let process = match ResourceUsage::read() {
            Err(_) => None,
            Ok(_) => Some(Process {
                rss: m.gauge(
                    "process_resident_memory_bytes",
                    "Resident memory size in bytes.",
                )?,
                vms: m.gauge(
                    "process_virtual_memory_bytes",
                    "Virtual memory size in bytes.",
                )?,
                threads: m.gauge("process_threads", "Number of OS threads in the process.")?,
                open_fds: m.gauge("process_open_fds", "Number of open file descriptors.")?,
            }),
        };
        Ok(Self {
            aether,
            bus,
            connection,
            process,
            parts: Parts::new(parts),
        })
    }

    /// Brings every metric up to its source.
    fn refresh(&self) {
        let stats = self.aether.stats();
        let bus = &self.bus;
        raise(&bus.emitted, stats.emitted);
        raise(&bus.delivered, stats.delivered);
        raise(&bus.unrouted, stats.unrouted);
        raise(&bus.diffracted, stats.diffracted);
        raise(&bus.reflected, stats.reflected);
        raise(&bus.rate_limited, stats.rate_limited);
        raise(&bus.rate_limit_waits, stats.rate_limit_waits);
        raise(&bus.handler_panics, stats.handler_panics);
        raise(&bus.retries, stats.retries);
        raise(&bus.timeouts, stats.timeouts);
        raise(&bus.breaker_opens, stats.breaker_opens);
        raise(&bus.breaker_rejections, stats.breaker_rejections);
        for (reason, n) in stats.drops() {
            raise(&bus.dropped.with_label_values(&[reason.as_str()]), n);
        }
        for (kind, n) in stats.refusals() {
            raise(&bus.refused.with_label_values(&[kind.as_str()]), n);
        }
        let status = self.aether.connection();
        let c = &self.connection;
        for state in CONNECTION_STATES {
            c.state
                .with_label_values(&[state.as_str()])
                .set(i64::from(state == status.state));
        }
        raise(&c.reconnects, status.connects.saturating_sub(1));
        raise(&c.disconnects, status.disconnects);
        raise(&c.slow_consumer, status.slow_consumer_events);
        raise(&c.malformed, status.malformed);
        raise(&c.flushed, status.outbox_flushed);
        raise(&c.frames_sent, status.frames_sent);
        raise(&c.waves_framed, status.waves_framed);
        raise(&c.frames_received, status.frames_received);
        c.outbox.set(saturating_i64(status.outbox_len as u64));
        c.outbox_capacity
            .set(saturating_i64(status.outbox_capacity as u64));
        c.durable_outbox
            .set(saturating_i64(status.durable_outbox_len as u64));
        c.durable_outbox_bytes
            .set(saturating_i64(status.durable_outbox_bytes));
        c.durable_outbox_capacity
            .set(saturating_i64(status.durable_outbox_max_bytes));
        c.durable_captures
            .set(saturating_i64(status.durable_captures as u64));
        let clock = aether_core::bustime::status();
        c.clock_offset.set(clock.offset_ns as f64 / 1e9);
        c.clock_uncertainty.set(clock.uncertainty_ns as f64 / 1e9);
        c.clock_sources.set(saturating_i64(clock.sources as u64));
        if let (Some(p), Ok(usage)) = (&self.process, ResourceUsage::read()) {
            p.rss.set(saturating_i64(usage.rss_bytes));
            p.vms.set(saturating_i64(usage.vms_bytes));
            p.threads.set(saturating_i64(usage.threads));
            p.open_fds.set(saturating_i64(usage.open_fds));
        }
    }
}

impl Collector for AetherCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.parts.desc()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        self.parts.collect_after(|| self.refresh())
    }
}

/// The registry a program serves: its aether's and its process's metrics,
/// and `aether_program_info{program, instance, medium}` (always 1).
pub fn program_registry(aether: &Aether, program: &str) -> prometheus::Result<Registry> {
    let registry = Registry::new();
    registry.register(Box::new(AetherCollector::new(aether.clone())?))?;
    let info = IntGaugeVec::new(
        Opts::new(
            "aether_program_info",
            "The program, its instance name and its medium, as labels; always 1.",
        ),
        &["program", "instance", "medium"],
    )?;
    let medium = match aether.connection().state {
        ConnectionState::Embedded => "embedded",
        _ => "nats",
    };
    let instance = aether.config().report.instance_name();
    info.with_label_values(&[program, &instance, medium]).set(1);
    registry.register(Box::new(info))?;
    Ok(registry)
}

/// The text of `registry` in Prometheus's exposition format.
pub fn render(registry: &Registry) -> String {
    let mut text = Vec::new();
    // Encoding into a Vec only fails on a metric with no value: none here.
    let _ = TextEncoder::new().encode(&registry.gather(), &mut text);
    String::from_utf8(text).unwrap_or_default()
}

/// Serves `aether`'s metrics at `http://listen/metrics` (and `/health`)
/// until `shutdown`; returns the address bound (the port chosen if 0).
/// Fails if the address cannot be bound.
pub async fn serve(
    aether: Aether,
    program: &str,
    listen: SocketAddr,
    shutdown: Shutdown,
) -> io::Result<SocketAddr> {
    let registry = program_registry(&aether, program).map_err(io::Error::other)?;
    serve_registry(registry, listen, shutdown).await
}

/// Serves `registry` at `http://listen/metrics` (and `/health`) until
/// `shutdown`, as [`serve`] does: a program that adds its own metrics to
/// [`program_registry`]'s.
pub async fn serve_registry(
    registry: Registry,
    listen: SocketAddr,
    shutdown: Shutdown,
) -> io::Result<SocketAddr> {
    let registry = Arc::new(registry);
    let listener = tokio::net::TcpListener::bind(listen).await.map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("metrics_listen {listen}: cannot listen there: {e}"),
        )
    })?;
    let addr = listener.local_addr()?;
    let app = axum::Router::new()
        .route(
            "/metrics",
            axum::routing::get(move || {
                let registry = Arc::clone(&registry);
                async move {
                    (
                        [(
                            axum::http::header::CONTENT_TYPE,
                            "text/plain; version=0.0.4; charset=utf-8",
                        )],
                        render(&registry),
                    )
                }
            }),
        )
        .route("/health", axum::routing::get(|| async { "ok\n" }));
    tokio::spawn(async move {
        let stop = async move { shutdown.wait().await };
        if let Err(error) = axum::serve(listener, app)
            .with_graceful_shutdown(stop)
            .await
        {
            tracing::warn!(%error, "the metrics listener stopped");
        }
    });
    Ok(addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_program_serves_its_aether_s_counts_and_connection() {
        let aether = Aether::default();
        let stop = Shutdown::new();
        let addr = serve(
            aether.clone(),
            "test-program",
            "127.0.0.1:0".parse().unwrap(),
            stop.clone(),
        )
        .await
        .unwrap();
        let v = aether_core::Vibrator::create("v", &aether).await.unwrap();
        v.emit_wave("orders.created", 1).await.unwrap();
        let body = get(addr, "/metrics").await;
        for line in [
            "aether_waves_emitted_total 1",
            "aether_waves_dropped_total{reason=\"queue_full\"} 0",
            "aether_nats_connection_state{state=\"embedded\"} 1",
            "aether_nats_connection_state{state=\"disconnected\"} 0",
            "aether_nats_outbox_waves 0",
            "aether_emits_rate_limited_total 0",
        ] {
            assert!(body.lines().any(|l| l == line), "{line} in {body}");
        }
        assert!(
            body.contains("aether_program_info{instance=\"aether-")
                && body.contains("medium=\"embedded\",program=\"test-program\"} 1"),
            "{body}"
        );
        stop.trigger();
        // A port another socket holds: a clear error.
        let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let error = serve(
            aether,
            "test-program",
            held.local_addr().unwrap(),
            Shutdown::new(),
        )
        .await
        .unwrap_err();
        assert!(error.to_string().contains("metrics_listen"), "{error}");
    }

    async fn get(addr: SocketAddr, path: &str) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        response
    }
}
