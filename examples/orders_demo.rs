//! The orders demo, on the embedded aether: `cargo run --example orders_demo`
//!
//! A shop asks pricing for quotes (request/reply) and emits orders; inventory
//! resonates on `orders.*` and reserves stock or refuses (phase RETRACT); the
//! shop then confirms or cancels. An auditor hears everything (`*`),
//! fraud-watch has a noise floor, a relay echoes a wave hop by hop up to the
//! hop limit, and a flash sale with a time-to-live expires. It ends with the
//! statistics, and checks that every wave is accounted for. Inventory and
//! pricing refuse and count a wave that is no order or no request, and go
//! on.

use std::{collections::BTreeMap, time::Duration};

use aether_core::{Aether, DropReason, Phase, StatsSnapshot, Vibrator, Wave};
use serde_json::json;

type Result<T = ()> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// One line of the log: who, what on which channel (`→ orders.created`),
/// then details as `format!` takes them.
macro_rules! say {
    ($who:expr, $what:expr, $($detail:tt)+) => {
        println!("  {:<12} {:<26} {}", $who, $what, format!($($detail)+))
    };
}

/// The next wave, or an error if none comes within 2 s.
async fn next(v: &mut Vibrator) -> Result<Wave> {
    let wave = tokio::time::timeout(Duration::from_secs(2), v.receive()).await;
    Ok(wave?.ok_or("the aether was closed")?)
}

/// Whether nothing arrives for `v` within 100 ms.
async fn silent(v: &mut Vibrator) -> bool {
    let wait = Duration::from_millis(100);
    tokio::time::timeout(wait, v.receive()).await.is_err()
}

/// Waves a service refused, by reason: a wave that is no order or no
/// request is counted and skipped, and the service goes on.
type Refused = BTreeMap<&'static str, u64>;

/// Inventory: reserves stock for each new order, or refuses in phase RETRACT.
async fn inventory(mut v: Vibrator) -> Result<(StatsSnapshot, Refused)> {
    let mut stock = BTreeMap::from([("widget".to_string(), 5u64), ("gadget".to_string(), 1)]);
    let mut refused = Refused::new();
    while let Some(order) = v.receive().await {
        if order.channel() != "orders.created" {
            continue; // it hears every orders.* wave; only new orders take stock
        }
        let o = order.payload();
        // A SKU and a quantity of at least 1, or it is no order.
        let (Some(sku), Some(qty)) = (o["sku"].as_str(), o["qty"].as_u64().filter(|q| *q > 0))
        else {
            *refused.entry("bad_fields").or_default() += 1;
            continue;
        };
        let left = stock.get(sku).copied().unwrap_or(0);
        let (channel, phase, left) = if left >= qty {
            ("inventory.reserved", Phase::ASSERT, left - qty)
        } else {
            ("inventory.insufficient", Phase::RETRACT, left)
        };
        let answer = Wave::builder(channel)
            .phase(phase)
            .correlation_key(order.correlation_key())
            .json(&json!({"order": o["order"], "sku": sku, "qty": qty}))
            .build();
        let Ok(answer) = answer else {
            *refused.entry("bad_key").or_default() += 1;
            continue;
        };
        if phase == Phase::ASSERT {
            stock.insert(sku.to_string(), left);
        }
        let (id, to) = (&o["order"], format!("→ {channel}"));
        say!("inventory", to, "order {id}: {qty} × {sku}, {left} left");
        v.emit(answer).await?;
    }
    Ok((v.stats(), refused))
}

/// Pricing: replies to each `pricing.quote` request.
async fn pricing(mut v: Vibrator) -> Result<(StatsSnapshot, Refused)> {
    let mut refused = Refused::new();
    while let Some(request) = v.receive().await {
        if request.reply_to().is_none() {
            // Nobody waits for a reply: not a request.
            *refused.entry("not_a_request").or_default() += 1;
            continue;
        }
        let q = request.payload();
        let (Some(sku), Some(qty)) = (q["sku"].as_str(), q["qty"].as_u64()) else {
            *refused.entry("bad_fields").or_default() += 1;
            continue;
        };
        let unit: u64 = if sku == "widget" { 999 } else { 4_500 };
        let Some(total) = unit.checked_mul(qty) else {
            *refused.entry("bad_qty").or_default() += 1;
            continue;
        };
        say!("pricing", "↩ (reply)", "{qty} × {sku} = {total} cents");
        v.reply(&request, json!({"total_cents": total})).await?;
    }
    Ok((v.stats(), refused))
}

/// Auditor: tallies every wave it hears, by channel.
async fn auditor(mut v: Vibrator) -> Result<(BTreeMap<String, u64>, StatsSnapshot)> {
    let mut heard = BTreeMap::new();
    while let Some(wave) = v.receive().await {
        let channel = wave.channel().as_str();
        let reply = channel.starts_with("_INBOX.");
        let key = if reply { "(replies)" } else { channel };
        *heard.entry(key.to_string()).or_insert(0) += 1;
    }
    Ok((heard, v.stats()))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result {
    let aether = Aether::default();
    let factor = aether.config().attenuation_factor;
    let min = aether.config().min_amplitude;
    let max_hops = aether.config().max_propagation;
    println!("Aether orders demo: embedded medium, ×{factor} per hop, min amplitude {min}");

    println!("\n1. Before anyone listens");
    let mut shop = Vibrator::create("shop", &aether).await?;
    let opened = json!({"at": "09:00"});
    shop.emit_wave("shop.opened", opened).await?;
    say!("shop", "→ shop.opened", "nobody resonates: unrouted");

    println!("\n2. Services join (~ resonates on)");
    let mut audit = Vibrator::create("auditor", &aether).await?;
    audit.resonate_on("*").await?;
    let mut stock = Vibrator::create("inventory", &aether).await?;
    stock.resonate_on("orders.*").await?;
    let mut price = Vibrator::create("pricing", &aether).await?;
    price.resonate_on("pricing.quote").await?;
    let fraud = Vibrator::builder("fraud-watch").noise_floor(0.3);
    let mut fraud = fraud.create(&aether).await?;
    fraud.resonate_on("orders.*").await?;
    shop.resonate_on("inventory.*").await?;
    for v in [&audit, &stock, &price, &fraud, &shop] {
        let patterns: Vec<_> = v.patterns().map(|p| p.to_string()).collect();
        let (on, floor) = (format!("~ {}", patterns.join(" ")), v.noise_floor());
        say!(v.name(), on, "noise floor {floor}");
    }
    let audit = tokio::spawn(auditor(audit));
    let stock = tokio::spawn(inventory(stock));
    let price = tokio::spawn(pricing(price));

    println!("\n3. Orders: quote, create, reserve, then confirm or cancel");
    for (order, sku, qty) in [(1, "widget", 2), (2, "gadget", 3), (3, "widget", 3)] {
        say!("shop", "? pricing.quote", "order {order}: {qty} × {sku}");
        let ask = json!({"sku": sku, "qty": qty});
        let ask = Wave::builder("pricing.quote").json(&ask).build()?;
        let quote = shop.request_with_timeout(ask, Duration::from_secs(2));
        let total = quote.await?.payload()["total_cents"].clone();
        let created = json!({"order": order, "sku": sku, "qty": qty, "total_cents": total});
        let key = format!("order-{order}");
        let wave = Wave::builder("orders.created").correlation_key(&key);
        shop.emit(wave.json(&created).build()?).await?;
        say!("shop", "→ orders.created", "order {order}: {total} cents");
        let answer = next(&mut shop).await?;
        let (channel, phase) = match answer.phase() == Phase::RETRACT {
            true => ("orders.cancelled", Phase::RETRACT),
            false => ("orders.confirmed", Phase::ASSERT),
        };
        let wave = Wave::builder(channel).phase(phase).correlation_key(&key);
        let done = json!({"order": order});
        shop.emit(wave.json(&done).build()?).await?;
        let (to, angle) = (format!("→ {channel}"), phase.radians());
        say!("shop", to, "order {order}: phase {angle:.2}");
    }

    println!("\n4. Noise floor: fraud-watch does not hear a weak wave");
    let browsed = Wave::builder("orders.browsed").amplitude(0.1);
    let browsed = browsed.json(&json!({"sku": "gadget"})).build()?;
    shop.emit(browsed).await?;
    say!("shop", "→ orders.browsed", "amplitude 0.10: telemetry");
    let mut heard = Vec::new();
    while let Some(wave) = fraud.try_receive() {
        heard.push(wave.channel().to_string());
    }
    let n = heard.len();
    say!("fraud-watch", "← orders.*", "{n} waves, not the weak one");
    let reason = DropReason::BelowNoiseFloor;
    let below = fraud.stats().dropped(reason);
    say!("fraud-watch", "× orders.browsed", "{reason}: {below}");
    assert!(!heard.iter().any(|c| c == "orders.browsed"));
    assert_eq!(below, 1);

    println!("\n5. Attenuation: a relay echoes a wave, one hop at a time");
    let mut relay = Vibrator::create("relay", &aether).await?;
    relay.resonate_on("relay.echo").await?;
    let echo = Wave::new("relay.echo", json!({"note": "echo me"}));
    shop.emit(echo).await?;
    for hops in 0..=max_hops {
        let mut wave = next(&mut relay).await?;
        let (a, n) = (wave.amplitude().value(), wave.propagation_count());
        say!("relay", "↻ relay.echo", "hop {n:>2}: amplitude {a:.4}");
        assert!(n == hops && (a - factor.powi(hops as i32)).abs() < 1e-9);
        wave.propagate(); // one hop more: amplitude ×0.95
        relay.emit(wave).await?;
    }
    assert!(silent(&mut relay).await);
    let (hop, limit) = (max_hops + 1, DropReason::PropagationLimit);
    say!("relay", "× relay.echo", "hop {hop} > {max_hops}: {limit}");

    println!("\n6. Time to live: a flash sale relayed too late expires");
    let mut mirror = Vibrator::create("mirror", &aether).await?;
    mirror.resonate_on("promo.*").await?;
    let ttl = Duration::from_millis(150);
    let sale = Wave::builder("promo.flash").time_to_live(ttl, min);
    let sale = sale.json(&json!({"discount_pct": 30})).build()?;
    shop.emit(sale).await?;
    let mut wave = next(&mut mirror).await?;
    let a = wave.amplitude().value();
    say!("mirror", "← promo.flash", "amplitude {a:.3}, ttl {ttl:?}");
    tokio::time::sleep(2 * ttl).await;
    wave.propagate(); // one hop, measured now: time decay has done its work
    let a = wave.amplitude().value();
    say!("mirror", "→ promo.flash", "300ms later: amplitude {a:.6}");
    mirror.emit(wave).await?;
    assert!(silent(&mut mirror).await, "a dead wave is not delivered");
    say!("mirror", "× promo.flash", "under {min}: expired");

    aether.close(); // every receive loop drains its queue, then ends
    let (heard, audit) = audit.await??;
    let ((stock, stock_refused), (price, price_refused)) = (stock.await??, price.await??);
    println!("\n7. The auditor heard {} waves", audit.delivered);
    for (channel, n) in &heard {
        println!("  {channel:<24} {n:>3}");
    }
    println!("  refused: inventory {stock_refused:?}, pricing {price_refused:?}");

    let s = aether.stats();
    println!("\naether.stats() (delivered counts once per receiver)\n{s}");
    println!("\nvibrator.stats()  delivered  below_noise_floor  queue_full");
    let vibrators = [
        ("shop", shop.stats()),
        ("auditor", audit),
        ("inventory", stock),
        ("pricing", price),
        ("fraud-watch", fraud.stats()),
        ("relay", relay.stats()),
        ("mirror", mirror.stats()),
    ];
    for (name, v) in &vibrators {
        let floor = v.dropped(DropReason::BelowNoiseFloor);
        let full = v.dropped(DropReason::QueueFull);
        println!("  {name:<15} {:>9}  {floor:>17}  {full:>10}", v.delivered);
    }

    // Every wave emitted was dropped on its way, unrouted, or heard by the
    // auditor, which resonates on everything and sheds nothing.
    let on_the_way = s.dropped(DropReason::Expired) + s.dropped(DropReason::PropagationLimit);
    assert_eq!(s.emitted, s.unrouted + on_the_way + audit.delivered);
    // Every delivery went into a vibrator's queue or to a request's waiter.
    let replies = 3;
    let into_queues: u64 = vibrators.iter().map(|(_, v)| v.delivered).sum();
    assert_eq!(s.delivered, into_queues + replies);
    assert_eq!(s.dropped(DropReason::BelowNoiseFloor), below);
    assert_eq!((s.unrouted, s.dropped(DropReason::Expired)), (1, 1));
    assert_eq!(s.dropped(DropReason::PropagationLimit), 1);
    assert_eq!(s.dropped(DropReason::QueueFull), 0);
    assert!(stock_refused.is_empty() && price_refused.is_empty());
    println!("\nchecked: emitted = unrouted + expired + propagation_limit + heard by auditor");
    println!("checked: delivered = deliveries into vibrators' queues + {replies} replies");
    Ok(())
}
