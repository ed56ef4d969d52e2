//! The node's keeper: every map on the bus (or those `--keep` names) kept
//! in `<data>/state`, so a map outlives the programs that wrote it.

use std::path::{Path, PathBuf};

use aether_core::{
    Aether, AetherConfig,
    lan::{LanOptions, NodeRecord},
    state::Keeper,
};
use tokio::task::JoinHandle;

use crate::Failure;

/// A keeper being started, then running, on its own connection to the
/// node's server.
pub(super) struct Keeping {
    task: JoinHandle<Option<(Aether, Keeper)>>,
}

impl Keeping {
    /// Starts it once the node's server listens (`record` is written):
    /// connects as a program of the bus does, then keeps the maps
    /// `patterns` names in `<data>/state`.
    pub(super) fn start(
        mut config: AetherConfig,
        record: &NodeRecord,
        runtime: &Path,
        data: &Path,
    ) -> Result<Self, Failure> {
        config.state.dir = Some(data.join("state"));
        config.nats.connection_name = Some(format!("aether node {} keeper", record.name));
        config
            .state
            .validate()
            .map_err(|e| Failure::usage(format!("the node's keeper: {e}")))?;
        let lan = LanOptions {
            bus: record.bus.clone(),
            secret_file: Some(record.secret_file.clone()),
            runtime_dir: Some(PathBuf::from(runtime)),
            ..LanOptions::default()
        };
        let name = record.name.clone();
        let task = tokio::spawn(async move {
            let config = match lan.resolve(config) {
                Ok(config) => config,
                Err(error) => {
                    eprintln!("node {name}: maps are not kept: {error}");
                    return None;
                }
            };
            let aether = match Aether::connect(config).await {
                Ok(aether) => aether,
                Err(error) => {
                    eprintln!("node {name}: maps are not kept: cannot connect: {error}");
                    return None;
                }
            };
            match Keeper::start(&aether, name.as_str()).await {
                Ok(keeper) => {
                    eprintln!(
                        "node {name}: keeping maps {:?} in {} ({} kept already)",
                        aether.config().state.keeper.maps,
                        aether
                            .config()
                            .state
                            .dir
                            .as_deref()
                            .map(Path::display)
                            .map(|d| d.to_string())
                            .unwrap_or_default(),
                        keeper.maps().len()
                    );
                    Some((aether, keeper))
                }
                Err(error) => {
                    eprintln!("node {name}: maps are not kept: {error}");
                    None
                }
            }
        });
        Ok(Self { task })
    }

    /// Closes the keeper's maps (they say goodbye; their ledgers close)
    /// and its connection.
    pub(super) async fn stop(self) {
        if let Ok(Some((aether, keeper))) = self.task.await {
            keeper.close().await;
            aether.close();
        }
    }
}
