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
                    "node {me}: found node {} at {}",
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
                false
            }
            Sighting::Withdrawn(name) => {
                if self.found.remove(&name).is_some() {
                    eprintln!("node {me}: node {name} withdrew its announcement");
                    true
                } else {
                    false
                }
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
