//! Settings of source authentication and channel access control.

use std::time::Duration;
use std::{collections::BTreeMap, path::PathBuf};

use serde::{Deserialize, Serialize};

use super::{ConfigError, DurabilityConfig, check};
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
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SecurityConfig {
    /// Signing keys by source (vibrator name), at least 16 bytes each. Keep
    /// them out of files in the repository: set them from the environment
    /// or use `signing_key_files`. Print as `[redacted]`.
    pub signing_keys: BTreeMap<String, Secret>,
    /// Files holding signing keys, by source: the file's bytes, without a
    /// trailing newline, are the key. Read when the aether starts.
    pub signing_key_files: BTreeMap<String, PathBuf>,
    /// A key every source's signing key is derived from (an HMAC-SHA256
    /// of the source's name under it), for a bus whose members are all
    /// trusted alike: a signature then proves that its sender holds this
    /// key, not who it is. A source named in `signing_keys` or
    /// `signing_key_files` signs with its own key instead. A bus found on
    /// the LAN (`Aether::discover`) with `require_signatures` and no keys
    /// uses one derived from its secret. Prints as `[redacted]`.
    pub signing_key_base: Option<Secret>,
    /// Drop arriving waves whose source has no key here (unsigned, or
    /// signed by a name nobody vouches for). Needs at least one key (or
    /// `signing_key_base`).
    pub require_signatures: bool,
    /// Access rules; none (the default) allows everything.
    pub acl: Vec<AclRule>,
    /// Where signatures are required, each subscription refuses a wave it
    /// has already taken, or one stamped more than this far from its own
    /// clock, as a replay ([`DropReason::Replay`](crate::DropReason::Replay)), in milliseconds. Clocks
    /// of the bus must agree within it. 1,000 to 3,600,000; default 30,000.
    #[serde(rename = "replay_window_ms", with = "super::millis")]
    pub replay_window: Duration,
    /// Most waves each subscription remembers for the replay window; past
    /// it, waves stamped before the oldest one remembered are refused too
    /// (so forgetting never lets a replay through). 1,024 to 10,000,000;
    /// default 65,536 (about 40 bytes each).
    ///
    /// [`DropReason::Replay`]: crate::DropReason::Replay
    pub replay_memory: usize,
    /// Channels whose payloads travel sealed (XChaCha20-Poly1305), and
    /// their keys. A receiver without the key, or with another, cannot
    /// read them: it drops them, counted as
    /// [`DropReason::Undecryptable`](crate::DropReason::Undecryptable).
    pub encryption: Vec<EncryptionRule>,
}

/// Payloads of some channels sealed with one key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EncryptionRule {
    /// Patterns of the channels (as they travel) whose payloads are sealed.
    pub channels: Vec<String>,
    /// The key: 64 hexadecimal digits (32 bytes). Give exactly one of
    /// `key`, `key_file` and `key_env` (on a bus found on the LAN, none:
    /// the key derived from the bus's secret).
    #[serde(default)]
    pub key: Option<Secret>,
    /// A file holding the key (64 hexadecimal digits), read when the aether
    /// starts.
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// An environment variable holding the key, read when the aether
    /// starts.
    #[serde(default)]
    pub key_env: Option<String>,
}

impl Default for SecurityConfig {
    fn default() -> Self {
        Self {
            signing_keys: BTreeMap::new(),
            signing_key_files: BTreeMap::new(),
            signing_key_base: None,
            require_signatures: false,
            acl: Vec::new(),
            replay_window: Duration::from_millis(30_000),
            replay_memory: 65_536,
            encryption: Vec::new(),
        }
    }
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

/// NATS server permissions for one client: the subjects it may publish and
/// subscribe to ([`AclRule::nats_permissions`]), and whether it may answer
/// the requests it receives (`allow_responses`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NatsPermissions {
    /// Subjects the client may publish to.
    pub publish: Vec<String>,
    /// Subjects the client may subscribe to.
    pub subscribe: Vec<String>,
    /// Whether it may publish a reply to the reply subject of a message it
    /// received (once, as NATS's `allow_responses` grants): how replies
    /// reach another user's inbox without a permission on every inbox.
    pub allow_responses: bool,
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
            "permissions: {{ publish: {{ allow: [{}] }}, subscribe: {{ allow: [{}] }}, \
             allow_responses: {} }}",
            list(&self.publish),
            list(&self.subscribe),
            self.allow_responses
        )
    }
}

/// A base channel that the client hops on, with its wire channels (from
/// `aether_core::hopping::HopKey::wire_channel` for every hop), for
/// [`AclRule::nats_permissions_hopping`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HoppingBase {
    /// The base channel, as the ACL names it.
    pub base: String,
    /// Its wire channels (`_hop.<32 hex digits>`), one per hop.
    pub wire_channels: Vec<String>,
}

impl NatsPermissions {
    /// Adds what the durable channels of `rule`'s user need of JetStream,
    /// and nothing more, for the stream of `durability` under subject
    /// prefix `prefix`:
    ///
    /// - the stream: look it up (`$JS.API.STREAM.INFO.<stream>`); never
    ///   create, update, purge or delete it, nor read its messages directly
    ///   ([`NatsPermissions::managing_stream`] is for the one user that
    ///   manages it; run the others with `durability.manage_stream = false`);
    /// - its consumers: only those of the rule's resonate patterns that lie
    ///   within a durable channel, and of the durable channels that lie
    ///   within one of them (a gateway resonating on `*` reads each durable
    ///   channel through a consumer of its own), by the names the aether
    ///   gives them
    ///   ([`crate::subject::durable_consumer_name`]): one for the source's
    ///   vibrator, and one for each of `groups` (the groups its vibrators
    ///   resonate in). For each: create it with that filter only
    ///   (`$JS.API.CONSUMER.CREATE.<stream>.<name>.<filter>`; the server
    ///   refuses a filter in the request that differs from the subject's),
    ///   look it up, pull from it, acknowledge its deliveries.
    ///
    /// A vibrator that resonates durably on a pattern narrower than the one
    /// its rule names reads through a consumer named after that pattern:
    /// name it in the rule too. A rule for every source (`*`) names no
    /// consumer. JetStream answers on the client's inbox, which the user
    /// may read already.
    ///
    /// ```
    /// use aether_core::config::{AclRule, DurabilityConfig};
    ///
    /// let beta = AclRule {
    ///     source: "beta".into(),
    ///     emit: vec!["inventory.*".into()],
    ///     resonate: vec!["orders.*".into()],
    /// };
    /// let durability = DurabilityConfig {
    ///     channels: vec!["orders.*".into()],
    ///     manage_stream: false,
    ///     ..Default::default()
    /// };
    /// let permissions = beta
    ///     .nats_permissions("aether")
    ///     .with_jetstream(&beta, "aether", &durability, &[]);
    /// let consumer = aether_core::subject::durable_consumer_name("beta", false, "aether.orders.>");
    /// assert!(permissions.publish.contains(&format!("$JS.API.CONSUMER.MSG.NEXT.AETHER.{consumer}")));
    /// assert!(!permissions.publish.iter().any(|s| s.contains("STREAM.UPDATE")));
    /// ```
    pub fn with_jetstream(
        mut self,
        rule: &AclRule,
        prefix: &str,
        durability: &DurabilityConfig,
        groups: &[&str],
    ) -> Self {
        let stream = &durability.stream;
        self.publish.extend([
            "$JS.API.INFO".to_string(),
            format!("$JS.API.STREAM.INFO.{stream}"),
        ]);
        for consumer in rule.durable_consumers(prefix, durability, groups) {
            let DurableConsumer { name, filter } = consumer;
            self.publish.extend([
                format!("$JS.API.CONSUMER.CREATE.{stream}.{name}.{filter}"),
                format!("$JS.API.CONSUMER.INFO.{stream}.{name}"),
                format!("$JS.API.CONSUMER.MSG.NEXT.{stream}.{name}"),
                // Acknowledgements, in the form servers send now and in
                // the form with a domain and an account hash.
                format!("$JS.ACK.{stream}.{name}.>"),
                format!("$JS.ACK.*.*.{stream}.{name}.>"),
            ]);
        }
        unique(&mut self.publish);
        self
    }

    /// Without the right to create consumers: the user reads only through
    /// consumers the stream's manager made for it
    /// ([`crate::Operator::make_durable_consumers`], with the names of
    /// [`AclRule::durable_consumers`]). A user that may create its consumer
    /// could make it a push consumer whose deliveries go to any subject
    /// (NATS permissions cannot limit a consumer's delivery subject): it
    /// would send the waves it may read where it may not publish. Where
    /// that matters, take the right away.
    pub fn without_consumer_creation(mut self) -> Self {
        self.publish
            .retain(|subject| !subject.starts_with("$JS.API.CONSUMER.CREATE."));
        self
    }

    /// Adds the management of the stream `stream` (`[aether.durability]
    /// stream`): look it up, create it, update it to the program's
    /// settings, and make consumers for the users that may not make their
    /// own. For the one user that manages the stream (a program run
    /// with `durability.manage_stream = true`, the default, or an operator's
    /// tool); whoever holds these rights can change what the stream keeps
    /// (its subjects, its limits), so every other user gets
    /// [`NatsPermissions::with_jetstream`] only. Deleting or purging the
    /// stream is left to the server's operator.
    pub fn managing_stream(mut self, stream: &str) -> Self {
        self.publish.extend([
            "$JS.API.INFO".to_string(),
            format!("$JS.API.STREAM.INFO.{stream}"),
            format!("$JS.API.STREAM.CREATE.{stream}"),
            format!("$JS.API.STREAM.UPDATE.{stream}"),
            // The consumers it makes for users that may not make their own
            // (`Operator::make_durable_consumers`).
            format!("$JS.API.CONSUMER.CREATE.{stream}.>"),
            format!("$JS.API.CONSUMER.INFO.{stream}.>"),
        ]);
        unique(&mut self.publish);
        self
    }
}

/// A durable consumer a user reads through: its name and its filter
/// subject ([`AclRule::durable_consumers`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DurableConsumer {
    /// The consumer's name ([`crate::subject::durable_consumer_name`]).
    pub name: String,
    /// Its filter subject (a pattern's subject).
    pub filter: String,
}

impl AclRule {
    /// The durable consumers the vibrators of this rule's source (and of
    /// its `groups`) read through: one for each of the rule's resonate
    /// patterns that lies within a durable channel, and for each durable
    /// channel that lies within one of its patterns (a gateway resonating
    /// on `*` reads each durable channel through a consumer of its own).
    /// A rule for every source (`*`) names none.
    pub fn durable_consumers(
        &self,
        prefix: &str,
        durability: &DurabilityConfig,
        groups: &[&str],
    ) -> Vec<DurableConsumer> {
        if self.source == "*" {
            return Vec::new();
        }
        let durable = durability.patterns();
        let allowed: Vec<Channel> = self.resonate.iter().map(Channel::new).collect();
        let mut patterns: Vec<Channel> = allowed
            .iter()
            .filter(|p| !p.is_system() && durable.iter().any(|d| crate::channel::covers(d, p)))
            .cloned()
            .collect();
        for d in &durable {
            if allowed.iter().any(|p| crate::channel::covers(p, d)) && !patterns.contains(d) {
                patterns.push(d.clone());
            }
        }
        let owners = std::iter::once((self.source.as_str(), false))
            .chain(groups.iter().map(|group| (*group, true)));
        let mut consumers = Vec::new();
        for (owner, grouped) in owners {
            for pattern in &patterns {
                let filter = crate::subject::pattern_subject(prefix, pattern);
                let name = crate::subject::durable_consumer_name(owner, grouped, &filter);
                consumers.push(DurableConsumer { name, filter });
            }
        }
        consumers
    }
}

/// Drops later copies of a subject, keeping the first's place.
fn unique(subjects: &mut Vec<String>) {
    let mut seen = std::collections::HashSet::new();
    subjects.retain(|s| seen.insert(s.clone()));
}

impl AclRule {
    /// The permissions that make a NATS server enforce this rule for the
    /// NATS user that runs the vibrator `source`, with subject prefix
    /// `prefix`:
    ///
    /// - publish: its emit patterns, and every reflection channel
    ///   (`<prefix>._reflect.>`: a receiver reflects a wave to its source,
    ///   whoever that is; the source's aether checks the reflection's
    ///   signature, subject and channel); replies only to requests it
    ///   received (`allow_responses`), not to any inbox;
    /// - subscribe: its resonate patterns, its own inboxes
    ///   (`<prefix>._INBOX.<source>.>`: set the client's
    ///   `nats.inbox_prefix` to `<prefix>._INBOX.<source>`), its own
    ///   reflection channels (`<prefix>._reflect.<source>.*`) and the
    ///   delivery probes' replies (`<prefix>._probe.>`, which only the
    ///   server answers: "no responders");
    /// - hopping subjects: none. [`AclRule::nats_permissions_hopping`] adds
    ///   the wire channels of the bases the rule allows.
    ///
    /// A rule for every source (`*`) cannot name a user's own subjects: it
    /// gives the inboxes and reflection channels of all.
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
    /// assert!(permissions.subscribe.contains(&"aether._INBOX.alpha.>".to_string()));
    /// assert!(permissions.allow_responses);
    /// ```
    pub fn nats_permissions(&self, prefix: &str) -> NatsPermissions {
        self.nats_permissions_hopping(prefix, &[])
    }

    /// [`AclRule::nats_permissions`], with the wire channels of `hopping`
    /// whose base the rule lets it emit on (publish) or resonate on
    /// (subscribe): as far as NATS permissions can express the ACL of a
    /// hopping base, since each base has a fixed set of wire channels.
    pub fn nats_permissions_hopping(
        &self,
        prefix: &str,
        hopping: &[HoppingBase],
    ) -> NatsPermissions {
        let patterns = |patterns: &[String]| -> Vec<String> {
            patterns
                .iter()
                .map(|p| crate::subject::pattern_subject(prefix, &Channel::new(p)))
                .collect()
        };
        let own = match self.source.as_str() {
            "*" => ">".to_string(),
            source => format!("{source}.>"),
        };
        let own_reflections = match self.source.as_str() {
            "*" => ">".to_string(),
            source => format!("{source}.*"),
        };
        let mut publish = patterns(&self.emit);
        publish.push(format!("{prefix}._reflect.>"));
        // Instance reports, in its own name only: an instance is named after
        // the source (`<source>` or `<source>.<more>`).
        match self.source.as_str() {
            "*" => publish.push(format!("{prefix}._report.>")),
            source => {
                publish.push(format!("{prefix}._report.{source}"));
                publish.push(format!("{prefix}._report.{source}.>"));
            }
        }
        let mut subscribe = patterns(&self.resonate);
        subscribe.push(format!("{prefix}._INBOX.{own}"));
        subscribe.push(format!("{prefix}._reflect.{own_reflections}"));
        subscribe.push(format!("{prefix}._probe.>"));
        for hop in hopping {
            let base = Channel::new(&hop.base);
            let wire = || hop.wire_channels.iter().map(|c| format!("{prefix}.{c}"));
            if self.emit.iter().any(|p| base.matches(&Channel::new(p))) {
                publish.extend(wire());
            }
            if self
                .resonate
                .iter()
                .any(|p| crate::channel::covers(&Channel::new(p), &base))
            {
                subscribe.extend(wire());
            }
        }
        NatsPermissions {
            publish,
            subscribe,
            allow_responses: true,
        }
    }
}

impl SecurityConfig {
    /// Whether anything is configured (signatures or rules).
    pub fn is_enabled(&self) -> bool {
        !self.signing_keys.is_empty()
            || !self.signing_key_files.is_empty()
            || self.signing_key_base.is_some()
            || self.require_signatures
            || !self.acl.is_empty()
            || !self.encryption.is_empty()
    }

    /// Checks every field; the error names the first bad one and never
    /// holds a key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for rule in &self.encryption {
            let sources = usize::from(rule.key.is_some())
                + usize::from(rule.key_file.is_some())
                + usize::from(rule.key_env.is_some());
            // None: a bus joined on the LAN fills in its secret's key;
            // anywhere else the aether refuses to start without one.
            check(
                sources <= 1,
                "security.encryption",
                format!("{:?}", rule.channels),
                "gives more than one of key, key_file and key_env",
            )?;
            check(
                !rule.channels.is_empty(),
                "security.encryption",
                "[]".into(),
                "names no channel",
            )?;
            for pattern in &rule.channels {
                check(
                    Channel::new(pattern).validate().is_ok(),
                    "security.encryption",
                    pattern.clone(),
                    "is not a channel or pattern",
                )?;
            }
            if let Some(key) = &rule.key {
                check(
                    crate::secret::key_of_hex(key.expose()).is_some(),
                    "security.encryption",
                    "key = [redacted]".into(),
                    "is not 64 hexadecimal digits (32 bytes)",
                )?;
            }
        }
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
        if let Some(base) = &self.signing_key_base {
            check(
                base.expose().len() >= MIN_SIGNING_KEY_BYTES,
                "security.signing_key_base",
                "[redacted]".into(),
                "is shorter than 16 bytes; use 32 random bytes",
            )?;
        }
        check(
            (1_000..=3_600_000).contains(&super::as_ms(self.replay_window)),
            "security.replay_window_ms",
            super::as_ms(self.replay_window).to_string(),
            "must be 1000 to 3600000 (milliseconds)",
        )?;
        check(
            (1_024..=10_000_000).contains(&self.replay_memory),
            "security.replay_memory",
            self.replay_memory.to_string(),
            "must be 1024 to 10000000 (waves per subscription)",
        )?;
        for rule in &self.acl {
            check(
                rule.source == "*" || is_source_name(&rule.source),
                "security.acl.source",
                rule.source.clone(),
                "is not a vibrator name or *",
            )?;
            let patterns = rule
                .emit
                .iter()
                .map(|p| ("security.acl.emit", p))
                .chain(rule.resonate.iter().map(|p| ("security.acl.resonate", p)));
            for (key, pattern) in patterns {
                let channel = Channel::new(pattern);
                check(
                    channel.is_valid(),
                    key,
                    pattern.clone(),
                    "is not a valid channel or pattern",
                )?;
                check(
                    !channel.is_system(),
                    key,
                    pattern.clone(),
                    "is one of the bus's own channels (first token starting with `_`), \
                     which the aether manages itself; name application channels",
                )?;
            }
        }
        Ok(())
    }
}

/// Whether `name` is a vibrator name.
fn is_source_name(name: &str) -> bool {
    crate::names::is_name(name)
}
