//! A program's data folder: what must outlive the process (its durable
//! outbox, its maps' ledgers), in a directory of its own under
//! `[service] data_dir`.
//!
//! Several processes of one program may share a settings folder, so each
//! claims a directory of its own and holds it locked while it runs:
//!
//! - with an instance name (`--instance beta-1`, `[aether.report]
//!   instance`), `<data_dir>/<instance>`; a second process with that name is
//!   refused at start;
//! - without one, the first free slot `<data_dir>/<program>-<k>`, `k` from
//!   1, and the instance is named `<host>-<program>-<k>`: the same name, the
//!   same directory, after a restart (dashboards and alerts follow the
//!   service, and what a killed process left in its outbox is sent by the
//!   next one to take the slot).

use std::{
    fs::{File, OpenOptions},
    io,
    path::{Path, PathBuf},
};

/// The lock file of a claimed directory.
const LOCK_NAME: &str = "program.lock";
/// Most slots tried before giving up (as many processes of one program
/// sharing one data folder on one host).
const MAX_SLOTS: u32 = 1024;

/// A directory this process holds until it exits (or drops it).
#[derive(Debug)]
pub struct DataDir {
    path: PathBuf,
    instance: String,
    _lock: File,
}

impl DataDir {
    /// Claims this process's directory under `root` for `program`: the
    /// instance's own when `instance` is given, else the first free slot.
    pub fn claim(root: &Path, program: &str, instance: Option<&str>) -> io::Result<Self> {
        std::fs::create_dir_all(root).map_err(|e| named(root, e))?;
        if let Some(instance) = instance {
            let path = root.join(instance);
            return match lock(&path)? {
                Some(lock) => Ok(Self {
                    path,
                    instance: instance.to_string(),
                    _lock: lock,
                }),
                None => Err(io::Error::new(
                    io::ErrorKind::WouldBlock,
                    format!(
                        "{} is held by another process named {instance}: give each process \
                         its own --instance",
                        path.display()
                    ),
                )),
            };
        }
        let host = host_token();
        for k in 1..=MAX_SLOTS {
            let path = root.join(format!("{program}-{k}"));
            if let Some(lock) = lock(&path)? {
                return Ok(Self {
                    path,
                    instance: format!("{host}-{program}-{k}"),
                    _lock: lock,
                });
            }
        }
        Err(io::Error::new(
            io::ErrorKind::WouldBlock,
            format!(
                "all {MAX_SLOTS} directories of {program} under {} are held",
                root.display()
            ),
        ))
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The instance this directory belongs to.
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// Where the durable outbox is kept.
    pub fn outbox(&self) -> PathBuf {
        self.path.join("outbox")
    }

    /// Where maps keep their ledgers (map `name` in `<this>/<name>`).
    pub fn state(&self) -> PathBuf {
        self.path.join("state")
    }
}

/// Locks `dir`'s lock file, creating both; None when another holds it.
fn lock(dir: &Path) -> io::Result<Option<File>> {
    std::fs::create_dir_all(dir).map_err(|e| named(dir, e))?;
    let path = dir.join(LOCK_NAME);
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| named(&path, e))?;
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(std::fs::TryLockError::WouldBlock) => Ok(None),
        Err(std::fs::TryLockError::Error(e)) => Err(named(&path, e)),
    }
}

fn named(path: &Path, error: io::Error) -> io::Error {
    io::Error::new(error.kind(), format!("{}: {error}", path.display()))
}

/// The host's short name as an instance token: up to the first dot,
/// characters other than `A-Z a-z 0-9 _ -` made `-`, at most 24 of them;
/// `host` if there is none.
fn host_token() -> String {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_default();
    token(&name)
}

fn token(name: &str) -> String {
    let short = name.trim().split('.').next().unwrap_or_default();
    let token: String = short
        .chars()
        .take(24)
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    if token.is_empty() {
        "host".to_string()
    } else {
        token
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn processes_take_slots_in_turn_and_a_freed_slot_is_taken_again() {
        let root = tempfile::tempdir().unwrap();
        let first = DataDir::claim(root.path(), "beta", None).unwrap();
        let second = DataDir::claim(root.path(), "beta", None).unwrap();
        assert_eq!(first.path(), root.path().join("beta-1"));
        assert_eq!(second.path(), root.path().join("beta-2"));
        assert!(
            first.instance().ends_with("-beta-1"),
            "{}",
            first.instance()
        );
        let report = aether_core::config::ReportConfig {
            interval: std::time::Duration::ZERO,
            instance: Some(first.instance().to_string()),
        };
        assert!(
            report.validate().is_ok(),
            "a valid instance name: {report:?}"
        );
        // Another program's slots are its own.
        let alpha = DataDir::claim(root.path(), "alpha", None).unwrap();
        assert_eq!(alpha.path(), root.path().join("alpha-1"));
        drop(first);
        let again = DataDir::claim(root.path(), "beta", None).unwrap();
        assert_eq!(again.path(), root.path().join("beta-1"));
        assert_eq!(again.outbox(), root.path().join("beta-1/outbox"));
        assert_eq!(again.state(), root.path().join("beta-1/state"));
    }

    #[test]
    fn a_named_instance_holds_its_own_directory_once() {
        let root = tempfile::tempdir().unwrap();
        let one = DataDir::claim(root.path(), "beta", Some("beta-east")).unwrap();
        assert_eq!(one.path(), root.path().join("beta-east"));
        assert_eq!(one.instance(), "beta-east");
        let error = DataDir::claim(root.path(), "beta", Some("beta-east")).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::WouldBlock);
        assert!(error.to_string().contains("--instance"), "{error}");
    }

    #[test]
    fn host_names_become_instance_tokens() {
        assert_eq!(token("pi-kitchen.local\n"), "pi-kitchen");
        assert_eq!(token("my host!"), "my-host-");
        assert_eq!(token(""), "host");
        assert_eq!(token(&"x".repeat(100)).len(), 24);
    }
}
