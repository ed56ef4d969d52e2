//! What a wave can carry.

use bytes::{BufMut, Bytes, BytesMut};
use serde::Serialize;

/// `value` as JSON text, written into a per-thread arena of 64 KiB blocks
/// (no allocation per payload; each payload's `Bytes` is a reference count
/// on its block, which is freed when the last payload cut from it goes).
pub(crate) fn json_pooled<T: Serialize + ?Sized>(value: &T) -> Result<Bytes, serde_json::Error> {
    thread_local! {
        static ARENA: std::cell::RefCell<BytesMut> = std::cell::RefCell::new(BytesMut::new());
    }
    const BLOCK: usize = 64 * 1024;
    /// Room left under which a new block is taken first.
    const LOW: usize = 1024;
    ARENA.with_borrow_mut(|arena| {
        if arena.capacity() < LOW {
            *arena = BytesMut::with_capacity(BLOCK);
        }
        match serde_json::to_writer(arena.writer(), value) {
            Ok(()) => Ok(arena.split().freeze()),
            Err(e) => {
                arena.clear();
                Err(e)
            }
        }
    })
}

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
        json_pooled(self).unwrap_or_default()
    }
}

impl IntoPayload for () {
    fn into_payload(self) -> Bytes {
        Bytes::new()
    }
}
