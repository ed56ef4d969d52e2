//! `keep`: a keeper of the bus's maps on this machine's disk, until a
//! signal.

use aether_core::state::Keeper;

use crate::{
    Failure,
    cli::{Connection, KeepArgs},
    connect::connect,
    show,
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
    // The global --name, unless left at the command line's own default.
    let given = (connection.name != "aether-cli").then(|| connection.name.clone());
    let name = given.unwrap_or_else(|| {
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
    let max_maps = config.keeper.max_maps;
    let keeper = Keeper::start_with(&aether, name.as_str(), config)
        .await
        .map_err(|e| Failure::usage(format!("cannot keep maps: {e}")))?;
    eprintln!(
        "keeper {name}: keeping maps {} in {} ({} kept already); Ctrl-C stops",
        args.maps.join(" "),
        args.dir.display(),
        keeper.maps().len()
    );
    // What it keeps, refuses and cannot open, said as it happens.
    let mut kept: std::collections::BTreeSet<String> = keeper.maps().into_iter().collect();
    let mut said = keeper.stats();
    let mut look = tokio::time::interval(std::time::Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = terminate.recv() => break,
            _ = look.tick() => {
                for map in keeper.maps() {
                    if kept.insert(map.clone()) {
                        eprintln!("keeper {name}: keeping map {} ({} maps)", show::safe(&map), kept.len());
                    }
                }
                let now = keeper.stats();
                if now.refused_maps > said.refused_maps {
                    eprintln!(
                        "keeper {name}: {} more map(s) not kept: it keeps max_maps = {} maps \
                         already ({} refused in all; --max-maps raises it)",
                        now.refused_maps - said.refused_maps,
                        max_maps,
                        now.refused_maps
                    );
                }
                if now.failed_maps > said.failed_maps {
                    eprintln!(
                        "keeper {name}: {} map(s) could not be opened in {} ({} in all): \
                         another program may keep that directory, or its disk is full",
                        now.failed_maps - said.failed_maps,
                        args.dir.display(),
                        now.failed_maps
                    );
                }
                if now.ledger_failed > said.ledger_failed {
                    eprintln!(
                        "keeper {name}: {} change(s) could not be written to the ledgers in {} \
                         ({} in all; is the disk full?): their writers are told, and they are \
                         written again once the disk has room",
                        now.ledger_failed - said.ledger_failed,
                        args.dir.display(),
                        now.ledger_failed
                    );
                }
                said = now;
            }
        }
    }
    let stats = keeper.stats();
    keeper.close().await;
    aether.close();
    eprintln!(
        "keeper {name}: stopped, {} maps kept, {} refused (max_maps), {} not opened, {} changes \
         not written to a ledger, {} ledgers found damaged",
        stats.maps,
        stats.refused_maps,
        stats.failed_maps,
        stats.ledger_failed,
        stats.ledgers_damaged
    );
    Ok(())
}
