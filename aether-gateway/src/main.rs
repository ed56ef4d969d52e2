//! `aether-gateway`: see `--help`.

use std::{
    alloc::System,
    error::Error,
    process::ExitCode,
    sync::{Arc, atomic::AtomicU64},
    time::Duration,
};

use aether_core::Aether;
use aether_gateway::{
    Gateway, GatewaySettings, Medium, Options,
    allocator::{INSTRUMENTED_SYSTEM, StatsAlloc},
    demo,
};
use aether_ops::{
    logging,
    panic::install_panic_hook,
    reload,
    settings::{SettingsSource, Validate},
    shutdown::{Shutdown, ShutdownOutcome, run_until_shutdown},
};
use clap::Parser;

/// The system allocator, counted: `aether_allocator_*` metrics.
#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

#[tokio::main]
async fn main() -> ExitCode {
    // Bad arguments exit with status 2 and say what is wrong.
    let options = Options::parse();
    match run(options).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}

async fn run(options: Options) -> Result<(), Box<dyn Error>> {
    let source = SettingsSource::from_process(&options.config_dir);
    let mut settings: GatewaySettings = source.load()?;
    options.apply(&mut settings);
    settings.validate()?;
    let log = logging::init(&settings.log)?;
    let panics = Arc::new(AtomicU64::new(0));
    install_panic_hook(Arc::clone(&panics));
    let shutdown = Shutdown::on_signals()?;

    let aether = match settings.gateway.medium {
        Medium::Embedded => Aether::new(settings.aether.clone())?,
        Medium::Nats => Aether::connect(settings.aether.clone()).await?,
    };
    let gateway = Gateway::builder(settings.gateway.clone())
        .panic_counter(panics)
        .resource_limits(settings.resources)
        .start(&aether, shutdown.clone())
        .await?;
    // On stdout, for scripts: the address, with the port chosen if 0.
    println!("aether-gateway: serving http://{}/", gateway.addr());
    if options.demo {
        let (aether, shutdown) = (aether.clone(), shutdown.clone());
        tokio::spawn(async move {
            if let Err(error) = demo::feed(aether, shutdown).await {
                tracing::warn!(%error, "the demo stopped");
            }
        });
    }

    let grace = settings.service.shutdown_grace();
    let watcher = reload::watch(
        source,
        Duration::from_millis(200),
        settings,
        move |old: &GatewaySettings, new| {
            if old.log.level != new.log.level {
                match log.set_level(&new.log.level) {
                    Ok(()) => tracing::info!(level = %new.log.level, "log level changed"),
                    Err(error) => tracing::warn!(%error, "log level kept"),
                }
            }
        },
    )?;
    let mut changes = watcher.subscribe();
    let work = {
        let shutdown = shutdown.clone();
        async move {
            loop {
                tokio::select! {
                    () = shutdown.wait() => break,
                    Ok(()) = changes.changed() => {
                        let limits = changes.borrow_and_update().resources;
                        gateway.set_resource_limits(limits);
                    }
                }
            }
            gateway.stop().await
        }
    };
    let outcome = run_until_shutdown(work, &shutdown, grace).await;
    watcher.stop();
    aether.close();
    match outcome {
        ShutdownOutcome::Completed(result) | ShutdownOutcome::Drained(result) => result?,
        ShutdownOutcome::TimedOut => {}
    }
    tracing::info!("stopped");
    Ok(())
}
