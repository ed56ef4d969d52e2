//! Service beta: resonates on a channel pattern and shows what it hears.
//!
//! For now it runs on the embedded medium, in one process: a local feeder
//! emits waves on a few channels and amplitudes, standing in for the rest of
//! the bus, so that resonance and the noise floor can be seen at work. The
//! NATS medium, which lets it hear services in other processes, comes with
//! the next release of the bus.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::{error::Error, fmt::Display, str::FromStr, time::Duration};

use aether_core::{Aether, Channel, DropReason, StatsSnapshot, Vibrator, Wave};
use serde_json::json;

/// The text of `--help`.
pub const HELP: &str = "\
aether-service-beta: resonates on a channel pattern and prints what it hears,
then exits.

Usage: aether-service-beta [OPTIONS]

Options:
      --pattern <PATTERN>  channels to resonate on, like orders.* [default: orders.*]
      --noise-floor <F>    waves weaker than this are not heard, in [0, 1] [default: 0.3]
      --count <N>          how many waves the local feeder emits [default: 6]
  -h, --help               print this help

It runs on the embedded medium, in this process: a local feeder emits waves
on orders.created, orders.confirmed, users.signed_up and orders.cancelled at
amplitudes 1.0, 0.6 and 0.2 in turn, and beta says which it heard and why it
did not hear the others. The NATS medium, to hear services in other
processes, comes with the next release of the bus.
";

/// Channels and amplitudes the local feeder emits on, in turn.
const FEED_CHANNELS: [&str; 4] = [
    "orders.created",
    "orders.confirmed",
    "users.signed_up",
    "orders.cancelled",
];
const FEED_AMPLITUDES: [f64; 3] = [1.0, 0.6, 0.2];

/// What to do, from the command line.
#[derive(Clone, Debug, PartialEq)]
pub enum Command {
    /// Print [`HELP`].
    Help,
    /// Resonate and report.
    Run(Options),
}

/// Settings of a run.
#[derive(Clone, Debug, PartialEq)]
pub struct Options {
    /// The pattern to resonate on.
    pub pattern: Channel,
    /// Its noise floor, in `[0, 1]`.
    pub noise_floor: f64,
    /// How many waves the local feeder emits.
    pub count: u64,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            pattern: Channel::new("orders.*"),
            noise_floor: 0.3,
            count: 6,
        }
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
            "--pattern" => options.pattern = value(&arg, args.next())?,
            "--noise-floor" => options.noise_floor = value(&arg, args.next())?,
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

    fn args(line: &str) -> Vec<String> {
        line.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn parses_options_and_refuses_bad_ones() {
        assert_eq!(parse_args(args("")), Ok(Command::Run(Options::default())));
        assert_eq!(parse_args(args("-h")), Ok(Command::Help));
        let Ok(Command::Run(options)) = parse_args(args("--pattern a.* --noise-floor 0")) else {
            panic!("valid arguments");
        };
        assert_eq!(
            (options.pattern.as_str(), options.noise_floor),
            ("a.*", 0.0)
        );
        assert!(
            parse_args(args("--pattern a..b"))
                .unwrap_err()
                .contains("invalid channel")
        );
        assert!(
            parse_args(args("--noise-floor"))
                .unwrap_err()
                .contains("needs a value")
        );
        assert!(parse_args(args("--what")).unwrap_err().contains("unknown"));
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
