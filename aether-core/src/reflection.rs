//! Reflection: a wave that cannot be delivered comes back to its source.
//!
//! A wave built with [`reflect_on_failure(true)`](crate::WaveBuilder::reflect_on_failure)
//! that the emitting aether cannot deliver (nobody resonates on its channel,
//! it died, it went past the hop limit) returns to the vibrator that emitted
//! it as a *reflected* wave: the same id, payload and correlation key, on the
//! channel it was emitted on, with its phase shifted by π and the
//! [`ReflectionReason`]. A receiver can refuse a reflectable wave it got with
//! [`Vibrator::reflect`](crate::Vibrator::reflect) (a refusal or a handler
//! error: a negative acknowledgement). The source receives reflections through
//! its ordinary [`receive`](crate::Vibrator::receive), and tells them apart
//! with [`Wave::is_reflected`](crate::Wave::is_reflected) and
//! [`Wave::reflection`](crate::Wave::reflection). A dead letter and a
//! negative acknowledgement in one.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use aether_core::{Aether, Phase, ReflectionReason, Vibrator, Wave};
//!
//! let aether = Aether::default();
//! let mut shop = Vibrator::create("shop", &aether).await?;
//! let order = Wave::builder("orders.created")
//!     .correlation_key("order-7")
//!     .reflect_on_failure(true)
//!     .build()?;
//! let id = shop.emit(order).await?; // nobody resonates on orders.created
//!
//! let echo = shop.receive().await.unwrap();
//! assert_eq!(echo.reflection(), Some(&ReflectionReason::NoResonator));
//! assert_eq!((echo.id(), echo.phase()), (id, Phase::RETRACT));
//! assert_eq!(echo.correlation_key(), "order-7");
//! assert_eq!(aether.stats().reflected, 1);
//! # Ok(()) }
//! ```
//!
//! # How a reflection travels
//!
//! Every vibrator that emits a reflectable wave resonates (from its first
//! one on) on its own reflection channel, `_reflect.<its name>.<its instance
//! id, 16 hex digits>`; a wave carries its source's name and that id as its
//! origin, so whoever reflects it (the emitting aether, or a receiver in
//! another process) knows where to send it. A reflection is accepted only on
//! the reflection channel of the source and origin it names, so only that
//! vibrator receives it; it is signed like any wave where its source has a
//! key (the reflecting aether signs it with that key), and its own channel
//! is checked against the ACL as if its source had emitted it again.
//! Anything else that carries the reflected flag is dropped as forged. The reflected wave is routed on that channel but keeps the
//! channel it was emitted on; over NATS its envelope carries the reason and
//! that channel in an optional section (`REFLECTED`, docs/guide/wire.md "Wire
//! format"). A reflection arrives at full strength (amplitude 1.0, no hop,
//! no time decay), whatever weakened the original, so that neither the
//! cause of the failure nor the source's noise floor hides it; it is never
//! reflected again.

use std::fmt;

use crate::Channel;

/// Channel prefix of the vibrators' reflection channels.
pub(crate) const REFLECT_PREFIX: &str = "_reflect";

/// The longest message a [`ReflectionReason::Refused`] or
/// [`ReflectionReason::HandlerError`] carries, in bytes.
pub const MAX_REFLECTION_MESSAGE_BYTES: usize = 1024;

/// Why a wave came back to its source.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ReflectionReason {
    /// No vibrator resonates on its channel (for a diffracting wave: nor on
    /// any parent channel). Over NATS, the server said "no responders".
    NoResonator,
    /// It died: its effective amplitude fell below `min_amplitude` (when it
    /// was emitted, or when it bent to a parent channel).
    Expired,
    /// It made more hops than `max_propagation`.
    PropagationLimit,
    /// A receiver refused it ([`Vibrator::reflect`](crate::Vibrator::reflect)),
    /// saying why.
    Refused(String),
    /// A receiver's handler failed on it ([`Vibrator::reflect`](crate::Vibrator::reflect)):
    /// a negative acknowledgement, with the error.
    HandlerError(String),
}

impl ReflectionReason {
    /// Its code in the envelope's `REFLECTED` section.
    pub(crate) fn code(&self) -> u8 {
        match self {
            ReflectionReason::NoResonator => 0,
            ReflectionReason::Expired => 1,
            ReflectionReason::PropagationLimit => 2,
            ReflectionReason::Refused(_) => 3,
            ReflectionReason::HandlerError(_) => 4,
        }
    }

    /// The reason of `code` with `message`; `None` for an unknown code, or a
    /// message on a reason that has none.
    pub(crate) fn from_code(code: u8, message: &str) -> Option<Self> {
        let bare = |reason| message.is_empty().then_some(reason);
        match code {
            0 => bare(ReflectionReason::NoResonator),
            1 => bare(ReflectionReason::Expired),
            2 => bare(ReflectionReason::PropagationLimit),
            3 => Some(ReflectionReason::Refused(message.to_string())),
            4 => Some(ReflectionReason::HandlerError(message.to_string())),
            _ => None,
        }
    }

    /// What the receiver said, for a refusal or a handler error.
    pub fn message(&self) -> Option<&str> {
        match self {
            ReflectionReason::Refused(m) | ReflectionReason::HandlerError(m) => Some(m),
            _ => None,
        }
    }

    /// A short snake_case name, fit for a metric label.
    pub fn as_str(&self) -> &'static str {
        match self {
            ReflectionReason::NoResonator => "no_resonator",
            ReflectionReason::Expired => "expired",
            ReflectionReason::PropagationLimit => "propagation_limit",
            ReflectionReason::Refused(_) => "refused",
            ReflectionReason::HandlerError(_) => "handler_error",
        }
    }
}

impl fmt::Display for ReflectionReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.message() {
            Some(message) => write!(f, "{}: {message}", self.as_str()),
            None => f.write_str(self.as_str()),
        }
    }
}

impl From<crate::DropReason> for ReflectionReason {
    /// The reason to reflect a wave the aether dropped: expired or past the
    /// hop limit (the other drop reasons happen at receivers, which do not
    /// reflect on their own).
    fn from(reason: crate::DropReason) -> Self {
        match reason {
            crate::DropReason::PropagationLimit => ReflectionReason::PropagationLimit,
            _ => ReflectionReason::Expired,
        }
    }
}

/// What a reflected wave carries besides the original's fields.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Reflection {
    pub(crate) reason: ReflectionReason,
    /// The channel the wave was emitted on (it travels on its source's
    /// reflection channel).
    pub(crate) channel: Channel,
}

/// The reflection channel of the vibrator named `source` whose instance id
/// is `origin`: `_reflect.<source>.<origin, 16 hex digits>`. The name comes
/// first so that NATS permissions can give each user its own reflections
/// (`<prefix>._reflect.<user>.*`); the id tells instances of one name
/// apart. `None` for a wave that names no source or no origin: it cannot
/// be reflected.
pub(crate) fn channel_of(source: Option<&str>, origin: u64) -> Option<Channel> {
    let source = source.filter(|s| !s.is_empty())?;
    if origin == 0 {
        return None;
    }
    // A foreign source's name may not make a channel (`a..b`): such a
    // wave has nowhere to come back to.
    let channel = Channel::new(format!("{REFLECT_PREFIX}.{source}.{origin:016x}"));
    channel.validate_concrete().is_ok().then_some(channel)
}

/// Whether a wave just decoded on `channel` (the one it travelled on),
/// from `source` and `origin`, came the way it may: a reflection (of a
/// wave emitted on `reflects`) only on the reflection channel of the
/// source and origin it names, and reflecting a wave of an application
/// channel; and nothing else on a reflection channel. Anything else is a
/// forgery. (`Wave::arrived_rightly` asks it of a wave.)
#[cfg_attr(not(feature = "nats"), allow(dead_code))]
pub(crate) fn arrived_rightly(
    channel: &Channel,
    reflects: Option<&Channel>,
    source: Option<&str>,
    origin: u64,
) -> bool {
    match reflects {
        // What it reflects was emitted by an application: on an
        // application channel, never on one of the bus's own.
        Some(emitted_on) => {
            channel_of(source, origin).is_some_and(|own| own == *channel) && !emitted_on.is_system()
        }
        None => !is_reflection_channel(channel),
    }
}

/// Whether `channel` is a reflection channel.
#[cfg_attr(not(feature = "nats"), allow(dead_code))]
fn is_reflection_channel(channel: &Channel) -> bool {
    channel
        .as_str()
        .strip_prefix(REFLECT_PREFIX)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('.'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Phase, Wave};

    #[test]
    fn codes_round_trip() {
        for reason in [
            ReflectionReason::NoResonator,
            ReflectionReason::Expired,
            ReflectionReason::PropagationLimit,
            ReflectionReason::Refused("out of stock".into()),
            ReflectionReason::HandlerError(String::new()),
        ] {
            let message = reason.message().unwrap_or("");
            assert_eq!(
                ReflectionReason::from_code(reason.code(), message),
                Some(reason)
            );
        }
        assert_eq!(ReflectionReason::from_code(0, "why"), None);
        assert_eq!(ReflectionReason::from_code(5, ""), None);
        assert_eq!(
            ReflectionReason::Refused("no".into()).to_string(),
            "refused: no"
        );
    }

    #[test]
    fn a_reflection_is_the_wave_shifted_by_pi_at_full_strength() {
        let mut wave = Wave::builder("orders.created")
            .amplitude(0.3)
            .decay_per_s(2.0)
            .reply_to("a.b")
            .reflect_on_failure(true)
            .diffracting(true)
            .payload("p")
            .build()
            .unwrap();
        wave.propagate();
        let back = wave.into_reflection(ReflectionReason::Expired, Channel::new("orders.created"));
        assert_eq!(back.phase(), Phase::RETRACT);
        assert_eq!(back.amplitude().value(), 1.0);
        assert_eq!(back.propagation_count(), 0);
        assert_eq!(back.decay_per_s(), 0.0);
        assert!(back.reply_to().is_none());
        assert!(!back.reflects_on_failure() && !back.is_diffracting());
        assert_eq!(back.reflection(), Some(&ReflectionReason::Expired));
        assert_eq!(back.correlation_key(), "orders.created");
        assert_eq!(&back.payload_bytes()[..], b"p");
        assert_eq!(
            channel_of(Some("shop"), 0xab).unwrap().as_str(),
            "_reflect.shop.00000000000000ab"
        );
        assert_eq!(channel_of(None, 0xab), None);
        assert_eq!(channel_of(Some("shop"), 0), None);
        assert_eq!(channel_of(Some("a..b"), 1), None, "not a channel");
    }
}
