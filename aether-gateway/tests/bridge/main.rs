//! The browser bridge from outside, over real WebSockets on loopback, one
//! module a concern: the README's protocol block (`readme`), convergence
//! with a Rust replica (`convergence`), every limit against hostile clients
//! (`limits`), TLS and tokens (`access`), presence (`presence`) and whose
//! name a page may write in (`identity`). The helpers they share are here.

#[path = "../support/mod.rs"]
mod support;

mod access;
mod convergence;
mod identity;
mod limits;
mod presence;
mod readme;

use std::{collections::BTreeSet, time::Duration};

use aether_core::{Aether, state::StateMap};
use aether_gateway::{BridgeConfig, Gateway, GatewayConfig};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use support::{
    bridge::{Client, close_of, now_ns, open, open_from, stamp},
    config, get, start,
};
use tokio_tungstenite::tungstenite::Message;

const TOKEN: &str = "a-token-of-the-tests-0123456789";

fn bridged(bridge: BridgeConfig) -> GatewayConfig {
    GatewayConfig {
        bridge: BridgeConfig {
            token: Some(TOKEN.into()),
            maps: vec!["board".into()],
            ..bridge
        },
        ..config()
    }
}

/// The service's replica of the board in `aether`.
async fn service_board(aether: &Aether) -> StateMap {
    StateMap::builder("board")
        .node("service")
        .open(aether)
        .await
        .unwrap()
}

/// An aether, a gateway on it bridging the board with the default limits,
/// and the service's replica of the board.
async fn board() -> (Aether, Gateway, StateMap) {
    let aether = Aether::default();
    let gateway = start(&aether, bridged(BridgeConfig::default())).await;
    let service = service_board(&aether).await;
    (aether, gateway, service)
}

/// Closes the service's replica, then stops the gateway.
async fn close_board(service: StateMap, gateway: Gateway) {
    service.close().await;
    gateway.stop().await.unwrap();
}

/// The value of a counter or gauge line of the metrics text (0 if absent).
fn metric(gateway: &Gateway, series: &str) -> u64 {
    gateway
        .metrics_text()
        .lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

fn refused(gateway: &Gateway, reason: &str) -> u64 {
    metric(
        gateway,
        &format!("aether_bridge_refused_total{{reason=\"{reason}\"}}"),
    )
}

/// Waits (up to 10 s) until `check` holds.
async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(
            std::time::Instant::now() < deadline,
            "not within 10 s: {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn stamp_now() -> String {
    stamp(now_ns(), 0, "00000000000000ab")
}
