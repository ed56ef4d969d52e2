//! The bridge's messages: JSON text frames, one message each, as the
//! README's "Browser bridge protocol" block lists them (a test holds the
//! running server to that block).
//!
//! A stamp travels as its text ([`Stamp`]'s `Display`), which sorts as the
//! stamp does, so a browser compares two stamps with `<`.

use aether_core::state::Stamp;
use std::borrow::Cow;

use serde::{Deserialize, Serialize, de::IgnoredAny};
use serde_json::value::RawValue;

/// A message from a browser. Anything else (another type, a missing or
/// extra field, a field of another type) is malformed.
#[derive(Debug)]
pub(crate) enum Inbound<'a> {
    /// The first message: the token, and the browser's replica id.
    Auth {
        token: Cow<'a, str>,
        replica: Cow<'a, str>,
    },
    /// A write of the browser's replica, with the stamp of the entry it
    /// replaced there (`prev`: absent when the browser does not say,
    /// `null` when it held none).
    Set {
        key: Cow<'a, str>,
        value: &'a RawValue,
        stamp: Cow<'a, str>,
        prev: Option<Option<String>>,
    },
    /// A delete of the browser's replica.
    Delete {
        key: Cow<'a, str>,
        stamp: Cow<'a, str>,
        prev: Option<Option<String>>,
    },
    /// Writes of the browser's replica, in the order made: a group of
    /// writes (a paste, a transaction) in one message.
    Writes { writes: Vec<Write<'a>> },
    /// Asks for `synced` with this id once every earlier message is taken.
    Sync { id: u64 },
    /// What the page shows of itself (not kept): where its cursor is, and
    /// its presence value. An absent field stays as it was; `value: null`
    /// clears the value.
    Presence {
        x: Option<i32>,
        y: Option<i32>,
        value: Option<Option<&'a RawValue>>,
    },
}

/// One write of a `writes` message: a value set, or (`value: None`) a
/// delete.
#[derive(Debug)]
pub(crate) struct Write<'a> {
    pub(crate) key: Cow<'a, str>,
    pub(crate) value: Option<&'a RawValue>,
    pub(crate) stamp: Cow<'a, str>,
    pub(crate) prev: Option<Option<String>>,
}

/// The `type` of a message, read first.
#[derive(Deserialize)]
struct Kind<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AuthIn<'a> {
    #[serde(rename = "type")]
    _kind: IgnoredAny,
    #[serde(borrow)]
    token: Cow<'a, str>,
    #[serde(borrow)]
    replica: Cow<'a, str>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetIn<'a> {
    #[serde(rename = "type")]
    _kind: IgnoredAny,
    #[serde(borrow)]
    key: Cow<'a, str>,
    #[serde(borrow)]
    value: &'a RawValue,
    #[serde(borrow)]
    stamp: Cow<'a, str>,
    #[serde(default, deserialize_with = "present")]
    prev: Option<Option<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeleteIn<'a> {
    #[serde(rename = "type")]
    _kind: IgnoredAny,
    #[serde(borrow)]
    key: Cow<'a, str>,
    #[serde(borrow)]
    stamp: Cow<'a, str>,
    #[serde(default, deserialize_with = "present")]
    prev: Option<Option<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WritesIn<'a> {
    #[serde(rename = "type")]
    _kind: IgnoredAny,
    #[serde(borrow)]
    writes: Vec<WriteIn<'a>>,
}

/// `{"key", "value", "stamp", "prev"}` or `{"key", "deleted": true,
/// "stamp", "prev"}`: exactly one of `value` and `deleted`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WriteIn<'a> {
    #[serde(borrow)]
    key: Cow<'a, str>,
    #[serde(default, borrow, deserialize_with = "raw_present")]
    value: Option<&'a RawValue>,
    #[serde(default)]
    deleted: Option<bool>,
    #[serde(borrow)]
    stamp: Cow<'a, str>,
    #[serde(default, deserialize_with = "present")]
    prev: Option<Option<String>>,
}

/// A JSON value that is there (`null` included), as its text.
fn raw_present<'de, D>(deserializer: D) -> Result<Option<&'de RawValue>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    <&RawValue>::deserialize(deserializer).map(Some)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SyncIn {
    #[serde(rename = "type")]
    _kind: IgnoredAny,
    id: u64,
}

/// A field that may be absent (`None`), `null` (`Some(None)`) or a value.
fn present<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PresenceIn<'a> {
    #[serde(rename = "type")]
    _kind: IgnoredAny,
    #[serde(default, deserialize_with = "int_present")]
    x: Option<i32>,
    #[serde(default, deserialize_with = "int_present")]
    y: Option<i32>,
    /// Absent, `null` (cleared) or a value.
    #[serde(default, borrow, deserialize_with = "raw_or_null")]
    value: Option<Option<&'a RawValue>>,
}

/// An integer that is there (`null` is none: leave the field out).
fn int_present<'de, D>(deserializer: D) -> Result<Option<i32>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    i32::deserialize(deserializer).map(Some)
}

/// A JSON value that is there: `null` as `Some(None)`.
fn raw_or_null<'de, D>(deserializer: D) -> Result<Option<Option<&'de RawValue>>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    let raw = <&RawValue>::deserialize(deserializer)?;
    Ok(Some((raw.get() != "null").then_some(raw)))
}

impl<'a> Inbound<'a> {
    /// Reads one message: its type first, then the whole message as that
    /// type's shape, exactly.
    pub(crate) fn parse(text: &'a str) -> Result<Self, serde_json::Error> {
        let kind: Kind<'_> = serde_json::from_str(text)?;
        Ok(match kind.kind.as_ref() {
            "auth" => {
                let m: AuthIn<'a> = serde_json::from_str(text)?;
                Inbound::Auth {
                    token: m.token,
                    replica: m.replica,
                }
            }
            "set" => {
                let m: SetIn<'a> = serde_json::from_str(text)?;
                Inbound::Set {
                    key: m.key,
                    value: m.value,
                    stamp: m.stamp,
                    prev: m.prev,
                }
            }
            "delete" => {
                let m: DeleteIn<'a> = serde_json::from_str(text)?;
                Inbound::Delete {
                    key: m.key,
                    stamp: m.stamp,
                    prev: m.prev,
                }
            }
            "presence" => {
                let m: PresenceIn<'a> = serde_json::from_str(text)?;
                Inbound::Presence {
                    x: m.x,
                    y: m.y,
                    value: m.value,
                }
            }
            "writes" => {
                let m: WritesIn<'a> = serde_json::from_str(text)?;
                let writes = m
                    .writes
                    .into_iter()
                    .map(|w| match (w.value, w.deleted) {
                        (Some(value), None) => Ok(Write {
                            key: w.key,
                            value: Some(value),
                            stamp: w.stamp,
                            prev: w.prev,
                        }),
                        (None, Some(true)) => Ok(Write {
                            key: w.key,
                            value: None,
                            stamp: w.stamp,
                            prev: w.prev,
                        }),
                        _ => Err(serde::de::Error::custom(
                            "a write has a value or \"deleted\": true, not both",
                        )),
                    })
                    .collect::<Result<Vec<_>, serde_json::Error>>()?;
                if writes.is_empty() {
                    return Err(serde::de::Error::invalid_length(0, &"one write or more"));
                }
                Inbound::Writes { writes }
            }
            "sync" => {
                let m: SyncIn = serde_json::from_str(text)?;
                // An id a page's number holds exactly: 0 to 2^53 - 1.
                if m.id >= 1 << 53 {
                    return Err(serde::de::Error::custom("a sync id is 0 to 2^53 - 1"));
                }
                Inbound::Sync { id: m.id }
            }
            other => {
                return Err(serde::de::Error::unknown_variant(
                    other,
                    &["auth", "set", "delete", "writes", "presence", "sync"],
                ));
            }
        })
    }
}

/// One entry of a snapshot.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub(crate) enum EntryOut<'a> {
    /// A key set.
    Value { value: &'a RawValue, stamp: String },
    /// A key deleted (a tombstone: older writes of it lose).
    Deleted { deleted: bool, stamp: String },
}

/// One change of a `changes` message: as `set` or `delete` would say it.
#[derive(Debug, Serialize)]
pub(crate) struct ChangeOut<'a> {
    pub(crate) key: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) value: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub(crate) deleted: bool,
    pub(crate) stamp: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) prev: Option<Option<String>>,
}

/// A message to a browser.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub(crate) enum Outbound<'a> {
    /// On connect, once the token is taken.
    Hello {
        id: &'a str,
        color: &'a str,
        map: &'a str,
        now: String,
        /// The map's limits, as the gateway's replica refuses past them:
        /// the page refuses the same writes at `set`.
        limits: Limits,
        /// What the page's token writes: the page refuses the rest at `set`.
        rights: RightsOut<'a>,
    },
    /// Part of the map, before the `snapshot` that ends it: a large map
    /// goes in parts, so no message (and no connection's send buffer) is
    /// as large as the map.
    SnapshotPart {
        entries: std::collections::BTreeMap<&'a str, EntryOut<'a>>,
    },
    /// The whole map, tombstones included (with the `snapshot-part`s just
    /// before it, if any); sent after `hello`, and again when the
    /// connection fell behind the map's changes.
    Snapshot {
        entries: std::collections::BTreeMap<&'a str, EntryOut<'a>>,
    },
    /// A key set (by anyone but this browser); `prev` as the page that
    /// wrote it sent it, absent when the writer was not a page here.
    Set {
        key: &'a str,
        value: &'a RawValue,
        stamp: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        prev: Option<Option<String>>,
    },
    /// A key deleted.
    Delete {
        key: &'a str,
        stamp: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        prev: Option<Option<String>>,
    },
    /// Changes that came together (a group another page wrote, a burst of
    /// a service's), in the order made: the page applies them as one step.
    Changes { changes: Vec<ChangeOut<'a>> },
    /// Every message of this browser up to its `sync` with this id is
    /// taken; `now` is the bus's time as it was answered (the page
    /// measures its offset from the round trip).
    Synced { id: u64, now: String },
    /// A write of this browser that was not taken, and why; the key's
    /// entry here, if any, follows as `set` or `delete`.
    Refused { key: &'a str, reason: &'a str },
    /// What another page (or another replica's presence slot) shows: its
    /// color, its cursor if it has one, its presence value if it set one.
    Presence {
        id: &'a str,
        color: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        x: Option<i32>,
        #[serde(skip_serializing_if = "Option::is_none")]
        y: Option<i32>,
        #[serde(skip_serializing_if = "Option::is_none")]
        value: Option<&'a RawValue>,
    },
    /// Another page went (or another replica's slot was cleared).
    PresenceLeave { id: &'a str },
}

impl Outbound<'_> {
    /// As a text frame.
    pub(crate) fn text(&self) -> String {
        serde_json::to_string(self).expect("bridge messages serialize")
    }
}

/// What a page's token lets it write, as `hello` tells it.
#[derive(Debug, Serialize)]
pub(crate) struct RightsOut<'a> {
    pub(crate) read_only: bool,
    /// The key prefixes it writes under; `None`: any key.
    pub(crate) prefixes: Option<&'a [String]>,
}

/// A map's limits, as `hello` tells them to the page.
#[derive(Debug, Serialize)]
pub(crate) struct Limits {
    pub(crate) max_key_bytes: usize,
    pub(crate) max_value_bytes: usize,
    /// How far ahead of the bus's time a stamp is taken: a page's clock
    /// moves past no stamp further ahead.
    pub(crate) max_drift_ms: u64,
    /// The largest message the gateway takes from the page.
    pub(crate) max_message_bytes: usize,
    /// The messages and writes a page may send a second, and at once above
    /// that rate: the page paces itself under them.
    pub(crate) messages_per_s: u32,
    pub(crate) burst: u32,
    pub(crate) writes_per_s: u32,
    pub(crate) write_burst: u32,
    /// The largest presence value (its JSON) the page sets.
    pub(crate) max_presence_bytes: usize,
}

/// Whether `json` reads whole, as every page and replica will read it: a
/// value nested past serde_json's depth limit, or a number out of range,
/// is none the others could take.
pub(crate) fn reads_whole(json: &[u8]) -> bool {
    serde_json::from_slice::<serde_json::Value>(json).is_ok()
}

/// The bus's time now, as a stamp's text (what `hello` and `synced` tell
/// the page, which measures its offset from it).
pub(crate) fn bus_now() -> String {
    Stamp {
        physical_ns: aether_core::state::hlc::wall_ns(),
        logical: 0,
        node: 1,
    }
    .to_string()
}

/// A stamp from its text, exactly as [`Stamp`]'s `Display` writes it.
pub(crate) fn parse_stamp(text: &str) -> Option<Stamp> {
    text.parse().ok()
}

/// A replica id: 16 lower case hex digits, not all zero.
pub(crate) fn parse_replica(text: &str) -> Option<u64> {
    aether_core::state::hlc::parse_node(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_strict() {
        let ok = r#"{"type":"set","key":"k","value":{"a":1},"stamp":"x"}"#;
        assert!(Inbound::parse(ok).is_ok());
        for bad in [
            r#"{"type":"set","key":"k","value":1,"stamp":"x","extra":1}"#,
            r#"{"type":"set","key":"k","stamp":"x"}"#,
            r#"{"type":"presence","x":"1","y":2}"#,
            r#"{"type":"presence","x":1e99,"y":2}"#,
            r#"{"type":"presence","x":1,"name":"a"}"#,
            r#"{"type":"presence","value":}"#,
            r#"{"type":"presence","x":null}"#,
            r#"{"type":"nope"}"#,
            r#"[1,2]"#,
        ] {
            assert!(Inbound::parse(bad).is_err(), "{bad}");
        }
        // `prev` absent, null or a stamp's text, each read as such.
        let prev = |text: &str| match Inbound::parse(text).expect("a message") {
            Inbound::Set { prev, .. } | Inbound::Delete { prev, .. } => prev,
            other => panic!("{other:?}"),
        };
        assert_eq!(prev(ok), None);
        assert_eq!(
            prev(r#"{"type":"delete","key":"k","stamp":"x","prev":null}"#),
            Some(None)
        );
        assert_eq!(
            prev(r#"{"type":"set","key":"k","value":1,"stamp":"x","prev":"p"}"#),
            Some(Some("p".to_string()))
        );
        assert!(
            Inbound::parse(r#"{"type":"set","key":"k","value":1,"stamp":"x","prev":1}"#).is_err()
        );
        // Presence: each field absent, or there; a value `null` clears it.
        match Inbound::parse(r#"{"type":"presence","value":{"name":"Ada"}}"#) {
            Ok(Inbound::Presence {
                x: None,
                y: None,
                value: Some(Some(value)),
            }) => assert_eq!(value.get(), r#"{"name":"Ada"}"#),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            Inbound::parse(r#"{"type":"presence","x":1,"y":2,"value":null}"#),
            Ok(Inbound::Presence {
                x: Some(1),
                y: Some(2),
                value: Some(None)
            })
        ));
        assert!(matches!(
            Inbound::parse(r#"{"type":"presence","x":1,"y":2}"#),
            Ok(Inbound::Presence { value: None, .. })
        ));
        assert!(matches!(
            Inbound::parse(r#"{"type":"sync","id":7}"#),
            Ok(Inbound::Sync { id: 7 })
        ));
        for bad in [
            r#"{"type":"sync"}"#,
            r#"{"type":"sync","id":-1}"#,
            r#"{"type":"sync","id":1,"x":1}"#,
            r#"{"type":"sync","id":9007199254740992}"#,
        ] {
            assert!(Inbound::parse(bad).is_err(), "{bad}");
        }
        // A group: each write a value or a delete, never both, never
        // neither, no field more; one write at least.
        let writes = |list: &str| format!(r#"{{"type":"writes","writes":[{list}]}}"#);
        let two = writes(
            r#"{"key":"a","value":null,"stamp":"s"},{"key":"b","deleted":true,"stamp":"t","prev":null}"#,
        );
        match Inbound::parse(&two) {
            Ok(Inbound::Writes { writes }) => {
                assert_eq!(writes.len(), 2);
                assert_eq!(writes[0].value.map(RawValue::get), Some("null"));
                assert!(writes[1].value.is_none());
                assert_eq!(writes[1].prev, Some(None));
            }
            other => panic!("{other:?}"),
        }
        for bad in [
            "",
            r#"{"key":"a","stamp":"s"}"#,
            r#"{"key":"a","value":1,"deleted":true,"stamp":"s"}"#,
            r#"{"key":"a","deleted":false,"stamp":"s"}"#,
            r#"{"key":"a","value":1,"stamp":"s","x":1}"#,
            r#"{"key":"a","value":1}"#,
            r#"{"type":"set","key":"a","value":1,"stamp":"s"}"#,
        ] {
            assert!(Inbound::parse(&writes(bad)).is_err(), "{bad}");
        }
        assert_eq!(parse_replica("0000000000000000"), None);
        assert_eq!(parse_replica("00000000000000A1"), None);
        assert_eq!(parse_replica("00000000000000a1"), Some(0xa1));
    }
}
