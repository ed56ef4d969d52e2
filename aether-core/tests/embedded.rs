//! The behaviour suite on the embedded medium.

mod behaviour;

use std::{future::Future, pin::Pin};

use aether_core::{Aether, AetherConfig};

struct Embedded;

impl behaviour::Medium for Embedded {
    fn aether(&self, config: AetherConfig) -> Pin<Box<dyn Future<Output = Aether> + Send + '_>> {
        Box::pin(async move { Aether::new(config).expect("valid test configuration") })
    }
}

behaviour_suite!(Embedded);

/// The embedded medium knows when nobody resonates on a channel (NATS does
/// not tell a publisher), and counts such waves as unrouted.
#[tokio::test]
async fn waves_nobody_hears_are_counted_as_unrouted() {
    use aether_core::Vibrator;
    let aether = aether_core::Aether::default();
    let tx = Vibrator::create("tx", &aether).await.unwrap();
    let mut rx = Vibrator::create("rx", &aether).await.unwrap();
    rx.resonate_on("heard").await.unwrap();
    tx.emit_wave("nobody", serde_json::json!(0)).await.unwrap();
    tx.emit_wave("heard", serde_json::json!(1)).await.unwrap();
    drop(rx);
    tx.emit_wave("heard", serde_json::json!(2)).await.unwrap();
    let stats = aether.stats();
    assert_eq!((stats.emitted, stats.delivered, stats.unrouted), (3, 1, 2));
}
