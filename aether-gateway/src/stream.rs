//! The durable channels' JetStream stream, looked up every
//! [`LOOK_EVERY`] and exported: how full it is against its limits (past
//! `max_bytes` the server deletes the oldest waves whether or not they were
//! taken, which no client sees: the alert `AetherStreamNearFull`), its
//! copies (a server lost or behind: `AetherStreamShortOfReplicas`), its
//! leader and the changes of it, and each durable consumer's backlog
//! (`AetherConsumerBacklogGrowing`).

use std::{sync::Arc, sync::Mutex, time::Duration};

use aether_core::Aether;
use aether_core::Operator;
use aether_ops::shutdown::Shutdown;
use prometheus::{IntCounterVec, IntGaugeVec, Opts, Registry};

/// How often the stream is looked up.
pub(crate) const LOOK_EVERY: Duration = Duration::from_secs(5);

/// The stream's gauges, labelled with its name.
#[derive(Clone)]
pub(crate) struct StreamGauges {
    up: IntGaugeVec,
    waves: IntGaugeVec,
    bytes: IntGaugeVec,
    max_bytes: IntGaugeVec,
    oldest_age: IntGaugeVec,
    max_age: IntGaugeVec,
    replicas: IntGaugeVec,
    replicas_current: IntGaugeVec,
    replicas_offline: IntGaugeVec,
    replicas_lagging: IntGaugeVec,
    leader: IntGaugeVec,
    leader_changes: IntCounterVec,
    consumer_pending: IntGaugeVec,
    consumer_ack_pending: IntGaugeVec,
    consumer_redelivered: IntGaugeVec,
    /// The leader and the consumers exported at the last look-up.
    last: Arc<Mutex<Seen>>,
}

/// What the last look-up exported, to take away what went.
#[derive(Default)]
struct Seen {
    leader: Option<String>,
    consumers: Vec<String>,
}

impl StreamGauges {
    pub(crate) fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        let gauge = |name: &str, help: &str| -> Result<IntGaugeVec, prometheus::Error> {
            let gauge = IntGaugeVec::new(Opts::new(name, help), &["stream"])?;
            registry.register(Box::new(gauge.clone()))?;
            Ok(gauge)
        };
        Ok(Self {
            up: gauge(
                "aether_stream_up",
                "1 when the durable channels' stream answered its last look-up, 0 when not.",
            )?,
            waves: gauge("aether_stream_waves", "Waves the stream holds.")?,
            bytes: gauge(
                "aether_stream_bytes",
                "Bytes the stream holds (per replica).",
            )?,
            max_bytes: gauge(
                "aether_stream_max_bytes",
                "Most bytes the stream keeps (durability.max_bytes; 0: no limit); past it the oldest waves are deleted, taken or not.",
            )?,
            oldest_age: gauge(
                "aether_stream_oldest_wave_age_seconds",
                "Age of the oldest wave the stream holds.",
            )?,
            max_age: gauge(
                "aether_stream_max_age_seconds",
                "Oldest wave the stream keeps (durability.max_age_ms; 0: no limit).",
            )?,
            replicas: gauge(
                "aether_stream_replicas",
                "Copies of the stream on different servers, as configured.",
            )?,
            replicas_current: gauge(
                "aether_stream_replicas_current",
                "Copies of the stream up to date (the leader's and each current peer's); below \
                 aether_stream_replicas a server is lost or behind.",
            )?,
            replicas_offline: gauge(
                "aether_stream_replicas_offline",
                "Copies of the stream its group counts offline.",
            )?,
            replicas_lagging: gauge(
                "aether_stream_replicas_lagging",
                "Copies of the stream catching up with its leader.",
            )?,
            leader: {
                let gauge = IntGaugeVec::new(
                    Opts::new(
                        "aether_stream_leader",
                        "1 for the server that leads the stream's copies.",
                    ),
                    &["stream", "leader"],
                )?;
                registry.register(Box::new(gauge.clone()))?;
                gauge
            },
            leader_changes: {
                let counter = IntCounterVec::new(
                    Opts::new(
                        "aether_stream_leader_changes_total",
                        "Times the stream's leader changed (or it had none) between two look-ups.",
                    ),
                    &["stream"],
                )?;
                registry.register(Box::new(counter.clone()))?;
                counter
            },
            consumer_pending: consumer_gauge(
                registry,
                "aether_consumer_pending_waves",
                "Waves stored and not handed out yet to a durable consumer (its lag).",
            )?,
            consumer_ack_pending: consumer_gauge(
                registry,
                "aether_consumer_ack_pending_waves",
                "Waves handed out to a durable consumer and not acknowledged yet.",
            )?,
            consumer_redelivered: consumer_gauge(
                registry,
                "aether_consumer_redelivered_waves",
                "Waves handed out to a durable consumer more than once, now outstanding.",
            )?,
            last: Arc::default(),
        })
    }

    /// Looks the stream up now and sets the gauges.
    pub(crate) async fn look(&self, aether: &Aether) {
        let name = aether.config().durability.stream.clone();
        let labels = [name.as_str()];
        match aether.durable_stream().await {
            Ok(stream) => {
                let set = |gauge: &IntGaugeVec, value: u64| {
                    gauge
                        .with_label_values(&labels)
                        .set(i64::try_from(value).unwrap_or(i64::MAX));
                };
                set(&self.up, 1);
                set(&self.waves, stream.messages);
                set(&self.bytes, stream.bytes);
                set(&self.max_bytes, stream.max_bytes);
                set(&self.oldest_age, stream.oldest_age.as_secs());
                set(&self.max_age, stream.max_age.as_secs());
                set(&self.replicas, stream.replicas as u64);
                set(&self.replicas_current, stream.replicas_current as u64);
                set(&self.replicas_offline, stream.replicas_offline as u64);
                set(&self.replicas_lagging, stream.replicas_lagging as u64);
                let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
                if last.leader != stream.leader {
                    if let Some(old) = &last.leader {
                        let _ = self.leader.remove_label_values(&[&name, old]);
                        self.leader_changes.with_label_values(&labels).inc();
                    }
                    if let Some(new) = &stream.leader {
                        self.leader.with_label_values(&[&name, new]).set(1);
                    }
                    last.leader = stream.leader.clone();
                }
                self.leader_changes.with_label_values(&labels).inc_by(0);
                let now: Vec<String> = stream
                    .consumer_backlogs
                    .iter()
                    .map(|c| c.name.clone())
                    .collect();
                for gone in last.consumers.iter().filter(|c| !now.contains(c)) {
                    for gauge in self.consumer_gauges() {
                        let _ = gauge.remove_label_values(&[&name, gone]);
                    }
                }
                for consumer in &stream.consumer_backlogs {
                    let labels = [name.as_str(), consumer.name.as_str()];
                    let set = |gauge: &IntGaugeVec, value: u64| {
                        gauge
                            .with_label_values(&labels)
                            .set(i64::try_from(value).unwrap_or(i64::MAX));
                    };
                    set(&self.consumer_pending, consumer.pending);
                    set(&self.consumer_ack_pending, consumer.ack_pending);
                    set(&self.consumer_redelivered, consumer.redelivered);
                }
                last.consumers = now;
            }
            Err(error) => {
                tracing::debug!(%error, "the durable stream was not looked up");
                self.up.with_label_values(&labels).set(0);
            }
        }
    }

    fn consumer_gauges(&self) -> [&IntGaugeVec; 3] {
        [
            &self.consumer_pending,
            &self.consumer_ack_pending,
            &self.consumer_redelivered,
        ]
    }

    /// Looks the stream up every [`LOOK_EVERY`] until `stop`.
    pub(crate) async fn run(self, aether: Aether, stop: Shutdown) {
        let mut every = tokio::time::interval(LOOK_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.wait() => return,
                _ = every.tick() => self.look(&aether).await,
            }
        }
    }
}

/// A gauge by stream and consumer, registered.
fn consumer_gauge(
    registry: &Registry,
    name: &str,
    help: &str,
) -> Result<IntGaugeVec, prometheus::Error> {
    let gauge = IntGaugeVec::new(Opts::new(name, help), &["stream", "consumer"])?;
    registry.register(Box::new(gauge.clone()))?;
    Ok(gauge)
}
