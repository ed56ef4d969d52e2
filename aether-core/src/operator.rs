//! What an operator's tools need of an aether beyond what every program
//! does on every medium: the durable stream as the server reports it and
//! the consumers a managing user makes for others, waves as they are kept
//! at rest, and the ACL asked about another program's emit. A trait of its
//! own, so that [`Aether`](crate::Aether)'s methods are what every program
//! uses; `use aether_core::Operator` brings these into scope.
//!
//! ```
//! use aether_core::{Aether, AetherConfig, Channel, Operator};
//!
//! let aether = Aether::new(AetherConfig::default())?;
//! // No access rules: everything is allowed.
//! assert!(aether.acl_allows_emit(Some("alpha"), &Channel::new("orders.created")));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::future::Future;

use crate::{
    Channel, ConnectError, DropReason, Wave, config::DurableConsumer, connection::StreamStatus,
};

/// An aether's operator side. Implemented by [`Aether`](crate::Aether)
/// alone.
pub trait Operator: sealed::Sealed {
    /// Makes the durable consumers named (or finds them made), with the
    /// settings a resonance gives its own: for the user that manages the
    /// durable stream, where the programs' permissions do not let them
    /// make their consumers (`NatsPermissions::without_consumer_creation`;
    /// the names from `AclRule::durable_consumers`). Nothing to make on the
    /// embedded medium.
    fn make_durable_consumers(
        &self,
        consumers: &[DurableConsumer],
    ) -> impl Future<Output = Result<(), ConnectError>> + Send;

    /// The JetStream stream of the durable channels, as the server reports
    /// it now: waves and bytes held against its limits, the age of its
    /// oldest wave, its copies and leader, its consumers' backlogs. Past
    /// `max_bytes` the server deletes the oldest waves, taken or not, so an
    /// operator watches `bytes` against `max_bytes` (the gateway exports
    /// them; the alert `AetherStreamNearFull`). An aether without durable
    /// channels looks up the stream `[aether.durability] stream` names
    /// (`aether stream`), and changes nothing. `ConnectErrorKind::Config`
    /// on the embedded medium, `Unreachable` when the stream does not
    /// answer within 1 s.
    fn durable_stream(&self) -> impl Future<Output = Result<StreamStatus, ConnectError>> + Send;

    /// `wave` as it is kept at rest (a journal, an archive): with its
    /// payload sealed as it travels on the wire when its channel's payloads
    /// are sealed (`[[aether.security.encryption]]`), else as it is. What
    /// is sealed on the wire stays sealed on disk; [`Operator::open_at_rest`]
    /// reads it back where the key is held.
    fn sealed_at_rest(&self, wave: &Wave) -> Wave;

    /// Opens a wave kept by [`Operator::sealed_at_rest`]: a sealed payload
    /// is replaced by what it holds. `Err(DropReason::Undecryptable)` when
    /// this aether holds no key for it, another key, or the bytes were
    /// changed, or when its channel's payloads are sealed and it was kept
    /// in clear.
    fn open_at_rest(&self, wave: &mut Wave) -> Result<(), DropReason>;

    /// Whether the aether's ACL (`[aether.security] acl`) lets `source`
    /// emit on `channel`: what an observer asks before it counts a hopping
    /// wave under its base. Everything is allowed without rules.
    fn acl_allows_emit(&self, source: Option<&str>, channel: &Channel) -> bool;
}

pub(crate) mod sealed {
    /// Only the crate's own types are operators (`Aether`, in its module).
    pub trait Sealed {}
}
