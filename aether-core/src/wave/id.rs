//! Wave identifiers: unique and ordered by time.

use std::{
    fmt,
    hash::{BuildHasher, RandomState},
    str::FromStr,
    sync::{
        OnceLock,
        atomic::{AtomicU64, Ordering},
    },
};

/// A 128-bit wave id: 48 bits of Unix milliseconds, 32 bits that are random
/// per process, and a 48-bit per-process sequence.
///
/// Ids sort by creation time (to the millisecond, and exactly within one
/// process) and are unique across processes with overwhelming probability.
/// Displayed as 32 hex digits.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct WaveId {
    // Two halves rather than a `u128`, whose 16-byte alignment would pad
    // every wave; the derived order is the order of the number.
    hi: u64,
    lo: u64,
}

static SEQUENCE: AtomicU64 = AtomicU64::new(0);

impl WaveId {
    /// The id of a wave not emitted yet.
    pub const NIL: WaveId = WaveId { hi: 0, lo: 0 };

    /// A new id for now.
    pub fn generate() -> Self {
        Self::at_nanos(super::unix_nanos())
    }

    /// A new id for Unix time `now_ns`.
    pub(crate) fn at_nanos(now_ns: u64) -> Self {
        Self::at(now_ns / 1_000_000, SEQUENCE.fetch_add(1, Ordering::Relaxed))
    }

    fn at(millis: u64, sequence: u64) -> Self {
        let high = (u128::from(millis) & 0xFFFF_FFFF_FFFF) << 80;
        let node = u128::from(process_nonce() as u32) << 48;
        Self::from_u128(high | node | (u128::from(sequence) & 0xFFFF_FFFF_FFFF))
    }

    /// The id as a number.
    pub fn as_u128(self) -> u128 {
        (u128::from(self.hi) << 64) | u128::from(self.lo)
    }

    /// An id from its number (as read off the wire).
    pub fn from_u128(value: u128) -> Self {
        Self {
            hi: (value >> 64) as u64,
            lo: value as u64,
        }
    }

    /// Unix milliseconds at which the id was made.
    pub fn timestamp_ms(self) -> u64 {
        self.hi >> 16
    }
}

impl fmt::Display for WaveId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // By hand: `{:032x}` costs a tenth of an emit from Python.
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut text = [0u8; 32];
        let value = self.as_u128();
        for (i, digit) in text.iter_mut().enumerate() {
            *digit = HEX[((value >> (124 - 4 * i)) & 0xF) as usize];
        }
        f.write_str(std::str::from_utf8(&text).expect("hex digits"))
    }
}

impl fmt::Debug for WaveId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for WaveId {
    type Err = std::num::ParseIntError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        u128::from_str_radix(s, 16).map(Self::from_u128)
    }
}

/// An odd number no other call in any process is likely to return: the
/// process's nonce mixed with the time and a count. Replicas' node ids,
/// hold tokens and clock askers are these.
pub(crate) fn unique_odd_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let mixed = process_nonce() ^ super::clock::system_unix_nanos().rotate_left(17);
    mixed.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(n) | 1
}

/// A random number drawn once per process (from the OS-seeded hasher keys).
pub(crate) fn process_nonce() -> u64 {
    static NONCE: OnceLock<u64> = OnceLock::new();
    *NONCE.get_or_init(|| {
        RandomState::new().hash_one((std::process::id(), super::clock::system_unix_nanos()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wave::unix_nanos;

    #[test]
    fn ids_are_unique_and_ordered() {
        let ids: Vec<WaveId> = (0..1000).map(|_| WaveId::generate()).collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]));
        let now_ms = unix_nanos() / 1_000_000;
        assert!(now_ms.abs_diff(ids[0].timestamp_ms()) < 10_000);
        let text = ids[3].to_string();
        assert_eq!(text.len(), 32);
        assert_eq!(text.parse::<WaveId>().unwrap(), ids[3]);
    }

    proptest::proptest! {
        #[test]
        fn an_id_prints_as_32_lower_hex_digits_and_parses_back(value: u128) {
            let id = WaveId::from_u128(value);
            let text = id.to_string();
            proptest::prop_assert_eq!(&text, &format!("{value:032x}"));
            proptest::prop_assert_eq!(text.parse::<WaveId>().unwrap(), id);
        }
    }
}
