//! The keeper's `kept` file: the maps that hold keys here, so that a map
//! whose folder is gone is said at the next start.

use std::collections::BTreeSet;

use super::{Inner, StateConfig, StateMap, holds_nothing, is_name, lock};

/// The file naming the maps that hold keys, in the keeper's directory.
const KEPT_FILE: &str = "kept";

/// The maps `dir`'s `kept` file names (that `config`'s patterns name) whose
/// directory is gone or holds no record, each said; and the others it
/// names.
pub(super) fn lost_maps(
    dir: &std::path::Path,
    config: &StateConfig,
) -> (Vec<String>, BTreeSet<String>) {
    let Ok(text) = std::fs::read_to_string(dir.join(KEPT_FILE)) else {
        return (Vec::new(), BTreeSet::new());
    };
    let (lost, kept): (Vec<String>, Vec<String>) = text
        .lines()
        .filter(|name| is_name(name) && config.keeper.keeps(name))
        .map(str::to_string)
        .partition(|name| {
            let map = dir.join(name);
            !map.is_dir() || holds_nothing(&map)
        });
    for map in &lost {
        tracing::warn!(
            map = %map,
            dir = %dir.display(),
            "a map this keeper held keys of is gone from its directory (deleted, or lost \
             with the disk): what it held is lost here (other replicas may hold it)"
        );
    }
    (lost, kept.into_iter().collect())
}

/// Writes `dir`'s `kept` file whole (a temporary file renamed over it),
/// its owner's only; a temporary file that could not be written whole (a
/// full disk) is removed.
fn write_list(dir: &std::path::Path, maps: &BTreeSet<String>) -> std::io::Result<()> {
    let temporary = dir.join(format!("{KEPT_FILE}.new"));
    let mut text = String::new();
    for map in maps {
        text.push_str(map);
        text.push('\n');
    }
    let written = aether_journal::private(
        std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true),
    )
    .open(&temporary)
    .and_then(|mut file| {
        std::io::Write::write_all(&mut file, text.as_bytes())?;
        file.sync_data()
    })
    .and_then(|()| std::fs::rename(&temporary, dir.join(KEPT_FILE)));
    if written.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    written
}

impl Inner {
    /// Names `map` in the `kept` file (`true`) or takes it out, the file
    /// written before this returns (a failure is said, and tried again
    /// each second).
    pub(super) fn list(&self, map: &str, kept: bool) {
        let changed = {
            let mut listed = lock(&self.listed);
            let changed = if kept {
                listed.0.insert(map.to_string())
            } else {
                listed.0.remove(map)
            };
            listed.1 |= changed;
            changed
        };
        if changed {
            self.write_list();
        }
    }

    /// Names the maps open that hold keys and are not named yet (kept from
    /// a directory older than the list), and writes the file if it is
    /// behind.
    pub(super) fn list_kept(&self) {
        let maps: Vec<(String, StateMap)> = lock(&self.maps)
            .iter()
            .map(|(name, k)| (name.clone(), k.map.clone()))
            .collect();
        let holding: Vec<String> = maps
            .into_iter()
            .filter(|(_, map)| map.stats().keys > 0)
            .map(|(name, _)| name)
            .collect();
        {
            let mut listed = lock(&self.listed);
            for name in holding {
                let added = listed.0.insert(name);
                listed.1 |= added;
            }
        }
        self.write_list();
    }

    /// Writes the `kept` file if it is behind.
    pub(super) fn write_list(&self) {
        let mut listed = lock(&self.listed);
        if !listed.1 {
            return;
        }
        match write_list(&self.dir, &listed.0) {
            Ok(()) => listed.1 = false,
            Err(error) => {
                drop(listed);
                if self.may_warn() {
                    tracing::warn!(keeper = %self.name, %error, "cannot write the list of maps kept");
                }
            }
        }
    }
}
