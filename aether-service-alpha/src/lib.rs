//! Service alpha: emits waves on a channel.
//!
//! For now it runs on the embedded medium, in one process: a local listener
//! resonates on the channel and stands in for the rest of the bus, so each
//! wave can be seen arriving. The NATS medium, which lets services in other
//! processes hear it, comes with the next release of the bus.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::{error::Error, fmt::Display, str::FromStr, time::Duration};

use aether_core::{Aether, Amplitude, Channel, StatsSnapshot, Vibrator, Wave};
use serde_json::json;

/// The text of `--help`.
pub const HELP: &str = "\
aether-service-alpha: emits waves on a channel of the aether, then exits.

Usage: aether-service-alpha [OPTIONS]

Options:
      --count <N>          how many waves to emit [default: 5]
      --channel <CHANNEL>  channel to emit on, like orders.created [default: orders.created]
      --amplitude <A>      amplitude (importance) of each wave, in [0, 1] [default: 1]
  -h, --help               print this help

It runs on the embedded medium, in this process: a local listener resonates
on the channel and shows each wave as it arrives, then the aether's
statistics are printed. The NATS medium, to reach services in other
processes, comes with the next release of the bus.
";

/// What to do, from the command line.
#[derive(Clone, Debug, PartialEq)]
pub enum Command {
    /// Print [`HELP`].
    Help,
    /// Emit waves.
    Run(Options),
}

/// Settings of a run.
#[derive(Clone, Debug, PartialEq)]
pub struct Options {
    /// How many waves to emit.
    pub count: u64,
    /// The (concrete) channel to emit on.
    pub channel: Channel,
    /// Amplitude of each wave.
    pub amplitude: Amplitude,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            count: 5,
            channel: Channel::new("orders.created"),
            amplitude: Amplitude::MAX,
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
            "--count" => options.count = value(&arg, args.next())?,
            "--channel" => options.channel = value(&arg, args.next())?,
            "--amplitude" => {
                let amplitude = value(&arg, args.next())?;
                options.amplitude = Amplitude::new(amplitude).map_err(|e| e.to_string())?;
            }
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
    print_stats(&stats);
    Ok(stats)
}

fn print_stats(stats: &StatsSnapshot) {
    println!(
        "aether: emitted {}, delivered {}, unrouted {}",
        stats.emitted, stats.delivered, stats.unrouted
    );
    for (reason, n) in stats.drops().filter(|(_, n)| *n > 0) {
        println!("  dropped {reason}: {n}");
    }
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
        assert_eq!(parse_args(args("--count 2 --help")), Ok(Command::Help));
        let Ok(Command::Run(options)) = parse_args(args("--count 3 --channel a.b")) else {
            panic!("valid arguments");
        };
        assert_eq!((options.count, options.channel.as_str()), (3, "a.b"));
        assert!(
            parse_args(args("--count"))
                .unwrap_err()
                .contains("needs a value")
        );
        assert!(parse_args(args("--count x")).is_err());
        assert!(
            parse_args(args("--amplitude 2"))
                .unwrap_err()
                .contains("[0, 1]")
        );
        assert!(
            parse_args(args("--channel a..b"))
                .unwrap_err()
                .contains("invalid channel")
        );
        assert!(parse_args(args("--nats")).unwrap_err().contains("unknown"));
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
