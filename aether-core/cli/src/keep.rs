//! `keep`: a keeper of the bus's maps on this machine's disk, until a
//! signal.

use std::{collections::BTreeSet, path::Path};

use aether_core::state::{Keeper, KeeperStats};

use crate::{
    Failure,
    cli::{Connection, KeepArgs},
    connect::connect_with,
    show,
};

/// How often a keeper's connection reports (`aether keep`, a node's
/// keeper), unless the settings say: within `aether stats`' default wait
/// of 3 s.
pub(crate) const REPORT_EVERY_MS: u64 = 2_000;

pub async fn run(connection: &Connection, args: KeepArgs) -> Result<(), Failure> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate())
        .map_err(|e| Failure::runtime(format!("cannot listen for SIGTERM: {e}")))?;
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
    // A keeper runs for long: one of the bus's time sources. It reports
    // itself (`aether stats`) under its name, unless told how.
    let aether = connect_with(connection, |config| {
        config.clock.source = true;
        if config.report.interval.is_zero() {
            config.report.interval = std::time::Duration::from_millis(REPORT_EVERY_MS);
        }
        if config.report.instance.is_none() {
            config.report.instance = Some(format!("keep-{name}"));
        }
    })
    .await?;
    let mut config = aether.config().state.clone();
    config.dir = Some(args.dir.clone());
    config.keeper.maps = args.maps.clone();
    if let Some(max) = args.max_maps {
        config.keeper.max_maps = max;
    }
    if let Some(max) = args.max_bytes {
        config.keeper.max_bytes = max;
    }
    config
        .validate()
        .map_err(|e| Failure::usage(format!("settings: {e}")))?;
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
    let mut told = Told::new(&keeper, "--max-maps");
    let mut look = tokio::time::interval(std::time::Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = terminate.recv() => break,
            _ = look.tick() => {
                told.tell(&name, &keeper, &args.dir, keeper.stats());
            }
        }
    }
    let stats = keeper.stats();
    keeper.close().await;
    aether.close();
    eprintln!("keeper {name}: stopped, {}", summary(&stats));
    Ok(())
}

/// A keeper's counts in one line.
pub(crate) fn summary(stats: &KeeperStats) -> String {
    format!(
        "{} maps kept ({} bytes of max_bytes {}), {} refused (max_maps), {} refused \
         (max_maps_per_writer), {} empty forgotten, {} not opened, {} writes refused as full, \
         {} refusals as future, {} changes not written to a ledger, {} ledgers found \
         damaged",
        stats.maps,
        stats.bytes,
        stats.max_bytes,
        stats.refused_maps,
        stats.refused_writer_maps,
        stats.forgotten_maps,
        stats.failed_maps,
        stats.full_writes,
        stats.future_writes,
        stats.ledger_failed,
        stats.ledgers_damaged
    )
}

/// What a keeper was last said to have done: each second, what changed
/// since is said on stderr (`aether keep`, `aether node`).
pub(crate) struct Told {
    kept: BTreeSet<String>,
    said: KeeperStats,
    /// How this program's user raises max_maps.
    raise: &'static str,
}

impl Told {
    pub(crate) fn new(keeper: &Keeper, raise: &'static str) -> Self {
        Self {
            kept: keeper.maps().into_iter().collect(),
            said: keeper.stats(),
            raise,
        }
    }

    /// Says what changed since it last said, from `now` (the keeper's
    /// counts, read by the caller: what it exports before it says so).
    pub(crate) fn tell(&mut self, name: &str, keeper: &Keeper, dir: &Path, now: KeeperStats) {
        let maps = keeper.maps();
        for map in &maps {
            if self.kept.insert(map.clone()) {
                eprintln!(
                    "keeper {name}: keeping map {} ({} maps)",
                    show::safe(map),
                    maps.len()
                );
            }
        }
        self.kept.retain(|m| maps.contains(m));
        let said = &self.said;
        if now.refused_maps > said.refused_maps {
            eprintln!(
                "keeper {name}: {} more map(s) not kept: it keeps max_maps = {} maps already \
                 ({} refused in all; {} raises it)",
                now.refused_maps - said.refused_maps,
                keeper.config().keeper.max_maps,
                now.refused_maps,
                self.raise
            );
        }
        if now.refused_writer_maps > said.refused_writer_maps {
            eprintln!(
                "keeper {name}: {} more map(s) not kept: their writer brought \
                 max_maps_per_writer = {} maps kept already ({} refused in all)",
                now.refused_writer_maps - said.refused_writer_maps,
                keeper.config().keeper.max_maps_per_writer,
                now.refused_writer_maps
            );
        }
        if now.forgotten_maps > said.forgotten_maps {
            eprintln!(
                "keeper {name}: {} map(s) stayed empty: closed and forgotten ({} in all)",
                now.forgotten_maps - said.forgotten_maps,
                now.forgotten_maps
            );
        }
        if now.full_writes > said.full_writes {
            eprintln!(
                "keeper {name}: {} write(s) refused as full ({} in all): its maps hold {} bytes \
                 of max_bytes {}, or a map its max_keys or max_map_bytes; the writers are told",
                now.full_writes - said.full_writes,
                now.full_writes,
                now.bytes,
                now.max_bytes
            );
        }
        if now.future_writes > said.future_writes {
            eprintln!(
                "keeper {name}: {} refusal(s) of changes stamped more than max_drift ahead of \
                 the bus's time ({} in all; a change offered again, by repair, counts again): \
                 a writer's clock off, or two buses that settled apart and then met; they are \
                 taken once the bus's time reaches them",
                now.future_writes - said.future_writes,
                now.future_writes
            );
        }
        if now.failed_maps > said.failed_maps {
            eprintln!(
                "keeper {name}: {} map(s) could not be opened in {} ({} in all): the warning \
                 above names each map and why",
                now.failed_maps - said.failed_maps,
                dir.display(),
                now.failed_maps
            );
        }
        if now.ledger_failed > said.ledger_failed {
            eprintln!(
                "keeper {name}: {} change(s) could not be written to the ledgers in {} \
                 ({} in all; is the disk full?): their writers are told, and they are \
                 written again once the disk has room",
                now.ledger_failed - said.ledger_failed,
                dir.display(),
                now.ledger_failed
            );
        }
        self.said = now;
    }
}
