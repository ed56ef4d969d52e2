//! Secrets: values that must never be printed.

use std::fmt;

use serde::{Deserialize, Deserializer};

/// A secret (a token, a password, a key seed). Its `Debug` and `Display`
/// print `[redacted]`; only [`Secret::expose`] gives the value, so a secret
/// cannot reach a log or a metric by accident.
///
/// ```
/// use aether_core::Secret;
///
/// let token = Secret::new("s3cr3t");
/// assert_eq!(format!("{token:?} {token}"), "Secret([redacted]) [redacted]");
/// assert_eq!(token.expose(), "s3cr3t");
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps `value`.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value itself. Call it only where the value is used.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Secret)
    }
}

impl serde::Serialize for Secret {
    /// Serializes as `[redacted]`: a configuration written back out keeps
    /// no secret.
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str("[redacted]")
    }
}
