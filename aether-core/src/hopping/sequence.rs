//! The hop sequence: which wire channel a base channel uses in each time
//! slot, and which waves a receiver accepts. Pure functions of the key, the
//! base, the settings and a time given as an argument, so that tests choose
//! the time.

use std::fmt;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::{Channel, Secret};

type HmacSha256 = Hmac<Sha256>;

/// The first token of every wire channel of hopping: a channel
/// `_hop.<32 hex digits>`. Like `_INBOX`, a name no service picks by
/// accident; a base channel may not start with it.
pub const HOP_TOKEN: &str = "_hop";

/// Bytes of the HMAC kept in a wire channel's token (written as twice as
/// many hex digits).
pub const TOKEN_BYTES: usize = 16;

/// Domain tag of the token derivation, so that a token never equals the
/// HMAC that chooses a hop.
const CHANNEL_TAG: &[u8] = b"chan";

/// The key of hop sequences: HMAC-SHA256 keyed with the hopping secret, or
/// with the empty key when there is none (then anyone can compute every wire
/// channel of a base they know). Prints as `[redacted]`.
#[derive(Clone)]
pub struct HopKey {
    /// The keyed HMAC state, cloned for each computation (the key's own
    /// blocks are hashed once).
    mac: HmacSha256,
    conceals: bool,
}

impl HopKey {
    /// The key for `secret`; `None` gives the public, empty key.
    pub fn new(secret: Option<&Secret>) -> Self {
        let bytes = secret.map_or(&[][..], |s| s.expose().as_bytes());
        Self {
            mac: HmacSha256::new_from_slice(bytes).expect("HMAC takes keys of any length"),
            conceals: secret.is_some(),
        }
    }

    /// Whether the key is a secret: without one, hopping conceals nothing.
    pub fn conceals(&self) -> bool {
        self.conceals
    }

    fn hmac(&self, parts: &[&[u8]]) -> [u8; 32] {
        let mut mac = self.mac.clone();
        for part in parts {
            mac.update(part);
        }
        mac.finalize().into_bytes().into()
    }

    /// The hop of `base` in time slot `slot`: `HMAC-SHA256(key, base ||
    /// slot)`, with the slot as 8 bytes big-endian, read as a 256-bit
    /// big-endian number, modulo `hop_count` (at least 1).
    pub fn hop(&self, base: &Channel, slot: u64, hop_count: u32) -> u32 {
        let digest = self.hmac(&[base.as_str().as_bytes(), &slot.to_be_bytes()]);
        let n = u64::from(hop_count.max(1));
        let rest = digest
            .iter()
            .fold(0u64, |r, b| (r * 256 + u64::from(*b)) % n);
        rest as u32
    }

    /// The wire channel of hop `hop` of `base`: `_hop.` then the first 16
    /// bytes of `HMAC-SHA256(key, "chan" || base || hop)` (the hop as 4
    /// bytes big-endian) in lowercase hex.
    pub fn wire_channel(&self, base: &Channel, hop: u32) -> Channel {
        let digest = self.hmac(&[CHANNEL_TAG, base.as_str().as_bytes(), &hop.to_be_bytes()]);
        let mut name = String::with_capacity(HOP_TOKEN.len() + 1 + 2 * TOKEN_BYTES);
        name.push_str(HOP_TOKEN);
        name.push('.');
        for b in &digest[..TOKEN_BYTES] {
            name.push(char::from(HEX[usize::from(b >> 4)]));
            name.push(char::from(HEX[usize::from(b & 0xF)]));
        }
        Channel::new(name)
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

impl fmt::Debug for HopKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let key = if self.conceals {
            "[redacted]"
        } else {
            "none (conceals nothing)"
        };
        f.debug_struct("HopKey").field("secret", &key).finish()
    }
}

/// The time slot of Unix time `unix_ms`: `floor(unix_ms / hop_interval_ms)`.
pub fn slot(unix_ms: u64, hop_interval_ms: u64) -> u64 {
    unix_ms / hop_interval_ms.max(1)
}

/// Whether `channel` is a wire channel of hopping (its first token is
/// [`HOP_TOKEN`]).
pub fn is_hop_channel(channel: &Channel) -> bool {
    channel.tokens().next() == Some(HOP_TOKEN)
}

/// Hop settings that cannot make a sequence.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("hopping on {base:?}: {problem}")]
pub struct HopSettingsError {
    base: String,
    problem: String,
}

/// Why a receiver refused a hopping wave (counted as
/// [`DropReason::Replay`](crate::DropReason::Replay)).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The wave carries no emission stamp.
    NotStamped,
    /// It was stamped in `stamp_slot`, more than one slot from the
    /// receiver's `now_slot`.
    OutsideWindow {
        /// The slot of its emission stamp.
        stamp_slot: u64,
        /// The receiver's slot when it arrived.
        now_slot: u64,
    },
    /// It travelled on a wire channel that is not the hop of its stamp's
    /// slot.
    WrongHop {
        /// The slot of its emission stamp.
        stamp_slot: u64,
    },
}

/// The hop sequence of one base channel: a key, the number of hops and the
/// slot length. Senders and receivers with the same sequence agree on every
/// wire channel.
///
/// ```
/// use aether_core::{Channel, Secret, hopping::{HopKey, HopSequence}};
///
/// let key = HopKey::new(Some(&Secret::new("sixteen byte key")));
/// let orders = HopSequence::new(key, Channel::new("orders"), 4, 200)?;
/// let t = 1_700_000_000_000; // Unix ms
/// let sent_on = orders.channel_at(t);
/// assert!(sent_on.as_str().starts_with("_hop."));
/// assert!(!sent_on.as_str().contains("orders"));
/// // A receiver whose clock is up to one slot off listens on it.
/// assert!(orders.window(t + 200).contains(&sent_on));
/// assert!(orders.window(t - 200).contains(&sent_on));
/// assert_eq!(orders.check(&sent_on, Some(t), t + 150), Ok(()));
/// # Ok::<(), aether_core::hopping::HopSettingsError>(())
/// ```
#[derive(Clone, Debug)]
pub struct HopSequence {
    key: HopKey,
    base: Channel,
    hop_count: u32,
    hop_interval_ms: u64,
}

impl HopSequence {
    /// The sequence of `base` (a concrete channel not under `_hop`), with
    /// `hop_count` hops (at least 1) and slots of `hop_interval_ms` (at
    /// least 1).
    pub fn new(
        key: HopKey,
        base: Channel,
        hop_count: u32,
        hop_interval_ms: u64,
    ) -> Result<Self, HopSettingsError> {
        let problem = if let Err(e) = base.validate_concrete() {
            Some(e.to_string())
        } else if base.is_system() {
            Some(format!(
                "{:?} is one of the bus's own channels, reserved for the aether (its first \
                 token starts with `_`, as {HOP_TOKEN:?} wire channels do); pick another base",
                base.as_str()
            ))
        } else if hop_count == 0 {
            Some("hop_count must be at least 1".to_string())
        } else if hop_interval_ms == 0 {
            Some("hop_interval_ms must be at least 1".to_string())
        } else {
            None
        };
        match problem {
            Some(problem) => Err(HopSettingsError {
                base: base.as_str().to_string(),
                problem,
            }),
            None => Ok(Self {
                key,
                base,
                hop_count,
                hop_interval_ms,
            }),
        }
    }

    /// The base channel: what receivers see on the waves.
    pub fn base(&self) -> &Channel {
        &self.base
    }

    /// How many wire channels the base hops over.
    pub fn hop_count(&self) -> u32 {
        self.hop_count
    }

    /// The slot length, in milliseconds.
    pub fn hop_interval_ms(&self) -> u64 {
        self.hop_interval_ms
    }

    /// The key.
    pub fn key(&self) -> &HopKey {
        &self.key
    }

    /// The slot of Unix time `unix_ms`.
    pub fn slot(&self, unix_ms: u64) -> u64 {
        slot(unix_ms, self.hop_interval_ms)
    }

    /// The hop of slot `slot`, in `0..hop_count`.
    pub fn hop_at_slot(&self, slot: u64) -> u32 {
        self.key.hop(&self.base, slot, self.hop_count)
    }

    /// The wire channel of slot `slot`.
    pub fn channel_at_slot(&self, slot: u64) -> Channel {
        self.key.wire_channel(&self.base, self.hop_at_slot(slot))
    }

    /// The wire channel a sender uses at Unix time `unix_ms`.
    pub fn channel_at(&self, unix_ms: u64) -> Channel {
        self.channel_at_slot(self.slot(unix_ms))
    }

    /// The wire channels a receiver accepts at Unix time `unix_ms`: those of
    /// the slots `s - 1`, `s` and `s + 1`, in that order (one may repeat
    /// another when two slots share a hop).
    pub fn window(&self, unix_ms: u64) -> Vec<Channel> {
        let s = self.slot(unix_ms);
        (s.saturating_sub(1)..=s.saturating_add(1))
            .map(|slot| self.channel_at_slot(slot))
            .collect()
    }

    /// Whether a receiver accepts, at Unix time `now_ms`, a wave that came on
    /// `wire` stamped at `stamp_ms`: the stamp's slot must be within one
    /// slot of now, and `wire` the hop of the stamp's slot. Anything else is
    /// a replay.
    pub fn check(&self, wire: &Channel, stamp_ms: Option<u64>, now_ms: u64) -> Result<(), Refusal> {
        let stamp_slot = self.check_time(stamp_ms, now_ms)?;
        if self.channel_at_slot(stamp_slot) == *wire {
            Ok(())
        } else {
            Err(Refusal::WrongHop { stamp_slot })
        }
    }

    /// The slot of `stamp_ms` if it is within one slot of `now_ms`.
    pub(crate) fn check_time(&self, stamp_ms: Option<u64>, now_ms: u64) -> Result<u64, Refusal> {
        let stamp_slot = self.slot(stamp_ms.ok_or(Refusal::NotStamped)?);
        let now_slot = self.slot(now_ms);
        if stamp_slot.abs_diff(now_slot) > 1 {
            return Err(Refusal::OutsideWindow {
                stamp_slot,
                now_slot,
            });
        }
        Ok(stamp_slot)
    }
}
