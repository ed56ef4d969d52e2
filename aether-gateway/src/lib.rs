//! The gateway: observes every wave of the aether and reports what it saw.
//!
//! For now it runs on the embedded medium, in one process: a local feeder
//! emits waves, standing in for the services of the bus, and the gateway
//! prints a tally per channel and the aether's statistics. The NATS medium,
//! Prometheus metrics (`/metrics`), `/health`, `/ready` and the live
//! dashboard come with the next release of the bus.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::{collections::BTreeMap, error::Error, time::Duration};

use aether_core::{Aether, StatsSnapshot, Vibrator, Wave};
use serde_json::json;

/// Channels and amplitudes the local feeder emits on, in turn.
const FEED_CHANNELS: [&str; 4] = [
    "orders.created",
    "orders.confirmed",
    "users.signed_up",
    "payments.failed",
];
const FEED_AMPLITUDES: [f64; 3] = [1.0, 0.5, 0.005];

/// Settings of a run, from the command line (`--help` describes them).
#[derive(Clone, Debug, PartialEq, clap::Parser)]
#[command(
    name = "aether-gateway",
    about = "Observes every wave of the aether and prints a tally per channel and the \
aether's statistics, then exits.",
    after_help = "It runs on the embedded medium, in this process: a local feeder emits waves \
on a few channels at amplitudes 1.0, 0.5 and 0.005 in turn (the last one is under \
min_amplitude, so it expires and is counted). The NATS medium, Prometheus metrics (/metrics), \
/health, /ready and the live dashboard come with the next release of the bus."
)]
pub struct Options {
    /// How many waves the local feeder emits.
    #[arg(long, default_value_t = 8)]
    pub count: u64,
}

impl Default for Options {
    fn default() -> Self {
        <Self as clap::Parser>::parse_from(["aether-gateway"])
    }
}

/// What the gateway saw on one channel.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ChannelTally {
    /// Waves observed.
    pub waves: u64,
    /// Sum of their amplitudes on arrival.
    pub amplitude_sum: f64,
}

/// Observes every channel while a local feeder emits `options.count` waves,
/// then prints and returns the tally per channel and the aether's statistics.
pub async fn run(
    aether: &Aether,
    options: &Options,
) -> Result<(BTreeMap<String, ChannelTally>, StatsSnapshot), Box<dyn Error + Send + Sync>> {
    let mut gateway = Vibrator::create("gateway", aether).await?;
    gateway.resonate_on("*").await?;
    let feeder = Vibrator::create("feeder", aether).await?;
    println!("gateway observes * (embedded medium)");
    for seq in 0..options.count as usize {
        let wave = Wave::builder(FEED_CHANNELS[seq % FEED_CHANNELS.len()])
            .amplitude(FEED_AMPLITUDES[seq % FEED_AMPLITUDES.len()])
            .json(&json!({"seq": seq + 1}))
            .build()?;
        feeder.emit(wave).await?;
    }
    let mut tally = BTreeMap::<String, ChannelTally>::new();
    while let Ok(Some(wave)) =
        tokio::time::timeout(Duration::from_millis(100), gateway.receive()).await
    {
        let entry = tally.entry(wave.channel().to_string()).or_default();
        entry.waves += 1;
        entry.amplitude_sum += wave.amplitude().value();
    }
    println!(
        "  {:<20} {:>5}  {:>14}",
        "channel", "waves", "mean amplitude"
    );
    for (channel, t) in &tally {
        let mean = t.amplitude_sum / t.waves as f64;
        println!("  {channel:<20} {:>5}  {mean:>14.3}", t.waves);
    }
    let stats = aether.stats();
    println!("aether.stats()\n{stats}");
    Ok((tally, stats))
}

#[cfg(test)]
mod tests {
    use aether_core::DropReason;

    use super::*;

    use clap::{Parser, error::ErrorKind};

    fn parse(line: &str) -> Result<Options, clap::Error> {
        Options::try_parse_from(std::iter::once("bin").chain(line.split_whitespace()))
    }

    fn refusal(line: &str) -> String {
        parse(line).unwrap_err().to_string()
    }

    #[test]
    fn parses_options_and_refuses_bad_ones() {
        assert_eq!(parse("").unwrap(), Options::default());
        assert_eq!(Options::default().count, 8);
        assert_eq!(parse("--help").unwrap_err().kind(), ErrorKind::DisplayHelp);
        assert_eq!(parse("--count 3").unwrap(), Options { count: 3 });
        assert!(parse("--count -1").is_err());
        assert!(refusal("--metrics").contains("unexpected argument"));
    }

    #[tokio::test]
    async fn sees_every_live_wave() {
        let (tally, stats) = run(&Aether::default(), &Options::default()).await.unwrap();
        // Amplitudes 1.0, 0.5, 0.005 in turn: 2 of the 8 waves expire.
        assert_eq!(stats.emitted, 8);
        assert_eq!(stats.dropped(DropReason::Expired), 2);
        let seen: u64 = tally.values().map(|t| t.waves).sum();
        assert_eq!(seen, 6);
        assert_eq!(stats.delivered, 6);
    }
}
