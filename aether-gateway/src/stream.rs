//! The durable channels' JetStream stream, looked up every
//! [`LOOK_EVERY`] and exported: how full it is against its limits. Past
//! `max_bytes` the server deletes the oldest waves whether or not they were
//! taken, which no client sees; these gauges (and the alert
//! `AetherStreamNearFull`) show it coming.

use std::time::Duration;

use aether_core::Aether;
use aether_ops::shutdown::Shutdown;
use prometheus::{IntGaugeVec, Opts, Registry};

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
                "Copies of the stream on different servers.",
            )?,
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
            }
            Err(error) => {
                tracing::debug!(%error, "the durable stream was not looked up");
                self.up.with_label_values(&labels).set(0);
            }
        }
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
