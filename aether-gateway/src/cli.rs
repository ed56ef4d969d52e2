//! The command line of the `aether-gateway` program (`--help` describes
//! it), and how it overrides the settings files.

// The doc comments below are the --help text, written for a terminal
// (`[gateway] medium`, `<process id>`), not rustdoc links and tags.
#![allow(rustdoc::broken_intra_doc_links, rustdoc::invalid_html_tags)]

use std::{net::SocketAddr, path::PathBuf};

use crate::{GatewaySettings, settings::Medium};

/// The command line.
#[derive(Clone, Debug, PartialEq, clap::Parser)]
#[command(
    name = "aether-gateway",
    version,
    about = "Observes every wave of the aether (embedded or NATS) and serves Prometheus \
metrics (/metrics), health checks (/health, /ready) and a live dashboard (/).",
    after_help = "Settings come from DIR/default.toml, then DIR/$AETHER_ENV.toml, then \
AETHER__SECTION__KEY variables (for example AETHER__GATEWAY__LISTEN=0.0.0.0:9464); the \
options below override them. It serves http://127.0.0.1:9464 by default and runs until \
SIGINT (Ctrl-C) or SIGTERM, then exits with status 0.\n\nOn the embedded medium it sees \
only the waves of its own process: use --nats to observe a bus, or --demo to watch a \
small shop."
)]
pub struct Options {
    /// Directory of the settings files (default.toml, then the AETHER_ENV
    /// overlay).
    #[arg(long, value_name = "DIR", default_value = "config", global = true)]
    pub config_dir: PathBuf,
    /// Observe the bus of this NATS server (nats:// or tls://; repeat for a
    /// cluster) instead of the embedded medium.
    #[arg(long, value_name = "URL")]
    pub nats: Vec<String>,
    /// Observe the bus on the LAN ([gateway] medium = "lan"): this
    /// machine's `aether node`, else one announced on the LAN
    /// (`AETHER_BUS`, `AETHER_SECRET_FILE` or [aether.lan] name the bus).
    #[arg(long, conflicts_with = "nats")]
    pub lan: bool,
    /// Serve HTTP on this address (default 127.0.0.1:9464; port 0 picks a
    /// free one).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// This process's name in its instance reports, metrics labels and the
    /// server's connection list ([aether.report] instance), stable across
    /// restarts; default aether-gateway-<process id>.
    #[arg(long, value_name = "NAME")]
    pub instance: Option<String>,
    /// Emit a small shop's waves on the embedded medium, for the dashboard
    /// to show.
    #[arg(long, conflicts_with = "nats")]
    pub demo: bool,
    /// Work on the journal instead of serving (`replay`, `journal`).
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// The gateway's subcommands: the journal of `[gateway.journal]`.
#[derive(Clone, Debug, PartialEq, clap::Subcommand)]
pub enum Command {
    /// Emits journaled waves again, as re-emissions: each the wave observed
    /// (same id, source, payload) with one more hop, so it is attenuated
    /// and subject to max_propagation like any hop. Then exits.
    Replay(ReplayArgs),
    /// Lists or counts journaled waves, without emitting anything.
    Journal(JournalArgs),
}

/// Which journaled waves a subcommand takes.
#[derive(Clone, Debug, Default, PartialEq, clap::Args)]
pub struct SelectArgs {
    /// The journal's directory (default: [gateway.journal] dir).
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Waves observed at or after this time: RFC 3339
    /// (2026-05-01T12:00:00Z) or Unix milliseconds.
    #[arg(
        long,
        value_name = "TIME",
        allow_negative_numbers = true,
        value_parser = crate::replay::parse_time
    )]
    pub from: Option<u64>,
    /// Waves observed at or before this time (same forms).
    #[arg(
        long,
        value_name = "TIME",
        allow_negative_numbers = true,
        value_parser = crate::replay::parse_time
    )]
    pub to: Option<u64>,
    /// Channel patterns of the waves to take, like 'orders.*' (repeat, or
    /// separate with commas; default: all).
    #[arg(long, value_name = "PATTERN", value_delimiter = ',')]
    pub channels: Vec<String>,
}

/// `replay`'s options.
#[derive(Clone, Debug, Default, PartialEq, clap::Args)]
pub struct ReplayArgs {
    /// Which waves.
    #[command(flatten)]
    pub select: SelectArgs,
    /// Emit on the bus of this NATS server (repeat for a cluster); without
    /// it, on the medium of the settings ([gateway] medium).
    #[arg(long, value_name = "URL")]
    pub nats: Vec<String>,
    /// Re-amplify each wave to this amplitude (0 to 1; its decay clock
    /// restarts) instead of only adding a hop.
    #[arg(
        long,
        value_name = "A",
        allow_negative_numbers = true,
        value_parser = amplitude
    )]
    pub amplitude: Option<f64>,
    /// The name the replayed waves are emitted from (their source stays
    /// the original one).
    #[arg(long, value_name = "NAME", default_value = "replay")]
    pub name: String,
}

/// `--amplitude`: a number from 0 to 1. (A negative one reaches this, and
/// is refused with this message, rather than being taken for an option.)
fn amplitude(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(amplitude) if (0.0..=1.0).contains(&amplitude) => Ok(amplitude),
        _ => Err(format!("must be an amplitude from 0 to 1, not {text}")),
    }
}

/// `journal`'s options.
#[derive(Clone, Debug, Default, PartialEq, clap::Args)]
pub struct JournalArgs {
    /// Which waves.
    #[command(flatten)]
    pub select: SelectArgs,
    /// Print one line per wave: sequence number, time, channel, id,
    /// source, hops, amplitude, payload bytes.
    #[arg(long)]
    pub list: bool,
}

impl Default for Options {
    fn default() -> Self {
        <Self as clap::Parser>::parse_from(["aether-gateway"])
    }
}

impl Options {
    /// Puts the options given over `settings`.
    pub fn apply(&self, settings: &mut GatewaySettings) {
        if !self.nats.is_empty() {
            settings.gateway.medium = Medium::Nats;
            settings.aether.nats.urls = self.nats.clone();
        }
        if self.lan {
            settings.gateway.medium = Medium::Lan;
        }
        if self.demo {
            settings.gateway.medium = Medium::Embedded;
        }
        if let Some(listen) = self.listen {
            settings.gateway.listen = listen;
        }
        if let Some(instance) = &self.instance {
            settings.aether.report.instance = Some(instance.clone());
        }
        if let Some(Command::Replay(replay)) = &self.command
            && !replay.nats.is_empty()
        {
            settings.gateway.medium = Medium::Nats;
            settings.aether.nats.urls = replay.nats.clone();
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::{Parser, error::ErrorKind};

    use super::*;

    fn parse(line: &str) -> Result<Options, clap::Error> {
        Options::try_parse_from(std::iter::once("bin").chain(line.split_whitespace()))
    }

    #[test]
    fn parses_options_and_refuses_bad_ones() {
        let options = parse("").unwrap();
        assert_eq!(options, Options::default());
        assert_eq!(options.config_dir, PathBuf::from("config"));
        assert_eq!(parse("--help").unwrap_err().kind(), ErrorKind::DisplayHelp);
        let help = parse("--help").unwrap_err().to_string();
        assert!(help.contains("/metrics") && help.contains("9464"), "{help}");
        let options =
            parse("--nats nats://a:4222 --nats nats://b:4222 --listen 0.0.0.0:1").unwrap();
        assert_eq!(options.nats.len(), 2);
        assert!(parse("--listen nowhere").is_err());
        assert!(parse("--demo --nats nats://a:4222").is_err());
        assert!(parse("--count 3").is_err());
        let options = parse(
            "replay --from 2023-11-14T22:13:20Z --to 1700000000001 --channels orders.*,stock.* \
             --nats nats://a:4222 --config-dir x",
        )
        .unwrap();
        let Some(Command::Replay(replay)) = &options.command else {
            panic!("{options:?}")
        };
        assert_eq!(replay.select.from, Some(1_700_000_000_000));
        assert_eq!(replay.select.to, Some(1_700_000_000_001));
        assert_eq!(replay.select.channels, vec!["orders.*", "stock.*"]);
        assert_eq!(options.config_dir, PathBuf::from("x"));
        let mut settings = GatewaySettings::default();
        options.apply(&mut settings);
        assert_eq!(settings.gateway.medium, Medium::Nats);
        assert!(parse("replay --from yesterday").is_err());
        assert!(matches!(
            parse("journal --list").unwrap().command,
            Some(Command::Journal(JournalArgs { list: true, .. }))
        ));
    }

    /// Negative numbers are values, not options: each numeric option's own
    /// check refuses them, with its reason.
    #[test]
    fn negative_numbers_reach_the_checks() {
        for (line, words) in [
            ("replay --amplitude -0.5", "from 0 to 1"),
            ("replay --amplitude 1.5", "from 0 to 1"),
            ("replay --from -5", "neither RFC 3339 nor Unix milliseconds"),
            ("journal --to -1", "neither RFC 3339 nor Unix milliseconds"),
        ] {
            let refusal = parse(line).unwrap_err();
            assert_eq!(refusal.kind(), ErrorKind::ValueValidation, "{line}");
            let refusal = refusal.to_string();
            assert!(refusal.contains(words), "{line}: {refusal}");
        }
        let Some(Command::Replay(replay)) = parse("replay --amplitude 0.5").unwrap().command else {
            panic!("replay")
        };
        assert_eq!(replay.amplitude, Some(0.5));
    }

    #[test]
    fn options_override_the_settings() {
        let mut settings = GatewaySettings::default();
        parse("--nats nats://a:4222 --listen 127.0.0.1:1")
            .unwrap()
            .apply(&mut settings);
        assert_eq!(settings.gateway.medium, Medium::Nats);
        assert_eq!(settings.aether.nats.urls, vec!["nats://a:4222".to_string()]);
        assert_eq!(settings.gateway.listen.port(), 1);

        let mut settings = GatewaySettings::default();
        settings.gateway.medium = Medium::Nats;
        parse("--demo").unwrap().apply(&mut settings);
        assert_eq!(settings.gateway.medium, Medium::Embedded);
    }
}
