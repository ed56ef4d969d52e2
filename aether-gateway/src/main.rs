//! `aether-gateway`: see `--help`.

use std::{
    alloc::System,
    error::Error,
    process::ExitCode,
    sync::{Arc, atomic::AtomicU64},
    time::Duration,
};

use aether_gateway::{
    Command, Gateway, GatewaySettings, Options,
    allocator::{INSTRUMENTED_SYSTEM, StatsAlloc},
    cli::SelectArgs,
    connect::connect,
    demo,
    replay::{Selection, format_time, replay},
};
use aether_ops::{
    panic::install_panic_hook,
    reload,
    settings::{SettingsSource, Validate},
    shutdown::{Shutdown, ShutdownOutcome, run_until_shutdown},
    telemetry,
};
use clap::Parser;

/// The system allocator, counted: `aether_allocator_*` metrics.
#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

#[tokio::main]
async fn main() -> ExitCode {
    // Bad arguments exit with status 2 and say what is wrong.
    aether_ops::service::exit_status(run(Options::parse()).await)
}

async fn run(options: Options) -> Result<(), Box<dyn Error>> {
    let source = aether_gateway::settings::LIST_KEYS.iter().fold(
        SettingsSource::from_process(&options.config_dir),
        |source, key| source.list_key(key),
    );
    let mut settings: GatewaySettings = source.load()?;
    options.apply(&mut settings);
    settings.validate()?;
    // Logs, and spans over OTLP when [telemetry] otlp_endpoint is set (sent
    // until the guard is dropped, at the end).
    let (log, _spans) =
        telemetry::init(&settings.log, &settings.telemetry, env!("CARGO_PKG_NAME"))?;
    if let Some(command) = &options.command {
        return run_command(command, &settings).await;
    }
    // The settings in force, at debug: secrets print as [redacted].
    tracing::debug!(?settings, "settings");
    let panics = Arc::new(AtomicU64::new(0));
    install_panic_hook(Arc::clone(&panics));
    let shutdown = Shutdown::on_signals()?;

    let mut config = aether_ops::service::named(&settings.aether, env!("CARGO_PKG_NAME"));
    // A gateway runs for long, and its pages stamp in its time: one of the
    // bus's time sources, as a node and a keeper are.
    config.clock.source = true;
    let aether = connect(config, &settings.gateway).await?;
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
        GatewaySettings::RELOAD_SCOPE,
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
    // A last report marked leaving, if the gateway's aether reports.
    let _ = aether.drain(Duration::from_millis(500)).await;
    match outcome {
        ShutdownOutcome::Completed(result) | ShutdownOutcome::Drained(result) => result?,
        ShutdownOutcome::TimedOut => {}
    }
    tracing::info!("stopped");
    Ok(())
}

/// Which journaled waves `select` takes, with the settings' defaults.
fn selection(select: &SelectArgs, settings: &GatewaySettings) -> Result<Selection, Box<dyn Error>> {
    let mut channels = Vec::new();
    for pattern in &select.channels {
        channels.push(aether_core::Channel::parse(pattern)?);
    }
    Ok(Selection {
        dir: select
            .dir
            .clone()
            .unwrap_or_else(|| settings.gateway.journal.dir.clone()),
        from_ms: select.from,
        to_ms: select.to,
        channels,
    })
}

/// `replay` and `journal`: work on the journal, print a summary, exit.
async fn run_command(command: &Command, settings: &GatewaySettings) -> Result<(), Box<dyn Error>> {
    match command {
        Command::Replay(args) => {
            let selection = selection(&args.select, settings)?;
            let config = aether_ops::service::named(&settings.aether, "aether-gateway-replay");
            let aether = connect(config, &settings.gateway).await?;
            let report = replay(&aether, &args.name, selection, args.amplitude).await?;
            aether.close();
            println!(
                "aether-gateway: replayed {} waves ({} refused) of {} records read",
                report.emitted, report.refused, report.read
            );
            if report.refused > 0 {
                return Err(format!("{} waves were refused", report.refused).into());
            }
        }
        Command::Journal(args) => {
            let selection = selection(&args.select, settings)?;
            let selected = tokio::task::spawn_blocking(move || selection.read()).await??;
            if args.list {
                for (seq, time_ms, wave) in &selected.waves {
                    println!(
                        "{seq}\t{}\t{}\t{}\t{}\thops={}\tamplitude={}\t{} bytes",
                        format_time(*time_ms),
                        wave.channel(),
                        wave.id(),
                        wave.source().unwrap_or("-"),
                        wave.propagation_count(),
                        wave.amplitude().value(),
                        wave.payload_bytes().len(),
                    );
                }
            }
            let first = selected.waves.first().map(|(_, t, _)| format_time(*t));
            let last = selected.waves.last().map(|(_, t, _)| format_time(*t));
            println!(
                "aether-gateway: {} waves selected of {} records read{}",
                selected.waves.len(),
                selected.read,
                match (first, last) {
                    (Some(first), Some(last)) => format!(", from {first} to {last}"),
                    _ => String::new(),
                }
            );
            if let Some(damage) = selected.damage {
                println!(
                    "aether-gateway: the journal ends early at {} offset {} ({})",
                    damage.segment.display(),
                    damage.offset,
                    damage.kind
                );
            }
        }
    }
    Ok(())
}
