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
