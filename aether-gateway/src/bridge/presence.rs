//! Presence between pages and the bus. A page's presence is a record: the
//! color the gateway gave it, where its cursor is, and a small JSON value
//! it sets (its user's name, what it is editing). The pages of this
//! gateway see it at once (the hub's cursors); the gateway's replica sets
//! it as a presence value in a slot named after the page, so pages of
//! other gateways and services see it too, and it goes when the page
//! does. The other replicas' presence values come back the other way
//! ([`relay`]): each is shown to this gateway's pages as a record with the
//! id `<node>/<slot>`.

use std::sync::Weak;

use serde::{Deserialize, Serialize};

use super::*;

/// The largest presence value one page sets, bytes (its record, with the
/// color and cursor, is at most a replica's presence value).
pub(crate) const MAX_PAGE_PRESENCE_BYTES: usize = aether_core::config::MAX_PRESENCE_BYTES - 128;

/// The most often the pages are told of other replicas' presence changes.
const RELAY_EVERY: Duration = Duration::from_millis(16);

/// The longest color another replica's record may name.
const MAX_COLOR_BYTES: usize = 64;

/// What one page (or another replica's slot) shows of itself.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Record {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) color: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) x: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) y: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) value: Option<Box<RawValue>>,
}

impl Clone for Record {
    fn clone(&self) -> Self {
        Record {
            color: self.color.clone(),
            x: self.x,
            y: self.y,
            value: self.value.as_ref().map(|v| v.to_owned()),
        }
    }
}

impl Record {
    /// As a page is told of it, with the id it is shown under.
    pub(crate) fn text(&self, id: &str) -> String {
        Outbound::Presence {
            id,
            color: self.color.as_deref().unwrap_or_default(),
            x: self.x,
            y: self.y,
            value: self.value.as_deref(),
        }
        .text()
    }

    /// Another replica's presence value `bytes`, shown as `id`: a record
    /// as a gateway sets one for its pages, or any other JSON as the
    /// record's value (a service's); `None` when it is no JSON.
    pub(crate) fn remote(id: &str, bytes: &[u8]) -> Option<Record> {
        let mut record = match serde_json::from_slice::<Record>(bytes) {
            Ok(record)
                if record
                    .color
                    .as_ref()
                    .is_none_or(|c| c.len() <= MAX_COLOR_BYTES) =>
            {
                record
            }
            _ => {
                // Read whole, as a page reads it: depth and numbers checked.
                serde_json::from_slice::<serde_json::Value>(bytes).ok()?;
                let text = std::str::from_utf8(bytes).ok()?;
                Record {
                    value: Some(RawValue::from_string(text.to_string()).ok()?),
                    ..Record::default()
                }
            }
        };
        if record.color.is_none() {
            record.color = Some(color_of(id));
        }
        Some(record)
    }
}

/// A color for `id`, the same wherever it is shown.
pub(crate) fn color_of(id: &str) -> String {
    let hash = id.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    format!("hsl({}, 70%, 45%)", hash % 360)
}

/// How often the relay looks whether its hub is still there, when nothing
/// changes.
const HUB_CHECK: Duration = Duration::from_secs(1);

/// Shows the other replicas' presence values to this gateway's pages, as
/// they change (at most every [`RELAY_EVERY`]), until the hub or the map
/// goes (it holds the map only while the hub is there: the last handle
/// dropped says goodbye).
pub(super) async fn relay(hub: Weak<Hub>, map: StateMap) {
    let mut changed = map.presences_changed();
    let mut shown: HashMap<Arc<str>, Bytes> = HashMap::new();
    loop {
        match tokio::time::timeout(HUB_CHECK, changed.changed()).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return,
            Err(_) if hub.strong_count() == 0 => return,
            Err(_) => continue,
        }
        let Some(hub) = hub.upgrade() else {
            return;
        };
        let mut now = HashMap::new();
        for value in map.presences() {
            let id: Arc<str> = format!("{}/{}", value.node, value.slot).into();
            if shown.get(&id) != Some(&value.value) {
                let Some(record) = Record::remote(&id, &value.value) else {
                    continue;
                };
                let record = Arc::new(record);
                hub.lock_positions().insert(id.clone(), record.clone());
                let _ = hub.cursors.send(Cursor::Moved {
                    id: id.clone(),
                    record,
                });
            }
            now.insert(id, value.value);
        }
        for id in shown.keys().filter(|id| !now.contains_key(*id)) {
            hub.lock_positions().remove(id);
            let _ = hub.cursors.send(Cursor::Left { id: id.clone() });
        }
        shown = now;
        drop(hub);
        tokio::time::sleep(RELAY_EVERY).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gateways_record_is_read_back_and_any_other_json_is_its_value() {
        let page = Record {
            color: Some("hsl(1, 70%, 45%)".to_string()),
            x: Some(3),
            y: None,
            value: Some(RawValue::from_string(r#"{"name":"Ada"}"#.into()).unwrap()),
        };
        let bytes = serde_json::to_vec(&page).unwrap();
        let back = Record::remote("gw/1", &bytes).unwrap();
        assert_eq!(back.text("gw/1"), page.text("gw/1"));

        let service = Record::remote("beta/status", br#"{"name":"beta","busy":true}"#).unwrap();
        assert_eq!(
            service.value.unwrap().get(),
            r#"{"name":"beta","busy":true}"#
        );
        assert_eq!(service.color, Some(color_of("beta/status")));
        assert_eq!(
            Record::remote("a/b", b"7").unwrap().value.unwrap().get(),
            "7"
        );

        // A color too long is no record's: the whole is the value.
        let long = format!(r#"{{"color":"{}"}}"#, "x".repeat(65));
        let whole = Record::remote("a/b", long.as_bytes()).unwrap();
        assert_eq!(whole.value.unwrap().get(), long);
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        for bad in [&b"not json"[..], b"{", &[0xff, 0xfe], deep.as_bytes()] {
            assert!(Record::remote("a/b", bad).is_none(), "{bad:?}");
        }
    }
}
