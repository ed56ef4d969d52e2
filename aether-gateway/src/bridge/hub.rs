//! One bridged map (`Hub`): the gateway's replica of it, its pages'
//! cursors, the replica ids they hold, the `prev` of their latest writes
//! and the snapshot shared by the pages that connect while the map stays
//! the same.

use super::*;

/// What each page shows (its color, cursor and presence value), and each
/// other replica's presence slot, by the id pages know it by: the
/// `presence` message's text, made once for every page.
pub(super) type Positions = HashMap<Arc<str>, Arc<str>>;

/// One bridged map: the gateway's replica, and its tabs' cursors.
pub(super) struct Hub {
    /// The gateway's replica, once open: it opens in the background from
    /// the start (taking the map from a peer may take `ready_timeout`), and
    /// the first pages wait for it.
    pub(super) map: tokio::sync::OnceCell<StateMap>,
    pub(super) name: String,
    pub(super) aether: Aether,
    pub(super) cursors: broadcast::Sender<Cursor>,
    /// What each page and each other replica's slot shows, for newcomers.
    pub(super) positions: Mutex<Positions>,
    /// The replica ids of the open pages: each is one page's own.
    pub(super) replicas: Mutex<HashSet<u64>>,
    /// The `prev` of the latest pages' writes merged here.
    pub(super) prevs: Mutex<Prevs>,
    /// The last snapshot built (its messages), and the map's version it
    /// shows: every page that connects while the map stays the same gets
    /// these texts.
    pub(super) snapshot: tokio::sync::Mutex<Option<(u64, Arc<[Utf8Bytes]>)>>,
}

/// The stamp of the entry a page's write replaced at that page (`None`:
/// it held none), by the write's stamp (a page's stamps are its own and
/// never repeat; the key is kept to tell a forged repeat), the latest
/// [`PREVS`].
#[derive(Default)]
pub(super) struct Prevs {
    pub(super) by_stamp:
        HashMap<aether_core::state::Stamp, (String, Option<aether_core::state::Stamp>)>,
    pub(super) order: VecDeque<aether_core::state::Stamp>,
}

impl Prevs {
    pub(super) fn insert(
        &mut self,
        key: &str,
        stamp: aether_core::state::Stamp,
        prev: Option<aether_core::state::Stamp>,
    ) {
        if self
            .by_stamp
            .insert(stamp, (key.to_string(), prev))
            .is_none()
        {
            self.order.push_back(stamp);
        }
        while self.order.len() > PREVS {
            if let Some(old) = self.order.pop_front() {
                self.by_stamp.remove(&old);
            }
        }
    }

    /// What the page that wrote `key` at `stamp` had seen of it, as the
    /// message's `prev`; `None` for a write no page here made.
    pub(super) fn of(&self, key: &str, stamp: aether_core::state::Stamp) -> Option<Option<String>> {
        self.by_stamp
            .get(&stamp)
            .filter(|(written, _)| written == key)
            .map(|(_, prev)| prev.map(|p| p.to_string()))
    }
}

/// A page's replica id, its own among the open pages of a map until it
/// closes.
pub(super) struct ReplicaClaim {
    pub(super) hub: Arc<Hub>,
    pub(super) replica: u64,
}

impl Drop for ReplicaClaim {
    fn drop(&mut self) {
        self.hub.lock_replicas().remove(&self.replica);
    }
}

impl Hub {
    /// Claims `replica` for a page: `None` when another open page holds it,
    /// or it is the gateway's own replica's (`gateway`).
    pub(super) fn claim(self: &Arc<Self>, replica: u64, gateway: u64) -> Option<ReplicaClaim> {
        if replica == gateway || !self.lock_replicas().insert(replica) {
            return None;
        }
        Some(ReplicaClaim {
            hub: self.clone(),
            replica,
        })
    }

    pub(super) fn lock_replicas(&self) -> std::sync::MutexGuard<'_, HashSet<u64>> {
        self.replicas.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn lock_prevs(&self) -> std::sync::MutexGuard<'_, Prevs> {
        self.prevs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The snapshot of `map` now, as messages (`snapshot-part`s of about
    /// [`SNAPSHOT_PART_BYTES`], then the `snapshot`): built once per
    /// version of the map (counted), then shared by every page, each
    /// sending the same bytes. The version is read before the entries, so
    /// the messages hold at least every change up to it.
    pub(super) async fn snapshot(&self, map: &StateMap, bridge: &Bridge) -> Arc<[Utf8Bytes]> {
        let mut cached = self.snapshot.lock().await;
        let version = map.version();
        if let Some((built, parts)) = cached.as_ref()
            && *built == version
        {
            return parts.clone();
        }
        let all = map.stamped_entries();
        let values: Vec<Option<Box<RawValue>>> = all
            .iter()
            .map(|e| e.value.as_ref().and_then(|v| json(&bridge.metrics, v)))
            .collect();
        let mut parts = Vec::new();
        let mut entries = BTreeMap::new();
        let mut size = 0;
        for (entry, value) in all.iter().zip(&values) {
            let stamp = entry.stamp.to_string();
            let out = match (&entry.value, value) {
                (None, _) => EntryOut::Deleted {
                    deleted: true,
                    stamp,
                },
                (Some(_), Some(value)) => EntryOut::Value { value, stamp },
                (Some(_), None) => continue,
            };
            let cost = entry.key.len() + value.as_ref().map_or(0, |v| v.get().len()) + 80;
            if !entries.is_empty() && size + cost > SNAPSHOT_PART_BYTES {
                let part = Outbound::SnapshotPart {
                    entries: std::mem::take(&mut entries),
                };
                parts.push(Utf8Bytes::from(part.text()));
                size = 0;
            }
            size += cost;
            entries.insert(entry.key.as_str(), out);
        }
        parts.push(Utf8Bytes::from(Outbound::Snapshot { entries }.text()));
        let parts: Arc<[Utf8Bytes]> = parts.into();
        bridge.metrics.snapshots.inc();
        *cached = Some((version, parts.clone()));
        parts
    }

    /// The gateway's replica, opened by the first caller; `None` (logged)
    /// if it cannot be opened now (a later page tries again).
    pub(super) async fn map(self: &Arc<Self>) -> Option<StateMap> {
        let opened = self
            .map
            .get_or_try_init(|| async {
                let map = StateMap::builder(self.name.as_str())
                    .open(&self.aether)
                    .await?;
                tokio::spawn(presence::relay(Arc::downgrade(self), map.clone()));
                Ok::<_, aether_core::state::StateError>(map)
            })
            .await;
        match opened {
            Ok(map) => Some(map.clone()),
            Err(error) => {
                tracing::warn!(map = %self.name, %error, "the bridged map could not be opened");
                None
            }
        }
    }

    pub(super) fn lock_positions(&self) -> std::sync::MutexGuard<'_, Positions> {
        self.positions.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A page's presence (or another replica's), to the pages of one map.
#[derive(Clone, Debug)]
pub(super) enum Cursor {
    Moved { id: Arc<str>, text: Arc<str> },
    Left { id: Arc<str> },
}
