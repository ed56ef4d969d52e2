//! Test-only helpers for Aether integration tests.
//!
//! * [`NatsServer`] / [`NatsCluster`]: real `nats-server` processes on loopback ports,
//!   with optional JetStream, TLS, auth and cluster routes, and kill / stop / restart.
//! * [`TestPki`]: a throw-away CA with server and client certificates (rcgen).
//! * [`NKeyUser`]: a freshly generated NATS user NKey.
//! * [`TcpProxy`]: a loopback TCP proxy that can stall, cut and refuse connections.
//! * [`RawNats`]: a minimal NATS text-protocol client for interoperability checks.
//! * [`LogBuffer`]: an in-memory log sink, for tests that read what was logged.
//! * [`netns`]: hosts of a test's own in network namespaces, and long-running programs
//!   on them whose output is read as it comes.
//! * [`bench`](mod@bench): whether a benchmark program measures or makes its smoke run.
//! * [`process`]: a program under test as a process: started, its first line waited for,
//!   its log read, signalled and stopped.
//!
//! Every wait in this crate is bounded by a timeout; nothing here binds anything but
//! `127.0.0.1`.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod bench;
mod cluster;
mod error;
mod logs;
pub mod netns;
mod nkey;
mod pki;
pub mod process;
mod proxy;
mod raw;
mod server;
pub mod sources;

pub use cluster::{NatsCluster, NatsClusterBuilder};
pub use error::Error;
pub use logs::LogBuffer;
pub use nkey::NKeyUser;
pub use pki::TestPki;
pub use proxy::TcpProxy;
pub use raw::{ClientAuth, RawMessage, RawNats};
pub use server::{Auth, ClusterConfig, NatsServer, NatsServerBuilder, User, nats_server_path};

use std::net::{Ipv4Addr, SocketAddr, TcpListener};

/// Whether the tests' aethers send batch frames over NATS: yes unless
/// `AETHER_TEST_BATCH=off` (`.ci/test` runs the NATS test files both ways).
pub fn batch_frames() -> bool {
    std::env::var("AETHER_TEST_BATCH").map_or(true, |v| v != "off")
}

/// Returns a TCP port on 127.0.0.1 that was free a moment ago (bind `127.0.0.1:0`, read the
/// port, drop the listener). Another process may grab it before you bind it; callers that
/// start servers retry on bind failures.
pub fn free_port() -> Result<u16, Error> {
    let listener = TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
        .map_err(|e| Error::io("binding 127.0.0.1:0 to find a free port", e))?;
    let port = listener
        .local_addr()
        .map_err(|e| Error::io("reading the local address of a probe listener", e))?
        .port();
    Ok(port)
}

/// Returns `count` distinct free ports (all probe listeners are held until every port is
/// chosen, so the ports differ from each other).
pub(crate) fn free_ports(count: usize) -> Result<Vec<u16>, Error> {
    let mut listeners = Vec::with_capacity(count);
    let mut ports = Vec::with_capacity(count);
    for _ in 0..count {
        let listener = TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
            .map_err(|e| Error::io("binding 127.0.0.1:0 to find a free port", e))?;
        ports.push(
            listener
                .local_addr()
                .map_err(|e| Error::io("reading the local address of a probe listener", e))?
                .port(),
        );
        listeners.push(listener);
    }
    drop(listeners);
    Ok(ports)
}

/// A command for the program at `path` (an `env!("CARGO_BIN_EXE_...")`)
/// under test: without this process's `AETHER*` settings variables, which
/// are the test runner's and not the test's, and killed when dropped.
pub fn program(path: &str) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(path);
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("AETHER") {
            command.env_remove(name);
        }
    }
    command.kill_on_drop(true);
    // A working directory of its own, so that what a program keeps
    // relative to it (`[service] data_dir`) is never in the checkout nor
    // shared with another test; a test that restarts a program on the same
    // data sets the same directory.
    if let Ok(dir) = tempfile::Builder::new().prefix("aether-program-").tempdir() {
        command.current_dir(dir.keep());
    }
    command
}

/// The path of binary `bin` of workspace package `package`, built now (quietly, offline) in
/// the profile of the running test binary, `test_exe` (an `env!("CARGO_BIN_EXE_...")` of the
/// calling package, whose directory the binary is put in).
///
/// For tests that run programs of other packages of the workspace: cargo builds only the
/// calling package's binaries for its tests. Blocking: call it from `spawn_blocking` in async
/// tests. When the binary is up to date, this is a quick no-op build.
///
/// With `AETHER_TEST_PROGRAMS_BUILT` set (`.ci/test`, whose run builds every binary of the
/// workspace first), a binary already there is taken as it is: a build of one package, with
/// its own features, in the middle of a run would make the run's later steps build again.
pub fn workspace_program(test_exe: &str, package: &str, bin: &str) -> std::path::PathBuf {
    let dir = std::path::Path::new(test_exe)
        .parent()
        .expect("a binary lives in a directory");
    if std::env::var_os("AETHER_TEST_PROGRAMS_BUILT").is_some() && dir.join(bin).is_file() {
        return dir.join(bin);
    }
    let mut build = std::process::Command::new(std::env::var("CARGO").unwrap_or("cargo".into()));
    build.args(["build", "--quiet", "--offline", "-p", package, "--bin", bin]);
    build
        .arg("--manifest-path")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/../../Cargo.toml"));
    if dir.ends_with("release") {
        build.arg("--release");
    }
    let status = build.status().expect("cargo runs");
    assert!(status.success(), "cargo build of {package}: {status}");
    let program = dir.join(bin);
    assert!(program.exists(), "{}", program.display());
    program
}
