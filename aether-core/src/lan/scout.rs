//! Nodes announced on the LAN by multicast DNS (DNS-SD), and found.
//!
//! A node announces the service `_aether._tcp.local.` under its name: the
//! port programs connect to, and TXT entries `v=2`, `bus=<bus>`,
//! `name=<node name>`, `fp=<fingerprint of the secret>`,
//! `cluster=<route port>`, `addrs=<its addresses>`, `seq=<announcement
//! number>` and `sig=<proof>`: an HMAC, under a key derived from the
//! secret, of everything else it says. Never the secret, nor anything it
//! could be worked out from. What comes off the network is hostile until
//! checked ([`Announcement::parse`]): a record that is malformed, of
//! another version, of another bus or secret, or whose proof does not hold
//! (a copy of the fingerprint pointing elsewhere) is passed over with the
//! reason, never joined; routes and programs go only to the addresses the
//! proof covers. A withdrawal cannot be signed: it changes nothing but a
//! log line.
//!
//! A node is known by the name its proof covers, never by the DNS-SD
//! instance label: multicast DNS renames a label another host claims
//! (`pi` becomes `pi (2)`), and anyone on the LAN may claim one. A node
//! numbers its announcements (`seq`, higher each time it announces new
//! addresses): an older announcement replayed after a node moved is passed
//! over as stale. Announcements of version 1 (no `name`, no `seq`: the
//! label is the name) are still read.

use std::net::{IpAddr, SocketAddr};

use mdns_sd::{IfKind, ResolvedService, ServiceDaemon, ServiceEvent, ServiceInfo};

use super::{LanSecret, check_bus_name};

/// The DNS-SD service type of Aether nodes.
pub const SERVICE_TYPE: &str = "_aether._tcp.local.";

/// The announcement format's version.
const VERSION: &str = "2";

/// The version before it, still read: no `name` (the instance label is
/// the name) and no `seq`.
const VERSION_1: &str = "1";

/// Most addresses a node announces.
const MAX_ADDRESSES: usize = 8;

/// Everything a node's announcement says of it, with the proof that it
/// holds the secret: what a node keeps of the nodes it saw (the proof is
/// checked again when read back).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Signed {
    /// The format's version (`"1"` or `"2"`).
    pub v: String,
    /// The node's name.
    pub name: String,
    /// Where programs connect.
    pub client_port: u16,
    /// Where routes connect.
    pub cluster_port: u16,
    /// Its addresses, comma-separated, as announced.
    pub addrs: String,
    /// The announcement's number (0 in version 1).
    pub seq: u64,
    /// The proof: an HMAC of the rest under a key derived from the secret.
    pub sig: String,
}

impl Signed {
    /// What the proof covers, in one canonical text.
    fn text(&self, bus: &str) -> String {
        let Self {
            name,
            client_port,
            cluster_port,
            addrs,
            ..
        } = self;
        if self.v == VERSION_1 {
            format!("v1|{bus}|{name}|{client_port}|{cluster_port}|{addrs}")
        } else {
            format!(
                "v{}|{bus}|{name}|{client_port}|{cluster_port}|{addrs}|{}",
                self.v, self.seq
            )
        }
    }

    /// This node's announcement, proven with `secret`.
    fn new(
        name: &str,
        bus: &str,
        secret: &LanSecret,
        client_port: u16,
        cluster_port: u16,
        addresses: &[IpAddr],
        seq: u64,
    ) -> Self {
        let mut signed = Self {
            v: VERSION.to_string(),
            name: name.to_string(),
            client_port,
            cluster_port,
            addrs: addresses
                .iter()
                .take(MAX_ADDRESSES)
                .map(|a| a.to_string())
                .collect::<Vec<_>>()
                .join(","),
            seq,
            sig: String::new(),
        };
        signed.sig = secret.proof(&signed.text(bus));
        signed
    }

    /// The node it describes, if it is one of `bus` whose proof holds
    /// under `secret`; the addresses taken are the ones the proof covers.
    pub fn check(&self, bus: &str, secret: &LanSecret) -> Result<Announcement, Ignored> {
        if self.v != VERSION && self.v != VERSION_1 {
            return Err(Ignored::Malformed(format!(
                "version {:?}, this one reads {VERSION_1} and {VERSION}",
                self.v
            )));
        }
        check_node_name(&self.name)
            .map_err(|_| Ignored::Malformed("a node name that is not one".into()))?;
        if self.cluster_port == 0 || self.client_port == 0 {
            return Err(Ignored::Malformed("port 0".into()));
        }
        if self.addrs.len() > 128 {
            return Err(Ignored::Malformed("an address list too long".into()));
        }
        if !secret.proves(&self.text(bus), &self.sig) {
            return Err(Ignored::Unproven);
        }
        let mut addresses: Vec<IpAddr> = Vec::new();
        for address in self
            .addrs
            .split(',')
            .filter(|a| !a.is_empty())
            .take(MAX_ADDRESSES)
        {
            let ip: IpAddr = address
                .parse()
                .map_err(|_| Ignored::Malformed(format!("{address:?} is not an address")))?;
            if usable(&ip) {
                addresses.push(ip);
            }
        }
        if addresses.is_empty() {
            return Err(Ignored::Malformed("no usable address".into()));
        }
        Ok(Announcement {
            name: self.name.clone(),
            bus: bus.to_string(),
            fingerprint: secret.fingerprint(),
            clients: addresses
                .iter()
                .map(|ip| SocketAddr::new(*ip, self.client_port))
                .collect(),
            routes: addresses
                .iter()
                .map(|ip| SocketAddr::new(*ip, self.cluster_port))
                .collect(),
            seq: self.seq,
            signed: self.clone(),
        })
    }
}

/// `Ok` if `name` may name a node: 1 to 63 ASCII letters, digits, `-`,
/// `_` and `.` (it is logged and becomes the server's name).
pub fn check_node_name(name: &str) -> Result<(), String> {
    let valid = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    if valid {
        Ok(())
    } else {
        Err(format!(
            "{name:?} cannot name a node: use 1 to 63 letters, digits, '-', '_' or '.'"
        ))
    }
}

/// An address others may reach: not loopback, unspecified, multicast,
/// broadcast or IPv6 link-local (which would need its interface's scope).
fn usable(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            !v4.is_unspecified() && !v4.is_multicast() && !v4.is_broadcast() && !v4.is_loopback()
        }
        IpAddr::V6(v6) => {
            !v6.is_unspecified()
                && !v6.is_multicast()
                && !v6.is_loopback()
                && (v6.segments()[0] & 0xffc0) != 0xfe80
        }
    }
}

/// This machine's usable addresses (on `interface` only, if named), IPv4
/// first, at most `MAX_ADDRESSES`.
pub fn local_addresses(interface: Option<&str>) -> Vec<IpAddr> {
    let mut found: Vec<IpAddr> = if_addrs::get_if_addrs()
        .unwrap_or_default()
        .into_iter()
        .filter(|i| interface.is_none_or(|name| i.name == name))
        .map(|i| i.ip())
        .filter(usable)
        .collect();
    found.sort_by_key(|ip| (ip.is_ipv6(), *ip));
    found.dedup();
    found.truncate(MAX_ADDRESSES);
    found
}

/// A node as its announcement describes it, checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Announcement {
    /// The node's name (the DNS-SD instance name).
    pub name: String,
    /// Its bus.
    pub bus: String,
    /// The fingerprint of its secret.
    pub fingerprint: String,
    /// Where programs connect, one per address it announced.
    pub clients: Vec<SocketAddr>,
    /// Where routes connect, one per address it announced.
    pub routes: Vec<SocketAddr>,
    /// The announcement's number: a node's later announcements have higher
    /// ones (0 for version 1).
    pub seq: u64,
    /// What it said, with its proof.
    pub signed: Signed,
}

/// Why an announcement is passed over.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ignored {
    /// It is not a valid announcement: the reason.
    Malformed(String),
    /// A node of another bus.
    OtherBus(String),
    /// A node of this bus whose secret differs.
    OtherSecret,
    /// The fingerprint of this bus's secret, but a proof that does not
    /// hold: a copy, or a record changed on the way.
    Unproven,
    /// A proven announcement older than one heard already from the same
    /// node (a replay after it moved): its number, and the one heard.
    Stale(u64, u64),
}

impl Ignored {
    /// The reason's name, as counted: `malformed`, `other_bus`,
    /// `other_secret`, `unproven` or `stale`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Malformed(_) => "malformed",
            Self::OtherBus(_) => "other_bus",
            Self::OtherSecret => "other_secret",
            Self::Unproven => "unproven",
            Self::Stale(..) => "stale",
        }
    }
}

impl std::fmt::Display for Ignored {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Malformed(why) => write!(f, "not a valid announcement: {why}"),
            Self::OtherBus(bus) => write!(f, "a node of bus {bus:?}"),
            Self::OtherSecret => f.write_str("its secret differs from this bus's"),
            Self::Unproven => f.write_str(
                "it shows this bus's fingerprint but not the proof that it holds the secret",
            ),
            Self::Stale(seq, heard) => write!(
                f,
                "announcement {seq} is older than announcement {heard} of the same node (a replay?)"
            ),
        }
    }
}

/// The instance name in a DNS-SD full name (`name._aether._tcp.local.`).
pub(super) fn instance_of(fullname: &str) -> &str {
    fullname
        .strip_suffix(SERVICE_TYPE)
        .and_then(|name| name.strip_suffix('.'))
        .unwrap_or(fullname)
}

impl Announcement {
    /// Checks what a resolved service says: one of `bus` with the secret
    /// whose fingerprint is `fingerprint`, or why it is passed over.
    pub fn parse(
        service: &ResolvedService,
        bus: &str,
        secret: &LanSecret,
    ) -> Result<Self, Ignored> {
        Self::parse_parts(
            &service.fullname,
            service.port,
            |key| service.get_property_val_str(key),
            bus,
            secret,
        )
    }

    /// [`parse`](Self::parse), from the record's parts. The addresses are
    /// the ones the proof covers, not the record's own (which anyone may
    /// add to).
    fn parse_parts<'a>(
        fullname: &str,
        port: u16,
        property: impl Fn(&str) -> Option<&'a str>,
        bus: &str,
        secret: &LanSecret,
    ) -> Result<Self, Ignored> {
        let fingerprint = secret.fingerprint();
        let fingerprint = fingerprint.as_str();
        let text = |key: &str| -> Result<&'a str, Ignored> {
            property(key)
                .filter(|v| v.len() <= 128)
                .ok_or_else(|| Ignored::Malformed(format!("no {key} (or one too long)")))
        };
        let version = text("v")?;
        if version != VERSION && version != VERSION_1 {
            return Err(Ignored::Malformed(format!(
                "version {version:?}, this one reads {VERSION_1} and {VERSION}"
            )));
        }
        let their_bus = text("bus")?;
        check_bus_name(their_bus).map_err(Ignored::Malformed)?;
        if their_bus != bus {
            return Err(Ignored::OtherBus(their_bus.to_string()));
        }
        let their_fingerprint = text("fp")?;
        if their_fingerprint.len() != 16
            || !their_fingerprint.bytes().all(|b| b.is_ascii_hexdigit())
        {
            return Err(Ignored::Malformed(
                "a fingerprint that is not 16 hex digits".into(),
            ));
        }
        if their_fingerprint != fingerprint {
            return Err(Ignored::OtherSecret);
        }
        // The name the proof covers; version 1 had the label for it.
        let (name, seq) = if version == VERSION_1 {
            (instance_of(fullname), 0)
        } else {
            let seq = text("seq")?
                .parse()
                .map_err(|_| Ignored::Malformed("a seq that is not a number".into()))?;
            (text("name")?, seq)
        };
        let cluster_port: u16 = text("cluster")?
            .parse()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| Ignored::Malformed("a cluster port that is not a port".into()))?;
        Signed {
            v: version.to_string(),
            name: name.to_string(),
            client_port: port,
            cluster_port,
            addrs: text("addrs")?.to_string(),
            seq,
            sig: text("sig")?.to_string(),
        }
        .check(bus, secret)
    }
}

/// What multicast DNS says about a node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Sighting {
    /// A node of the bus, announced (again).
    Announced(Announcement),
    /// An announcement passed over: the instance's name and why.
    Ignored(String, Ignored),
    /// The node of this name withdrew its announcement (a node that
    /// crashed does not: the cluster's own routes say it is gone).
    Withdrawn(String),
}

/// The nodes multicast DNS finds, checked.
#[derive(Debug)]
pub struct Sightings {
    events: mdns_sd::Receiver<ServiceEvent>,
    bus: String,
    secret: LanSecret,
}

impl Sightings {
    /// The next sighting; none once the scout stopped.
    pub async fn next(&self) -> Option<Sighting> {
        loop {
            match self.events.recv_async().await.ok()? {
                ServiceEvent::ServiceResolved(service) => {
                    let name = instance_of(&service.fullname).to_string();
                    return Some(
                        match Announcement::parse(&service, &self.bus, &self.secret) {
                            Ok(found) => Sighting::Announced(found),
                            Err(why) => Sighting::Ignored(name, why),
                        },
                    );
                }
                ServiceEvent::ServiceRemoved(_, fullname) => {
                    return Some(Sighting::Withdrawn(instance_of(&fullname).to_string()));
                }
                _ => {}
            }
        }
    }
}

/// Names multicast DNS changed for this process, as it resolved a conflict:
/// another host answered for one of them (by mistake, or to hide the
/// node: the node is still known by the name its proof covers).
#[derive(Debug)]
pub struct Renames {
    events: mdns_sd::Receiver<mdns_sd::DaemonEvent>,
}

impl Renames {
    /// The next name changed, as `(what it was, what it is now)`; none once
    /// the scout stopped.
    pub async fn next(&self) -> Option<(String, String)> {
        loop {
            if let mdns_sd::DaemonEvent::NameChange(change) = self.events.recv_async().await.ok()? {
                return Some((change.original, change.new_name));
            }
        }
    }
}

/// This process's multicast DNS responder and browser.
pub struct Scout {
    daemon: ServiceDaemon,
}

impl std::fmt::Debug for Scout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Scout")
    }
}

impl Scout {
    /// Starts one, on the interface named `interface` only if given.
    pub fn start(interface: Option<&str>) -> Result<Self, String> {
        let daemon =
            ServiceDaemon::new().map_err(|e| format!("cannot start multicast DNS: {e}"))?;
        if let Some(name) = interface {
            daemon
                .disable_interface(IfKind::All)
                .and_then(|()| daemon.enable_interface(IfKind::Name(name.to_string())))
                .map_err(|e| format!("cannot use interface {name:?} for multicast DNS: {e}"))?;
        }
        Ok(Self { daemon })
    }

    /// Announces this node, signed with `secret`: `name` of `bus`,
    /// programs on `client_port`, routes on `cluster_port`, at `addresses`
    /// ([`local_addresses`] gives this machine's), as its announcement
    /// number `seq` (higher than any it made before: others pass over a
    /// lower one as stale). Announcing again replaces what was announced.
    #[allow(clippy::too_many_arguments)]
    pub fn announce(
        &self,
        name: &str,
        bus: &str,
        secret: &LanSecret,
        client_port: u16,
        cluster_port: u16,
        addresses: &[IpAddr],
        seq: u64,
    ) -> Result<(), String> {
        if addresses.is_empty() {
            return Err(format!(
                "node {name:?} has no address other machines can reach (only loopback?): \
                 give one with --listen, or run with --no-scout"
            ));
        }
        let signed = Signed::new(name, bus, secret, client_port, cluster_port, addresses, seq);
        let cluster = cluster_port.to_string();
        let seq = seq.to_string();
        let fingerprint = secret.fingerprint();
        let properties = [
            ("v", VERSION),
            ("bus", bus),
            ("name", name),
            ("fp", fingerprint.as_str()),
            ("cluster", cluster.as_str()),
            ("addrs", signed.addrs.as_str()),
            ("seq", seq.as_str()),
            ("sig", signed.sig.as_str()),
        ];
        let host = format!("{name}.local.");
        let info = ServiceInfo::new(
            SERVICE_TYPE,
            name,
            &host,
            addresses,
            client_port,
            &properties[..],
        )
        .map_err(|e| format!("cannot announce {name:?}: {e}"))?;
        self.daemon
            .register(info)
            .map_err(|e| format!("cannot announce {name:?}: {e}"))
    }

    /// What [`announce`](Self::announce) signs: `name` of `bus` at
    /// `addresses`, its announcement number `seq`.
    pub fn sign(
        name: &str,
        bus: &str,
        secret: &LanSecret,
        client_port: u16,
        cluster_port: u16,
        addresses: &[IpAddr],
        seq: u64,
    ) -> Signed {
        Signed::new(name, bus, secret, client_port, cluster_port, addresses, seq)
    }

    /// Nodes of `bus` that prove they hold `secret`, as they are
    /// announced and withdrawn.
    pub fn browse(&self, bus: &str, secret: &LanSecret) -> Result<Sightings, String> {
        let events = self
            .daemon
            .browse(SERVICE_TYPE)
            .map_err(|e| format!("cannot look for nodes: {e}"))?;
        Ok(Sightings {
            events,
            bus: bus.to_string(),
            secret: secret.clone(),
        })
    }

    /// The names multicast DNS changes from here on.
    pub fn renames(&self) -> Result<Renames, String> {
        self.daemon
            .monitor()
            .map(|events| Renames { events })
            .map_err(|e| format!("cannot watch multicast DNS: {e}"))
    }

    /// Withdraws the announcement and stops.
    pub fn stop(self) {
        if let Ok(done) = self.daemon.shutdown() {
            let _ = done.recv_timeout(std::time::Duration::from_secs(1));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret() -> LanSecret {
        LanSecret::from_bytes(b"the secret of the test bus").unwrap()
    }

    /// A node's TXT entries as it announces them, then changed by `change`.
    fn announced(
        addresses: &str,
        change: impl FnOnce(&mut Vec<(&'static str, String)>),
    ) -> Vec<(&'static str, String)> {
        let secret = secret();
        let addrs: Vec<IpAddr> = addresses
            .split(',')
            .filter_map(|a| a.parse().ok())
            .collect();
        let mut signed = Signed::new("pi", "home", &secret, 4222, 6222, &addrs, 7);
        // Addresses as given, even those that do not parse.
        signed.addrs = addresses.to_string();
        signed.sig = secret.proof(&signed.text("home"));
        let mut pairs = vec![
            ("v", "2".to_string()),
            ("bus", "home".to_string()),
            ("name", "pi".to_string()),
            ("fp", secret.fingerprint()),
            ("cluster", "6222".to_string()),
            ("addrs", addresses.to_string()),
            ("seq", "7".to_string()),
            ("sig", signed.sig),
        ];
        change(&mut pairs);
        pairs
    }

    fn parse_as(
        label: &str,
        pairs: &[(&'static str, String)],
        port: u16,
    ) -> Result<Announcement, Ignored> {
        Announcement::parse_parts(
            &format!("{label}.{SERVICE_TYPE}"),
            port,
            |key| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == key)
                    .map(|(_, v)| v.as_str())
            },
            "home",
            &secret(),
        )
    }

    #[test]
    fn a_node_is_known_by_the_name_its_proof_covers_whatever_its_label() {
        // Multicast DNS renamed the label (another host claimed it): the
        // node is still "pi".
        for label in ["pi", "pi (2)", "pi (17)", "anything at all"] {
            let found = parse_as(label, &announced("10.0.0.2", |_| {}), 4222).unwrap();
            assert_eq!(found.name, "pi", "{label}");
            assert_eq!(found.seq, 7);
        }
        // The name is proven: another in the record is not taken.
        assert_eq!(
            parse_as("pi", &announced("10.0.0.2", |p| set(p, "name", "pj")), 4222),
            Err(Ignored::Unproven)
        );
        assert_eq!(
            parse_as("pi", &announced("10.0.0.2", |p| set(p, "seq", "8")), 4222),
            Err(Ignored::Unproven)
        );
        // Version 1: the label is the name, no number.
        let secret = secret();
        let v1 = vec![
            ("v", "1".to_string()),
            ("bus", "home".to_string()),
            ("fp", secret.fingerprint()),
            ("cluster", "6222".to_string()),
            ("addrs", "10.0.0.2".to_string()),
            ("sig", secret.proof("v1|home|pi|4222|6222|10.0.0.2")),
        ];
        let found = parse_as("pi", &v1, 4222).unwrap();
        assert_eq!((found.name.as_str(), found.seq), ("pi", 0));
        // A renamed version-1 label is no name at all.
        assert!(matches!(
            parse_as("pi (2)", &v1, 4222),
            Err(Ignored::Malformed(_))
        ));
        assert_eq!(parse_as("pj", &v1, 4222), Err(Ignored::Unproven));
    }

    #[test]
    fn what_a_node_keeps_of_another_is_checked_again_when_read_back() {
        let found = parse(&announced("10.0.0.2", |_| {}), 4222).unwrap();
        let kept: Signed =
            serde_json::from_str(&serde_json::to_string(&found.signed).unwrap()).unwrap();
        assert_eq!(kept.check("home", &secret()), Ok(found.clone()));
        let mut moved = kept.clone();
        moved.addrs = "10.0.0.66".into();
        assert_eq!(moved.check("home", &secret()), Err(Ignored::Unproven));
        let other = LanSecret::from_bytes(b"the secret of another bus").unwrap();
        assert_eq!(kept.check("home", &other), Err(Ignored::Unproven));
        assert_eq!(kept.check("office", &secret()), Err(Ignored::Unproven));
    }

    fn set(pairs: &mut Vec<(&'static str, String)>, key: &'static str, value: &str) {
        pairs.retain(|(k, _)| *k != key);
        pairs.push((key, value.to_string()));
    }

    fn parse(pairs: &[(&'static str, String)], port: u16) -> Result<Announcement, Ignored> {
        parse_as("pi", pairs, port)
    }

    #[test]
    fn a_node_of_the_bus_is_taken_at_the_addresses_its_proof_covers() {
        let found = parse(&announced("192.168.1.20,fd00::20", |_| {}), 4222).unwrap();
        assert_eq!(found.name, "pi");
        assert_eq!(
            found.clients,
            [
                "192.168.1.20:4222".parse::<SocketAddr>().unwrap(),
                "[fd00::20]:4222".parse().unwrap()
            ]
        );
        assert_eq!(found.routes[0], "192.168.1.20:6222".parse().unwrap());
        // Loopback and link-local addresses are never routes.
        let found = parse(&announced("127.0.0.1,fe80::1,10.0.0.2", |_| {}), 4222).unwrap();
        assert_eq!(
            found.routes,
            ["10.0.0.2:6222".parse::<SocketAddr>().unwrap()]
        );
    }

    #[test]
    fn a_copied_fingerprint_pointing_elsewhere_is_passed_over() {
        // The right fingerprint, a proof copied from a real node, and the
        // copier's own address, port or name: none holds.
        let real = announced("10.0.0.2", |_| {});
        let sig = real.iter().find(|(k, _)| *k == "sig").unwrap().1.clone();
        for forged in [
            announced("10.0.0.66", |p| set(p, "sig", &sig)),
            announced("10.0.0.2,10.0.0.66", |p| set(p, "sig", &sig)),
            announced("10.0.0.2", |p| set(p, "cluster", "6666")),
            announced("10.0.0.2", |p| {
                set(p, "sig", "00000000000000000000000000000000")
            }),
            announced("10.0.0.2", |p| p.retain(|(k, _)| *k != "sig")),
        ] {
            assert!(
                matches!(
                    parse(&forged, 4222),
                    Err(Ignored::Unproven | Ignored::Malformed(_))
                ),
                "{forged:?}"
            );
        }
        assert_eq!(parse(&real, 4999), Err(Ignored::Unproven));
    }

    #[test]
    fn other_buses_other_secrets_and_malformed_announcements_are_passed_over() {
        let with = |key: &'static str, value: &str| announced("10.0.0.2", |p| set(p, key, value));
        let without = |key: &'static str| announced("10.0.0.2", |p| p.retain(|(k, _)| *k != key));
        assert_eq!(
            parse(&with("bus", "office"), 4222),
            Err(Ignored::OtherBus("office".into()))
        );
        assert_eq!(
            parse(&with("fp", "fedcba9876543210"), 4222),
            Err(Ignored::OtherSecret)
        );
        for bad in [
            with("v", "3"),
            with("seq", "-1"),
            with("name", "a b"),
            without("name"),
            without("seq"),
            with("bus", "../etc"),
            with("bus", &"b".repeat(200)),
            with("fp", "not hex at all!!"),
            with("fp", "0123"),
            with("cluster", "0"),
            with("cluster", "70000"),
            with("cluster", "-1"),
            with("addrs", "not-an-address"),
            without("bus"),
            without("fp"),
            without("cluster"),
            without("v"),
            without("addrs"),
        ] {
            assert!(
                matches!(
                    parse(&bad, 4222),
                    Err(Ignored::Malformed(_) | Ignored::Unproven)
                ),
                "{bad:?}"
            );
        }
        assert!(matches!(
            parse(&announced("10.0.0.2", |_| {}), 0),
            Err(Ignored::Malformed(_))
        ));
        // A name that would write its own log lines.
        let parsed = Announcement::parse_parts(
            &format!("e\u{1b}[31mRED\nFAKE.{SERVICE_TYPE}"),
            4222,
            |_| None,
            "home",
            &secret(),
        );
        assert!(matches!(parsed, Err(Ignored::Malformed(_))));
    }
}
