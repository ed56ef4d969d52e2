//! An operable Aether program in full: layered settings refused at start
//! when bad, logs, a panic hook, hot reload of the log level and the noise
//! floor, resource checks, and a graceful shutdown on SIGINT or SIGTERM.
//!
//! ```bash
//! cargo run -p aether-ops --example operable -- config      # Ctrl-C to stop
//! AETHER__SERVICE__NOISE_FLOOR=2 cargo run -p aether-ops --example operable   # refused
//! ```

use std::{
    error::Error,
    process::ExitCode,
    sync::{Arc, atomic::AtomicU64},
    time::Duration,
};

use aether_core::{Aether, AetherConfig, Vibrator};
use aether_ops::{
    logging,
    panic::install_panic_hook,
    reload,
    resources::{ResourceLimits, ResourceMonitor, RssSampler},
    settings::{
        LogSettings, ServiceSettings, SettingsError, SettingsSource, Validate, validate_section,
    },
    shutdown::{Shutdown, run_until_shutdown},
};

/// The program's settings: the aether's and the shared sections.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Settings {
    aether: AetherConfig,
    log: LogSettings,
    service: ServiceSettings,
    resources: ResourceLimits,
}

impl Validate for Settings {
    fn validate(&self) -> Result<(), SettingsError> {
        validate_section("aether", &self.aether)?;
        validate_section("log", &self.log)?;
        validate_section("service", &self.service)?;
        validate_section("resources", &self.resources)
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // Bad settings end here, naming the key and the value.
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), Box<dyn Error>> {
    let dir = std::env::args().nth(1).unwrap_or_else(|| "config".into());
    let source = SettingsSource::from_process(dir);
    let settings: Settings = source.load()?;
    let log = logging::init(&settings.log)?;
    let panics = Arc::new(AtomicU64::new(0));
    install_panic_hook(Arc::clone(&panics));
    let shutdown = Shutdown::on_signals()?;

    let aether = Aether::new(settings.aether.clone())?;
    let mut listener = Vibrator::builder("operable")
        .noise_floor(settings.service.noise_floor)
        .create(&aether)
        .await?;
    listener.resonate_on("*").await?;
    let grace = settings.service.shutdown_grace();
    let mut monitor = ResourceMonitor::new(
        settings.resources,
        RssSampler::new(Duration::from_secs(3600), 30),
    );

    let watcher = reload::watch(
        source,
        Duration::from_millis(200),
        settings,
        reload::ReloadScope {
            applied: &["log.level", "service.noise_floor", "resources"],
            others: &[],
        },
        move |old: &Settings, new| {
            if old.log.level != new.log.level {
                match log.set_level(&new.log.level) {
                    Ok(()) => tracing::info!(level = %new.log.level, "log level changed"),
                    Err(err) => tracing::warn!(%err, "log level kept"),
                }
            }
        },
    )?;
    let mut settings = watcher.subscribe();
    tracing::info!("running; Ctrl-C or SIGTERM to stop");

    let work = {
        let shutdown = shutdown.clone();
        async move {
            let mut every = tokio::time::interval(Duration::from_secs(10));
            loop {
                tokio::select! {
                    Some(wave) = listener.receive() => tracing::info!(channel = %wave.channel(), "wave"),
                    Ok(()) = settings.changed() => {
                        let new = Arc::clone(&settings.borrow_and_update());
                        monitor.set_limits(new.resources);
                        if let Err(err) = listener.set_noise_floor(new.service.noise_floor) {
                            tracing::warn!(%err, "noise floor kept");
                        }
                    }
                    _ = every.tick() => {
                        if let Ok(report) = monitor.check() {
                            tracing::debug!(rss = report.usage.rss_bytes, threads = report.usage.threads, "resources");
                        }
                    }
                    () = shutdown.wait() => break,
                }
            }
            // Stop taking waves, then handle the ones already queued.
            let _ = listener.stop_resonating("*").await;
            while let Some(wave) = listener.try_receive() {
                tracing::info!(channel = %wave.channel(), "wave (draining)");
            }
        }
    };
    run_until_shutdown(work, &shutdown, grace).await;
    watcher.stop();
    tracing::info!(
        panics = panics.load(std::sync::atomic::Ordering::Relaxed),
        "stopped"
    );
    Ok(())
}
