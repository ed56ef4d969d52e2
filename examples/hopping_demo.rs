//! Frequency hopping, on the embedded aether or over NATS:
//!
//! ```bash
//! cargo run --example hopping_demo                            # embedded
//! cargo run --example hopping_demo -- nats://127.0.0.1:4222   # over NATS
//! ```
//!
//! A shop emits orders on the base channel `orders`, hopping over 4 wire
//! channels that change every 200 ms slot. Inventory (same secret, noise
//! floor 0.3) hears every order on `orders`; a wire tap resonating on
//! `_hop.*` sees only opaque channels; a snoop with another secret hears
//! nothing; a weak order (amplitude 0.1) hops too, but stays under
//! inventory's noise floor. The demo prints the hop of each slot, then
//! checks all of this and exits non-zero if anything is wrong. Over NATS,
//! waves another program emits on the demo's subjects are skipped and
//! counted: the demo looks for the waves it emitted, by id.

use std::{
    collections::BTreeSet,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use aether_core::{
    Aether, AetherConfig, Channel, DropReason, Secret, Vibrator, Wave, WaveId,
    config::{HoppingConfig, NatsConfig},
    hopping::{HopKey, HopSequence},
};
use serde_json::json;

type Result<T = ()> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// Shared by the shop and inventory (in production: from the environment).
const SECRET: &str = "demo secret: use 32 random bytes";
const HOP_COUNT: u32 = 4;
const HOP_INTERVAL_MS: u64 = 200;
const SLOTS: u64 = 6;

/// The wave `id` when it comes to `v`, skipping any other (counted in
/// `foreign`: over NATS another program may emit on the demo's subjects),
/// or an error if it does not come within 2 s.
async fn next_with_id(v: &mut Vibrator, id: WaveId, foreign: &mut u64) -> Result<Wave> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    loop {
        let wave = tokio::time::timeout_at(deadline, v.receive()).await;
        let wave = wave?.ok_or("the aether was closed")?;
        if wave.id() == id {
            return Ok(wave);
        }
        *foreign += 1;
    }
}

/// Fails with `what` unless `ok`.
fn check(ok: bool, what: &str) -> Result {
    if ok {
        println!("  ok: {what}");
        Ok(())
    } else {
        Err(format!("FAILED: {what}").into())
    }
}

/// Waits until the next time slot begins.
async fn next_slot(seq: &HopSequence) {
    let slot = seq.slot(unix_ms());
    while seq.slot(unix_ms()) == slot {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// When `wave` was emitted, in Unix ms.
fn stamp_ms(wave: &Wave) -> u64 {
    let emitted = wave.emitted_at().unwrap_or(UNIX_EPOCH);
    emitted
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn unix_ms() -> u64 {
    let now = SystemTime::now().duration_since(UNIX_EPOCH);
    now.map_or(0, |d| d.as_millis() as u64)
}

#[tokio::main]
async fn main() -> Result {
    let config = AetherConfig {
        hopping: HoppingConfig {
            secret: Some(Secret::new(SECRET)),
            hop_interval_ms: HOP_INTERVAL_MS,
        },
        ..Default::default()
    };
    let url = std::env::args().nth(1);
    let aether = match url.clone() {
        None => Aether::new(config)?,
        Some(url) => {
            let nats = NatsConfig {
                urls: vec![url],
                subject_prefix: "hopping-demo".into(),
                ..Default::default()
            };
            Aether::connect(AetherConfig { nats, ..config }).await?
        }
    };
    let medium = url.map_or("the embedded medium".to_string(), |url| {
        format!("NATS at {url}")
    });
    println!("Frequency hopping on {medium}: {HOP_COUNT} hops, {HOP_INTERVAL_MS} ms slots\n");

    let mut inventory = Vibrator::builder("inventory")
        .noise_floor(0.3)
        .create(&aether)
        .await?;
    inventory.resonate_hopping("orders", HOP_COUNT).await?;
    let mut snoop = Vibrator::create("snoop", &aether).await?;
    snoop.set_hopping_secret(Secret::new("not the shop's secret at all"))?;
    snoop.resonate_hopping("orders", HOP_COUNT).await?;
    let mut tap = Vibrator::create("wire-tap", &aether).await?;
    tap.resonate_on("_hop.*").await?;
    let shop = Vibrator::create("shop", &aether).await?;

    // The demo knows the secret, so it can show the hop of each slot.
    let key = HopKey::new(Some(&Secret::new(SECRET)));
    let seq = HopSequence::new(key, Channel::new("orders"), HOP_COUNT, HOP_INTERVAL_MS)?;
    next_slot(&seq).await;

    println!(
        "  {:<12} {:<4} {:<40} inventory hears",
        "slot", "hop", "wire channel (what the tap sees)"
    );
    let mut wire_channels = BTreeSet::new();
    // One order per slot, early in the slot; a few more slots in the rare
    // case that every hop so far was the same.
    let mut order = 0;
    let mut foreign = 0;
    while order < SLOTS || (wire_channels.len() < 2 && order < 4 * SLOTS) {
        let id = shop
            .emit_time_hopping_wave(
                "orders",
                HOP_COUNT,
                HOP_INTERVAL_MS,
                json!({"order": order}),
            )
            .await?;
        let on_wire = next_with_id(&mut tap, id, &mut foreign).await?;
        let heard = next_with_id(&mut inventory, id, &mut foreign).await?;
        let slot = seq.slot(stamp_ms(&on_wire));
        let (hop, wire) = (seq.hop_at_slot(slot), on_wire.channel().as_str());
        println!(
            "  {slot:<12} {hop:<4} {wire:<40} {} {}",
            heard.channel(),
            heard.payload()
        );
        if heard.payload()["order"] != order || heard.channel() != "orders" {
            return Err(format!("FAILED: inventory heard {heard:?}, not order {order}").into());
        }
        wire_channels.insert(on_wire.channel().to_string());
        order += 1;
        next_slot(&seq).await;
    }

    println!("\nA weak order (amplitude 0.1) hops as well:");
    let weak = Wave::builder("orders")
        .amplitude(0.1)
        .json(&json!({"order": "weak"}))
        .build()?;
    let id = shop.emit_hopping(weak, HOP_COUNT).await?;
    let on_wire = next_with_id(&mut tap, id, &mut foreign).await?;
    println!(
        "  on the wire as {} (amplitude {})",
        on_wire.channel(),
        on_wire.amplitude().value()
    );

    println!("\nChecks:");
    // Over NATS the drop happens when the wave arrives: wait for it.
    let floor = DropReason::BelowNoiseFloor;
    for _ in 0..200 {
        if inventory.stats().dropped(floor) == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    check(
        inventory.stats().dropped(floor) == 1,
        "the weak order is under inventory's noise floor (counted)",
    )?;
    check(
        inventory.try_receive().is_none(),
        "inventory did not hear the weak order",
    )?;
    check(
        wire_channels.len() > 1,
        "the wire channel changed with the slots",
    )?;
    check(
        wire_channels
            .iter()
            .all(|c| c.starts_with("_hop.") && !c.contains("orders")),
        "the wire channels are opaque: none names the base",
    )?;
    let snooped = tokio::time::timeout(Duration::from_millis(200), snoop.receive()).await;
    check(
        snooped.is_err(),
        "the snoop with another secret heard nothing",
    )?;
    check(
        snoop.stats().delivered == 0,
        "… and nothing was delivered to it",
    )?;
    check(
        inventory.stats().dropped(DropReason::Replay) == 0,
        "no replay refused",
    )?;

    if foreign > 0 {
        println!("\n{foreign} waves from elsewhere on the demo's subjects were skipped");
    }
    println!("\ninventory's statistics:\n{}", inventory.stats());
    aether.close();
    Ok(())
}
