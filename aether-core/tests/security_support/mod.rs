//! What the security tests share: the sources' signing keys, the ACL of
//! alpha and beta, and a wait for counted drops.

use std::time::Duration;

use aether_core::{Aether, DropReason, Secret, config::AclRule, config::SecurityConfig};
use tokio::time::timeout;

pub const ALPHA_KEY: &str = "alpha-key-0123456789abcdef-never-print";
pub const BETA_KEY: &str = "beta-key-fedcba9876543210-never-print";

/// Security settings with the signing keys of `pairs` (source, key).
pub fn keys(pairs: &[(&str, &str)]) -> SecurityConfig {
    let mut security = SecurityConfig::default();
    for (source, key) in pairs {
        security
            .signing_keys
            .insert((*source).into(), Secret::new(*key));
    }
    security
}

/// Alpha emits orders and hears inventory; beta the other way round.
pub fn rules() -> Vec<AclRule> {
    vec![
        AclRule {
            source: "alpha".into(),
            emit: vec!["orders.*".into()],
            resonate: vec!["inventory.*".into()],
        },
        AclRule {
            source: "beta".into(),
            emit: vec!["inventory.*".into()],
            resonate: vec!["orders.*".into()],
        },
    ]
}

/// Waits until `aether` has counted `n` drops for `reason`.
pub async fn until_dropped(aether: &Aether, reason: DropReason, n: u64) {
    timeout(Duration::from_secs(5), async {
        while aether.stats().dropped(reason) < n {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{reason} drops: {} of {n}", aether.stats().dropped(reason)));
}
