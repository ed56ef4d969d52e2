//! Source authentication and channel access rules, as the aether enforces
//! them ([`crate::config::SecurityConfig`] is how they are set).
//!
//! One [`Security`] per aether, shared by its medium: the emit path asks
//! [`Security::may_emit`] and the NATS medium signs with
//! [`Security::key_of`]; `resonate_on` asks [`Security::may_resonate`]; every
//! wave that arrives from the network passes [`Security::check_arrival`]
//! before it reaches a queue. With nothing configured, each is one branch.

use std::{borrow::Cow, collections::HashMap, fmt, time::Duration};

use hmac::{Hmac, Mac};
use sha2::Sha256;

use chacha20poly1305::{
    XChaCha20Poly1305, XNonce,
    aead::{Aead, AeadCore, KeyInit, OsRng, Payload},
};
use smol_str::SmolStr;

use crate::{
    Channel, ConfigError, DropReason, Wave,
    config::SecurityConfig,
    replay::Replays,
    wire::{self, Signature},
};

/// The security policy of one aether, ready to enforce.
pub(crate) struct Security {
    keys: HashMap<SmolStr, Vec<u8>>,
    /// Every other source's key is derived from this one, when set.
    base: Option<Vec<u8>>,
    /// Channels whose payloads travel sealed, and their ciphers.
    sealed: Vec<(Vec<Channel>, XChaCha20Poly1305)>,
    require_signatures: bool,
    /// Empty: everything allowed.
    rules: Vec<Rule>,
    enabled: bool,
    #[cfg_attr(not(feature = "nats"), allow(dead_code))]
    replay_window: Duration,
    #[cfg_attr(not(feature = "nats"), allow(dead_code))]
    replay_memory: usize,
}

/// An ACL rule with its patterns parsed.
struct Rule {
    /// `None`: every source.
    source: Option<SmolStr>,
    emit: Vec<Channel>,
    resonate: Vec<Channel>,
}

impl fmt::Debug for Security {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Security")
            .field("signing_sources", &self.keys.keys().collect::<Vec<_>>())
            .field("require_signatures", &self.require_signatures)
            .field("rules", &self.rules.len())
            .field("sealed_rules", &self.sealed.len())
            .finish()
    }
}

impl Security {
    /// The policy `config` describes, reading key files now. `config` is
    /// already validated.
    pub(crate) fn from_config(config: &SecurityConfig) -> Result<Self, ConfigError> {
        let mut keys = HashMap::new();
        for (source, key) in &config.signing_keys {
            keys.insert(SmolStr::new(source), key.expose().as_bytes().to_vec());
        }
        for (source, path) in &config.signing_key_files {
            let mut key = std::fs::read(path).map_err(|e| {
                ConfigError::new(
                    "security.signing_key_files",
                    format!("{source} = {} ({e})", path.display()),
                    "could not be read",
                )
            })?;
            while key.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                key.pop();
            }
            if key.len() < crate::config::MIN_SIGNING_KEY_BYTES {
                return Err(ConfigError::new(
                    "security.signing_key_files",
                    format!("{source} = {}", path.display()),
                    "holds fewer than 16 bytes; use 32 random bytes",
                ));
            }
            keys.insert(SmolStr::new(source), key);
        }
        // A bus joined on the LAN derives the keys from its secret; with
        // none, every wave would be dropped.
        if config.require_signatures && keys.is_empty() && config.signing_key_base.is_none() {
            return Err(ConfigError::new(
                "security.require_signatures",
                "true".into(),
                "needs at least one signing key, or every wave would be dropped (a bus \
                 joined on the LAN derives them from its secret)",
            ));
        }
        let rules = config
            .acl
            .iter()
            .map(|rule| Rule {
                source: (rule.source != "*").then(|| SmolStr::new(&rule.source)),
                emit: rule.emit.iter().map(Channel::new).collect(),
                resonate: rule.resonate.iter().map(Channel::new).collect(),
            })
            .collect();
        let mut sealed = Vec::new();
        for rule in &config.encryption {
            let text = match (&rule.key, &rule.key_file, &rule.key_env) {
                (Some(key), _, _) => key.expose().to_string(),
                (_, Some(path), _) => std::fs::read_to_string(path).map_err(|e| {
                    ConfigError::new(
                        "security.encryption",
                        format!("key_file = {} ({e})", path.display()),
                        "could not be read",
                    )
                })?,
                (_, _, Some(var)) => std::env::var(var).map_err(|_| {
                    ConfigError::new(
                        "security.encryption",
                        format!("key_env = {var}"),
                        "is not set in the environment",
                    )
                })?,
                _ => {
                    return Err(ConfigError::new(
                        "security.encryption",
                        format!("{:?}", rule.channels),
                        "names no key: give key, key_file or key_env (only a bus joined on \
                         the LAN, whose secret gives the key, may leave it out)",
                    ));
                }
            };
            let key = crate::secret::key_of_hex(&text).ok_or_else(|| {
                ConfigError::new(
                    "security.encryption",
                    format!("{:?} = [redacted]", rule.channels),
                    "needs a key of 64 hexadecimal digits (32 bytes)",
                )
            })?;
            let patterns = rule.channels.iter().map(Channel::new).collect();
            sealed.push((patterns, XChaCha20Poly1305::new(&key.into())));
        }
        Ok(Self {
            keys,
            base: config
                .signing_key_base
                .as_ref()
                .map(|key| key.expose().as_bytes().to_vec()),
            sealed,
            require_signatures: config.require_signatures,
            rules,
            enabled: config.is_enabled(),
            replay_window: config.replay_window,
            replay_memory: config.replay_memory,
        })
    }

    /// Whether payloads on `channel` are sealed (a rule names it).
    pub(crate) fn seals(&self, channel: &Channel) -> bool {
        !self.sealed.is_empty() && self.cipher_of(channel).is_some()
    }

    /// The cipher that seals payloads on `channel`, if a rule names it.
    fn cipher_of(&self, channel: &Channel) -> Option<&XChaCha20Poly1305> {
        self.sealed
            .iter()
            .find(|(patterns, _)| patterns.iter().any(|p| channel.matches(p)))
            .map(|(_, cipher)| cipher)
    }

    /// `wave` as it travels on `subject`: with its payload sealed if its
    /// channel's payloads are (a fresh random nonce, the subject as
    /// associated data), else `None` (it travels as it is).
    pub(crate) fn seal(&self, subject: &str, wave: &Wave) -> Option<Wave> {
        let cipher = self.cipher_of(wave.channel())?;
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        let payload = Payload {
            msg: wave.payload_bytes(),
            aad: subject.as_bytes(),
        };
        let Ok(ciphertext) = cipher.encrypt(&nonce, payload) else {
            // Only a payload larger than the cipher takes (256 GiB) fails.
            return None;
        };
        let mut sealed = Vec::with_capacity(nonce.len() + ciphertext.len());
        sealed.extend_from_slice(&nonce);
        sealed.extend_from_slice(&ciphertext);
        Some(wave.sealed_with(sealed.into()))
    }

    /// Opens a wave that arrived on `subject`: a sealed payload is replaced
    /// by what it holds. `Undecryptable` if it cannot be opened here (no
    /// key, another key, tampered), or if its channel's payloads are
    /// sealed and it came in the clear.
    pub(crate) fn open(&self, subject: &str, wave: &mut Wave) -> Result<(), DropReason> {
        let cipher = self.cipher_of(wave.channel());
        if !wave.is_sealed() {
            return match cipher {
                None => Ok(()),
                Some(_) => Err(DropReason::Undecryptable),
            };
        }
        let cipher = cipher.ok_or(DropReason::Undecryptable)?;
        let sealed = wave.payload_bytes();
        if sealed.len() < NONCE_LEN {
            return Err(DropReason::Undecryptable);
        }
        let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
        let payload = Payload {
            msg: ciphertext,
            aad: subject.as_bytes(),
        };
        let opened = cipher
            .decrypt(XNonce::from_slice(nonce), payload)
            .map_err(|_| DropReason::Undecryptable)?;
        wave.unseal(opened.into());
        Ok(())
    }

    /// A fresh replay memory, where signatures are required
    /// ([`crate::replay`]): it takes nothing stamped before now, less
    /// [`crate::replay::START_SKEW`].
    #[cfg_attr(not(feature = "nats"), allow(dead_code))]
    pub(crate) fn replay_window(&self) -> Option<Replays> {
        let start =
            crate::wave::unix_nanos().saturating_sub(crate::replay::START_SKEW.as_nanos() as u64);
        self.require_signatures
            .then(|| Replays::new(self.replay_window, self.replay_memory, start))
    }

    /// Whether waves of `source` would be refused as forged where they
    /// arrive: signatures are required and this aether holds no key to sign
    /// them with.
    pub(crate) fn would_be_forged(&self, source: &str) -> bool {
        self.require_signatures && self.key_of(Some(source)).is_none()
    }

    /// Whether anything is enforced.
    #[inline]
    pub(crate) fn is_enabled(&self) -> bool {
        self.enabled
    }

    /// The signing key of `source`, if this aether holds one (its own, or
    /// one derived from the base key).
    pub(crate) fn key_of(&self, source: Option<&str>) -> Option<Cow<'_, [u8]>> {
        let source = source?;
        if let Some(key) = self.keys.get(source) {
            return Some(Cow::Borrowed(key));
        }
        let base = self.base.as_deref()?;
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(base).expect("any key length");
        mac.update(b"aether/signing-key/");
        mac.update(source.as_bytes());
        Some(Cow::Owned(mac.finalize().into_bytes().to_vec()))
    }

    /// Whether `source` may emit on `channel`.
    pub(crate) fn may_emit(&self, source: Option<&str>, channel: &Channel) -> bool {
        if self.rules.is_empty() || channel.is_system() {
            return true;
        }
        self.rules_of(source)
            .any(|rule| rule.emit.iter().any(|p| channel.matches(p)))
    }

    /// Whether the vibrator `name` may resonate on `pattern`.
    pub(crate) fn may_resonate(&self, name: &str, pattern: &Channel) -> bool {
        if self.rules.is_empty() || pattern.is_system() {
            return true;
        }
        self.rules_of(Some(name))
            .any(|rule| rule.resonate.iter().any(|p| covers(p, pattern)))
    }

    fn rules_of<'a>(&'a self, source: Option<&'a str>) -> impl Iterator<Item = &'a Rule> + 'a {
        self.rules
            .iter()
            .filter(move |rule| match (&rule.source, source) {
                (None, _) => true,
                (Some(want), Some(got)) => want == got,
                (Some(_), None) => false,
            })
    }

    /// Checks a wave that arrived in `body` on `subject`: its signature
    /// (when its source has a key here, or signatures are required), then
    /// whether its source may emit on its channel.
    #[cfg_attr(not(feature = "nats"), allow(dead_code))]
    pub(crate) fn check_arrival(
        &self,
        subject: &str,
        body: &[u8],
        wave: &Wave,
    ) -> Result<(), DropReason> {
        // A reflection keeps the source of the wave it reflects, and the
        // aether that reflects it signs it with that source's key (every
        // aether that checks a source's waves holds its key): it is checked
        // like any wave, and its channel is the one it was emitted on.
        let signed = match self.key_of(wave.source()) {
            Some(key) => wire::verify(subject, body, &key) == Signature::Valid,
            None => !self.require_signatures,
        };
        if !signed {
            return Err(DropReason::Forged);
        }
        if !self.may_emit(wave.source(), wave.channel()) {
            return Err(DropReason::Denied);
        }
        Ok(())
    }
}

use crate::channel::covers;

/// Length of an XChaCha20-Poly1305 nonce.
const NONCE_LEN: usize = 24;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::AclRule;
    use proptest::prelude::*;

    fn c(name: &str) -> Channel {
        Channel::new(name)
    }

    #[test]
    fn covers_examples() {
        for (outer, inner, expected) in [
            ("orders.*", "orders.created", true),
            ("orders.*", "orders.eu.*", true),
            ("orders.*", "orders.>", true),
            ("orders.*", "orders", false),
            ("orders.*", "*", false),
            ("orders.created", "orders.created", true),
            ("orders.created", "orders.*", false),
            ("orders.*.created", "orders.eu.created", true),
            ("orders.*.created", "orders.*.created", true),
            ("orders.*.created", "orders.eu.*", false),
            ("orders.eu.created", "orders.*.created", false),
            ("*", "anything.at.all", true),
            ("*", "*", true),
            ("*.created", "orders.created", true),
            ("*.created", "orders.eu.created", false),
            ("a.*.c.>", "a.b.c.d.e", true),
            ("a.*.c.>", "a.b.c", false),
        ] {
            assert_eq!(
                covers(&c(outer), &c(inner)),
                expected,
                "{outer} covers {inner}"
            );
        }
    }

    /// Channels over a tiny alphabet, so that patterns and channels meet.
    fn token() -> impl Strategy<Value = String> {
        prop_oneof![Just("a"), Just("b"), Just("c")].prop_map(String::from)
    }

    fn concrete() -> impl Strategy<Value = String> {
        prop::collection::vec(token(), 1..6).prop_map(|t| t.join("."))
    }

    fn pattern() -> impl Strategy<Value = String> {
        let inner = prop_oneof![3 => token(), 1 => Just("*".to_string())];
        (
            prop::collection::vec(inner, 0..4),
            prop_oneof![Just(""), Just(".*"), Just(".>")],
        )
            .prop_filter_map("a pattern needs a token", |(tokens, tail)| {
                let joined = tokens.join(".");
                let name = match (joined.is_empty(), tail) {
                    (true, "") => return None,
                    (true, tail) => tail[1..].to_string(),
                    (false, tail) => format!("{joined}{tail}"),
                };
                Some(name)
            })
    }

    proptest! {
        /// Soundness: what a covered pattern matches, the covering one
        /// matches too (a rule never lets a resonance hear more than it
        /// allows).
        #[test]
        fn covered_patterns_match_within(outer in pattern(), inner in pattern(), channel in concrete()) {
            let (outer, inner, channel) = (c(&outer), c(&inner), c(&channel));
            if covers(&outer, &inner) && channel.matches(&inner) {
                prop_assert!(channel.matches(&outer), "{outer} covers {inner} but not {channel}");
            }
        }

        /// Completeness: when `outer` does not cover `inner`, some channel
        /// `inner` matches escapes `outer` (checked on every channel of up
        /// to 6 tokens over the alphabet and one outsider token).
        #[test]
        fn uncovered_patterns_leak(outer in pattern(), inner in pattern()) {
            let (outer, inner) = (c(&outer), c(&inner));
            if !covers(&outer, &inner) {
                let escapes = all_channels(6).iter().any(|ch| ch.matches(&inner) && !ch.matches(&outer));
                prop_assert!(escapes, "{outer} does not cover {inner}, yet nothing escapes");
            }
        }

        /// A concrete channel is covered exactly when it matches.
        #[test]
        fn covering_a_channel_is_matching_it(outer in pattern(), channel in concrete()) {
            let (outer, channel) = (c(&outer), c(&channel));
            prop_assert_eq!(covers(&outer, &channel), channel.matches(&outer));
        }
    }

    /// Every channel of 1 to `max` tokens over `a`, `b`, `c` and `z`.
    fn all_channels(max: usize) -> Vec<Channel> {
        let mut out = Vec::new();
        let mut layer = vec![String::new()];
        for _ in 0..max {
            let mut next = Vec::new();
            for prefix in &layer {
                for t in ["a", "b", "c", "z"] {
                    let name = if prefix.is_empty() {
                        t.to_string()
                    } else {
                        format!("{prefix}.{t}")
                    };
                    out.push(c(&name));
                    next.push(name);
                }
            }
            layer = next;
        }
        out
    }

    fn policy(rules: Vec<AclRule>) -> Security {
        Security::from_config(&SecurityConfig {
            acl: rules,
            ..Default::default()
        })
        .unwrap()
    }

    #[test]
    fn rules_allow_what_they_name_and_nothing_else() {
        let security = policy(vec![
            AclRule {
                source: "alpha".into(),
                emit: vec!["orders.*".into()],
                resonate: vec!["inventory.*".into()],
            },
            AclRule {
                source: "*".into(),
                emit: vec!["health".into()],
                resonate: vec![],
            },
        ]);
        assert!(security.may_emit(Some("alpha"), &c("orders.created")));
        assert!(security.may_emit(Some("alpha"), &c("health")));
        assert!(!security.may_emit(Some("alpha"), &c("inventory.reserved")));
        assert!(!security.may_emit(Some("beta"), &c("orders.created")));
        assert!(security.may_emit(Some("beta"), &c("health")));
        assert!(!security.may_emit(None, &c("orders.created")));
        // The bus's own channels are not subject to rules.
        assert!(security.may_emit(Some("beta"), &c("_reflect.00000000000000ab")));
        assert!(security.may_resonate("alpha", &c("inventory.*")));
        assert!(security.may_resonate("alpha", &c("inventory.reserved")));
        assert!(!security.may_resonate("alpha", &c("*")));
        assert!(!security.may_resonate("beta", &c("inventory.*")));
        // No rules: everything.
        let open = policy(vec![]);
        assert!(!open.is_enabled());
        assert!(open.may_emit(None, &c("anything")));
        assert!(open.may_resonate("x", &c("*")));
    }

    #[test]
    fn arrivals_need_a_valid_signature_from_a_known_source() {
        let key = "0123456789abcdef0123456789abcdef";
        let mut config = SecurityConfig::default();
        config
            .signing_keys
            .insert("alpha".into(), crate::Secret::new(key));
        let security = Security::from_config(&config).unwrap();
        let mut wave = Wave::new("orders.created", "hi");
        wave.stamp_emission(&SmolStr::new("alpha"), 1, 1);
        let subject = "aether.orders.created";
        let signed = wire::encode_signed(&wave, subject, key.as_bytes());
        assert_eq!(security.check_arrival(subject, &signed, &wave), Ok(()));
        // Unsigned, signed with another key, or moved to another subject.
        let unsigned = wire::encode(&wave);
        assert_eq!(
            security.check_arrival(subject, &unsigned, &wave),
            Err(DropReason::Forged)
        );
        let forged = wire::encode_signed(&wave, subject, b"not the key of alpha at all");
        assert_eq!(
            security.check_arrival(subject, &forged, &wave),
            Err(DropReason::Forged)
        );
        assert_eq!(
            security.check_arrival("aether.orders.cancelled", &signed, &wave),
            Err(DropReason::Forged)
        );
        // A source without a key passes, unless signatures are required.
        let mut other = Wave::new("orders.created", "hi");
        other.stamp_emission(&SmolStr::new("beta"), 2, 1);
        let body = wire::encode(&other);
        assert_eq!(security.check_arrival(subject, &body, &other), Ok(()));
        config.require_signatures = true;
        let strict = Security::from_config(&config).unwrap();
        assert_eq!(
            strict.check_arrival(subject, &body, &other),
            Err(DropReason::Forged)
        );
    }

    #[test]
    fn keys_derived_from_a_base_sign_for_every_source_and_only_with_that_base() {
        let mut config = SecurityConfig {
            require_signatures: true,
            signing_key_base: Some(crate::Secret::new("the base key of the test bus")),
            ..Default::default()
        };
        config
            .signing_keys
            .insert("alpha".into(), crate::Secret::new("alpha's very own key"));
        let one = Security::from_config(&config).unwrap();
        let two = Security::from_config(&config).unwrap();
        config.signing_key_base = Some(crate::Secret::new("the base key of another bus"));
        let stranger = Security::from_config(&config).unwrap();
        let subject = "aether.home.temp";
        for source in ["beta", "a-script-on-a-pi"] {
            let mut wave = Wave::new("home.temp", "21");
            wave.stamp_emission(&SmolStr::new(source), 1, 1);
            let key = one.key_of(Some(source)).unwrap();
            assert_ne!(key, stranger.key_of(Some(source)).unwrap());
            let signed = wire::encode_signed(&wave, subject, &key);
            assert_eq!(two.check_arrival(subject, &signed, &wave), Ok(()));
            assert_eq!(
                stranger.check_arrival(subject, &signed, &wave),
                Err(DropReason::Forged)
            );
        }
        // Each source its own key; a key named outright is used as it is.
        assert_ne!(one.key_of(Some("beta")), one.key_of(Some("gamma")));
        assert_eq!(
            one.key_of(Some("alpha")).as_deref(),
            Some(&b"alpha's very own key"[..])
        );
        // A sealed channel with no key is refused where no secret gives one.
        config.encryption = vec![crate::config::EncryptionRule {
            channels: vec!["home.>".into()],
            key: None,
            key_file: None,
            key_env: None,
        }];
        assert!(config.validate().is_ok());
        let err = Security::from_config(&config).unwrap_err();
        assert_eq!(err.key(), "security.encryption");
        assert!(err.to_string().contains("names no key"), "{err}");
        // Too short a base is refused, and it prints redacted.
        config.signing_key_base = Some(crate::Secret::new("short"));
        let err = config.validate().unwrap_err();
        assert_eq!(err.key(), "security.signing_key_base");
        assert!(!format!("{config:?}").contains("short"));
    }

    #[test]
    fn key_files_are_read_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("alpha.key");
        std::fs::write(&path, "0123456789abcdef0123456789abcdef\n").unwrap();
        let mut config = SecurityConfig::default();
        config
            .signing_key_files
            .insert("alpha".into(), path.clone());
        let security = Security::from_config(&config).unwrap();
        assert_eq!(
            security.key_of(Some("alpha")).as_deref(),
            Some(&b"0123456789abcdef0123456789abcdef"[..])
        );
        std::fs::write(&path, "short\n").unwrap();
        let err = Security::from_config(&config).unwrap_err();
        assert_eq!(err.key(), "security.signing_key_files");
        assert!(!err.to_string().contains("short"), "{err}");
        config
            .signing_key_files
            .insert("alpha".into(), dir.path().join("missing"));
        let err = Security::from_config(&config).unwrap_err();
        assert!(err.to_string().contains("could not be read"), "{err}");
        // Debug shows who signs, never a key.
        let debug = format!("{security:?}");
        assert!(
            debug.contains("alpha") && !debug.contains("0123456789"),
            "{debug}"
        );
    }
}
