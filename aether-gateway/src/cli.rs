//! The command line of the `aether-gateway` program (`--help` describes
//! it), and how it overrides the settings files.

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
    #[arg(long, value_name = "DIR", default_value = "config")]
    pub config_dir: PathBuf,
    /// Observe the bus of this NATS server (nats:// or tls://; repeat for a
    /// cluster) instead of the embedded medium.
    #[arg(long, value_name = "URL")]
    pub nats: Vec<String>,
    /// Serve HTTP on this address (default 127.0.0.1:9464; port 0 picks a
    /// free one).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// Emit a small shop's waves on the embedded medium, for the dashboard
    /// to show.
    #[arg(long, conflicts_with = "nats")]
    pub demo: bool,
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
        if self.demo {
            settings.gateway.medium = Medium::Embedded;
        }
        if let Some(listen) = self.listen {
            settings.gateway.listen = listen;
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
