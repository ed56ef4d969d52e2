//! What a client of the bus that is not one of the programs (the command
//! line, a Python script) takes from a settings folder, and the
//! credentials and TLS files it is given over them.

use std::path::{Path, PathBuf};

use aether_core::{AetherConfig, Secret};
use serde::Deserialize;

use super::{SettingsError, SettingsSource, Validate};

/// The part of the programs' settings a client reads: `[aether]`; the
/// programs' own sections are passed over.
#[derive(Debug, Default, Deserialize)]
struct AetherOnly {
    #[serde(default)]
    aether: AetherConfig,
}

impl Validate for AetherOnly {
    fn validate(&self) -> Result<(), SettingsError> {
        super::validate_section("aether", &self.aether)
    }
}

/// The `[aether]` section of the settings folder `dir` (`default.toml`, the
/// `AETHER_ENV` overlay, then `AETHER__AETHER__...` variables).
pub fn aether_section(dir: &Path) -> Result<AetherConfig, SettingsError> {
    Ok(SettingsSource::from_process(dir)
        .load::<AetherOnly>()?
        .aether)
}

/// Credentials and TLS files given to a client, over its settings.
#[derive(Clone, Debug, Default)]
pub struct Access {
    /// A NATS credentials file (JWT and NKey seed).
    pub creds: Option<PathBuf>,
    /// A NATS token.
    pub token: Option<String>,
    /// A NATS user (with `password`).
    pub user: Option<String>,
    /// The user's password.
    pub password: Option<String>,
    /// Require TLS, trusting this CA for the server's certificate.
    pub tls_ca: Option<PathBuf>,
    /// A client certificate, for servers that verify clients (with
    /// `tls_key`).
    pub tls_cert: Option<PathBuf>,
    /// The client certificate's key.
    pub tls_key: Option<PathBuf>,
}

impl Access {
    /// Puts what was given over `config`.
    pub fn apply(&self, config: &mut AetherConfig) {
        let auth = &mut config.nats.auth;
        if let Some(creds) = &self.creds {
            auth.credentials_file = Some(creds.clone());
        }
        if let Some(token) = &self.token {
            auth.token = Some(Secret::new(token.clone()));
        }
        if let Some(user) = &self.user {
            auth.user = Some(user.clone());
        }
        if let Some(password) = &self.password {
            auth.password = Some(Secret::new(password.clone()));
        }
        let tls = &mut config.nats.tls;
        if let Some(ca) = &self.tls_ca {
            tls.required = true;
            tls.ca_file = Some(ca.clone());
        }
        if let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) {
            tls.required = true;
            tls.cert_file = Some(cert.clone());
            tls.key_file = Some(key.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_is_given_goes_over_the_settings() {
        let mut config = AetherConfig::default();
        config.nats.auth.user = Some("from-settings".into());
        Access {
            user: Some("given".into()),
            password: Some("pw".into()),
            tls_ca: Some("ca.pem".into()),
            tls_cert: Some("cert.pem".into()),
            ..Access::default()
        }
        .apply(&mut config);
        assert_eq!(config.nats.auth.user.as_deref(), Some("given"));
        assert!(config.nats.auth.password.is_some());
        assert!(config.nats.tls.required);
        assert_eq!(
            config.nats.tls.ca_file.as_deref(),
            Some(Path::new("ca.pem"))
        );
        // A certificate without its key is not used.
        assert_eq!(config.nats.tls.cert_file, None);
    }
}
