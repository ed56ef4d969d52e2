//! The gateway: observes every wave of the aether and reports what it saw.
//!
//! For now it runs on the embedded medium, in one process: a local feeder
//! emits waves, standing in for the services of the bus, and the gateway
//! prints a tally per channel and the aether's statistics. The NATS medium,
//! Prometheus metrics (`/metrics`), `/health`, `/ready` and the live
//! dashboard come with the next release of the bus.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::{collections::BTreeMap, error::Error, fmt::Display, str::FromStr, time::Duration};

use aether_core::{Aether, StatsSnapshot, Vibrator, Wave};
use serde_json::json;

/// The text of `--help`.
pub const HELP: &str = "\
aether-gateway: observes every wave of the aether and prints a tally per
channel and the aether's statistics, then exits.

Usage: aether-gateway [OPTIONS]

Options:
      --count <N>  how many waves the local feeder emits [default: 8]
  -h, --help       print this help

It runs on the embedded medium, in this process: a local feeder emits waves
on a few channels at amplitudes 1.0, 0.5 and 0.005 in turn (the last one is
under min_amplitude, so it expires and is counted). The NATS medium,
Prometheus metrics (/metrics), /health, /ready and the live dashboard come
with the next release of the bus.
";

/// Channels and amplitudes the local feeder emits on, in turn.
const FEED_CHANNELS: [&str; 4] = [
    "orders.created",
    "orders.confirmed",
    "users.signed_up",
    "payments.failed",
];
const FEED_AMPLITUDES: [f64; 3] = [1.0, 0.5, 0.005];

/// What to do, from the command line.
#[derive(Clone, Debug, PartialEq)]
pub enum Command {
    /// Print [`HELP`].
    Help,
    /// Observe and report.
    Run(Options),
}

/// Settings of a run.
#[derive(Clone, Debug, PartialEq)]
pub struct Options {
    /// How many waves the local feeder emits.
    pub count: u64,
}

impl Default for Options {
    fn default() -> Self {
        Self { count: 8 }
    }
}

/// Reads the arguments (without the program name); the error says what is
/// wrong.
pub fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Command, String> {
    let mut options = Options::default();
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "-h" | "--help" => return Ok(Command::Help),
            "--count" => options.count = value(&arg, args.next())?,
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(Command::Run(options))
}

fn value<T: FromStr>(flag: &str, value: Option<String>) -> Result<T, String>
where
    T::Err: Display,
{
    let value = value.ok_or_else(|| format!("{flag} needs a value"))?;
    value.parse().map_err(|e| format!("{flag} {value:?}: {e}"))
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
    println!("aether.stats()");
    println!("  {:<26} {:>5}", "emitted", stats.emitted);
    println!("  {:<26} {:>5}", "delivered", stats.delivered);
    println!("  {:<26} {:>5}", "unrouted", stats.unrouted);
    for (reason, n) in stats.drops() {
        println!("  {:<26} {n:>5}", format!("dropped {reason}"));
    }
    Ok((tally, stats))
}

#[cfg(test)]
mod tests {
    use aether_core::DropReason;

    use super::*;

    fn args(line: &str) -> Vec<String> {
        line.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn parses_options_and_refuses_bad_ones() {
        assert_eq!(parse_args(args("")), Ok(Command::Run(Options::default())));
        assert_eq!(parse_args(args("--help")), Ok(Command::Help));
        assert_eq!(
            parse_args(args("--count 3")),
            Ok(Command::Run(Options { count: 3 }))
        );
        assert!(parse_args(args("--count -1")).is_err());
        assert!(
            parse_args(args("--metrics"))
                .unwrap_err()
                .contains("unknown")
        );
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
