//! The temperature-monitoring case of node-owned state: each sensor node
//! publishes its own readings, and a monitor lists the live nodes and reads
//! each one's temperature. One sensor goes away and the monitor sees it
//! leave. On the embedded medium by default; `--nats URL` runs it over
//! NATS.
//!
//! ```text
//! cargo run --example sensors
//! ```

use std::{error::Error, time::Duration};

use aether_core::{
    Aether,
    state::{NodeState, Presence, StateConfig, StateMap},
};
use futures_util::StreamExt;

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let aether = match arg("--nats") {
        Some(url) => Aether::connect_url(&url).await?,
        None => Aether::default(),
    };
    let config = StateConfig {
        heartbeat_interval: Duration::from_millis(200),
        presence_timeout: Duration::from_millis(1000),
        ..Default::default()
    };
    let node = |name: &str| {
        StateMap::builder("sensors")
            .node(name)
            .config(config.clone())
    };
    let monitor = NodeState::open_with(&aether, node("monitor")).await?;
    let mut presence = monitor.presence();

    let places = ["sensor_kitchen", "sensor_hall", "sensor_attic"];
    let mut sensors = Vec::new();
    for (n, place) in places.iter().enumerate() {
        let sensor = NodeState::open_with(&aether, node(place)).await?;
        sensor
            .update("temperature", format!("{:.1}", 68.0 + 2.5 * n as f64))
            .await?;
        sensor.update("unit", "F").await?;
        sensors.push(sensor);
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while monitor.peers().len() < places.len()
        || places
            .iter()
            .any(|p| monitor.read(p, "temperature").is_none())
    {
        if tokio::time::Instant::now() > deadline {
            return Err("the sensors never all showed up".into());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for node in monitor.peers() {
        if node.starts_with("sensor_") {
            let temp = monitor.read(&node, "temperature").unwrap_or_default();
            let unit = monitor.read(&node, "unit").unwrap_or_default();
            println!(
                "{node}: {}°{}",
                String::from_utf8_lossy(&temp),
                String::from_utf8_lossy(&unit)
            );
        }
    }

    // The attic sensor goes; the monitor sees it leave.
    sensors.pop().expect("three").close().await;
    let left = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if let Some(Presence::Left(name)) = presence.next().await {
                return name;
            }
        }
    })
    .await?;
    println!("{left} left; live now: {}", monitor.peers().join(", "));
    // Nobody writes another node's readings.
    let refused = monitor
        .map()
        .set("node/sensor_kitchen/temperature", "-40")
        .await
        .is_err();
    println!("the monitor writing the kitchen's temperature is refused: {refused}");
    if !refused || left != "sensor_attic" {
        return Err("a promise did not hold".into());
    }
    aether.drain(Duration::from_secs(2)).await?;
    Ok(())
}
