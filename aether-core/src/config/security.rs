//! Settings of source authentication and channel access control.

use std::{collections::BTreeMap, path::PathBuf};

use serde::{Deserialize, Serialize};

use super::{ConfigError, check};
use crate::{Channel, Secret};

/// Shortest signing key accepted, in bytes. Use 32 random bytes.
pub const MIN_SIGNING_KEY_BYTES: usize = 16;

/// Who may emit and resonate on what, and how a receiver knows a wave's
/// source: read from [`AetherConfig::security`](crate::AetherConfig::security),
/// the `[aether.security]` table. Everything is off by default.
///
/// - **Signatures.** A vibrator whose name has a key in `signing_keys` (or
///   `signing_key_files`) signs every wave it emits over NATS
///   (HMAC-SHA256 of the subject and the envelope, `wire::encode_signed`).
///   An arriving wave whose source has a key here must carry a valid
///   signature, or it is dropped as [`DropReason::Forged`]. With
///   `require_signatures`, a wave from a source without a key here is
///   dropped too: nobody can speak in a name they hold no key for.
/// - **ACL.** With at least one `acl` rule, a vibrator may emit only on
///   channels an `emit` pattern of one of its rules matches, and resonate
///   only on patterns a `resonate` pattern covers; arriving waves are
///   checked against their source's rules too ([`DropReason::Denied`]).
///   Channels whose first token starts with `_` (replies, reflections,
///   hopping) are the bus's own and are not subject to rules.
///
/// ```
/// use aether_core::{AetherConfig, Secret, config::{AclRule, SecurityConfig}};
///
/// let mut security = SecurityConfig::default();
/// security.signing_keys.insert("alpha".into(), Secret::new("32 random bytes from a vault...."));
/// security.require_signatures = true;
/// security.acl.push(AclRule {
///     source: "alpha".into(),
///     emit: vec!["orders.*".into()],
///     resonate: vec!["inventory.*".into()],
/// });
/// AetherConfig { security, ..Default::default() }.validate()?;
/// # Ok::<(), aether_core::ConfigError>(())
/// ```
///
/// [`DropReason::Forged`]: crate::DropReason::Forged
/// [`DropReason::Denied`]: crate::DropReason::Denied
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SecurityConfig {
    /// Signing keys by source (vibrator name), at least 16 bytes each. Keep
    /// them out of files in the repository: set them from the environment
    /// or use `signing_key_files`. Print as `[redacted]`.
    pub signing_keys: BTreeMap<String, Secret>,
    /// Files holding signing keys, by source: the file's bytes, without a
    /// trailing newline, are the key. Read when the aether starts.
    pub signing_key_files: BTreeMap<String, PathBuf>,
    /// Drop arriving waves whose source has no key here (unsigned, or
    /// signed by a name nobody vouches for). Needs at least one key.
    pub require_signatures: bool,
    /// Access rules; none (the default) allows everything.
    pub acl: Vec<AclRule>,
}

/// What one source may do. A source with several rules may do what any of
/// them allows.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AclRule {
    /// The vibrator name the rule is for, or `*` for every source.
    pub source: String,
    /// Patterns of the channels it may emit on.
    #[serde(default)]
    pub emit: Vec<String>,
    /// Patterns it may resonate within: a pattern it resonates on must be
    /// covered by one of these (`orders.*` covers `orders.eu.*` and
    /// `orders.created`, not `*`).
    #[serde(default)]
    pub resonate: Vec<String>,
}

/// The bus's own subjects under a prefix, which every client needs: request
/// replies, reflections, delivery probes and hopping.
const SYSTEM_TOKENS: [&str; 4] = ["_INBOX", "_reflect", "_probe", "_hop"];

/// NATS server permissions for one client: the subjects it may publish and
/// subscribe to ([`AclRule::nats_permissions`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NatsPermissions {
    /// Subjects the client may publish to.
    pub publish: Vec<String>,
    /// Subjects the client may subscribe to.
    pub subscribe: Vec<String>,
}

impl NatsPermissions {
    /// The `permissions` block of a user in a nats-server configuration
    /// file.
    pub fn to_server_config(&self) -> String {
        let list = |subjects: &[String]| {
            subjects
                .iter()
                .map(|s| format!("{s:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        format!(
            "permissions: {{ publish: {{ allow: [{}] }}, subscribe: {{ allow: [{}] }} }}",
            list(&self.publish),
            list(&self.subscribe)
        )
    }
}

impl AclRule {
    /// The permissions that make a NATS server enforce this rule for the
    /// client that runs the vibrator `source`, with subject prefix `prefix`:
    /// its emit patterns as publish subjects, its resonate patterns as
    /// subscribe subjects, and the bus's own subjects (`<prefix>._INBOX.>`,
    /// `._reflect.>`, `._probe.>`, `._hop.>`) on both.
    ///
    /// ```
    /// use aether_core::config::AclRule;
    ///
    /// let rule = AclRule {
    ///     source: "alpha".into(),
    ///     emit: vec!["orders.*".into()],
    ///     resonate: vec!["inventory.*".into()],
    /// };
    /// let permissions = rule.nats_permissions("aether");
    /// assert_eq!(permissions.publish[0], "aether.orders.>");
    /// assert_eq!(permissions.subscribe[0], "aether.inventory.>");
    /// ```
    pub fn nats_permissions(&self, prefix: &str) -> NatsPermissions {
        let subjects = |patterns: &[String]| {
            let mut out: Vec<String> = patterns
                .iter()
                .map(|p| crate::subject::pattern_subject(prefix, &Channel::new(p)))
                .collect();
            out.extend(SYSTEM_TOKENS.iter().map(|t| format!("{prefix}.{t}.>")));
            out
        };
        NatsPermissions {
            publish: subjects(&self.emit),
            subscribe: subjects(&self.resonate),
        }
    }
}

impl SecurityConfig {
    /// Whether anything is configured (signatures or rules).
    pub fn is_enabled(&self) -> bool {
        !self.signing_keys.is_empty()
            || !self.signing_key_files.is_empty()
            || self.require_signatures
            || !self.acl.is_empty()
    }

    /// Checks every field; the error names the first bad one and never
    /// holds a key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (source, key) in &self.signing_keys {
            check(
                is_source_name(source),
                "security.signing_keys",
                source.clone(),
                "is not a vibrator name (1 to 64 of A-Z a-z 0-9 _ - .)",
            )?;
            check(
                key.expose().len() >= MIN_SIGNING_KEY_BYTES,
                "security.signing_keys",
                format!("{source} = [redacted]"),
                "is shorter than 16 bytes; use 32 random bytes",
            )?;
        }
        for source in self.signing_key_files.keys() {
            check(
                is_source_name(source),
                "security.signing_key_files",
                source.clone(),
                "is not a vibrator name (1 to 64 of A-Z a-z 0-9 _ - .)",
            )?;
            check(
                !self.signing_keys.contains_key(source),
                "security.signing_key_files",
                source.clone(),
                "also has a key in security.signing_keys; give one",
            )?;
        }
        check(
            !self.require_signatures
                || !self.signing_keys.is_empty()
                || !self.signing_key_files.is_empty(),
            "security.require_signatures",
            "true".into(),
            "needs at least one signing key, or every wave would be dropped",
        )?;
        for rule in &self.acl {
            check(
                rule.source == "*" || is_source_name(&rule.source),
                "security.acl.source",
                rule.source.clone(),
                "is not a vibrator name or *",
            )?;
            for pattern in rule.emit.iter() {
                check(
                    Channel::new(pattern).is_valid(),
                    "security.acl.emit",
                    pattern.clone(),
                    "is not a valid channel or pattern",
                )?;
            }
            for pattern in rule.resonate.iter() {
                check(
                    Channel::new(pattern).is_valid(),
                    "security.acl.resonate",
                    pattern.clone(),
                    "is not a valid channel or pattern",
                )?;
            }
        }
        Ok(())
    }
}

/// Whether `name` is a vibrator name (the wire's source alphabet).
fn is_source_name(name: &str) -> bool {
    (1..=crate::vibrator::MAX_NAME_BYTES).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b))
}
