//! Layered settings, read with the `config` crate, in this order (each
//! layer overrides the one before):
//!
//! 1. `<dir>/default.toml`, which must exist;
//! 2. `<dir>/<AETHER_ENV>.toml` when `AETHER_ENV` is set (for example
//!    `AETHER_ENV=production` reads `config/production.toml`); a missing
//!    overlay is an error that names it;
//! 3. environment variables `AETHER__<SECTION>__<KEY>`: double underscores
//!    separate the levels, names are case-insensitive, and text converts to
//!    the type of the setting (`AETHER__AETHER__MIN_AMPLITUDE=0.05`,
//!    `AETHER__SERVICE__NOISE_FLOOR=0.2`,
//!    `AETHER__AETHER__NATS__RETRY_ON_INITIAL_CONNECT=true`,
//!    `AETHER__AETHER__HOPPING__SECRET=...`). A list setting takes
//!    comma-separated items (`AETHER__AETHER__NATS__URLS=nats://a:4222,nats://b:4222`);
//!    the list keys are [`LIST_KEYS`] plus those added with
//!    [`SettingsSource::list_key`]. An empty variable counts as unset.
//!
//! A program describes its settings as one `serde` struct made of sections
//! (`aether: AetherConfig`, `log: LogSettings`, ...), with
//! `#[serde(default, deny_unknown_fields)]` so that a missing section takes
//! its defaults and a typo is refused, and implements [`Validate`] with
//! [`validate_section`]. [`load`] reads the layers, deserializes and
//! validates; every refusal names the key and the value:
//!
//! ```
//! use aether_core::AetherConfig;
//! use aether_ops::settings::{LogSettings, SettingsError, SettingsSource, Validate, validate_section};
//!
//! #[derive(Debug, Default, serde::Deserialize)]
//! #[serde(default, deny_unknown_fields)]
//! struct Settings {
//!     aether: AetherConfig,
//!     log: LogSettings,
//! }
//!
//! impl Validate for Settings {
//!     fn validate(&self) -> Result<(), SettingsError> {
//!         validate_section("aether", &self.aether)?;
//!         validate_section("log", &self.log)
//!     }
//! }
//!
//! let dir = tempfile::tempdir()?;
//! std::fs::write(dir.path().join("default.toml"), "[aether]\nmin_amplitude = 0.01\n")?;
//! let source = SettingsSource::new(dir.path(), None, [("AETHER__LOG__LEVEL", "debug")]);
//! let settings: Settings = source.load()?;
//! assert_eq!((settings.aether.min_amplitude, settings.log.level.as_str()), (0.01, "debug"));
//!
//! let source = SettingsSource::new(dir.path(), None, [("AETHER__AETHER__MIN_AMPLITUDE", "2")]);
//! let err = source.load::<Settings>().unwrap_err();
//! assert_eq!(err.to_string(), "invalid setting aether.min_amplitude = 2: must be in [0, 1)");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod client;
mod error;
mod sections;

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
};

use serde::de::DeserializeOwned;

pub use error::{SettingsError, SettingsErrorKind};
pub use sections::{
    LogFormat, LogSettings, ProgramServiceSettings, ServiceMedium, ServiceSettings,
    TelemetrySettings,
};

/// The variable that names the overlay (`AETHER_ENV=production` reads
/// `production.toml` over `default.toml`).
pub const ENVIRONMENT_VARIABLE: &str = "AETHER_ENV";

/// Environment variables starting with this (then `<SECTION>__<KEY>`) set
/// settings.
pub const VARIABLE_PREFIX: &str = "AETHER__";

/// Keys read from the environment as comma-separated lists.
pub const LIST_KEYS: &[&str] = &["aether.nats.urls"];

/// Settings that check themselves: a program refuses to start, or a hot
/// reload is refused, when this fails.
pub trait Validate {
    /// `Ok` if every value is in range; else the error naming the first bad
    /// key (relative to `self`) and its value.
    fn validate(&self) -> Result<(), SettingsError>;
}

impl Validate for aether_core::AetherConfig {
    fn validate(&self) -> Result<(), SettingsError> {
        aether_core::AetherConfig::validate(self).map_err(SettingsError::from)
    }
}

impl<T: Validate> Validate for Option<T> {
    fn validate(&self) -> Result<(), SettingsError> {
        self.as_ref().map_or(Ok(()), Validate::validate)
    }
}

/// Validates the section `name` of a program's settings: its errors name
/// `name.key`.
pub fn validate_section<T: Validate + ?Sized>(
    name: &str,
    section: &T,
) -> Result<(), SettingsError> {
    section.validate().map_err(|err| err.within(name))
}

/// Reads `dir/default.toml`, the `AETHER_ENV` overlay and the `AETHER__…`
/// variables of this process, then validates
/// ([`SettingsSource::from_process`]).
pub fn load<T: DeserializeOwned + Validate>(dir: &Path) -> Result<T, SettingsError> {
    SettingsSource::from_process(dir).load()
}

/// Like [`load`] with the overlay and the variables given (for tests, and
/// for programs that take them from elsewhere).
pub fn load_with<T, K, V>(
    dir: &Path,
    environment: Option<&str>,
    variables: impl IntoIterator<Item = (K, V)>,
) -> Result<T, SettingsError>
where
    T: DeserializeOwned + Validate,
    K: Into<String>,
    V: Into<String>,
{
    SettingsSource::new(dir, environment, variables).load()
}

/// Where settings come from: a directory of TOML files, the name of the
/// overlay, and the variables. Cheap to clone; [`crate::reload::watch`]
/// keeps one to read the settings again.
#[derive(Clone, Debug)]
pub struct SettingsSource {
    dir: PathBuf,
    environment: Option<String>,
    /// `None`: the process's variables, read at each load.
    variables: Option<HashMap<String, String>>,
    list_keys: Vec<String>,
}

impl SettingsSource {
    /// The files in `dir`, the overlay named by this process's `AETHER_ENV`
    /// (unset or empty: none) and this process's `AETHER__…` variables.
    pub fn from_process(dir: impl Into<PathBuf>) -> Self {
        let environment =
            std::env::var_os(ENVIRONMENT_VARIABLE).map(|name| name.to_string_lossy().into_owned());
        Self::with_parts(dir.into(), environment, None)
    }

    /// The files in `dir`, the overlay `environment` and the given
    /// variables only (names as in the environment: `AETHER__LOG__LEVEL`;
    /// others are ignored).
    pub fn new<K: Into<String>, V: Into<String>>(
        dir: impl Into<PathBuf>,
        environment: Option<&str>,
        variables: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        let variables = variables
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect();
        Self::with_parts(dir.into(), environment.map(str::to_string), Some(variables))
    }

    fn with_parts(
        dir: PathBuf,
        environment: Option<String>,
        variables: Option<HashMap<String, String>>,
    ) -> Self {
        Self {
            dir,
            environment: environment.filter(|name| !name.is_empty()),
            variables,
            list_keys: LIST_KEYS.iter().map(|key| key.to_string()).collect(),
        }
    }

    /// Also reads the variable of `key` (dotted, lower case:
    /// `service.peers`) as a comma-separated list.
    #[must_use]
    pub fn list_key(mut self, key: &str) -> Self {
        self.list_keys.push(key.to_ascii_lowercase());
        self
    }

    /// The overlay's name (`AETHER_ENV`), if any.
    pub fn environment(&self) -> Option<&str> {
        self.environment.as_deref()
    }

    /// The files read, in order: `default.toml`, then the overlay. Hot
    /// reload watches them.
    pub fn files(&self) -> Vec<PathBuf> {
        let mut files = vec![self.dir.join("default.toml")];
        if let Some(name) = &self.environment {
            files.push(self.dir.join(format!("{name}.toml")));
        }
        files
    }

    /// Reads every layer, deserializes and validates.
    pub fn load<T: DeserializeOwned + Validate>(&self) -> Result<T, SettingsError> {
        let settings: T = self.load_unvalidated()?;
        settings.validate()?;
        Ok(settings)
    }

    /// Reads every layer and deserializes, without [`Validate`].
    pub fn load_unvalidated<T: DeserializeOwned>(&self) -> Result<T, SettingsError> {
        if let Some(name) = &self.environment
            && (name.is_empty()
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'))
        {
            return Err(SettingsError::new(
                SettingsErrorKind::BadEnvironment,
                None,
                Some(name.clone()),
                "must be a plain name: letters, digits, '_' and '-'".into(),
            ));
        }
        let mut builder = config::Config::builder();
        for (layer, path) in self.files().into_iter().enumerate() {
            if !path.is_file() {
                let why = match &self.environment {
                    Some(name) if layer > 0 => format!(" (named by {ENVIRONMENT_VARIABLE}={name})"),
                    _ => String::new(),
                };
                return Err(SettingsError::new(
                    SettingsErrorKind::MissingFile,
                    None,
                    None,
                    format!("{} not found{why}", path.display()),
                ));
            }
            builder = builder.add_source(config::File::from(path).format(config::FileFormat::Toml));
        }
        let (scalars, lists) = self.variables()?;
        for (key, items) in lists {
            builder = builder.set_override(key, items)?;
        }
        builder = builder.add_source(
            config::Environment::with_prefix("AETHER")
                .prefix_separator("__")
                .separator("__")
                .ignore_empty(true)
                .source(Some(scalars)),
        );
        Ok(builder.build()?.try_deserialize()?)
    }

    /// The `AETHER__…` variables: the scalars as they are, for the
    /// `config` crate; the lists split, by dotted key.
    #[allow(clippy::type_complexity)]
    fn variables(
        &self,
    ) -> Result<(HashMap<String, String>, Vec<(String, Vec<String>)>), SettingsError> {
        let all: Vec<(String, String)> = match &self.variables {
            Some(variables) => variables
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            None => {
                let mut all = Vec::new();
                for (name, value) in std::env::vars_os() {
                    let Some(name) = name.to_str() else { continue };
                    if !is_setting_variable(name) {
                        continue;
                    }
                    let value = value.into_string().map_err(|_| {
                        SettingsError::new(
                            SettingsErrorKind::Unreadable,
                            None,
                            None,
                            format!("the environment variable {name} is not UTF-8"),
                        )
                    })?;
                    all.push((name.to_string(), value));
                }
                all
            }
        };
        let mut scalars = HashMap::new();
        let mut lists = Vec::new();
        for (name, value) in all {
            if !is_setting_variable(&name) || value.is_empty() {
                continue;
            }
            let key = name[VARIABLE_PREFIX.len()..]
                .to_ascii_lowercase()
                .replace("__", ".");
            if self.list_keys.contains(&key) {
                let items = value
                    .split(',')
                    .map(str::trim)
                    .filter(|item| !item.is_empty())
                    .map(str::to_string)
                    .collect();
                lists.push((key, items));
            } else {
                scalars.insert(name, value);
            }
        }
        Ok((scalars, lists))
    }
}

fn is_setting_variable(name: &str) -> bool {
    name.len() > VARIABLE_PREFIX.len()
        && name.is_char_boundary(VARIABLE_PREFIX.len())
        && name[..VARIABLE_PREFIX.len()].eq_ignore_ascii_case(VARIABLE_PREFIX)
}

#[cfg(test)]
mod tests;
