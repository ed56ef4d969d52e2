//! Service alpha: emits waves on a channel.
//!
//! For now it runs on the embedded medium, in one process: a local listener
//! resonates on the channel and stands in for the rest of the bus, so each
//! wave can be seen arriving. The NATS medium, which lets services in other
//! processes hear it, comes with the next release of the bus.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::{error::Error, time::Duration};

use aether_core::{Aether, Amplitude, Channel, StatsSnapshot, Vibrator, Wave};
use serde_json::json;

/// Settings of a run, from the command line (`--help` describes them).
#[derive(Clone, Debug, PartialEq, clap::Parser)]
#[command(
    name = "aether-service-alpha",
    about = "Emits waves on a channel of the aether, then exits.",
    after_help = "It runs on the embedded medium, in this process: a local listener resonates \
on the channel and shows each wave as it arrives, then the aether's statistics are printed. \
The NATS medium, to reach services in other processes, comes with the next release of the bus."
)]
pub struct Options {
    /// How many waves to emit.
    #[arg(long, default_value_t = 5)]
    pub count: u64,
    /// The (concrete) channel to emit on, like orders.created.
    #[arg(long, default_value = "orders.created", value_parser = <Channel as std::str::FromStr>::from_str)]
    pub channel: Channel,
    /// Amplitude (importance) of each wave, in [0, 1].
    #[arg(long, default_value = "1", value_parser = parse_amplitude)]
    pub amplitude: Amplitude,
}

fn parse_amplitude(text: &str) -> Result<Amplitude, String> {
    let value: f64 = text.parse().map_err(|e| format!("{e}"))?;
    Amplitude::new(value).map_err(|e| e.to_string())
}

impl Default for Options {
    fn default() -> Self {
        <Self as clap::Parser>::parse_from(["aether-service-alpha"])
    }
}

/// Emits `options.count` waves on `aether`, printing each one and whether it
/// arrived, then the aether's statistics, which it returns.
pub async fn run(
    aether: &Aether,
    options: &Options,
) -> Result<StatsSnapshot, Box<dyn Error + Send + Sync>> {
    let alpha = Vibrator::create("service-alpha", aether).await?;
    let mut listener = Vibrator::create("listener", aether).await?;
    listener.resonate_on(&options.channel).await?;
    println!(
        "service-alpha: {} × {} at amplitude {} (embedded medium)",
        options.count, options.channel, options.amplitude
    );
    for seq in 1..=options.count {
        let wave = Wave::builder(&options.channel)
            .amplitude(options.amplitude.value())
            .json(&json!({"seq": seq, "from": "service-alpha"}))
            .build()?;
        let id = alpha.emit(wave).await?;
        let arrived = tokio::time::timeout(Duration::from_millis(100), listener.receive()).await;
        match arrived {
            Ok(Some(wave)) => println!(
                "  → {} #{seq} {id}: delivered, amplitude {:.2}",
                wave.channel(),
                wave.amplitude().value()
            ),
            _ => println!("  → {} #{seq} {id}: not delivered", options.channel),
        }
    }
    let stats = aether.stats();
    println!("aether.stats()\n{stats}");
    Ok(stats)
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
        assert_eq!(Options::default().count, 5);
        assert_eq!(
            parse("--count 2 --help").unwrap_err().kind(),
            ErrorKind::DisplayHelp
        );
        let options = parse("--count 3 --channel a.b").unwrap();
        assert_eq!((options.count, options.channel.as_str()), (3, "a.b"));
        assert!(refusal("--count").contains("a value is required"));
        assert!(parse("--count x").is_err());
        assert!(refusal("--amplitude 2").contains("[0, 1]"));
        assert!(refusal("--channel a..b").contains("invalid channel"));
        assert!(refusal("--nats").contains("unexpected argument"));
    }

    #[tokio::test]
    async fn emits_and_counts() {
        let aether = Aether::default();
        let stats = run(&aether, &Options::default()).await.unwrap();
        assert_eq!((stats.emitted, stats.delivered), (5, 5));
        let weak = Options {
            amplitude: Amplitude::new(0.001).unwrap(),
            ..Options::default()
        };
        let stats = run(&Aether::default(), &weak).await.unwrap();
        assert_eq!(stats.dropped(DropReason::Expired), 5);
    }
}
