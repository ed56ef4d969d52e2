//! The other nodes multicast DNS finds, as the routes the server keeps.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::SocketAddr,
};

use aether_core::lan::Sighting;

/// Most lines a minute about announcements passed over: past it they are
/// counted, and the count said when the minute ends (a host flooding the
/// LAN with forged names fills no disk).
const PASSED_OVER_LINES_A_MINUTE: u32 = 20;

/// The nodes found, by name, and the announcements passed over (each
/// logged once, at most [`PASSED_OVER_LINES_A_MINUTE`] a minute).
#[derive(Default)]
pub struct Peers {
    found: BTreeMap<String, Vec<SocketAddr>>,
    ignored: BTreeSet<(String, String)>,
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
            Sighting::Announced(node) => {
                if self.found.get(&node.name) == Some(&node.routes) {
                    return false;
                }
                let addresses: Vec<String> = node.routes.iter().map(|a| a.to_string()).collect();
                eprintln!(
                    "node {me}: found node {:?} at {}",
                    node.name,
                    addresses.join(", ")
                );
                self.found.insert(node.name, node.routes);
                true
            }
            Sighting::Ignored(name, why) => {
                if self.ignored.insert((name.clone(), why.to_string())) {
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
                        eprintln!("node {me}: passed over the announcement of {name:?}: {why}");
                    } else {
                        self.held += 1;
                    }
                }
                if self.ignored.len() > 1024 {
                    self.ignored.clear();
                }
                false
            }
            // Kept: a withdrawal is not signed (anyone may send one), and
            // whether a node is there is the routes' business (a route to a
            // node that stopped retries until it is back).
            Sighting::Withdrawn(name) => {
                if self.found.contains_key(&name) {
                    eprintln!(
                        "node {me}: node {name:?} withdrew its announcement; its route stays"
                    );
                }
                false
            }
        }
    }

    /// `host:port` of every route `me` solicits: to the nodes whose names
    /// sort after its own. The others solicit it; one route per pair,
    /// never two crossing (which older servers settle by dropping one,
    /// and the interest sent on it with it).
    pub fn routes<'a>(&'a self, me: &'a str) -> impl Iterator<Item = String> + 'a {
        self.found
            .range::<str, _>((std::ops::Bound::Excluded(me), std::ops::Bound::Unbounded))
            .flat_map(|(_, addresses)| addresses)
            .map(|a| a.to_string())
    }
}

#[cfg(test)]
mod tests {
    use aether_core::lan::{Announcement, Ignored};

    use super::*;

    fn node(name: &str, address: &str) -> Sighting {
        Sighting::Announced(Announcement {
            name: name.into(),
            bus: "home".into(),
            fingerprint: "0123456789abcdef".into(),
            clients: vec![format!("{address}:4222").parse().unwrap()],
            routes: vec![format!("{address}:6222").parse().unwrap()],
        })
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
    }
}
