//! Errors, typed per operation.
//!
//! Each fallible operation returns an [`Error`] with its own small `Copy`
//! kind enum, read with [`Error::kind`], a message that says what was wrong
//! and what to do, and an optional source:
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use aether_core::{Aether, EmitErrorKind, Vibrator};
//!
//! let aether = Aether::default();
//! let vibrator = Vibrator::create("svc", &aether).await?;
//! let err = vibrator.emit_wave("orders.*", serde_json::json!({})).await.unwrap_err();
//! assert_eq!(err.kind(), EmitErrorKind::InvalidChannel);
//! # Ok(()) }
//! ```

use std::{error::Error as StdError, fmt};

/// An error of kind `K`, with a message and an optional source.
pub struct Error<K> {
    kind: K,
    message: String,
    source: Option<Box<dyn StdError + Send + Sync>>,
}

impl<K: Copy> Error<K> {
    /// An error of `kind` saying `message`.
    pub fn new(kind: K, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            source: None,
        }
    }

    /// An error of `kind` caused by `source`, whose text becomes the message.
    pub fn with_source(kind: K, source: impl StdError + Send + Sync + 'static) -> Self {
        Self {
            kind,
            message: source.to_string(),
            source: Some(Box::new(source)),
        }
    }

    /// Keeps `source` as the cause of an error whose message is already
    /// written.
    #[cfg_attr(not(feature = "nats"), allow(dead_code))]
    pub(crate) fn set_source(&mut self, source: impl StdError + Send + Sync + 'static) {
        self.source = Some(Box::new(source));
    }

    /// What kind of error this is.
    pub fn kind(&self) -> K {
        self.kind
    }

    /// What went wrong, without the kind's words.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl<K: fmt::Display> fmt::Display for Error<K> {
    /// `<kind>: <message>`; a message that already starts with its kind's
    /// words (a source error of the same kind) is not prefixed again.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = self.kind.to_string();
        if self.message.starts_with(&kind) {
            f.write_str(&self.message)
        } else {
            write!(f, "{kind}: {}", self.message)
        }
    }
}

impl<K: fmt::Debug> fmt::Debug for Error<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Error")
            .field("kind", &self.kind)
            .field("message", &self.message)
            .finish()
    }
}

impl<K: fmt::Debug + fmt::Display> StdError for Error<K> {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn StdError + 'static))
    }
}

macro_rules! kinds {
    ($(#[$meta:meta])* $name:ident => $alias:ident { $($(#[$vmeta:meta])* $variant:ident = $label:literal => $text:literal,)+ }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum $name {
            $($(#[$vmeta])* $variant,)+
        }

        impl $name {
            /// Every kind, in the order declared.
            pub const ALL: &'static [Self] = &[$(Self::$variant,)+];

            /// The kind's name, snake_case: as metrics, reports, Python
            /// and the bridge name it.
            pub const fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $label,)+ }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(match self { $(Self::$variant => $text,)+ })
            }
        }

        #[doc = concat!("An error from this operation; see [`", stringify!($name), "`].")]
        pub type $alias = Error<$name>;
    };
}
pub(crate) use kinds;

kinds! {
    /// Why a wave could not be emitted.
    EmitErrorKind => EmitError {
        /// The channel is invalid or holds a wildcard.
        InvalidChannel = "invalid_channel" => "invalid channel",
        /// The payload could not be serialized.
        Payload = "payload" => "payload error",
        /// The aether was closed.
        Closed = "closed" => "aether closed",
        /// Disconnected from NATS, and the outbox that keeps waves until the
        /// connection is back is full. Retry later, or raise
        /// `nats.outbox_capacity`.
        OutboxFull = "outbox_full" => "outbox full",
        /// The medium refused the wave (over NATS: the connection is closed
        /// for good).
        Medium = "medium" => "medium error",
        /// The wave is larger than the medium carries: over NATS, its
        /// envelope is over `nats.max_wave_bytes` (the server's
        /// `max_payload`, 1 MiB by default). Nothing was sent. The embedded
        /// medium takes waves of any size.
        TooLarge = "too_large" => "wave too large",
        /// The wave cannot be reflected (`Vibrator::reflect`): it was not
        /// emitted with `reflect_on_failure(true)`, its source is unknown, or
        /// the reason's message is too long.
        Reflection = "reflection" => "cannot reflect",
        /// The vibrator is over its emit rate limit
        /// ([`crate::RateLimit`]); nothing was sent. The message says when
        /// the next emit is allowed; retrying later succeeds.
        RateLimited = "rate_limited" => "rate limited",
        /// The emit did not complete within the time allowed
        /// ([`crate::reliable`]).
        TimedOut = "timed_out" => "emit timed out",
        /// A circuit breaker is open after repeated failures and failed the
        /// call at once ([`crate::reliable`]).
        CircuitOpen = "circuit_open" => "circuit open",
        /// The aether's ACL does not let this vibrator emit on the channel
        /// (`[aether.security] acl`).
        Denied = "denied" => "emit denied",
        /// `reply` was given a wave that is not a request (it has no reply
        /// channel).
        NotARequest = "not_a_request" => "not a request",
    }
}

kinds! {
    /// Why resonating on a pattern failed.
    ResonateErrorKind => ResonateError {
        /// The pattern is invalid.
        InvalidChannel = "invalid_channel" => "invalid channel",
        /// The group name is invalid.
        InvalidGroup = "invalid_group" => "invalid group",
        /// The aether was closed.
        Closed = "closed" => "aether closed",
        /// The medium could not subscribe (over NATS: the connection is
        /// closed for good).
        Medium = "medium" => "medium error",
        /// The aether's ACL does not let this vibrator resonate on the
        /// pattern (`[aether.security] acl`).
        Denied = "denied" => "resonance denied",
        /// `stop_resonating` was given a pattern the vibrator does not
        /// resonate on.
        NotResonating = "not_resonating" => "not resonating",
    }
}

kinds! {
    /// Why a request got no reply.
    RequestErrorKind => RequestError {
        /// No vibrator resonates on the request's channel.
        NoResponders = "no_responders" => "no responders",
        /// No reply came within the timeout.
        TimedOut = "timed_out" => "request timed out",
        /// The request could not be emitted.
        Emit = "emit" => "request not emitted",
        /// The aether was closed.
        Closed = "closed" => "aether closed",
        /// The reply is not a valid wave (over NATS: a malformed envelope).
        BadReply = "bad_reply" => "malformed reply",
        /// The vibrator is over its emit rate limit; the request was not
        /// sent.
        RateLimited = "rate_limited" => "request rate limited",
        /// A circuit breaker is open after repeated failures and failed the
        /// request at once ([`crate::reliable`]).
        CircuitOpen = "circuit_open" => "circuit open",
    }
}

kinds! {
    /// Why an aether could not reach its medium.
    ConnectErrorKind => ConnectError {
        /// A setting is invalid.
        Config = "config" => "invalid configuration",
        /// TLS failed: a file could not be read or used, or the handshake
        /// was refused (a server certificate not trusted, or the client's
        /// certificate refused).
        Tls = "tls" => "TLS setup failed",
        /// A credentials file could not be read.
        Credentials = "credentials" => "credentials unusable",
        /// The server refused the credentials.
        Authorization = "authorization" => "not authorized",
        /// No server answered (in time).
        Unreachable = "unreachable" => "no server reachable",
    }
}

kinds! {
    /// Why a vibrator could not be created or changed.
    VibratorErrorKind => VibratorError {
        /// The name is invalid.
        InvalidName = "invalid_name" => "invalid vibrator name",
        /// A setting is out of range.
        InvalidSetting = "invalid_setting" => "invalid vibrator setting",
        /// The aether was closed.
        Closed = "closed" => "aether closed",
    }
}

impl From<EmitError> for RequestError {
    fn from(err: EmitError) -> Self {
        let kind = match err.kind() {
            EmitErrorKind::Closed => RequestErrorKind::Closed,
            EmitErrorKind::RateLimited => RequestErrorKind::RateLimited,
            _ => RequestErrorKind::Emit,
        };
        Self::with_source(kind, err)
    }
}

kinds! {
    /// Why a message body could not be read as a wave envelope
    /// ([`crate::wire::decode`]).
    WireErrorKind => WireError {
        /// The first byte is not the envelope's magic byte (`0xAE`): the body
        /// is not an Aether envelope.
        BadMagic = "bad_magic" => "not an Aether envelope",
        /// The envelope has a version this build does not read.
        UnsupportedVersion = "unsupported_version" => "unsupported envelope version",
        /// The envelope sets flags its version does not define.
        UnknownFlags = "unknown_flags" => "unknown envelope flags",
        /// The body ends before a field it announces.
        Truncated = "truncated" => "truncated envelope",
        /// The body is larger than the limit.
        Oversized = "oversized" => "envelope too large",
        /// A field holds a value out of range or malformed (amplitude, phase,
        /// decay, source name, correlation key, reply channel).
        InvalidField = "invalid_field" => "invalid envelope field",
        /// A batch frame whose count or lengths do not match its bytes; it
        /// is refused whole.
        BadFrame = "bad_frame" => "malformed batch frame",
    }
}
