//! The LAN's one secret, and what is derived from it.
//!
//! Every node and program of a bus on a LAN holds the same secret file.
//! Nothing derived from it reveals it: each value is an HMAC-SHA256 of a
//! fixed label under the secret, so knowing one (the fingerprint, which
//! is announced) gives nothing about the others or the secret.

use std::path::{Path, PathBuf};

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::Secret;

/// The fewest bytes a secret file may hold (after trimming whitespace).
pub const MIN_SECRET_BYTES: usize = 16;

/// The most bytes a secret file may hold: more is not a secret file (a
/// device such as `/dev/zero` would never end).
pub const MAX_SECRET_BYTES: usize = 4096;

/// Why a secret could not be had.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    /// The file could not be read.
    #[error("cannot read the secret file {path}: {reason}")]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The file holds more than a secret file does.
    #[error(
        "{path} holds more than {MAX_SECRET_BYTES} bytes: not a secret file (make one with \
         `aether node --new-secret FILE`)"
    )]
    TooLong {
        /// The file.
        path: PathBuf,
    },
    /// The file holds too little to be a secret.
    #[error(
        "the secret file {path} holds {len} bytes; a secret needs at least {MIN_SECRET_BYTES} \
         (make one with `aether node --new-secret {path}`)"
    )]
    TooShort {
        /// The file.
        path: PathBuf,
        /// What it holds, trimmed.
        len: usize,
    },
}

/// The bus's secret, as read from its file.
#[derive(Clone)]
pub struct LanSecret {
    bytes: Vec<u8>,
}

impl std::fmt::Debug for LanSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LanSecret(fingerprint {})", self.fingerprint())
    }
}

impl LanSecret {
    /// Reads the secret in `path` (surrounding whitespace is not part of
    /// it, so an editor's newline changes nothing).
    pub fn load(path: &Path) -> Result<Self, SecretError> {
        use std::io::Read;
        let unreadable = |e: std::io::Error| SecretError::Unreadable {
            path: path.to_path_buf(),
            reason: e.to_string(),
        };
        let mut bytes = Vec::new();
        std::fs::File::open(path)
            .and_then(|file| {
                file.take(MAX_SECRET_BYTES as u64 + 1)
                    .read_to_end(&mut bytes)
            })
            .map_err(unreadable)?;
        if bytes.len() > MAX_SECRET_BYTES {
            return Err(SecretError::TooLong {
                path: path.to_path_buf(),
            });
        }
        Self::from_bytes(&bytes).map_err(|len| SecretError::TooShort {
            path: path.to_path_buf(),
            len,
        })
    }

    /// The secret `bytes` (trimmed); `Err(len)` when fewer than
    /// [`MIN_SECRET_BYTES`] are left.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, usize> {
        let trimmed = bytes.trim_ascii();
        if trimmed.len() < MIN_SECRET_BYTES {
            return Err(trimmed.len());
        }
        Ok(Self {
            bytes: trimmed.to_vec(),
        })
    }

    /// A new random secret's text (64 hex digits), for a new secret file.
    pub fn generate() -> String {
        use chacha20poly1305::aead::{KeyInit, OsRng};
        // 256 bits from the operating system's randomness.
        let key = chacha20poly1305::XChaCha20Poly1305::generate_key(&mut OsRng);
        hex(&key)
    }

    pub(super) fn derive(&self, label: &str) -> [u8; 32] {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.bytes).expect("any key length");
        mac.update(b"aether-lan/v1/");
        mac.update(label.as_bytes());
        mac.finalize().into_bytes().into()
    }

    fn derive_hex(&self, label: &str) -> String {
        hex(&self.derive(label))
    }

    /// The password programs give the bus's NATS servers (user
    /// [`CLIENT_USER`]).
    pub fn client_password(&self) -> Secret {
        Secret::new(self.derive_hex("client"))
    }

    /// The password nodes give each other on their cluster routes (user
    /// [`ROUTE_USER`]).
    pub fn route_password(&self) -> Secret {
        Secret::new(self.derive_hex("route"))
    }

    /// The key that seals the payloads of the channels a program's
    /// `[aether.security] encryption` rules name without a key of their
    /// own.
    pub fn seal_key(&self) -> Secret {
        Secret::new(self.derive_hex("seal"))
    }

    /// The key every source's signing key is derived from when a program
    /// asks for signatures (`require_signatures`) and names no keys
    /// ([`SecurityConfig::signing_key_base`](crate::config::SecurityConfig::signing_key_base)).
    pub fn signing_base(&self) -> Secret {
        Secret::new(self.derive_hex("signing"))
    }

    /// The proof that whoever made `text` holds the secret: 32 hex digits
    /// of an HMAC under a key of its own (a node signs its announcement
    /// with it; nothing else derived here can be worked out from it).
    pub fn proof(&self, text: &str) -> String {
        let key = self.derive("announce");
        let mut mac = Hmac::<Sha256>::new_from_slice(&key).expect("any key length");
        mac.update(text.as_bytes());
        hex(&mac.finalize().into_bytes())[..32].to_string()
    }

    /// Whether `proof` is [`proof`](Self::proof) of `text`, compared in
    /// constant time.
    pub fn proves(&self, text: &str, proof: &str) -> bool {
        let Some(bytes) = unhex(proof).filter(|b| b.len() == 16) else {
            return false;
        };
        let key = self.derive("announce");
        let mut mac = Hmac::<Sha256>::new_from_slice(&key).expect("any key length");
        mac.update(text.as_bytes());
        mac.verify_truncated_left(&bytes).is_ok()
    }

    /// What nodes announce so that a node or program can tell a bus with
    /// its secret from another before it connects: 16 hex digits, from
    /// which nothing else derived here can be worked out.
    pub fn fingerprint(&self) -> String {
        self.derive_hex("fingerprint")[..16].to_string()
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The bytes of lower-case `text` in hex, if it is that.
fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| {
            text.get(i..i + 2)
                .filter(|pair| pair.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
                .and_then(|pair| u8::from_str_radix(pair, 16).ok())
        })
        .collect()
}

/// The NATS user of programs on a LAN bus.
pub const CLIENT_USER: &str = "aether";
/// The NATS user of the routes between nodes.
pub const ROUTE_USER: &str = "aether-route";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_values_differ_and_do_not_show_the_secret() {
        let secret = LanSecret::from_bytes(b"  correct horse battery staple\n").unwrap();
        let same = LanSecret::from_bytes(b"correct horse battery staple").unwrap();
        let other = LanSecret::from_bytes(b"correct horse battery stapler").unwrap();
        assert_eq!(secret.fingerprint(), same.fingerprint());
        assert_ne!(secret.fingerprint(), other.fingerprint());
        let values = [
            secret.client_password().expose().to_string(),
            secret.route_password().expose().to_string(),
            secret.seal_key().expose().to_string(),
            secret.signing_base().expose().to_string(),
        ];
        for (i, a) in values.iter().enumerate() {
            assert_eq!(a.len(), 64);
            assert!(!a.contains("horse"));
            assert!(!a.starts_with(&secret.fingerprint()));
            for b in &values[i + 1..] {
                assert_ne!(a, b);
            }
        }
        assert!(!format!("{secret:?}").contains("horse"));
    }

    #[test]
    fn a_short_secret_is_refused_and_a_new_one_is_long_enough() {
        assert_eq!(LanSecret::from_bytes(b"  short \n").unwrap_err(), 5);
        let text = LanSecret::generate();
        assert_eq!(text.len(), 64);
        assert!(LanSecret::from_bytes(text.as_bytes()).is_ok());
        assert_ne!(text, LanSecret::generate());
    }
}
