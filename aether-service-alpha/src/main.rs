//! `aether-service-alpha`: see `--help`.

use std::{
    error::Error,
    process::ExitCode,
    sync::{Arc, atomic::AtomicU64},
};

use aether_core::Aether;
use aether_ops::{
    panic::install_panic_hook,
    reload,
    settings::{SettingsSource, Validate},
    shutdown::Shutdown,
    telemetry,
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
    // Logs, and spans over OTLP when [telemetry] otlp_endpoint is set; the
    // guard sends the last spans when the program ends.
    let (log, mut spans) =
        telemetry::init(&settings.log, &settings.telemetry, env!("CARGO_PKG_NAME"))?;
    install_panic_hook(Arc::new(AtomicU64::new(0)));
    let shutdown = Shutdown::on_signals()?;
    let aether = if options.nats.is_empty() {
        tracing::warn!("embedded medium: nobody else hears these orders (see --nats)");
        Aether::new(settings.aether.clone())?
    } else {
        Aether::connect(settings.aether.clone()).await?
    };
    // Hot reload: the files are read again when they change, with the
    // command-line options still over them; a refused change is logged
    // and the settings in force stay.
    let watcher = reload::watch_program(
        source,
        settings,
        log,
        |settings: &AlphaProgramSettings| &settings.log,
        move |settings| options.apply(settings),
    )?;
    let report = run_live(&aether, watcher.subscribe(), shutdown).await;
    watcher.stop();
    let report = report?;
    aether.close();
    spans.shutdown();
    println!("{report}");
    Ok(())
}
