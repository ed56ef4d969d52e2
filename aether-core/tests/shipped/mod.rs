//! What the repository's `config/default.toml` sets in its `[aether]`
//! section: one expectation for every test that loads the shipped settings
//! (those of other crates include this file with `#[path]`).

use aether_core::AetherConfig;

/// The library's default configuration but for what the shipped settings
/// turn on: instance reports, the sample saga's durable channels with
/// bounded retention, and beta's two answers correlated.
pub(crate) fn aether() -> AetherConfig {
    let mut shipped = AetherConfig::default();
    shipped.report.interval_ms = 1000;
    shipped.durability.channels = vec!["orders.*".into(), "inventory.*".into()];
    shipped.durability.ack_wait_ms = 5000;
    shipped.durability.max_age_ms = 86_400_000;
    shipped.durability.max_bytes = 1 << 30;
    shipped.physics.correlate = vec!["inventory.*".into()];
    shipped
}
