//! `aether-service-beta`: see `--help`.

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
use aether_service_beta::{BetaProgramSettings, Options, run};
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
    let source = SettingsSource::from_process(&options.config_dir);
    let mut settings: BetaProgramSettings = source.load()?;
    options.apply(&mut settings);
    settings.validate()?;
    let _log = logging::init(&settings.log)?;
    install_panic_hook(Arc::new(AtomicU64::new(0)));
    let shutdown = Shutdown::on_signals()?;
    let aether = if options.nats.is_empty() {
        Aether::new(settings.aether.clone())?
    } else {
        Aether::connect(settings.aether.clone()).await?
    };
    // On stdout, for scripts: beta is connected and about to resonate.
    println!("aether-service-beta: connected, resonating on orders.* (group inventory)");
    let report = run(&aether, &settings.beta, shutdown).await?;
    aether.close();
    println!("{report}");
    Ok(())
}
