//! How channels travel as NATS subjects.
//!
//! A channel `c` is the subject `<prefix>.c`. A pattern keeps its inner `*`
//! (one token, as in NATS), and its trailing wildcard (`*` or `>`, one or
//! more tokens) becomes NATS's `>`, which also means one or more tokens. So
//! the subjects NATS delivers for a pattern are exactly the channels that
//! [`Channel::matches`] accepts; a property test checks this against a real
//! nats-server. Clients in other languages publish to
//! [`channel_subject`] and subscribe to [`pattern_subject`].
//!
//! One kind of channel travels outside `<prefix>.>`: a replicated map's
//! catch-up requests (`_state.<map>.s`) go to `<prefix>-catchup.<map>`, so
//! that a program that observes every channel (a gateway on `*`, which
//! subscribes to `<prefix>.>`) is no responder to them: a replica alone
//! with observers hears "no responders" at once instead of waiting for a
//! reply that cannot come.
//!
//! ```
//! use aether_core::{Channel, subject};
//!
//! assert_eq!(subject::channel_subject("aether", &Channel::new("orders.created")), "aether.orders.created");
//! assert_eq!(subject::pattern_subject("aether", &Channel::new("orders.*")), "aether.orders.>");
//! assert_eq!(subject::pattern_subject("aether", &Channel::new("*.created")), "aether.*.created");
//! assert_eq!(subject::pattern_subject("aether", &Channel::new("*")), "aether.>");
//! let back = subject::subject_channel("aether", "aether.orders.created").unwrap();
//! assert_eq!(back.as_str(), "orders.created");
//! assert!(subject::subject_channel("aether", "other.orders").is_none());
//! let catch_up = Channel::new("_state.home.s");
//! assert_eq!(subject::channel_subject("aether", &catch_up), "aether-catchup.home");
//! assert_eq!(subject::subject_channel("aether", "aether-catchup.home"), Some(catch_up));
//! ```

use crate::Channel;

/// The first token's ending of maps' catch-up subjects.
const CATCH_UP: &str = "-catchup";

/// The map whose catch-up channel `channel` is (`_state.<map>.s`).
fn catch_up_map(channel: &str) -> Option<&str> {
    channel
        .strip_prefix("_state.")?
        .strip_suffix(".s")
        .filter(|map| !map.is_empty() && !map.split('.').any(|t| t == "*" || t == ">"))
}

/// Whether waves on `channel` travel where no observer of the bus hears
/// them: a map's catch-up requests (outside `<prefix>.>`). They are not
/// counted as published, so that a gateway's reconciliation of what an
/// instance published with what it observed stays exact.
pub(crate) fn unobservable(channel: &Channel) -> bool {
    catch_up_map(channel.as_str()).is_some()
}

/// The subject a wave on `channel` is published to.
pub fn channel_subject(prefix: &str, channel: &Channel) -> String {
    if let Some(map) = catch_up_map(channel.as_str()) {
        return format!("{prefix}{CATCH_UP}.{map}");
    }
    let mut subject = String::with_capacity(prefix.len() + 1 + channel.as_str().len());
    subject.push_str(prefix);
    subject.push('.');
    subject.push_str(channel.as_str());
    subject
}

/// The subject (with NATS wildcards) that a resonance on `pattern`
/// subscribes to.
pub fn pattern_subject(prefix: &str, pattern: &Channel) -> String {
    if let Some(map) = catch_up_map(pattern.as_str()) {
        return format!("{prefix}{CATCH_UP}.{map}");
    }
    let mut subject = String::with_capacity(prefix.len() + 1 + pattern.as_str().len());
    subject.push_str(prefix);
    let mut tokens = pattern.tokens().peekable();
    while let Some(token) = tokens.next() {
        subject.push('.');
        let last = tokens.peek().is_none();
        subject.push_str(if last && (token == "*" || token == ">") {
            ">"
        } else {
            token
        });
    }
    subject
}

/// The channel of a message on `subject`, if the subject is under `prefix`
/// and names a valid concrete channel; `None` otherwise (the message is not
/// a wave of this aether).
pub fn subject_channel(prefix: &str, subject: &str) -> Option<Channel> {
    let rest = subject.strip_prefix(prefix)?;
    if let Some(map) = rest
        .strip_prefix(CATCH_UP)
        .and_then(|r| r.strip_prefix('.'))
    {
        let channel = Channel::new(format!("_state.{map}.s"));
        channel.validate_concrete().ok()?;
        return (catch_up_map(channel.as_str()) == Some(map)).then_some(channel);
    }
    let rest = rest.strip_prefix('.')?;
    let channel = Channel::new(rest);
    channel.validate_concrete().ok()?;
    Some(channel)
}

/// The name of the durable JetStream consumer through which a resonance
/// on the subject `pattern_subject` reads a durable channel: `owner` is the
/// vibrator's name, or its group's when `grouped`. Readable (the owner's
/// name, up to 32 characters, others than `A-Z a-z 0-9 - _` written `_`)
/// and a hash of what it is and the subject, so that each resonance has its
/// own and finds it again after a restart. Known in advance, so that NATS
/// permissions can name the consumers a user may make and read
/// (`NatsPermissions::with_jetstream`).
///
/// ```
/// use aether_core::subject::durable_consumer_name;
///
/// let name = durable_consumer_name("service-beta", false, "aether.orders.>");
/// assert!(name.starts_with("service-beta-"));
/// assert_ne!(name, durable_consumer_name("service-beta", true, "aether.orders.>"));
/// ```
pub fn durable_consumer_name(owner: &str, grouped: bool, pattern_subject: &str) -> String {
    use sha2::{Digest, Sha256};
    let mut hash = Sha256::new();
    hash.update(if grouped { b"group\0" } else { b"vibra\0" });
    hash.update(owner.as_bytes());
    hash.update(b"\0");
    hash.update(pattern_subject.as_bytes());
    let digest = hash.finalize();
    let readable: String = owner
        .chars()
        .take(32)
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("{readable}-{hex}")
}
