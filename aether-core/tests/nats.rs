//! The behaviour suite on the NATS medium, each case on its own nats-server
//! process (started on a free loopback port, killed when the case ends).

mod behaviour;

use std::{future::Future, pin::Pin};

use aether_core::{Aether, AetherConfig, config::NatsConfig};
use aether_testkit::NatsServer;
use tokio::sync::OnceCell;

#[derive(Default)]
struct Nats {
    server: OnceCell<NatsServer>,
}

impl behaviour::Medium for Nats {
    fn aether(&self, config: AetherConfig) -> Pin<Box<dyn Future<Output = Aether> + Send + '_>> {
        Box::pin(async move {
            let server = self
                .server
                .get_or_try_init(|| NatsServer::builder().start())
                .await
                .expect("nats-server starts");
            Aether::connect(AetherConfig {
                nats: NatsConfig {
                    urls: vec![server.url()],
                    ..config.nats.clone()
                },
                ..config
            })
            .await
            .expect("connects to the test server")
        })
    }
}

behaviour_suite!(Nats::default());
