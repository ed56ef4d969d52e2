//! Service beta: resonates on a channel pattern and shows what it hears.
//!
//! For now it runs on the embedded medium, in one process: a local feeder
//! emits waves on a few channels and amplitudes, standing in for the rest of
//! the bus, so that resonance and the noise floor can be seen at work. The
//! NATS medium, which lets it hear services in other processes, comes with
//! the next release of the bus.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::{error::Error, time::Duration};

use aether_core::{Aether, Channel, DropReason, StatsSnapshot, Vibrator, Wave};
use serde_json::json;

/// Channels and amplitudes the local feeder emits on, in turn.
const FEED_CHANNELS: [&str; 4] = [
    "orders.created",
    "orders.confirmed",
    "users.signed_up",
    "orders.cancelled",
];
const FEED_AMPLITUDES: [f64; 3] = [1.0, 0.6, 0.2];

/// Settings of a run, from the command line (`--help` describes them).
#[derive(Clone, Debug, PartialEq, clap::Parser)]
#[command(
    name = "aether-service-beta",
    about = "Resonates on a channel pattern and prints what it hears, then exits.",
    after_help = "It runs on the embedded medium, in this process: a local feeder emits waves \
on orders.created, orders.confirmed, users.signed_up and orders.cancelled at amplitudes 1.0, \
0.6 and 0.2 in turn, and beta says which it heard and why it did not hear the others. The NATS \
medium, to hear services in other processes, comes with the next release of the bus."
)]
pub struct Options {
    /// Channels to resonate on, like orders.*
    #[arg(long, default_value = "orders.*", value_parser = <Channel as std::str::FromStr>::from_str)]
    pub pattern: Channel,
    /// Waves weaker than this are not heard, in [0, 1].
    #[arg(long, default_value_t = 0.3)]
    pub noise_floor: f64,
    /// How many waves the local feeder emits.
    #[arg(long, default_value_t = 6)]
    pub count: u64,
}

impl Default for Options {
    fn default() -> Self {
        <Self as clap::Parser>::parse_from(["aether-service-beta"])
    }
}

/// Resonates on `options.pattern` while a local feeder emits
/// `options.count` waves; prints each and whether beta heard it, then
/// returns beta's own statistics.
pub async fn run(
    aether: &Aether,
    options: &Options,
) -> Result<StatsSnapshot, Box<dyn Error + Send + Sync>> {
    let mut beta = Vibrator::builder("service-beta")
        .noise_floor(options.noise_floor)
        .create(aether)
        .await?;
    beta.resonate_on(&options.pattern).await?;
    let feeder = Vibrator::create("feeder", aether).await?;
    println!(
        "service-beta resonates on {} with noise floor {} (embedded medium)",
        options.pattern, options.noise_floor
    );
    for seq in 0..options.count {
        let channel = Channel::new(FEED_CHANNELS[seq as usize % FEED_CHANNELS.len()]);
        let amplitude = FEED_AMPLITUDES[seq as usize % FEED_AMPLITUDES.len()];
        let wave = Wave::builder(&channel)
            .amplitude(amplitude)
            .json(&json!({"seq": seq + 1}))
            .build()?;
        feeder.emit(wave).await?;
        let heard = tokio::time::timeout(Duration::from_millis(100), beta.receive()).await;
        let outcome = match heard {
            Ok(Some(_)) => "heard",
            _ if !channel.matches(&options.pattern) => "not heard: no resonance",
            _ => "not heard: under the noise floor",
        };
        println!(
            "  {:<18} amplitude {amplitude:.1}  {outcome}",
            channel.as_str()
        );
    }
    let stats = beta.stats();
    println!(
        "service-beta: delivered {}, {} {}",
        stats.delivered,
        DropReason::BelowNoiseFloor,
        stats.dropped(DropReason::BelowNoiseFloor)
    );
    Ok(stats)
}

#[cfg(test)]
mod tests {
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
        assert_eq!(Options::default().noise_floor, 0.3);
        assert_eq!(parse("-h").unwrap_err().kind(), ErrorKind::DisplayHelp);
        let options = parse("--pattern a.* --noise-floor 0").unwrap();
        assert_eq!(
            (options.pattern.as_str(), options.noise_floor),
            ("a.*", 0.0)
        );
        assert!(refusal("--pattern a..b").contains("invalid channel"));
        assert!(refusal("--noise-floor").contains("a value is required"));
        assert!(refusal("--what").contains("unexpected argument"));
    }

    #[tokio::test]
    async fn hears_only_matching_waves_above_its_floor() {
        // Feeds: orders.created 1.0, orders.confirmed 0.6, users.signed_up 0.2,
        // orders.cancelled 1.0, orders.created 0.6, orders.confirmed 0.2.
        let stats = run(&Aether::default(), &Options::default()).await.unwrap();
        assert_eq!(stats.delivered, 4);
        assert_eq!(stats.dropped(DropReason::BelowNoiseFloor), 1);
        let bad = Options {
            noise_floor: 2.0,
            ..Options::default()
        };
        assert!(run(&Aether::default(), &bad).await.is_err());
    }
}
