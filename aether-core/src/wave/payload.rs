//! What a wave can carry.

use bytes::Bytes;

/// Anything that can be the payload of a wave: bytes as they are, or a JSON
/// value serialized to bytes.
pub trait IntoPayload {
    /// The payload bytes.
    fn into_payload(self) -> Bytes;
}

impl IntoPayload for Bytes {
    fn into_payload(self) -> Bytes {
        self
    }
}

impl IntoPayload for Vec<u8> {
    fn into_payload(self) -> Bytes {
        Bytes::from(self)
    }
}

impl IntoPayload for &'static [u8] {
    fn into_payload(self) -> Bytes {
        Bytes::from_static(self)
    }
}

impl<const N: usize> IntoPayload for &'static [u8; N] {
    fn into_payload(self) -> Bytes {
        Bytes::from_static(self)
    }
}

impl IntoPayload for &'static str {
    fn into_payload(self) -> Bytes {
        Bytes::from_static(self.as_bytes())
    }
}

impl IntoPayload for String {
    fn into_payload(self) -> Bytes {
        Bytes::from(self)
    }
}

impl IntoPayload for serde_json::Value {
    fn into_payload(self) -> Bytes {
        (&self).into_payload()
    }
}

impl IntoPayload for &serde_json::Value {
    fn into_payload(self) -> Bytes {
        // Serializing a `Value` cannot fail: its map keys are strings.
        Bytes::from(serde_json::to_vec(self).unwrap_or_default())
    }
}

impl IntoPayload for () {
    fn into_payload(self) -> Bytes {
        Bytes::new()
    }
}
