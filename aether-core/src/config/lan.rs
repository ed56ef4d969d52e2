//! Settings of a bus found on the LAN ([`crate::lan`]).

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{ConfigError, check};

/// `[aether.lan]`: which bus on the LAN a program joins when it discovers
/// its server instead of naming one (`Aether::discover`, a program's
/// `[service] medium = "lan"`, the command line without `--nats`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LanConfig {
    /// The bus's name; default `AETHER_BUS`, else `aether`.
    pub bus: Option<String>,
    /// The bus's secret file; default `AETHER_SECRET_FILE`, else the one
    /// this machine's node was started with. Needed to find a node on
    /// another machine.
    pub secret_file: Option<PathBuf>,
    /// Milliseconds to look for a node on the LAN when this machine runs
    /// none, 100 to 60,000. Default 3,000.
    #[serde(rename = "wait_ms", with = "super::millis")]
    pub wait: Duration,
    /// The network interface to look on (default: every one).
    pub interface: Option<String>,
}

impl Default for LanConfig {
    fn default() -> Self {
        Self {
            bus: None,
            secret_file: None,
            wait: Duration::from_millis(3_000),
            interface: None,
        }
    }
}

impl LanConfig {
    /// Checks every field; the error names the first bad one.
    pub fn validate(&self) -> Result<(), ConfigError> {
        check(
            (100..=60_000).contains(&super::as_ms(self.wait)),
            "lan.wait_ms",
            super::as_ms(self.wait).to_string(),
            "must be 100 to 60000 (milliseconds)",
        )
    }
}
