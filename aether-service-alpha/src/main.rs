//! `aether-service-alpha`: see `--help`.

use std::{
    error::Error,
    process::ExitCode,
    sync::{Arc, atomic::AtomicU64},
};

use aether_core::Aether;
use aether_ops::{
    logging,
    panic::install_panic_hook,
    settings::{SettingsSource, Validate},
    shutdown::Shutdown,
};
use aether_service_alpha::{AlphaProgramSettings, Options, run};
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
    let _log = logging::init(&settings.log)?;
    install_panic_hook(Arc::new(AtomicU64::new(0)));
    let shutdown = Shutdown::on_signals()?;
    let aether = if options.nats.is_empty() {
        tracing::warn!("embedded medium: nobody else hears these orders (see --nats)");
        Aether::new(settings.aether.clone())?
    } else {
        Aether::connect(settings.aether.clone()).await?
    };
    let report = run(&aether, &settings.alpha, shutdown).await?;
    aether.close();
    println!("{report}");
    Ok(())
}
