//! The home-automation case of replicated state: sensors write what they
//! see into a shared map, and the lights react through a watch. On the
//! embedded medium by default; with `--nats URL` the same over NATS, and
//! `--role sensors` or `--role lights` runs one side, so that two
//! processes share the map.
//!
//! ```text
//! cargo run --example home
//! cargo run --example home -- --nats nats://127.0.0.1:4222 --role lights &
//! cargo run --example home -- --nats nats://127.0.0.1:4222 --role sensors
//! ```

use std::{error::Error, time::Duration};

use aether_core::{Aether, state::StateMap};
use futures_util::StreamExt;

const ROOMS: [&str; 3] = ["living", "kitchen", "hall"];

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

/// The lights: a light follows the motion of its room.
async fn lights(aether: &Aether) -> Result<(), Box<dyn Error>> {
    let lights = StateMap::builder("home")
        .node("lights")
        .open(aether)
        .await?;
    let mut motion = lights.watch("*.motion");
    // Watching now: say so, in the map itself.
    lights.set_json("lights.ready", &true).await?;
    let mut switched = 0;
    // Each room sees motion then none: two switches a room.
    while switched < ROOMS.len() * 2 {
        let Some(change) = tokio::time::timeout(Duration::from_secs(10), motion.next()).await?
        else {
            break;
        };
        let room = change.key.split('.').next().unwrap_or_default();
        let on = change.new.as_deref() == Some(&b"true"[..]);
        lights
            .set(&format!("{room}.light"), if on { "on" } else { "off" })
            .await?;
        println!(
            "lights: {room} motion {on} -> light {}",
            if on { "on" } else { "off" }
        );
        switched += 1;
    }
    lights.close().await;
    Ok(())
}

/// The sensors: temperature and motion in each room.
async fn sensors(aether: &Aether) -> Result<(), Box<dyn Error>> {
    let sensors = StateMap::builder("home")
        .node("sensors")
        .open(aether)
        .await?;
    // Wait for the lights to watch, so that they see every change.
    wait_for(&sensors, "lights.ready", b"true").await?;
    for (n, room) in ROOMS.iter().enumerate() {
        sensors
            .set_json(&format!("{room}.temperature"), &(20.0 + n as f64))
            .await?;
        sensors.set_json(&format!("{room}.motion"), &true).await?;
        wait_for(&sensors, &format!("{room}.light"), b"on").await?;
        sensors.set_json(&format!("{room}.motion"), &false).await?;
        wait_for(&sensors, &format!("{room}.light"), b"off").await?;
    }
    println!("sensors: the map as every replica holds it:");
    for (key, value) in sensors.entries() {
        println!("  {key:<20} {}", String::from_utf8_lossy(&value));
    }
    sensors.close().await;
    Ok(())
}

async fn wait_for(map: &StateMap, key: &str, value: &[u8]) -> Result<(), Box<dyn Error>> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while map.get(key).as_deref() != Some(value) {
        if tokio::time::Instant::now() > deadline {
            return Err(format!(
                "{key} never became {} (the map holds {:?}; {:?})",
                String::from_utf8_lossy(value),
                map.entries(),
                map.stats()
            )
            .into());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let aether = match arg("--nats") {
        Some(url) => Aether::connect_url(&url).await?,
        None => Aether::default(),
    };
    match arg("--role").as_deref() {
        Some("lights") => lights(&aether).await?,
        Some("sensors") => sensors(&aether).await?,
        None => {
            let lights = tokio::spawn({
                let aether = aether.clone();
                async move { lights(&aether).await.map_err(|e| e.to_string()) }
            });
            sensors(&aether).await?;
            lights.await??;
        }
        Some(other) => return Err(format!("--role is sensors or lights, not {other:?}").into()),
    }
    aether.drain(Duration::from_secs(2)).await?;
    Ok(())
}
