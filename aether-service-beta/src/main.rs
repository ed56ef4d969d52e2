//! `aether-service-beta`: see `--help`.

use std::{error::Error, process::ExitCode};

use aether_core::ConnectionState;
use aether_ops::{service::Service, settings::SettingsSource};
use aether_service_beta::{BetaProgramSettings, Options, run_live_then};
use clap::Parser;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    // Bad arguments exit with status 2 and say what is wrong.
    aether_ops::service::exit_status(program(Options::parse()).await)
}

async fn program(options: Options) -> Result<(), Box<dyn Error + Send + Sync>> {
    let source = SettingsSource::from_process(&options.config_dir);
    // Logs and spans, the panic hook, signals, the aether, and hot reload
    // of the settings with the command-line options still over them.
    let nats_named = !options.nats.is_empty();
    let service: Service<BetaProgramSettings> = Service::launch(
        env!("CARGO_PKG_NAME"),
        source,
        nats_named,
        move |settings| options.apply(settings),
    )
    .await?;
    let nats = service.medium.crosses_processes();
    // On stdout, for scripts, once it is true: beta resonates (a refused
    // resonance ends the run with the reason instead).
    let report = run_live_then(
        &service.aether,
        service.settings.subscribe(),
        service.shutdown.clone(),
        service.data.as_ref().map(|data| data.state()).as_deref(),
        || {
            if nats && service.aether.connection().state != ConnectionState::Connected {
                // retry_on_initial_connect: up, but not connected yet.
                println!(
                    "aether-service-beta: resonating on orders.* (group inventory); not connected \
                     yet, retrying ({})",
                    service.aether.connection().state
                );
            } else if nats {
                println!(
                    "aether-service-beta: connected, resonating on orders.* (group inventory)"
                );
            } else {
                println!(
                    "aether-service-beta: embedded, resonating on orders.* (group inventory) in \
                     this process only"
                );
            }
        },
    )
    .await;
    service.stop().await;
    let report = report?;
    println!("{report}");
    Ok(())
}
