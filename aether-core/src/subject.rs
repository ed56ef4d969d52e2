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
//! ```

use crate::Channel;

/// The subject a wave on `channel` is published to.
pub fn channel_subject(prefix: &str, channel: &Channel) -> String {
    let mut subject = String::with_capacity(prefix.len() + 1 + channel.as_str().len());
    subject.push_str(prefix);
    subject.push('.');
    subject.push_str(channel.as_str());
    subject
}

/// The subject (with NATS wildcards) that a resonance on `pattern`
/// subscribes to.
pub fn pattern_subject(prefix: &str, pattern: &Channel) -> String {
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
    let rest = subject.strip_prefix(prefix)?.strip_prefix('.')?;
    let channel = Channel::new(rest);
    channel.validate_concrete().ok()?;
    Some(channel)
}
