//! `aether-service-alpha`: see `--help`.

use std::{error::Error, process::ExitCode};

use aether_ops::{
    service::Service,
    settings::{SettingsSource, Validate},
};
use aether_service_alpha::{AlphaProgramSettings, Options, run_live};
use clap::Parser;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    // Bad arguments exit with status 2 and say what is wrong.
    let options = Options::parse();
    match program(options).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn program(options: Options) -> Result<(), Box<dyn Error + Send + Sync>> {
    let source = SettingsSource::from_process(&options.config_dir).list_key("alpha.items");
    let mut settings: AlphaProgramSettings = source.load()?;
    options.apply(&mut settings);
    settings.validate()?;
    let medium = if options.nats.is_empty() {
        settings.service.medium
    } else {
        aether_ops::settings::ServiceMedium::Nats
    };
    let nats = medium.crosses_processes();
    // Logs and spans, the panic hook, signals, the aether, and hot reload
    // of the settings with the command-line options still over them.
    let service = Service::start(
        env!("CARGO_PKG_NAME"),
        source,
        settings,
        medium,
        move |settings| options.apply(settings),
    )
    .await?;
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
