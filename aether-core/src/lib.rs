//! # Aether
//!
//! A message bus for services. Services are [`Vibrator`]s that emit
//! [`Wave`]s on [`Channel`]s (frequencies) and resonate on channel patterns.
//! A wave's [`Amplitude`] is its importance: it weakens with time and hops
//! ([`attenuation`]), dies under the aether's `min_amplitude`, and is not
//! heard by vibrators whose noise floor is above it. Receive queues are
//! bounded and shed the weakest wave first; every wave not delivered is
//! counted by reason ([`StatsSnapshot`]).
//!
//! ```
//! use aether_core::{Aether, Channel, Vibrator, Wave};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let aether = Aether::default(); // embedded: in process, no configuration
//!
//! let mut inventory = Vibrator::builder("inventory").noise_floor(0.3).create(&aether).await?;
//! inventory.resonate_on(Channel::new("orders.*")).await?;
//!
//! let shop = Vibrator::create("shop", &aether).await?;
//! shop.emit_wave(Channel::new("orders.created"), serde_json::json!({"order_id": 1})).await?;
//! shop.emit(Wave::builder("orders.noise").amplitude(0.1).build()?).await?; // under the floor
//!
//! let wave = inventory.receive().await.unwrap();
//! assert_eq!(wave.channel().as_str(), "orders.created");
//! assert_eq!(wave.payload()["order_id"], 1);
//! assert!(inventory.try_receive().is_none());
//! assert_eq!(inventory.stats().dropped(aether_core::DropReason::BelowNoiseFloor), 1);
//! # Ok(()) }
//! ```
//!
//! | module | idea |
//! |---|---|
//! | [`channel`] | channel grammar, validation and the one matching rule |
//! | [`wave`] | waves, amplitude, phase, ids, payloads |
//! | [`attenuation`] | the effective-amplitude rule |
//! | [`vibrator`] | a service's endpoint: emit, resonate, receive, request |
//! | [`hopping`] | time-synchronized frequency hopping over opaque wire channels |
//! | [`mod@aether`] | the medium handle and the emit path |
//! | [`config`] | settings and their validation |
//! | [`physics`] | interference, its patterns, the resonance graph, and the engine on the bus |
//! | [`diffraction`] | waves that bend to a parent channel when nobody hears them |
//! | [`reflection`] | waves that come back to their source when they cannot be delivered |
//! | [`connection`] | the connection to NATS: state, events, outbox |
//! | [`subject`] | how channels travel as NATS subjects |
//! | [`wire`] | the binary envelope of a wave on the wire |
//! | [`stats`] | lock-free counters of deliveries and drops |
//! | [`error`] | typed errors per operation |
//! | [`state`] | replicated maps (`StateMap`, `NodeState`), their keepers and ledgers |
//! | [`bustime`] | the bus's own time, measured against its sources |
//! | [`lan`] | a bus on a LAN: finding its nodes with one secret |
//! | [`rate_limit`] | per-vibrator emit rate limits |
//! | [`reliable`] | retries, timeouts and a circuit breaker around emits and requests |
//! | [`report`] | instance reports: what each aether did and dropped, told to the bus |
//! | [`spans`] | the waves' spans, linked through the trace context they carry |
//! | [`operator`] | the operator's side of an aether (`Operator`): the durable stream, waves at rest, the ACL asked |

#![forbid(unsafe_code)]
#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]
// What only the NATS medium or the reliability layer uses (arrival checks,
// replay windows, connection counters) is compiled without them, unused:
// each such item says so itself (`cfg_attr(not(feature = "nats"),
// allow(dead_code))`), so dead code anywhere else is still found.

mod admission;
pub mod aether;
pub mod attenuation;
pub mod bustime;
pub mod channel;
pub mod config;
pub mod connection;
pub mod diffraction;
pub mod error;
pub mod hopping;
mod inbox;
#[cfg(feature = "nats")]
pub mod lan;
mod medium;
mod names;
mod offer;
pub mod operator;
pub mod physics;
pub mod rate_limit;
mod recent;
pub mod reflection;
#[cfg(feature = "reliability")]
pub mod reliable;
mod replay;
mod reply;
pub mod report;
mod secret;
mod security;
pub mod spans;
pub mod state;
pub mod stats;
pub mod subject;
mod system;
pub mod vibrator;
pub mod wave;

pub use aether::Aether;
pub use channel::{Channel, ChannelError};
pub use config::{AetherConfig, ConfigError};
pub use connection::{ConnectionEvent, ConnectionState, ConnectionStatus, StreamStatus};
pub use error::{
    ConnectError, ConnectErrorKind, EmitError, EmitErrorKind, Error, RequestError,
    RequestErrorKind, ResonateError, ResonateErrorKind, VibratorError, VibratorErrorKind,
    WireError, WireErrorKind,
};
pub use operator::Operator;
pub use physics::{
    Interference, InterferenceEvent, InterferenceFollower, InterferenceKind, InterferencePattern,
    InvolvedWave, Physics, PhysicsConfig, PhysicsEngine, PhysicsEvents, PhysicsStats,
    ResonanceEdge, ResonanceGraph,
};
pub use rate_limit::RateLimit;
pub use reflection::ReflectionReason;
pub use secret::Secret;
pub use stats::{DropReason, StatsSnapshot};
pub use vibrator::{Emitter, Vibrator, VibratorBuilder};
pub use wave::{
    Amplitude, IntoPayload, Phase, TRACE_FLAG_SAMPLED, TraceContext, TraceContextError, Wave,
    WaveBuilder, WaveError, WaveId,
};

/// The binary envelope of a wave: the body of its message on the wire (NATS).
///
/// Versioned and laid out byte by byte in docs/guide/wire.md ("Wire format"),
/// with test vectors in `aether-core/tests/vectors/wire/`, so a client in
/// another language can emit and read waves. The channel is not in the
/// envelope (it is the NATS subject), so [`decode`](wire::decode) is given it.
///
/// ```
/// use aether_core::{Channel, Wave, wire};
///
/// let wave = Wave::builder("orders.created").amplitude(0.8).payload("hi").build()?;
/// let body = wire::encode(&wave);
/// assert_eq!(body.len(), wire::encoded_len(&wave));
///
/// let back = wire::decode(Channel::new("orders.created"), body, &wire::Limits::default())?;
/// assert_eq!(back.amplitude().value(), 0.8);
/// assert_eq!(&back.payload_bytes()[..], b"hi");
///
/// let err = wire::decode(Channel::new("orders.created"), "{}".into(), &wire::Limits::default());
/// assert_eq!(err.unwrap_err().kind(), wire::WireErrorKind::BadMagic);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub mod wire {
    pub use crate::error::{WireError, WireErrorKind};
    #[doc(hidden)]
    pub use crate::wave::wire::Parts;
    pub use crate::wave::wire::{
        DEFAULT_MAX_BODY_BYTES, FLAG_CORRELATION_KEY, FLAG_DECAY, FLAG_DIFFRACT, FLAG_REFLECT,
        FLAG_REFLECTED, FLAG_REPLY_TO, FLAG_SEALED, FLAG_SIGNED, FLAG_TRACE, HEADER_LEN,
        KNOWN_FLAGS, Limits, MAGIC, MAX_CORRELATION_KEY_LEN, MAX_REFLECTION_MESSAGE_LEN,
        MAX_SOURCE_LEN, SIGNATURE_LEN, Signature, TRACE_LEN, VERSION, check, decode, encode,
        encode_signed, encoded_len, verify,
    };
    pub use crate::wave::wire::{
        FLAG_AMPLITUDE, FLAG_EMITTED_AT, FLAG_ID_NODE, FLAG_PHASE, FLAG_SOURCE_AMPLITUDE, FRAME,
        KNOWN_FLAGS_V2, MAX_FRAME_WAVES, V2_COMMON_HEADER_LEN, VERSION_2, WireVersion, encode_as,
        encode_frame, encode_signed_as, encoded_len_as, frame_envelopes, is_frame,
    };
}

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;

// The user guide's examples (`docs/guide/`), compiled and run as doctests:
// one hidden item per page.
#[cfg(doctest)]
#[doc = include_str!("../../docs/guide/contract.md")]
pub struct GuideContract;
#[cfg(doctest)]
#[doc = include_str!("../../docs/guide/waves.md")]
pub struct GuideWaves;
#[cfg(doctest)]
#[doc = include_str!("../../docs/guide/channels.md")]
pub struct GuideChannels;
#[cfg(doctest)]
#[doc = include_str!("../../docs/guide/delivery.md")]
pub struct GuideDelivery;
#[cfg(doctest)]
#[doc = include_str!("../../docs/guide/configuration.md")]
pub struct GuideConfiguration;
#[cfg(doctest)]
#[doc = include_str!("../../docs/guide/statistics.md")]
pub struct GuideStatistics;
#[cfg(all(doctest, feature = "nats"))]
#[doc = include_str!("../../docs/guide/nats.md")]
pub struct GuideNats;
#[cfg(all(doctest, feature = "nats"))]
#[doc = include_str!("../../docs/guide/durable.md")]
pub struct GuideDurable;
#[cfg(doctest)]
#[doc = include_str!("../../docs/guide/hopping.md")]
pub struct GuideHopping;
#[cfg(doctest)]
#[doc = include_str!("../../docs/guide/physics.md")]
pub struct GuidePhysics;
#[cfg(all(doctest, feature = "reliability"))]
#[doc = include_str!("../../docs/guide/reliability.md")]
pub struct GuideReliability;
#[cfg(doctest)]
#[doc = include_str!("../../docs/guide/security.md")]
pub struct GuideSecurity;
#[cfg(doctest)]
#[doc = include_str!("../../docs/guide/observability.md")]
pub struct GuideObservability;
#[cfg(doctest)]
#[doc = include_str!("../../docs/guide/operating.md")]
pub struct GuideOperating;
#[cfg(doctest)]
#[doc = include_str!("../../docs/guide/errors.md")]
pub struct GuideErrors;
#[cfg(doctest)]
#[doc = include_str!("../../docs/guide/state.md")]
pub struct GuideState;

#[cfg(test)]
mod send_sync {
    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn public_types_are_send_and_sync() {
        assert_send_sync::<crate::Aether>();
        assert_send_sync::<crate::Vibrator>();
        assert_send_sync::<crate::Emitter>();
        assert_send_sync::<crate::Wave>();
        assert_send_sync::<crate::Channel>();
        assert_send_sync::<crate::EmitError>();
        assert_send_sync::<crate::Physics>();
        assert_send_sync::<crate::PhysicsStats>();
        assert_send_sync::<crate::ReflectionReason>();
        fn assert_send<T: Send>() {}
        assert_send::<crate::PhysicsEvents>();
        assert_send::<crate::InterferenceFollower>();
    }
}
