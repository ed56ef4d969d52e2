//! The cluster's members, as the node's server sees its routes (its
//! monitoring port's `/routez`): joins and leaves logged, and `--status`.

use std::collections::BTreeSet;

use aether_core::lan::{self, NodeRecord};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::Failure;

/// The largest monitoring answer read.
const MAX_ANSWER: u64 = 4 << 20;

/// `GET path` on the monitoring address `base` (`http://127.0.0.1:port`):
/// the body, if it answered 200.
async fn get(base: &str, path: &str) -> Option<serde_json::Value> {
    let host = base.strip_prefix("http://")?;
    let mut stream = tokio::time::timeout(
        std::time::Duration::from_secs(2),
        tokio::net::TcpStream::connect(host),
    )
    .await
    .ok()?
    .ok()?;
    let request = format!("GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut answer = Vec::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(2),
        (&mut stream).take(MAX_ANSWER).read_to_end(&mut answer),
    )
    .await
    .ok()?
    .ok()?;
    let at = answer.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&answer[..at]).ok()?;
    if !head.starts_with("HTTP/1.0 200") && !head.starts_with("HTTP/1.1 200") {
        return None;
    }
    serde_json::from_slice(&answer[at + 4..]).ok()
}

/// The servers one has routes to, as its `/routez` lists them.
struct Routed {
    /// Their names (their IDs, from servers before 2.10).
    names: BTreeSet<String>,
    /// Their addresses (routes dialled or accepted, configured or learned
    /// from the cluster's gossip).
    hosts: BTreeSet<std::net::IpAddr>,
}

/// What the server at `monitor` is routed to now.
async fn routed(monitor: &str) -> Option<Routed> {
    let answer = get(monitor, "/routez").await?;
    let routes = answer
        .get("routes")
        .and_then(|r| r.as_array())
        .map(Vec::as_slice)
        .unwrap_or_default();
    Some(Routed {
        names: routes
            .iter()
            .filter_map(|route| {
                route
                    .get("remote_name")
                    .or_else(|| route.get("remote_id"))
                    .and_then(|n| n.as_str())
                    .map(str::to_string)
            })
            .collect(),
        hosts: routes
            .iter()
            .filter_map(|route| route.get("ip")?.as_str()?.parse().ok())
            .collect(),
    })
}

/// The members last seen, for logging who joins and leaves.
pub struct Members {
    monitor: String,
    known: BTreeSet<String>,
}

impl Members {
    pub fn new(monitor: String) -> Self {
        Self {
            monitor,
            known: BTreeSet::new(),
        }
    }

    /// Reads the routes once, and logs the changes: the addresses of the
    /// servers routed to, if the server answered.
    pub async fn poll(&mut self, me: &str) -> Option<BTreeSet<std::net::IpAddr>> {
        let Routed { names: now, hosts } = routed(&self.monitor).await?;
        for joined in now.difference(&self.known) {
            eprintln!("node {me}: {joined} joined ({} other nodes)", now.len());
        }
        for left in self.known.difference(&now) {
            eprintln!("node {me}: {left} left ({} other nodes)", now.len());
        }
        self.known = now;
        Some(hosts)
    }
}

/// `aether node --status`.
pub async fn status(bus: &str) -> Result<(), Failure> {
    let dir = lan::runtime_dir();
    let record = NodeRecord::read_in(&dir, bus)
        .map_err(|e| Failure::runtime(e.to_string()))?
        .ok_or_else(|| {
        Failure::runtime(format!(
            "no node of bus {bus:?} runs on this machine (no live record in {}): start one with \
             `aether node --bus {bus} --secret-file FILE`",
            dir.display()
        ))
    })?;
    let others = routed(&record.monitor)
        .await
        .map(|r| r.names)
        .ok_or_else(|| {
            Failure::runtime(format!(
                "node {} does not answer on {}: is its nats-server running?",
                record.name, record.monitor
            ))
        })?;
    println!(
        "bus {bus}: node {} (this machine), programs at {}",
        record.name, record.url
    );
    if others.is_empty() {
        println!("no other node");
    }
    for other in &others {
        println!("  {other}");
    }
    println!("{} nodes in all", others.len() + 1);
    if let Some(counts) = record.data.as_deref().and_then(super::known::Counts::read) {
        println!(
            "announced at {}; {} nodes known (found or remembered); addresses changed {} times; \
             renamed by multicast DNS {} times",
            if counts.addresses.is_empty() {
                "no address".to_string()
            } else {
                counts.addresses.join(", ")
            },
            counts.nodes_known,
            counts.address_changes,
            counts.renamed
        );
        if counts.passed_over.is_empty() {
            println!("announcements passed over: none");
        } else {
            let by_reason: Vec<String> = counts
                .passed_over
                .iter()
                .map(|(why, n)| format!("{why} {n}"))
                .collect();
            println!("announcements passed over: {}", by_reason.join(", "));
        }
    }
    if let Some(written) = record.data.as_deref().and_then(super::keeping::read_counts) {
        println!("keeper: {}", crate::keep::summary(&written.keeper));
        if written.clock_sources == 0 && written.clock_offset_ms == 0 {
            println!("clock: this machine's own (no other time source heard)");
        } else if written.clock_sources == 0 {
            println!(
                "clock: {:+} ms from the bus's time this node keeps alone (its clock was set \
                 back or forward since)",
                -written.clock_offset_ms
            );
        } else {
            println!(
                "clock: {:+} ms from the bus's time (±{} ms; {} sources, this node among them)",
                -written.clock_offset_ms, written.clock_uncertainty_ms, written.clock_sources
            );
        }
    }
    Ok(())
}
