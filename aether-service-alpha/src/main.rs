//! `aether-service-alpha`: see `--help`.

use std::{error::Error, process::ExitCode};

use aether_ops::{service::Service, settings::SettingsSource};
use aether_service_alpha::{AlphaProgramSettings, Options, run_live};
use clap::Parser;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    // Bad arguments exit with status 2 and say what is wrong.
    aether_ops::service::exit_status(program(Options::parse()).await)
}

async fn program(options: Options) -> Result<(), Box<dyn Error + Send + Sync>> {
    let source = SettingsSource::from_process(&options.config_dir).list_key("alpha.items");
    // Logs and spans, the panic hook, signals, the aether, and hot reload
    // of the settings with the command-line options still over them.
    let nats_named = !options.nats.is_empty();
    let service: Service<AlphaProgramSettings> = Service::launch(
        env!("CARGO_PKG_NAME"),
        source,
        nats_named,
        move |settings| options.apply(settings),
    )
    .await?;
    let nats = service.medium.crosses_processes();
    if !nats {
        tracing::warn!("embedded medium: nobody else hears these orders (see --nats)");
    }
    let report = run_live(
        &service.aether,
        service.settings.subscribe(),
        service.shutdown.clone(),
    )
    .await;
    service.stop().await;
    let report = report?;
    println!("{report}");
    Ok(())
}
