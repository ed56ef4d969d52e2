//! What a node keeps in its data directory between runs besides its
//! server's files: the nodes it last saw (`nodes.json`: each one's signed
//! announcement, checked again when read, so a file from another bus or
//! secret, or one changed by hand, gives nothing), the number of its own
//! last announcement (`announce.seq`), and what it has counted
//! (`status.json`, read by `aether node --status`).
//!
//! A node dials the nodes it remembers at start: a bus re-forms after a
//! power cut even when multicast DNS finds no one.

use std::{collections::BTreeMap, path::Path};

use aether_core::lan::{Announcement, LanSecret, Signed};
use serde::{Deserialize, Serialize};

use super::write_private;
use crate::Failure;

#[derive(Default, Serialize, Deserialize)]
struct NodesFile {
    nodes: Vec<Signed>,
}

/// The nodes remembered in `data` whose proof holds for `bus` and
/// `secret`, and how many were passed over.
pub fn load(data: &Path, bus: &str, secret: &LanSecret) -> (Vec<Announcement>, usize) {
    let Ok(text) = std::fs::read(data.join("nodes.json")) else {
        return (Vec::new(), 0);
    };
    let Ok(file) = serde_json::from_slice::<NodesFile>(&text) else {
        return (Vec::new(), 1);
    };
    let total = file.nodes.len();
    let nodes: Vec<Announcement> = file
        .nodes
        .iter()
        .take(super::peers::MAX_REMEMBERED)
        .filter_map(|signed| signed.check(bus, secret).ok())
        .collect();
    let passed = total - nodes.len();
    (nodes, passed)
}

/// Keeps `nodes` in `data` for the next start.
pub fn save<'a>(data: &Path, nodes: impl Iterator<Item = &'a Signed>) -> Result<(), Failure> {
    let file = NodesFile {
        nodes: nodes.cloned().collect(),
    };
    write_private(
        &data.join("nodes.json"),
        &serde_json::to_vec_pretty(&file).expect("signed announcements serialize"),
    )
}

/// The number of this node's next announcement: above the last one kept
/// in `data`, and not below the clock's seconds (a node whose directory
/// was emptied still numbers its announcements above its old ones, if its
/// clock goes on). Kept before it is used.
pub fn next_seq(data: &Path) -> Result<u64, Failure> {
    let path = data.join("announce.seq");
    let last: u64 = std::fs::read_to_string(&path)
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let next = last.saturating_add(1).max(now);
    write_private(&path, next.to_string().as_bytes())?;
    Ok(next)
}

/// What a running node has counted, for `aether node --status`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Announcements passed over, by reason (`malformed`, `other_bus`,
    /// `other_secret`, `unproven`, `stale`).
    pub passed_over: BTreeMap<String, u64>,
    /// Nodes known (found or remembered).
    pub nodes_known: usize,
    /// Times this machine's addresses changed under the node.
    pub address_changes: u64,
    /// Times multicast DNS renamed this node's announcement (another host
    /// answered for its name).
    #[serde(default)]
    pub renamed: u64,
    /// The addresses announced now.
    pub addresses: Vec<String>,
}

impl Counts {
    /// Writes them in `data` (whole, or not at all).
    pub fn write(&self, data: &Path) -> Result<(), Failure> {
        write_private(
            &data.join("status.json"),
            &serde_json::to_vec_pretty(self).expect("counts serialize"),
        )
    }

    /// Those a node of `data` wrote last.
    pub fn read(data: &Path) -> Option<Self> {
        serde_json::from_slice(&std::fs::read(data.join("status.json")).ok()?).ok()
    }
}

#[cfg(test)]
mod tests {
    use aether_core::lan::Scout;

    use super::*;

    #[test]
    fn remembered_nodes_come_back_only_with_their_proof() {
        let dir = tempfile::tempdir().unwrap();
        let secret = LanSecret::from_bytes(b"the secret of the test bus").unwrap();
        let a = Scout::sign(
            "a",
            "home",
            &secret,
            4222,
            6222,
            &["10.0.0.1".parse().unwrap()],
            3,
        );
        let mut b = Scout::sign(
            "b",
            "home",
            &secret,
            4222,
            6222,
            &["10.0.0.2".parse().unwrap()],
            3,
        );
        save(dir.path(), [&a, &b].into_iter()).unwrap();
        let (nodes, passed) = load(dir.path(), "home", &secret);
        assert_eq!(
            nodes.iter().map(|n| n.name.as_str()).collect::<Vec<_>>(),
            ["a", "b"]
        );
        assert_eq!(passed, 0);
        // Changed by hand: that one is passed over.
        b.addrs = "10.0.0.66".into();
        save(dir.path(), [&a, &b].into_iter()).unwrap();
        let (nodes, passed) = load(dir.path(), "home", &secret);
        assert_eq!((nodes.len(), passed), (1, 1));
        // Another secret, another bus: nothing.
        let other = LanSecret::from_bytes(b"the secret of another bus").unwrap();
        assert!(load(dir.path(), "home", &other).0.is_empty());
        assert!(load(dir.path(), "office", &secret).0.is_empty());
        // Damaged: nothing, and said.
        std::fs::write(dir.path().join("nodes.json"), b"{\"nodes\": [").unwrap();
        assert_eq!(load(dir.path(), "home", &secret).0.len(), 0);
    }

    #[test]
    fn announcement_numbers_only_grow() {
        let dir = tempfile::tempdir().unwrap();
        let first = next_seq(dir.path()).unwrap();
        let second = next_seq(dir.path()).unwrap();
        assert!(second > first);
        std::fs::write(dir.path().join("announce.seq"), u64::MAX.to_string()).unwrap();
        assert_eq!(next_seq(dir.path()).unwrap(), u64::MAX);
    }
}
