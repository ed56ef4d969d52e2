//! The other nodes multicast DNS finds, as the routes the server keeps.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::SocketAddr,
};

use aether_core::lan::Sighting;

/// The nodes found, by name, and the announcements passed over (each
/// logged once).
#[derive(Default)]
pub struct Peers {
    found: BTreeMap<String, Vec<SocketAddr>>,
    ignored: BTreeSet<(String, String)>,
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
                    eprintln!("node {me}: passed over the announcement of {name:?}: {why}");
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
}
