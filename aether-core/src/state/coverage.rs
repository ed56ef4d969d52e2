//! What a replica's state covers, and a replica back after more than the
//! tombstone horizon.
//!
//! A replica with a ledger keeps two bus times (Unix ns) in a file beside
//! its ledger, [`FILE`]: `since`, from which its state reflects every key
//! on the bus (a key that existed then is held, or its delete is), and
//! `heard`, when it last heard a peer. A replica that opens more than a
//! horizon after `heard` is *returning*: deletes made while it was away may
//! have been collected everywhere (their tombstones live a horizon), so an
//! entry it holds from before `heard` may be a deleted key. It offers
//! nothing (no repairs) until it has caught up; if the replica it caught up
//! from covers its absence (that replica's `since` is no later than its
//! `heard`: it held every key the returning one held, so lacking one means
//! it was deleted), each entry stamped before `heard` in a bucket that came
//! whole and lacking there is dropped, counted `too_old`. With no such
//! peer, it keeps what it has and says so.
//!
//! The file also keeps how many records the ledger had written (written
//! within [`RECORDS_EVERY`] of the ledger growing): a ledger found holding
//! fewer (a segment deleted or cut short outside the journal's own
//! checks) is said damaged.
//!
//! `since` is the open's time for a new replica, lowered to the `since` of
//! the replica it caught up from when every bucket came; a replica back
//! from any absence keeps its own (whatever it held then it still holds,
//! or its delete).

use std::{
    collections::{HashMap, HashSet},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use std::sync::atomic::Ordering;

use smol_str::SmolStr;

use super::{
    Refusal, codec, hlc,
    store::{self, Entry},
};

/// The file beside a ledger: `since heard records`, decimal (two Unix ns
/// and the ledger's next record number), one line, each number written 20
/// digits wide: the file keeps its length, so it is rewritten in place
/// (no new block), on a full disk too.
pub(crate) const FILE: &str = "covers";

/// The length of the file's line, each number 20 digits wide.
const LINE_BYTES: u64 = 3 * 20 + 3;

/// How often the file is written while the replica hears its peers (and at
/// close): a kill loses at most this much of `heard`, little beside a
/// horizon of a day, and a keeper of many maps on an SD card writes each
/// map's file a few times an hour.
pub(crate) const WRITE_EVERY: Duration = Duration::from_secs(600);

/// How soon the file is written after its ledger grew: records cut from
/// the ledger's end later than this are missed by the check above.
pub(crate) const RECORDS_EVERY: Duration = Duration::from_secs(1);

/// A file that cannot be written is said at most this often.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// What the file holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Times {
    pub(crate) since: u64,
    pub(crate) heard: u64,
    pub(crate) records: u64,
}

impl Times {
    /// Reads `dir`'s file: `None` if there is none or it does not parse (a
    /// replica without one is taken as new, which offers what it holds).
    pub(crate) fn read(dir: &Path) -> Option<Times> {
        let path = dir.join(FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return None,
            Err(error) => {
                tracing::warn!(
                    path = %path.display(),
                    %error,
                    "cannot read a map's covers file: whether its ledger lost records is not \
                     checked at this open"
                );
                return None;
            }
        };
        let mut parts = text.split_whitespace().map(str::parse::<u64>);
        let (Some(Ok(since)), Some(Ok(heard)), Some(Ok(records)), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            tracing::warn!(
                path = %path.display(),
                "a map's covers file is damaged: whether its ledger lost records is not \
                 checked at this open, and the replica is taken as new"
            );
            return None;
        };
        Some(Times {
            since,
            heard,
            records,
        })
    }

    /// Writes `dir`'s file: over the one there if it has the file's
    /// length (no new block: a full disk takes it too), else whole (a
    /// temporary file renamed over it), for its owner only as the
    /// ledger's are.
    pub(crate) fn write(self, dir: &Path) -> std::io::Result<()> {
        let path = dir.join(FILE);
        let line = format!(
            "{:020} {:020} {:020}\n",
            self.since, self.heard, self.records
        );
        debug_assert_eq!(line.len() as u64, LINE_BYTES);
        rewrite(&path, &line)
    }
}

/// Writes `line` to the file at `path`: over the one there if it has the
/// line's length (no new block: a full disk takes it), else whole (a
/// temporary file beside it renamed over it, none left on a failure), for
/// its owner only as the ledger's files are. The state's small files of
/// fixed width (`covers`, a keeper's `stamped`) are written so.
pub(crate) fn rewrite(path: &Path, line: &str) -> std::io::Result<()> {
    if let Ok(mut file) = std::fs::OpenOptions::new().write(true).open(path)
        && file.metadata().is_ok_and(|m| m.len() == line.len() as u64)
    {
        return std::io::Write::write_all(&mut file, line.as_bytes());
    }
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".tmp");
    let temporary = std::path::PathBuf::from(temporary);
    let written = aether_journal::private(
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true),
    )
    .open(&temporary)
    .and_then(|mut file| std::io::Write::write_all(&mut file, line.as_bytes()))
    .and_then(|()| std::fs::rename(&temporary, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    written
}

/// A replica back after more than the horizon, until it caught up.
#[derive(Debug, Default)]
pub(crate) struct Returning {
    /// When it last heard a peer before it went.
    pub(crate) heard: u64,
    /// The keys of each bucket the catch-up brought, and whether its
    /// last chunk came.
    pub(crate) received: HashMap<u8, (HashSet<String>, bool)>,
}

impl Returning {
    /// Notes a repair chunk of `bucket` during the catch-up.
    pub(crate) fn received<'a>(
        &mut self,
        bucket: u8,
        keys: impl IntoIterator<Item = &'a str>,
        last: bool,
    ) {
        let (held, whole) = self.received.entry(bucket).or_default();
        held.extend(keys.into_iter().map(str::to_string));
        *whole |= last;
    }

    /// Whether a peer whose state covers from `peer_since` covers this
    /// replica's absence.
    pub(crate) fn covered_by(&self, peer_since: Option<u64>) -> bool {
        peer_since.is_some_and(|since| since <= self.heard)
    }

    /// The keys to drop of `entries` (this replica's, any buckets): stamped
    /// before `heard`, in a bucket that came whole, and lacking there; none
    /// unless the peer (its state covering from `peer_since`) covers the
    /// absence.
    pub(crate) fn to_drop<'a>(
        &self,
        peer_since: Option<u64>,
        entries: impl IntoIterator<Item = (&'a SmolStr, &'a Entry)>,
    ) -> Vec<SmolStr> {
        if !self.covered_by(peer_since) {
            return Vec::new();
        }
        entries
            .into_iter()
            .filter(|(key, entry)| {
                entry.value.is_some()
                    && entry.stamp.physical_ns < self.heard
                    && store::owner_of(key).is_none()
                    && self
                        .received
                        .get(&(store::bucket_of(key) as u8))
                        .is_some_and(|(keys, whole)| *whole && !keys.contains(key.as_str()))
            })
            .map(|(key, _)| key.clone())
            .collect()
    }
}

/// A replica's coverage: its times, where they are kept, and whether it is
/// returning.
#[derive(Debug)]
pub(crate) struct Coverage {
    pub(crate) dir: Option<PathBuf>,
    pub(crate) since: u64,
    pub(crate) returning: Option<Returning>,
    /// The `since` of the replica it caught up from, once said.
    pub(crate) peer_since: Option<u64>,
    /// Its catch-up brought every bucket the peer listed.
    pub(crate) whole: bool,
    /// When the file was last written, with its `heard` and `records`.
    written: Option<(Instant, u64, u64)>,
    /// When a failure to write it was last said.
    warned: Option<Instant>,
}

impl Coverage {
    /// At open, `now` by the bus's clock: from the file in `dir` if there
    /// is one, returning if it last heard a peer more than `horizon` ago.
    pub(crate) fn open(dir: Option<&Path>, now: u64, horizon: Duration) -> Coverage {
        let times = dir.and_then(Times::read);
        let horizon = u64::try_from(horizon.as_nanos()).unwrap_or(u64::MAX);
        let returning = times
            .filter(|t| now.saturating_sub(t.heard) > horizon)
            .map(|t| Returning {
                heard: t.heard,
                ..Returning::default()
            });
        Coverage {
            dir: dir.map(Path::to_path_buf),
            since: times.map_or(now, |t| t.since.min(now)),
            returning,
            peer_since: None,
            whole: false,
            written: times.map(|t| (Instant::now(), t.heard, t.records)),
            warned: None,
        }
    }

    /// When it last heard a peer, as its file said at open.
    pub(crate) fn last_heard(&self) -> Option<u64> {
        self.written.map(|(_, heard, _)| heard)
    }

    /// The records its ledger had written, as its file said at open.
    pub(crate) fn last_records(&self) -> Option<u64> {
        self.written.map(|(_, _, records)| records)
    }

    /// Writes the file if `records` moved and it was last written more
    /// than [`RECORDS_EVERY`] ago, or `heard` moved and more than
    /// [`WRITE_EVERY`] ago, or either moved and `now`; a failure is said
    /// by the caller (see [`may_warn`](Self::may_warn)).
    pub(crate) fn keep(&mut self, heard: u64, records: u64, now: bool) -> std::io::Result<()> {
        let Some(dir) = &self.dir else {
            return Ok(());
        };
        let due = match self.written {
            None => true,
            Some((at, was_heard, was_records)) => {
                let since = at.elapsed();
                (records != was_records && (now || since >= RECORDS_EVERY))
                    || (heard > was_heard && (now || since >= WRITE_EVERY))
            }
        };
        if !due {
            return Ok(());
        }
        Times {
            since: self.since,
            heard,
            records,
        }
        .write(dir)?;
        self.written = Some((Instant::now(), heard, records));
        Ok(())
    }

    /// Whether a failure to write the file is to be said now (once a
    /// minute at most: a full disk fails it each heartbeat).
    pub(crate) fn may_warn(&mut self) -> bool {
        let due = self.warned.is_none_or(|at| at.elapsed() >= WARN_EVERY);
        if due {
            self.warned = Some(Instant::now());
        }
        due
    }
}

/// A replica's coverage as its protocol keeps it.
impl super::Shared {
    /// Ends a catch-up's part in the replica's coverage: a replica back
    /// after more than the horizon drops what it held from before it went
    /// that a peer covering its absence lacks; a replica that caught up
    /// whole covers from the peer's `since`.
    pub(super) fn settle_coverage(&self) {
        let mut coverage = self.lock_coverage();
        let peer_since = coverage.peer_since;
        let Some(returning) = coverage.returning.take() else {
            if let (true, Some(since)) = (coverage.whole, peer_since) {
                coverage.since = coverage.since.min(since);
            }
            return;
        };
        drop(coverage);
        if !returning.covered_by(peer_since) {
            tracing::warn!(
                map = %self.map,
                "back after more than tombstone_horizon, and no peer that covers the absence \
                 answered its catch-up: it keeps what it holds (a key deleted meanwhile comes \
                 back if no other replica holds its delete)"
            );
            return;
        }
        let dropped: Vec<(SmolStr, Entry)> = {
            let store = self.lock_store();
            returning
                .to_drop(peer_since, store.entries())
                .into_iter()
                .filter_map(|key| store.entry(&key).map(|e| (key, e.clone())))
                .collect()
        };
        for (key, held) in &dropped {
            let tombstone = Entry {
                stamp: hlc::Stamp {
                    logical: held.stamp.logical.saturating_add(1),
                    ..held.stamp
                },
                value: None,
                writer: self.node_name.clone(),
            };
            let _ = self.apply(key.clone(), tombstone, true, false);
            self.refuse(Refusal::TooOld);
        }
        // Their tombstones are past the horizon: gone now, as elsewhere.
        self.lock_store().collect(self.horizon());
        if !dropped.is_empty() {
            tracing::warn!(
                map = %self.map,
                dropped = dropped.len(),
                "back after more than tombstone_horizon: entries held from before it went that \
                 the peer it caught up from no longer holds (deleted meanwhile) were dropped \
                 (counted too_old)"
            );
        }
    }

    /// Writes the coverage file when due (`now`: at once), saying why not
    /// if it cannot.
    pub(super) fn keep_coverage(&self, now: bool) {
        let heard = self.heard.load(Ordering::Relaxed);
        // Without a ledger there is no file; once closed, what it wrote
        // last stays.
        let Some(records) = self.ledger.as_ref().and_then(|l| l.ledger().next_seq()) else {
            return;
        };
        let mut coverage = self.lock_coverage();
        if let Err(error) = coverage.keep(heard, records, now)
            && coverage.may_warn()
        {
            tracing::warn!(map = %self.map, %error, "cannot write when this replica last heard its peers beside its ledger");
        }
    }

    /// Notes a repair chunk's keys for a replica back after more than the
    /// horizon, if it comes from the replica it catches up from.
    pub(super) fn note_for_return(
        &self,
        source: &str,
        bucket: u8,
        entries: &[(SmolStr, Entry)],
        last: bool,
    ) {
        if bucket == codec::OWN_KEYS || self.lock_coverage().returning.is_none() {
            return;
        }
        if !self.is_answerer(source) {
            return;
        }
        // A tombstone the peer still holds is a delete: its key is not
        // held there.
        let held = entries
            .iter()
            .filter(|(_, e)| e.value.is_some())
            .map(|(k, _)| k.as_str());
        if let Some(returning) = &mut self.lock_coverage().returning {
            returning.received(bucket, held, last);
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use proptest::prelude::*;

    use smol_str::SmolStr;

    use super::*;
    use crate::state::hlc::Stamp;

    fn entry(physical_ns: u64, value: bool) -> Entry {
        Entry {
            stamp: Stamp {
                physical_ns,
                logical: 0,
                node: 1,
            },
            value: value.then(|| Bytes::from_static(b"1")),
            writer: SmolStr::new("w"),
        }
    }

    #[test]
    fn the_file_reads_back_what_was_written_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Times::read(dir.path()), None);
        let times = Times {
            since: 5,
            heard: 9,
            records: 3,
        };
        times.write(dir.path()).unwrap();
        assert_eq!(Times::read(dir.path()), Some(times));
        // Written again in place, the same length, and read back.
        let later = Times {
            since: 5,
            heard: u64::MAX,
            records: 4,
        };
        later.write(dir.path()).unwrap();
        assert_eq!(Times::read(dir.path()), Some(later));
        let length = std::fs::metadata(dir.path().join(FILE)).unwrap().len();
        assert_eq!(length, LINE_BYTES);
        // A file of the earlier width is read, and written whole.
        std::fs::write(dir.path().join(FILE), "5 9 3\n").unwrap();
        assert_eq!(Times::read(dir.path()), Some(times));
        later.write(dir.path()).unwrap();
        assert_eq!(Times::read(dir.path()), Some(later));
        for bad in ["", "5", "5 9", "5 9 1 1", "a 9 1", "-1 9 1"] {
            std::fs::write(dir.path().join(FILE), bad).unwrap();
            assert_eq!(Times::read(dir.path()), None, "{bad:?}");
        }
    }

    #[test]
    fn a_replica_is_returning_only_past_the_horizon_from_what_it_last_heard() {
        let dir = tempfile::tempdir().unwrap();
        let day = Duration::from_secs(86_400);
        let ns = |d: Duration| d.as_nanos() as u64;
        // New: covers from now, not returning.
        let new = Coverage::open(Some(dir.path()), ns(day * 10), day);
        assert!(new.returning.is_none());
        assert_eq!(new.since, ns(day * 10));
        Times {
            since: ns(day),
            heard: ns(day * 3),
            records: 0,
        }
        .write(dir.path())
        .unwrap();
        let within = Coverage::open(Some(dir.path()), ns(day * 4 - Duration::from_secs(1)), day);
        assert!(within.returning.is_none());
        assert_eq!(within.since, ns(day));
        let back = Coverage::open(Some(dir.path()), ns(day * 5), day);
        assert_eq!(back.returning.as_ref().map(|r| r.heard), Some(ns(day * 3)));
        assert_eq!(back.since, ns(day));
    }

    proptest! {
        /// Only entries with a value, stamped before the absence, in a
        /// bucket that came whole from a peer that covers the absence, and
        /// lacking there, are dropped.
        #[test]
        fn what_is_dropped_is_old_and_lacking_from_a_peer_that_covers_the_absence(
            heard in 1_000u64..2_000,
            peer_since in proptest::option::of(0u64..3_000),
            mine in proptest::collection::vec(("[a-e]{1,2}", 0u64..3_000, any::<bool>()), 0..20),
            theirs in proptest::collection::vec("[a-e]{1,2}", 0..20),
            whole in any::<bool>(),
        ) {
            let mut returning = Returning { heard, ..Returning::default() };
            for key in &theirs {
                returning.received(store::bucket_of(key) as u8, [key.as_str()], false);
            }
            for (key, _, _) in &mine {
                returning.received(store::bucket_of(key) as u8, [], whole);
            }
            let entries: HashMap<SmolStr, Entry> = mine
                .iter()
                .map(|(k, at, value)| (SmolStr::new(k), entry(*at, *value)))
                .collect();
            let dropped = returning.to_drop(peer_since, &entries);
            for (key, e) in &entries {
                let expected = peer_since.is_some_and(|s| s <= heard)
                    && whole
                    && e.value.is_some()
                    && e.stamp.physical_ns < heard
                    && !theirs.iter().any(|t| t == key);
                prop_assert_eq!(dropped.contains(key), expected, "{}", key);
            }
        }
    }
}
