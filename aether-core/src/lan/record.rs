//! The record a running `aether node` leaves for the programs of its
//! machine: where its server listens and which secret file it holds.
//!
//! One file per bus, `node-<bus>.json`, in the runtime directory
//! ([`runtime_dir`]), written whole (a temporary file renamed over it) and
//! readable by its user only. A record whose process is gone is stale and
//! ignored. A directory or record that another user owns, or may write, is
//! refused: on a shared temporary directory anyone could make
//! `aether-<uid>` first and point this user's programs at a node of theirs.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// What a node tells the programs of its machine.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    /// The bus it belongs to.
    pub bus: String,
    /// Its name in the cluster (the NATS server's name).
    pub name: String,
    /// Its server's client URL on this machine (`nats://127.0.0.1:port`).
    pub url: String,
    /// Its server's monitoring address (`http://127.0.0.1:port`).
    pub monitor: String,
    /// The secret file it was started with.
    pub secret_file: PathBuf,
    /// The node's process.
    pub pid: u32,
    /// The node's data directory (where `aether node --status` reads what
    /// it counted).
    #[serde(default)]
    pub data: Option<PathBuf>,
}

/// Where node records live: `AETHER_RUNTIME_DIR`, else
/// `$XDG_RUNTIME_DIR/aether`, else `<temp>/aether-<user id>`.
pub fn runtime_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("AETHER_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    if let Some(dir) = std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir).join("aether");
    }
    std::env::temp_dir().join(format!("aether-{}", user_id()))
}

#[cfg(unix)]
fn user_id() -> String {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self")
        .map(|m| m.uid().to_string())
        .unwrap_or_else(|_| "user".to_string())
}

#[cfg(not(unix))]
fn user_id() -> String {
    std::env::var("USERNAME").unwrap_or_else(|_| "user".to_string())
}

/// Why `path` (the runtime directory, or a record in it) cannot be
/// trusted: a symbolic link, owned by another user, or writable by others.
#[cfg(unix)]
fn distrust(path: &Path) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::symlink_metadata(path).ok()?;
    if meta.file_type().is_symlink() {
        return Some(format!("{} is a symbolic link", path.display()));
    }
    if let Ok(own) = std::fs::metadata("/proc/self").map(|m| m.uid())
        && meta.uid() != own
    {
        return Some(format!(
            "{} belongs to user {}, not to this one ({own})",
            path.display(),
            meta.uid()
        ));
    }
    (meta.mode() & 0o022 != 0).then(|| format!("{} may be written by other users", path.display()))
}

#[cfg(not(unix))]
fn distrust(_path: &Path) -> Option<String> {
    None
}

/// The error for a runtime directory or record that is not to be trusted.
fn untrusted(why: String) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::PermissionDenied,
        format!(
            "{why}: node records there are not trusted (another user could point this \
             user's programs at a node of theirs); remove it, or set XDG_RUNTIME_DIR or \
             AETHER_RUNTIME_DIR to a directory of this user's own"
        ),
    )
}

impl NodeRecord {
    /// The record's file for `bus` in `dir`.
    pub fn path_in(dir: &Path, bus: &str) -> PathBuf {
        dir.join(format!("node-{bus}.json"))
    }

    /// Writes it into `dir` (made if missing), replacing the last.
    pub fn write_in(&self, dir: &Path) -> std::io::Result<PathBuf> {
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder.create(dir)?;
        if let Some(why) = distrust(dir) {
            return Err(untrusted(why));
        }
        let path = Self::path_in(dir, &self.bus);
        let partial = path.with_extension(format!("json.{}", std::process::id()));
        let text = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        {
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create(true).truncate(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            use std::io::Write;
            options.open(&partial)?.write_all(&text)?;
        }
        std::fs::rename(&partial, &path)?;
        Ok(path)
    }

    /// The live record for `bus` in `dir`: none when there is none, it
    /// cannot be read, or its process is gone; an error when `dir` or the
    /// record is another user's or others may write to it.
    pub fn read_in(dir: &Path, bus: &str) -> std::io::Result<Option<Self>> {
        let path = Self::path_in(dir, bus);
        if !path.exists() {
            return Ok(None);
        }
        if let Some(why) = distrust(dir).or_else(|| distrust(&path)) {
            return Err(untrusted(why));
        }
        let Ok(text) = std::fs::read(&path) else {
            return Ok(None);
        };
        let Ok(record) = serde_json::from_slice::<Self>(&text) else {
            return Ok(None);
        };
        Ok((record.bus == bus && process_alive(record.pid)).then_some(record))
    }

    /// Removes `bus`'s record from `dir` if it is this process's.
    pub fn remove_in(dir: &Path, bus: &str) {
        let path = Self::path_in(dir, bus);
        if let Ok(text) = std::fs::read(&path)
            && let Ok(record) = serde_json::from_slice::<Self>(&text)
            && record.pid == std::process::id()
        {
            let _ = std::fs::remove_file(path);
        }
    }
}

#[cfg(target_os = "linux")]
fn process_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

#[cfg(not(target_os = "linux"))]
fn process_alive(_pid: u32) -> bool {
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(pid: u32) -> NodeRecord {
        NodeRecord {
            bus: "home".into(),
            name: "pc-1".into(),
            url: "nats://127.0.0.1:4300".into(),
            monitor: "http://127.0.0.1:8300".into(),
            secret_file: "/etc/aether/secret".into(),
            pid,
            data: None,
        }
    }

    #[test]
    fn a_live_record_is_read_back_and_a_stale_one_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let mine = record(std::process::id());
        mine.write_in(dir.path()).unwrap();
        assert_eq!(NodeRecord::read_in(dir.path(), "home").unwrap(), Some(mine));
        assert_eq!(NodeRecord::read_in(dir.path(), "office").unwrap(), None);
        // A process that cannot exist: the record is stale.
        record(u32::MAX - 1).write_in(dir.path()).unwrap();
        assert_eq!(NodeRecord::read_in(dir.path(), "home").unwrap(), None);
        // Only its own process removes it.
        NodeRecord::remove_in(dir.path(), "home");
        assert!(NodeRecord::path_in(dir.path(), "home").exists());
        record(std::process::id()).write_in(dir.path()).unwrap();
        NodeRecord::remove_in(dir.path(), "home");
        assert!(!NodeRecord::path_in(dir.path(), "home").exists());
        // Junk in the file is no record.
        std::fs::write(NodeRecord::path_in(dir.path(), "home"), b"{not json").unwrap();
        assert_eq!(NodeRecord::read_in(dir.path(), "home").unwrap(), None);
    }

    #[cfg(unix)]
    #[test]
    fn a_directory_or_record_others_may_write_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let runtime = dir.path().join("aether-1000");
        let mine = record(std::process::id());
        mine.write_in(&runtime).unwrap();
        let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&runtime), 0o700);
        // Made by someone else, open to all (as a stranger on a shared /tmp
        // would leave it): refused, reading and writing, saying why.
        std::fs::set_permissions(&runtime, std::fs::Permissions::from_mode(0o777)).unwrap();
        let error = NodeRecord::read_in(&runtime, "home").unwrap_err();
        assert_eq!(error.kind(), std::io::ErrorKind::PermissionDenied);
        assert!(
            error.to_string().contains("may be written by other users"),
            "{error}"
        );
        assert!(mine.write_in(&runtime).is_err());
        std::fs::set_permissions(&runtime, std::fs::Permissions::from_mode(0o700)).unwrap();
        // A record others may write.
        let path = NodeRecord::path_in(&runtime, "home");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
        assert!(NodeRecord::read_in(&runtime, "home").is_err());
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(NodeRecord::read_in(&runtime, "home").unwrap(), Some(mine));
        // A link in place of the directory.
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&runtime, &link).unwrap();
        let error = NodeRecord::read_in(&link, "home").unwrap_err();
        assert!(error.to_string().contains("symbolic link"), "{error}");
    }
}
