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
//! | [`mod@aether`] | the medium handle and the emit path |
//! | [`config`] | settings and their validation |
//! | [`stats`] | lock-free counters of deliveries and drops |
//! | [`error`] | typed errors per operation |

#![forbid(unsafe_code)]
#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]

pub mod aether;
pub mod attenuation;
pub mod channel;
pub mod config;
pub mod error;
mod inbox;
mod medium;
mod reply;
pub mod stats;
pub mod vibrator;
pub mod wave;

pub use aether::Aether;
pub use channel::{Channel, ChannelError};
pub use config::{AetherConfig, ConfigError};
pub use error::{
    EmitError, EmitErrorKind, Error, RequestError, RequestErrorKind, ResonateError,
    ResonateErrorKind, VibratorError, VibratorErrorKind,
};
pub use stats::{DropReason, StatsSnapshot};
pub use vibrator::{Emitter, Vibrator, VibratorBuilder};
pub use wave::{Amplitude, IntoPayload, Phase, Wave, WaveBuilder, WaveError, WaveId};

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;

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
    }
}
