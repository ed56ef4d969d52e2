//! Nodes announced on the LAN by multicast DNS (DNS-SD), and found.
//!
//! A node announces the service `_aether._tcp.local.` under its name: the
//! port programs connect to, and TXT entries `v=1`, `bus=<bus>`,
//! `fp=<fingerprint of the secret>` and `cluster=<route port>`. Never the
//! secret, nor anything it could be worked out from. What comes off the
//! network is hostile until checked ([`Announcement::parse`]): a record
//! that is malformed, of another version, of another bus or of another
//! secret is passed over with the reason, never joined.

use std::{
    collections::BTreeSet,
    net::{IpAddr, SocketAddr},
};

use mdns_sd::{IfKind, ResolvedService, ServiceDaemon, ServiceEvent, ServiceInfo};

use super::check_bus_name;

/// The DNS-SD service type of Aether nodes.
pub const SERVICE_TYPE: &str = "_aether._tcp.local.";

/// The announcement format's version.
const VERSION: &str = "1";

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
}

impl std::fmt::Display for Ignored {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Malformed(why) => write!(f, "not a valid announcement: {why}"),
            Self::OtherBus(bus) => write!(f, "a node of bus {bus:?}"),
            Self::OtherSecret => f.write_str("its secret differs from this bus's"),
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
    pub fn parse(service: &ResolvedService, bus: &str, fingerprint: &str) -> Result<Self, Ignored> {
        Self::parse_parts(
            &service.fullname,
            service.port,
            service.addresses.iter().map(|a| a.to_ip_addr()),
            |key| service.get_property_val_str(key),
            bus,
            fingerprint,
        )
    }

    /// [`parse`](Self::parse), from the record's parts.
    fn parse_parts<'a>(
        fullname: &str,
        port: u16,
        addresses: impl Iterator<Item = IpAddr>,
        property: impl Fn(&str) -> Option<&'a str>,
        bus: &str,
        fingerprint: &str,
    ) -> Result<Self, Ignored> {
        let text = |key: &str| -> Result<&'a str, Ignored> {
            property(key)
                .filter(|v| v.len() <= 128)
                .ok_or_else(|| Ignored::Malformed(format!("no {key} (or one too long)")))
        };
        let name = instance_of(fullname);
        if name.is_empty() || name.len() > 128 {
            return Err(Ignored::Malformed("no usable instance name".into()));
        }
        if text("v")? != VERSION {
            return Err(Ignored::Malformed(format!(
                "version {:?}, this one reads {VERSION}",
                text("v")?
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
        let cluster: u16 = text("cluster")?
            .parse()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| Ignored::Malformed("a cluster port that is not a port".into()))?;
        if port == 0 {
            return Err(Ignored::Malformed("port 0".into()));
        }
        // Every usable address, most likely first: IPv4, then IPv6 that is
        // not link-local (which would need its interface's scope).
        let addresses: BTreeSet<(bool, IpAddr)> = addresses
            .filter(|ip| match ip {
                IpAddr::V4(v4) => !v4.is_unspecified() && !v4.is_multicast() && !v4.is_broadcast(),
                IpAddr::V6(v6) => {
                    !v6.is_unspecified()
                        && !v6.is_multicast()
                        && (v6.segments()[0] & 0xffc0) != 0xfe80
                }
            })
            .map(|ip| (ip.is_ipv6(), ip))
            .take(16)
            .collect();
        if addresses.is_empty() {
            return Err(Ignored::Malformed("no usable address".into()));
        }
        Ok(Self {
            name: name.to_string(),
            bus: bus.to_string(),
            fingerprint: fingerprint.to_string(),
            clients: addresses
                .iter()
                .map(|(_, ip)| SocketAddr::new(*ip, port))
                .collect(),
            routes: addresses
                .iter()
                .map(|(_, ip)| SocketAddr::new(*ip, cluster))
                .collect(),
        })
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
    fingerprint: String,
}

impl Sightings {
    /// The next sighting; none once the scout stopped.
    pub async fn next(&self) -> Option<Sighting> {
        loop {
            match self.events.recv_async().await.ok()? {
                ServiceEvent::ServiceResolved(service) => {
                    let name = instance_of(&service.fullname).to_string();
                    return Some(
                        match Announcement::parse(&service, &self.bus, &self.fingerprint) {
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

    /// Announces this node: `name` of `bus`, programs on `client_port`,
    /// routes on `cluster_port`, on `addresses` (none: every address of
    /// the interfaces in use).
    pub fn announce(
        &self,
        name: &str,
        bus: &str,
        fingerprint: &str,
        client_port: u16,
        cluster_port: u16,
        addresses: &[IpAddr],
    ) -> Result<(), String> {
        let cluster = cluster_port.to_string();
        let properties = [
            ("v", VERSION),
            ("bus", bus),
            ("fp", fingerprint),
            ("cluster", cluster.as_str()),
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
        let info = if addresses.is_empty() {
            info.enable_addr_auto()
        } else {
            info
        };
        self.daemon
            .register(info)
            .map_err(|e| format!("cannot announce {name:?}: {e}"))
    }

    /// Nodes of `bus` with the secret of `fingerprint` as they are
    /// announced and withdrawn.
    pub fn browse(&self, bus: &str, fingerprint: &str) -> Result<Sightings, String> {
        let events = self
            .daemon
            .browse(SERVICE_TYPE)
            .map_err(|e| format!("cannot look for nodes: {e}"))?;
        Ok(Sightings {
            events,
            bus: bus.to_string(),
            fingerprint: fingerprint.to_string(),
        })
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

    const FP: &str = "0123456789abcdef";

    fn good() -> Vec<(&'static str, String)> {
        vec![
            ("v", "1".into()),
            ("bus", "home".into()),
            ("fp", FP.into()),
            ("cluster", "6222".into()),
        ]
    }

    fn parse(
        pairs: &[(&'static str, String)],
        addresses: &[&str],
        port: u16,
    ) -> Result<Announcement, Ignored> {
        let addresses: Vec<IpAddr> = addresses.iter().map(|a| a.parse().unwrap()).collect();
        Announcement::parse_parts(
            &format!("pi.{SERVICE_TYPE}"),
            port,
            addresses.into_iter(),
            |key| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == key)
                    .map(|(_, v)| v.as_str())
            },
            "home",
            FP,
        )
    }

    #[test]
    fn a_node_of_the_bus_is_taken_with_every_usable_address() {
        let found = parse(
            &good(),
            &["192.168.1.20", "fe80::1", "fd00::20", "224.0.0.251"],
            4222,
        )
        .unwrap();
        assert_eq!(found.name, "pi");
        assert_eq!(
            found.clients,
            [
                "192.168.1.20:4222".parse::<SocketAddr>().unwrap(),
                "[fd00::20]:4222".parse().unwrap()
            ]
        );
        assert_eq!(found.routes[0], "192.168.1.20:6222".parse().unwrap());
    }

    #[test]
    fn other_buses_other_secrets_and_malformed_announcements_are_passed_over() {
        let addr = &["10.0.0.2"][..];
        let with = |key: &'static str, value: &str| {
            let mut pairs = good();
            pairs.retain(|(k, _)| *k != key);
            pairs.push((key, value.to_string()));
            pairs
        };
        let without = |key: &'static str| {
            let mut pairs = good();
            pairs.retain(|(k, _)| *k != key);
            pairs
        };
        assert_eq!(
            parse(&with("bus", "office"), addr, 4222),
            Err(Ignored::OtherBus("office".into()))
        );
        assert_eq!(
            parse(&with("fp", "fedcba9876543210"), addr, 4222),
            Err(Ignored::OtherSecret)
        );
        for bad in [
            with("v", "2"),
            with("bus", "../etc"),
            with("bus", &"b".repeat(200)),
            with("fp", "not hex at all!!"),
            with("fp", "0123"),
            with("cluster", "0"),
            with("cluster", "70000"),
            with("cluster", "-1"),
            without("bus"),
            without("fp"),
            without("cluster"),
            without("v"),
        ] {
            assert!(
                matches!(parse(&bad, addr, 4222), Err(Ignored::Malformed(_))),
                "{bad:?}"
            );
        }
        assert!(matches!(
            parse(&good(), addr, 0),
            Err(Ignored::Malformed(_))
        ));
        assert!(matches!(
            parse(&good(), &["fe80::1", "0.0.0.0", "255.255.255.255"], 4222),
            Err(Ignored::Malformed(_))
        ));
    }
}
