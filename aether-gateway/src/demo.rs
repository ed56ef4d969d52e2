//! A small shop that emits waves on an embedded aether, so that the
//! dashboard has something to show (`aether-gateway --demo`): orders,
//! payments at lower amplitude, an order reviewed both ways at once (a
//! cancellation), and a sensor stuck on one reading (a standing wave).

use std::time::Duration;

use aether_core::{Aether, EmitError, Phase, ResonateError, Vibrator, VibratorError, Wave};
use aether_ops::shutdown::Shutdown;
use serde_json::json;

/// Why the demo stopped early.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DemoError {
    /// A vibrator could not be made.
    #[error(transparent)]
    Vibrator(#[from] VibratorError),
    /// A vibrator could not resonate.
    #[error(transparent)]
    Resonate(#[from] ResonateError),
    /// A wave could not be emitted (the aether was closed).
    #[error(transparent)]
    Emit(#[from] EmitError),
}

/// Time between two rounds of waves.
const ROUND: Duration = Duration::from_millis(100);

/// Emits the demo's waves on `aether` every 100 ms until `shutdown`.
pub async fn feed(aether: Aether, shutdown: Shutdown) -> Result<(), DemoError> {
    for (name, pattern) in [("inventory", "orders.*"), ("billing", "payments.*")] {
        let mut resonator = Vibrator::create(name, &aether).await?;
        resonator.resonate_on(pattern).await?;
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = shutdown.wait() => return,
                    wave = resonator.receive() => if wave.is_none() { return },
                }
            }
        });
    }
    let shop = Vibrator::create("shop", &aether).await?;
    let review = Vibrator::create("review", &aether).await?;
    let sensor = Vibrator::create("sensor", &aether).await?;
    let mut every = tokio::time::interval(ROUND);
    for round in 0u64.. {
        tokio::select! {
            () = shutdown.wait() => return Ok(()),
            _ = every.tick() => {}
        }
        let order = round / 3;
        let channel = if round % 3 == 2 {
            "orders.confirmed"
        } else {
            "orders.created"
        };
        shop.emit(wave(channel, 1.0, Phase::ASSERT, order)).await?;
        if round % 2 == 0 {
            let amplitude = 0.3 + 0.1 * (round % 5) as f64;
            shop.emit(wave("payments.settled", amplitude, Phase::ASSERT, order))
                .await?;
        }
        if round % 20 == 0 {
            // Approved and rejected at once: conflicting messages.
            for phase in [Phase::ASSERT, Phase::RETRACT] {
                review
                    .emit(wave("orders.review", 0.9, phase, order))
                    .await?;
            }
        }
        if round % 4 == 0 {
            // The same reading at a steady period: a stuck producer.
            sensor
                .emit(Wave::new("telemetry.temperature", json!({"celsius": 21.5})))
                .await?;
        }
    }
    Ok(())
}

fn wave(channel: &str, amplitude: f64, phase: Phase, order: u64) -> Wave {
    Wave::builder(channel)
        .amplitude(amplitude)
        .phase(phase)
        .correlation_key(format!("order-{order}"))
        .json(&json!({ "order_id": order }))
        .build()
        .unwrap_or_else(|_| Wave::new(channel, json!({ "order_id": order })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn emits_until_shutdown() {
        let aether = Aether::default();
        let mut audit = Vibrator::create("audit", &aether).await.unwrap();
        audit.resonate_on("*").await.unwrap();
        let shutdown = Shutdown::new();
        let demo = tokio::spawn(feed(aether.clone(), shutdown.clone()));
        let mut channels = std::collections::BTreeSet::new();
        tokio::time::timeout(Duration::from_secs(10), async {
            while channels.len() < 5 {
                let wave = audit.receive().await.unwrap();
                channels.insert(wave.channel().to_string());
            }
        })
        .await
        .expect("every demo channel within 10 s");
        shutdown.trigger();
        tokio::time::timeout(Duration::from_secs(5), demo)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert!(channels.contains("orders.review"), "{channels:?}");
    }
}
