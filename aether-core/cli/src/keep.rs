//! `keep`: a keeper of the bus's maps on this machine's disk, until a
//! signal.

use aether_core::state::Keeper;

use crate::{
    Failure,
    cli::{Connection, KeepArgs},
    connect::connect,
};

pub async fn run(connection: &Connection, args: KeepArgs) -> Result<(), Failure> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate())
        .map_err(|e| Failure::runtime(format!("cannot listen for SIGTERM: {e}")))?;
    let aether = connect(connection).await?;
    let mut config = aether.config().state.clone();
    config.dir = Some(args.dir.clone());
    config.keeper.maps = args.maps.clone();
    if let Some(max) = args.max_maps {
        config.keeper.max_maps = max;
    }
    config
        .validate()
        .map_err(|e| Failure::usage(format!("settings: {e}")))?;
    let name = args.name.clone().unwrap_or_else(|| {
        let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
        let host = host.trim();
        let host: String = host
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '-'
                }
            })
            .take(48)
            .collect();
        if host.is_empty() {
            "keeper".to_string()
        } else {
            format!("keeper-{host}")
        }
    });
    let keeper = Keeper::start_with(&aether, name.as_str(), config)
        .await
        .map_err(|e| Failure::usage(format!("cannot keep maps: {e}")))?;
    eprintln!(
        "keeper {name}: keeping maps {} in {} ({} kept already); Ctrl-C stops",
        args.maps.join(" "),
        args.dir.display(),
        keeper.maps().len()
    );
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
    let stats = keeper.stats();
    keeper.close().await;
    aether.close();
    eprintln!(
        "keeper {name}: stopped, {} maps kept, {} refused (max_maps), {} not opened",
        stats.maps, stats.refused_maps, stats.failed_maps
    );
    Ok(())
}
