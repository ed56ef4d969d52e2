//! Why settings were refused, with the key and the value.

use std::fmt;

/// What kind of problem a [`SettingsError`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SettingsErrorKind {
    /// A settings file is missing: `default.toml`, or the overlay that
    /// `AETHER_ENV` names.
    MissingFile,
    /// A file cannot be read or is not valid TOML, or an environment
    /// variable is not UTF-8.
    Unreadable,
    /// `AETHER_ENV` is not a plain name (letters, digits, `_`, `-`).
    BadEnvironment,
    /// A key that no section knows: a typo, or a setting that moved.
    UnknownKey,
    /// A required key is missing.
    MissingKey,
    /// A value of the wrong type, like text where a number is expected.
    WrongType,
    /// A value of the right type that is out of range or malformed.
    Invalid,
}

/// Settings were refused. The message names the key (dotted, from the
/// top: `aether.min_amplitude`) and the value whenever they are known, and
/// where the value came from (a file or the environment) when the `config`
/// crate says so.
///
/// ```
/// use aether_ops::settings::{SettingsError, SettingsErrorKind};
///
/// let err = SettingsError::invalid("noise_floor", "1.5", "must be in [0, 1]").within("service");
/// assert_eq!(err.kind(), SettingsErrorKind::Invalid);
/// assert_eq!(err.key(), Some("service.noise_floor"));
/// assert_eq!(err.value(), Some("1.5"));
/// assert_eq!(err.to_string(), "invalid setting service.noise_floor = 1.5: must be in [0, 1]");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SettingsError {
    kind: SettingsErrorKind,
    key: Option<String>,
    value: Option<String>,
    detail: String,
    origin: Option<String>,
}

impl SettingsError {
    /// `key` has a `value` that breaks `rule` (for the `Validate` impls of
    /// programs' own sections). The key is relative to the section;
    /// [`SettingsError::within`] prefixes it.
    pub fn invalid(
        key: impl Into<String>,
        value: impl Into<String>,
        rule: impl Into<String>,
    ) -> Self {
        Self::new(
            SettingsErrorKind::Invalid,
            Some(key.into()),
            Some(value.into()),
            rule.into(),
        )
    }

    pub(crate) fn new(
        kind: SettingsErrorKind,
        key: Option<String>,
        value: Option<String>,
        detail: String,
    ) -> Self {
        Self {
            kind,
            key,
            value,
            detail,
            origin: None,
        }
    }

    pub(crate) fn with_origin(mut self, origin: Option<String>) -> Self {
        if origin.is_some() {
            self.origin = origin;
        }
        self
    }

    /// The same error, its key put under `section` (`level` within `log`
    /// becomes `log.level`).
    #[must_use]
    pub fn within(mut self, section: &str) -> Self {
        self.key = Some(match self.key.take() {
            Some(key) if !key.is_empty() => format!("{section}.{key}"),
            _ => section.to_string(),
        });
        self
    }

    /// What kind of problem it is.
    pub fn kind(&self) -> SettingsErrorKind {
        self.kind
    }

    /// The dotted key of the bad setting, when known.
    pub fn key(&self) -> Option<&str> {
        self.key.as_deref()
    }

    /// The refused value, as text, when known (secrets are never shown:
    /// `aether_core::Secret` prints `[redacted]`).
    pub fn value(&self) -> Option<&str> {
        self.value.as_deref()
    }

    /// Where the value came from (a file's path, or "the environment"),
    /// when known.
    pub fn origin(&self) -> Option<&str> {
        self.origin.as_deref()
    }
}

impl fmt::Display for SettingsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let key = self.key.as_deref().unwrap_or("(top level)");
        let detail = &self.detail;
        match (self.kind, self.value.as_deref()) {
            (SettingsErrorKind::MissingFile, _) => write!(f, "settings file {detail}")?,
            (SettingsErrorKind::Unreadable, _) => write!(f, "cannot read settings: {detail}")?,
            (SettingsErrorKind::BadEnvironment, value) => {
                write!(f, "AETHER_ENV = {:?}: {detail}", value.unwrap_or(""))?
            }
            (SettingsErrorKind::UnknownKey, _) => write!(f, "unknown setting {key}: {detail}")?,
            (SettingsErrorKind::MissingKey, _) => write!(f, "missing setting {key}")?,
            (SettingsErrorKind::WrongType, Some(value)) => write!(
                f,
                "wrong type for setting {key} = {value}: expected {detail}"
            )?,
            (SettingsErrorKind::WrongType, None) => {
                write!(f, "wrong type for setting {key}: expected {detail}")?
            }
            (SettingsErrorKind::Invalid, Some(value)) => {
                write!(f, "invalid setting {key} = {value}: {detail}")?
            }
            (SettingsErrorKind::Invalid, None) => write!(f, "invalid setting {key}: {detail}")?,
        }
        if let Some(origin) = &self.origin {
            write!(f, " (from {origin})")?;
        }
        Ok(())
    }
}

impl std::error::Error for SettingsError {}

impl From<aether_core::ConfigError> for SettingsError {
    /// Keeps the key, the value and the rule; the key is relative to
    /// `AetherConfig` (put it under its section with
    /// [`SettingsError::within`]).
    fn from(err: aether_core::ConfigError) -> Self {
        let shown = err.to_string();
        let head = format!("invalid configuration: {} = {} ", err.key(), err.value());
        let rule = shown.strip_prefix(&head).unwrap_or(&shown).to_string();
        Self::invalid(err.key(), err.value(), rule)
    }
}

impl From<config::ConfigError> for SettingsError {
    fn from(err: config::ConfigError) -> Self {
        use config::ConfigError as E;
        match err {
            E::Type {
                origin,
                unexpected,
                expected,
                key,
            } => Self::new(
                SettingsErrorKind::WrongType,
                key,
                Some(plain_value(&unexpected.to_string())),
                expected.to_string(),
            )
            .with_origin(origin),
            E::At { error, origin, key } => {
                let inner = Self::from(*error).with_origin(origin);
                match key {
                    Some(key) if !key.is_empty() => inner.within(&key),
                    _ => inner,
                }
            }
            E::NotFound(key) => Self::new(
                SettingsErrorKind::MissingKey,
                Some(key),
                None,
                String::new(),
            ),
            E::Message(message) => from_serde_message(&message),
            E::FileParse { uri, cause } => {
                Self::new(SettingsErrorKind::Unreadable, None, None, cause.to_string())
                    .with_origin(uri)
            }
            other => Self::new(SettingsErrorKind::Unreadable, None, None, other.to_string()),
        }
    }
}

/// Sorts out the messages serde writes through `Error::custom`: unknown
/// fields (the field becomes the key; the caller adds the section), unknown
/// enum variants and invalid values.
fn from_serde_message(message: &str) -> SettingsError {
    if let Some(rest) = message.strip_prefix("unknown field ") {
        let (name, detail) = quoted(rest);
        return SettingsError::new(SettingsErrorKind::UnknownKey, Some(name), None, detail);
    }
    if let Some(rest) = message.strip_prefix("unknown variant ") {
        let (name, detail) = quoted(rest);
        return SettingsError::new(SettingsErrorKind::Invalid, None, Some(name), detail);
    }
    if let Some((name, variant)) = message
        .strip_prefix("enum ")
        .and_then(|rest| rest.split_once(" does not have variant constructor "))
    {
        return SettingsError::new(
            SettingsErrorKind::Invalid,
            None,
            Some(variant.to_string()),
            format!("not a choice of {name}"),
        );
    }
    if let Some(rest) = message.strip_prefix("invalid type: ") {
        let (found, expected) = rest
            .split_once(", expected ")
            .unwrap_or((rest, "another type"));
        return SettingsError::new(
            SettingsErrorKind::WrongType,
            None,
            Some(plain_value(found)),
            expected.to_string(),
        );
    }
    SettingsError::new(SettingsErrorKind::Invalid, None, None, message.to_string())
}

/// `` `name`, expected one of ... `` → (`name`, `expected one of ...`).
fn quoted(text: &str) -> (String, String) {
    let mut parts = text.splitn(3, '`');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(""), Some(name), Some(rest)) => (
            name.to_string(),
            rest.trim_start_matches([',', ' ']).to_string(),
        ),
        _ => (text.to_string(), String::new()),
    }
}

/// The value out of serde's description of it: `` floating point `2.5` ``
/// → `2.5`, `string "abc"` → `abc`.
fn plain_value(described: &str) -> String {
    let mut parts = described.splitn(3, '`');
    if let (Some(_), Some(value), Some(_)) = (parts.next(), parts.next(), parts.next()) {
        return value.to_string();
    }
    if let Some(text) = described.strip_prefix("string ") {
        return text.trim_matches('"').to_string();
    }
    described.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aether_config_errors_keep_key_value_and_rule() {
        let bad = aether_core::AetherConfig {
            min_amplitude: 2.0,
            ..Default::default()
        };
        let err = SettingsError::from(bad.validate().unwrap_err()).within("aether");
        assert_eq!(err.key(), Some("aether.min_amplitude"));
        assert_eq!(err.value(), Some("2"));
        assert_eq!(
            err.to_string(),
            "invalid setting aether.min_amplitude = 2: must be in [0, 1)"
        );
    }

    #[test]
    fn serde_messages_are_sorted_out() {
        let err = from_serde_message("unknown field `nois_floor`, expected one of `noise_floor`")
            .within("service");
        assert_eq!(err.kind(), SettingsErrorKind::UnknownKey);
        assert_eq!(err.key(), Some("service.nois_floor"));
        assert_eq!(
            err.to_string(),
            "unknown setting service.nois_floor: expected one of `noise_floor`"
        );
        let err = from_serde_message("unknown variant `xml`, expected `human` or `json`")
            .within("log.format");
        assert_eq!((err.key(), err.value()), (Some("log.format"), Some("xml")));
        let err =
            from_serde_message("enum Mode does not have variant constructor fast").within("x.mode");
        assert_eq!(
            err.to_string(),
            "invalid setting x.mode = fast: not a choice of Mode"
        );
        assert_eq!(plain_value("floating point `2.5`"), "2.5");
        assert_eq!(plain_value("string \"abc\""), "abc");
    }
}
