//! The other nodes of the bus, as the routes the server keeps: those
//! multicast DNS finds and those the node remembers from its last run.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::SocketAddr,
};

use aether_core::lan::{Announcement, Ignored, Sighting, Signed};

/// Most lines a minute about announcements passed over: past it they are
/// counted, and the count said when the minute ends (a host flooding the
/// LAN with forged names fills no disk).
const PASSED_OVER_LINES_A_MINUTE: u32 = 20;

/// Most nodes remembered (the bus's nodes; a host without the secret
/// cannot add one).
pub const MAX_REMEMBERED: usize = 64;

/// A node of the bus, as last announced.
struct Found {
    routes: Vec<SocketAddr>,
    seq: u64,
    signed: Signed,
}

/// The nodes found, by the name their proof covers, and the announcements
/// passed over: counted by reason, each logged once, at most
/// [`PASSED_OVER_LINES_A_MINUTE`] lines a minute.
#[derive(Default)]
pub struct Peers {
    found: BTreeMap<String, Found>,
    ignored: BTreeSet<(String, String)>,
    /// Announcements passed over, by reason ([`Ignored::as_str`]).
    passed_over: BTreeMap<&'static str, u64>,
    /// The minute's start, lines said in it, and lines held back.
    minute: Option<std::time::Instant>,
    said: u32,
    held: u64,
}

impl Peers {
    /// Takes in a sighting; true when the nodes found changed.
    pub fn hear(&mut self, sighting: Sighting, me: &str) -> bool {
        match sighting {
            Sighting::Announced(node) if node.name == me => false,
            Sighting::Announced(node) => self.take(node, me, "found"),
            Sighting::Ignored(label, why) => {
                self.pass_over(&label, why, me);
                false
            }
            // Kept: a withdrawal is not signed (anyone may send one), and
            // whether a node is there is the routes' business (a route to a
            // node that stopped retries until it is back).
            Sighting::Withdrawn(label) => {
                if self.found.contains_key(&label) {
                    eprintln!(
                        "node {me}: node {label:?} withdrew its announcement; its route stays"
                    );
                }
                false
            }
        }
    }

    /// Takes in the nodes remembered from the last run (a live
    /// announcement with a higher number replaces one); how many.
    pub fn remember(&mut self, nodes: Vec<Announcement>, me: &str) -> usize {
        let mut taken = 0;
        for node in nodes {
            if node.name != me && self.take(node, me, "remembers") {
                taken += 1;
            }
        }
        taken
    }

    /// `node`, said to be `how` (found, remembers): true if it is new or
    /// moved.
    fn take(&mut self, node: Announcement, me: &str, how: &str) -> bool {
        if let Some(known) = self.found.get(&node.name) {
            if node.seq < known.seq {
                let why = Ignored::Stale(node.seq, known.seq);
                self.pass_over(&node.name.clone(), why, me);
                return false;
            }
            if known.routes == node.routes {
                if let Some(known) = self.found.get_mut(&node.name) {
                    known.seq = node.seq;
                    known.signed = node.signed;
                }
                return false;
            }
        }
        let moved = self.found.contains_key(&node.name);
        let addresses: Vec<String> = node.routes.iter().map(|a| a.to_string()).collect();
        eprintln!(
            "node {me}: {} node {:?} at {}",
            if moved { "moved:" } else { how },
            node.name,
            addresses.join(", ")
        );
        self.found.insert(
            node.name,
            Found {
                routes: node.routes,
                seq: node.seq,
                signed: node.signed,
            },
        );
        if self.found.len() > MAX_REMEMBERED {
            // The lowest-numbered announcement goes: the one heard longest
            // ago, most likely.
            if let Some(oldest) = self
                .found
                .iter()
                .min_by_key(|(_, f)| f.seq)
                .map(|(name, _)| name.clone())
            {
                self.found.remove(&oldest);
            }
        }
        true
    }

    fn pass_over(&mut self, label: &str, why: Ignored, me: &str) {
        *self.passed_over.entry(why.as_str()).or_default() += 1;
        if self.ignored.insert((label.to_string(), why.to_string())) {
            let now = std::time::Instant::now();
            if self
                .minute
                .is_none_or(|start| now.duration_since(start).as_secs() >= 60)
            {
                if self.held > 0 {
                    eprintln!(
                        "node {me}: passed over {} more announcements in the last minute \
                         (a host floods the LAN with them?)",
                        self.held
                    );
                }
                (self.minute, self.said, self.held) = (Some(now), 0, 0);
            }
            if self.said < PASSED_OVER_LINES_A_MINUTE {
                self.said += 1;
                eprintln!("node {me}: passed over the announcement of {label:?}: {why}");
            } else {
                self.held += 1;
            }
        }
        if self.ignored.len() > 1024 {
            self.ignored.clear();
        }
    }

    /// Announcements passed over so far, by reason.
    pub fn passed_over(&self) -> &BTreeMap<&'static str, u64> {
        &self.passed_over
    }

    /// What every node found said of itself, with its proof: what the node
    /// keeps for its next start.
    pub fn signed(&self) -> impl Iterator<Item = &Signed> {
        self.found.values().map(|f| &f.signed)
    }

    /// How many nodes are known.
    pub fn len(&self) -> usize {
        self.found.len()
    }

    /// `host:port` of every route `me` solicits: to the nodes whose names
    /// sort after its own. The others solicit it; one route per pair,
    /// never two crossing (which older servers settle by dropping one,
    /// and the interest sent on it with it).
    pub fn routes<'a>(&'a self, me: &'a str) -> impl Iterator<Item = String> + 'a {
        self.found
            .range::<str, _>((std::ops::Bound::Excluded(me), std::ops::Bound::Unbounded))
            .flat_map(|(_, found)| &found.routes)
            .map(|a| a.to_string())
    }
}

#[cfg(test)]
mod tests {
    use aether_core::lan::{Ignored, LanSecret, Scout};

    use super::*;

    fn secret() -> LanSecret {
        LanSecret::from_bytes(b"the secret of the test bus").unwrap()
    }

    fn node_at(name: &str, address: &str, seq: u64) -> Sighting {
        let signed = Scout::sign(
            name,
            "home",
            &secret(),
            4222,
            6222,
            &[address.parse().unwrap()],
            seq,
        );
        Sighting::Announced(signed.check("home", &secret()).unwrap())
    }

    fn node(name: &str, address: &str) -> Sighting {
        node_at(name, address, 1)
    }

    #[test]
    fn routes_go_one_way_per_pair_and_a_withdrawal_keeps_them() {
        let mut peers = Peers::default();
        assert!(
            !peers.hear(node("m", "10.0.0.9"), "m"),
            "its own announcement"
        );
        assert!(peers.hear(node("a", "10.0.0.1"), "m"));
        assert!(peers.hear(node("z", "10.0.0.3"), "m"));
        assert!(!peers.hear(node("z", "10.0.0.3"), "m"), "the same again");
        // Only to the names after its own.
        assert_eq!(peers.routes("m").collect::<Vec<_>>(), ["10.0.0.3:6222"]);
        // Anyone can send a withdrawal: it changes no route.
        assert!(!peers.hear(Sighting::Withdrawn("z".into()), "m"));
        assert_eq!(peers.routes("m").collect::<Vec<_>>(), ["10.0.0.3:6222"]);
        assert!(!peers.hear(Sighting::Ignored("x".into(), Ignored::Unproven), "m"));
        assert_eq!(peers.passed_over().get("unproven"), Some(&1));
    }

    #[test]
    fn a_node_that_moves_is_routed_to_where_it_went_and_a_replay_is_stale() {
        let mut peers = Peers::default();
        assert!(peers.hear(node_at("z", "10.0.0.3", 5), "m"));
        assert!(peers.hear(node_at("z", "10.0.0.33", 6), "m"), "it moved");
        assert_eq!(peers.routes("m").collect::<Vec<_>>(), ["10.0.0.33:6222"]);
        // Its old announcement, replayed: passed over and counted.
        assert!(!peers.hear(node_at("z", "10.0.0.3", 5), "m"));
        assert_eq!(peers.routes("m").collect::<Vec<_>>(), ["10.0.0.33:6222"]);
        assert_eq!(peers.passed_over().get("stale"), Some(&1));
        // Remembered nodes count as found; a later live one replaces them.
        let mut peers = Peers::default();
        let Sighting::Announced(old) = node_at("z", "10.0.0.3", 5) else {
            unreachable!()
        };
        assert_eq!(peers.remember(vec![old], "m"), 1);
        assert_eq!(peers.routes("m").collect::<Vec<_>>(), ["10.0.0.3:6222"]);
        assert!(peers.hear(node_at("z", "10.0.0.4", 9), "m"));
        assert_eq!(peers.signed().next().unwrap().seq, 9);
    }

    #[test]
    fn a_flood_of_forged_names_is_counted_not_logged_line_by_line() {
        let mut peers = Peers::default();
        for i in 0..5_000 {
            peers.hear(
                Sighting::Ignored(format!("forged-{i}"), Ignored::Unproven),
                "m",
            );
        }
        assert_eq!(peers.said, PASSED_OVER_LINES_A_MINUTE);
        assert_eq!(peers.held, 5_000 - u64::from(PASSED_OVER_LINES_A_MINUTE));
        assert!(peers.ignored.len() <= 1025);
        assert!(peers.routes("m").next().is_none());
        assert_eq!(peers.passed_over().get("unproven"), Some(&5_000));
    }

    #[test]
    fn the_nodes_remembered_are_bounded() {
        let mut peers = Peers::default();
        for i in 0..(MAX_REMEMBERED as u64 + 10) {
            peers.hear(node_at(&format!("n{i}"), "10.0.0.3", i + 1), "m");
        }
        assert_eq!(peers.len(), MAX_REMEMBERED);
    }
}
