//! Presence between pages and the bus. A page's presence is a record: the
//! color the gateway gave it, where its cursor is, and a small JSON value
//! it sets (its user's name, what it is editing). The pages of this
//! gateway see it at once (the hub's cursors); the gateway's replica sets
//! it as a presence value in a slot named after the page, so pages of
//! other gateways and services see it too, and it goes when the page
//! does. The other replicas' presence values come back the other way
//! ([`relay`]): each is shown to this gateway's pages as a record with the
//! id `<node>/<slot>`.

use std::{
    collections::{HashSet, VecDeque},
    sync::Weak,
};

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
                if !protocol::reads_whole(bytes) {
                    return None;
                }
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

/// The presence bytes a page is sent a second at most, on average, and at
/// once: the others' changes past it wait their turn (the latest of each,
/// in the order they came), so many pages or replicas changing at once
/// delay what a page sees rather than flood it.
pub(crate) const PRESENCE_BYTES_PER_S: f64 = 256.0 * 1024.0;
const PRESENCE_BURST: f64 = 256.0 * 1024.0;

/// The others' presence for one page: what it was told, the changes still
/// to tell it (the latest of each id, `None` when it went, in the order
/// they came), and its allowance of bytes.
pub(crate) struct Others {
    told: HashSet<Arc<str>>,
    /// Each id's message, as text (its `presence`, or its leave), and
    /// whether it shows the id (not a leave).
    due: HashMap<Arc<str>, (Arc<str>, bool)>,
    order: VecDeque<Arc<str>>,
    allowance: f64,
    refilled: tokio::time::Instant,
}

impl Default for Others {
    fn default() -> Self {
        Others {
            told: HashSet::new(),
            due: HashMap::new(),
            order: VecDeque::new(),
            allowance: PRESENCE_BURST,
            refilled: tokio::time::Instant::now(),
        }
    }
}

impl Others {
    /// `id` changed (`None`: it went).
    pub(crate) fn changed(&mut self, id: Arc<str>, text: Option<Arc<str>>) {
        let message = match text {
            Some(text) => (text, true),
            None if self.told.contains(&id) => {
                (Outbound::PresenceLeave { id: &id }.text().into(), false)
            }
            None => {
                // Never told of it: nothing to take back.
                if self.due.remove(&id).is_some() {
                    self.order.retain(|due| *due != id);
                }
                return;
            }
        };
        if self.due.insert(id.clone(), message).is_none() {
            self.order.push_back(id);
        }
    }

    /// Everyone in `positions` but `me` again, and those told of that are
    /// not there any more gone (a page that connects, or fell behind).
    pub(crate) fn all_again(&mut self, positions: &HashMap<Arc<str>, Arc<str>>, me: &str) {
        let gone: Vec<Arc<str>> = self
            .told
            .iter()
            .filter(|id| !positions.contains_key(*id))
            .cloned()
            .collect();
        for id in gone {
            self.changed(id, None);
        }
        for (id, text) in positions.iter().filter(|(id, _)| &***id != me) {
            self.changed(id.clone(), Some(text.clone()));
        }
    }

    fn refill(&mut self) {
        let now = tokio::time::Instant::now();
        let earned = now.duration_since(self.refilled).as_secs_f64() * PRESENCE_BYTES_PER_S;
        self.allowance = (self.allowance + earned).min(PRESENCE_BURST);
        self.refilled = now;
    }

    /// The next message to send the page, if its allowance has room.
    pub(crate) fn next(&mut self) -> Option<Arc<str>> {
        self.refill();
        let id = self.order.front()?;
        if self.due[id].0.len() as f64 > self.allowance {
            return None;
        }
        let id = self.order.pop_front().expect("a front");
        let (text, shown) = self.due.remove(&id).expect("due in order");
        if shown {
            self.told.insert(id);
        } else {
            self.told.remove(&id);
        }
        self.allowance -= text.len() as f64;
        Some(text)
    }

    /// When the next change may be sent (`None`: nothing waits).
    pub(crate) fn due(&mut self) -> Option<tokio::time::Instant> {
        let size = self.due[self.order.front()?].0.len() as f64;
        self.refill();
        let wait = ((size - self.allowance) / PRESENCE_BYTES_PER_S).max(0.0);
        Some(self.refilled + Duration::from_secs_f64(wait))
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
                let text: Arc<str> = record.text(&id).into();
                hub.lock_positions().insert(id.clone(), text.clone());
                let _ = hub.cursors.send(Cursor::Moved {
                    id: id.clone(),
                    text,
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

    fn shown(id: &str, value: &str) -> Option<Arc<str>> {
        let record = Record {
            color: Some("c".into()),
            value: Some(RawValue::from_string(value.to_string()).unwrap()),
            ..Record::default()
        };
        Some(record.text(id).into())
    }

    #[tokio::test(start_paused = true)]
    async fn a_page_is_sent_others_within_its_allowance_the_latest_of_each_in_turn() {
        let mut others = Others::default();
        let big = format!("\"{}\"", "x".repeat(3900));
        // A flood: 200 ids of 4 KB each, changing again and again.
        for round in 0..3 {
            for i in 0..200 {
                let id = format!("flood/{i}");
                others.changed(id.as_str().into(), shown(&id, &big));
            }
            if round == 0 {
                others.changed("honest".into(), shown("honest", r#"{"name":"Ada"}"#));
            }
        }
        let mut sent = Vec::new();
        while let Some(text) = others.next() {
            sent.push(text);
        }
        let bytes: usize = sent.iter().map(|t| t.len()).sum();
        assert!(bytes as f64 <= PRESENCE_BURST, "{bytes} bytes at once");
        assert!(sent.len() < 201, "the burst holds {} of them", sent.len());
        // The rest come at the rate, each id once (its latest), the honest
        // one in its turn after the first 200, within 4 s.
        let mut seen: Vec<Arc<str>> = sent.clone();
        let start = tokio::time::Instant::now();
        while let Some(at) = others.due() {
            tokio::time::sleep_until(at).await;
            while let Some(text) = others.next() {
                seen.push(text);
            }
        }
        assert_eq!(seen.len(), 201, "each id once, the latest");
        assert!(seen[200].contains("honest"));
        let took = start.elapsed().as_secs_f64();
        let rest: usize = seen[sent.len()..].iter().map(|t| t.len()).sum();
        assert!(
            (took - rest as f64 / PRESENCE_BYTES_PER_S).abs() < 0.1,
            "{took} s for {rest} bytes"
        );
        assert!(took < 4.0);
        // A leave of an id told is sent; of one never told, nothing.
        others.changed("honest".into(), None);
        others.changed("never".into(), shown("never", "1"));
        others.changed("never".into(), None);
        tokio::time::sleep(Duration::from_secs(1)).await;
        let last: Vec<String> = std::iter::from_fn(|| others.next())
            .map(|t| t.to_string())
            .collect();
        assert_eq!(last, [Outbound::PresenceLeave { id: "honest" }.text()]);
    }

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
