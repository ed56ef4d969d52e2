//! A bus on a LAN with nothing to configure but one secret file.
//!
//! `aether node` runs a NATS server for its machine, with a cluster
//! listener and client and route passwords derived from the bus's secret
//! ([`LanSecret`]), and leaves a [`NodeRecord`] for the programs of its
//! machine. A program calls [`Aether::discover`]: it finds the node of its
//! bus on this machine (or one announced on the LAN) and connects over TLS,
//! checking the node's certificate against the bus's own authority
//! ([`LanAuthority`], derived from the secret too), with the password its
//! own copy of the secret gives. A program without the secret cannot
//! connect; a node without it cannot join; a host without it can neither
//! read a link nor stand in for a node.
//!
//! | module | idea |
//! | --- | --- |
//! | `secret` | the secret file, and what is derived from it (passwords, fingerprint, seal key) |
//! | `tls` | the bus's certificate authority, derived from the secret; nodes' certificates |
//! | `record` | the record a running node leaves for the programs of its machine |
//! | `scout` | nodes announced on the LAN by multicast DNS, checked, and found |

mod record;
mod scout;
mod secret;
mod tls;

use std::{path::PathBuf, time::Duration};

pub use record::{NodeRecord, runtime_dir};
pub use scout::{
    Announcement, Ignored, Renames, SERVICE_TYPE, Scout, Sighting, Sightings, Signed,
    check_node_name, local_addresses,
};
pub use secret::{
    CLIENT_USER, LanSecret, MAX_SECRET_BYTES, MIN_SECRET_BYTES, ROUTE_USER, SecretError,
};
pub use tls::{LanAuthority, NodeCertificate, machine_addresses};

use crate::{Aether, AetherConfig, ConnectError, ConnectErrorKind};

/// The bus a node or program belongs to when none is named.
pub const DEFAULT_BUS: &str = "aether";

/// `Ok` if `bus` may name a bus: 1 to 64 ASCII letters, digits, `-` and
/// `_` (it names the NATS cluster and the node record's file).
pub fn check_bus_name(bus: &str) -> Result<(), String> {
    let valid = !bus.is_empty()
        && bus.len() <= 64
        && bus
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if valid {
        Ok(())
    } else {
        Err(format!(
            "{bus:?} cannot name a bus: use 1 to 64 letters, digits, '-' or '_'"
        ))
    }
}

/// How a program finds its bus on the LAN (`[aether.lan]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LanOptions {
    /// The bus's name. Default [`DEFAULT_BUS`].
    pub bus: String,
    /// The bus's secret file; default: the one the node of this machine
    /// was started with.
    pub secret_file: Option<PathBuf>,
    /// Where node records are ([`runtime_dir`] by default).
    pub runtime_dir: Option<PathBuf>,
    /// How long to look for a node on the LAN. Default 3 s.
    pub wait: Duration,
    /// The network interface to look on (default: every interface).
    pub interface: Option<String>,
}

impl Default for LanOptions {
    fn default() -> Self {
        Self {
            bus: DEFAULT_BUS.to_string(),
            secret_file: None,
            runtime_dir: None,
            wait: Duration::from_secs(3),
            interface: None,
        }
    }
}

impl LanOptions {
    /// The options `[aether.lan]` gives, with `AETHER_BUS` and
    /// `AETHER_SECRET_FILE` where it names no bus or secret file.
    pub fn from_config(lan: &crate::config::LanConfig) -> Self {
        let env = |key: &str| std::env::var(key).ok().filter(|v| !v.is_empty());
        Self {
            bus: lan
                .bus
                .clone()
                .or_else(|| env("AETHER_BUS"))
                .unwrap_or_else(|| DEFAULT_BUS.to_string()),
            secret_file: lan
                .secret_file
                .clone()
                .or_else(|| env("AETHER_SECRET_FILE").map(PathBuf::from)),
            runtime_dir: None,
            wait: lan.wait,
            interface: lan.interface.clone(),
        }
    }

    /// The settings that reach the node this finds: `config` with the
    /// node's URL and the password from the secret.
    pub fn resolve(&self, config: AetherConfig) -> Result<AetherConfig, ConnectError> {
        check_bus_name(&self.bus).map_err(|e| ConnectError::new(ConnectErrorKind::Config, e))?;
        let dir = self.runtime_dir.clone().unwrap_or_else(runtime_dir);
        let record = NodeRecord::read_in(&dir, &self.bus)
            .map_err(|e| ConnectError::new(ConnectErrorKind::Config, e.to_string()))?;
        let Some(record) = record else {
            return Err(ConnectError::new(
                ConnectErrorKind::Unreachable,
                format!(
                    "no node of bus {:?} runs on this machine (no live record in {}): start one \
                     with `aether node --bus {} --secret-file FILE`, or name a server with \
                     --nats URL / AETHER_NATS",
                    self.bus,
                    dir.display(),
                    self.bus
                ),
            ));
        };
        let secret_file = self.secret_file.as_ref().unwrap_or(&record.secret_file);
        let secret = LanSecret::load(secret_file)
            .map_err(|e| ConnectError::new(ConnectErrorKind::Credentials, e.to_string()))?;
        reaching(config, vec![record.url], &secret, &dir)
    }
}

/// `config` reaching a node at `urls` over TLS, trusting only the bus's
/// authority (its certificate written in `dir`), with the password
/// `secret` gives and no other credentials.
fn reaching(
    mut config: AetherConfig,
    urls: Vec<String>,
    secret: &LanSecret,
    dir: &std::path::Path,
) -> Result<AetherConfig, ConnectError> {
    let ca_file = secret.authority().write_in(dir).map_err(|e| {
        ConnectError::new(
            ConnectErrorKind::Config,
            format!(
                "cannot write the bus's certificate authority in {}: {e}",
                dir.display()
            ),
        )
    })?;
    config.nats.urls = urls;
    config.nats.auth = crate::config::NatsAuth {
        user: Some(CLIENT_USER.to_string()),
        password: Some(secret.client_password()),
        ..Default::default()
    };
    config.nats.tls = crate::config::NatsTls {
        required: true,
        ca_file: Some(ca_file),
        cert_file: None,
        key_file: None,
    };
    // Sealed channels with no key of their own: the bus's seal key.
    for rule in &mut config.security.encryption {
        if rule.key.is_none() && rule.key_file.is_none() && rule.key_env.is_none() {
            rule.key = Some(secret.seal_key());
        }
    }
    // Signatures asked for with no key named: keys derived from the secret.
    let security = &mut config.security;
    if security.require_signatures
        && security.signing_keys.is_empty()
        && security.signing_key_files.is_empty()
        && security.signing_key_base.is_none()
    {
        security.signing_key_base = Some(secret.signing_base());
    }
    Ok(config)
}

/// How often [`LanOptions::find`] looks again for this machine's node record.
const RECORD_POLL: Duration = Duration::from_millis(100);

impl LanOptions {
    /// The settings that reach a node of the bus: this machine's
    /// ([`resolve`](Self::resolve)), looked for until
    /// [`wait`](Self::wait) ends (a program started with its node, at
    /// boot, runs before the node has written its record), and meanwhile,
    /// with the secret file, one announced on the LAN: whichever is found
    /// first. The error says what it waited for.
    pub async fn find(&self, config: AetherConfig) -> Result<AetherConfig, ConnectError> {
        let deadline = tokio::time::Instant::now() + self.wait;
        let local = async {
            loop {
                match self.resolve(config.clone()) {
                    Err(e)
                        if e.kind() == ConnectErrorKind::Unreachable
                            && tokio::time::Instant::now() < deadline =>
                    {
                        tokio::time::sleep(RECORD_POLL).await;
                    }
                    done => return done,
                }
            }
        };
        let waited = |e: ConnectError, what: &str| {
            ConnectError::new(
                e.kind(),
                format!(
                    "waited {:?} for this machine's node of bus {:?} to appear{what}: {e}",
                    self.wait, self.bus
                ),
            )
        };
        let unreachable = |e: &ConnectError| e.kind() == ConnectErrorKind::Unreachable;
        if self.secret_file.is_none() {
            return local
                .await
                .map_err(|e| if unreachable(&e) { waited(e, "") } else { e });
        }
        let remote = self.find_on_lan(config.clone());
        tokio::pin!(local, remote);
        tokio::select! {
            found = &mut local => match found {
                Err(e) if unreachable(&e) => remote
                    .await
                    .map_err(|e| waited(e, " and for one on the LAN")),
                done => done,
            },
            found = &mut remote => match found {
                Err(e) if unreachable(&e) => local
                    .await
                    .map_err(|_| waited(e, " and for one on the LAN")),
                done => done,
            },
        }
    }

    /// [`resolve`](Self::resolve) once, else a node of the bus announced
    /// on the LAN within [`wait`](Self::wait) (this needs the secret file:
    /// the node of this machine cannot lend its own).
    async fn find_on_lan(&self, config: AetherConfig) -> Result<AetherConfig, ConnectError> {
        let unreachable = match self.resolve(config.clone()) {
            Ok(config) => return Ok(config),
            Err(e) if e.kind() == ConnectErrorKind::Unreachable => e,
            Err(e) => return Err(e),
        };
        let Some(secret_file) = &self.secret_file else {
            return Err(ConnectError::new(
                ConnectErrorKind::Unreachable,
                format!(
                    "{unreachable}; to find a node of the bus on the LAN instead, give the bus's                      secret file (--secret-file, AETHER_SECRET_FILE or [aether.lan] secret_file)"
                ),
            ));
        };
        let secret = LanSecret::load(secret_file)
            .map_err(|e| ConnectError::new(ConnectErrorKind::Credentials, e.to_string()))?;
        let scout = Scout::start(self.interface.as_deref())
            .map_err(|e| ConnectError::new(ConnectErrorKind::Unreachable, e))?;
        let found = match scout.browse(&self.bus, &secret) {
            Ok(sightings) => tokio::time::timeout(self.wait, async {
                while let Some(sighting) = sightings.next().await {
                    match sighting {
                        Sighting::Announced(node) => return Some(node),
                        Sighting::Ignored(name, why) => {
                            tracing::info!(node = %name, %why, "passed over a node's announcement");
                        }
                        Sighting::Withdrawn(_) => {}
                    }
                }
                None
            })
            .await,
            Err(e) => {
                tracing::warn!(error = %e, "cannot look for nodes on the LAN");
                Ok(None)
            }
        };
        // Stopping waits for the goodbye packets: not on this task.
        std::thread::spawn(move || scout.stop());
        let Ok(Some(node)) = found else {
            return Err(ConnectError::new(
                ConnectErrorKind::Unreachable,
                format!(
                    "no node of bus {:?} with this secret answered on the LAN within {:?}: start one here (`aether node --bus {} --secret-file FILE`), check that the other machines' nodes run with the same bus and secret file, or name a server with --nats URL / AETHER_NATS",
                    self.bus, self.wait, self.bus
                ),
            ));
        };
        let urls = node.clients.iter().map(|a| format!("nats://{a}")).collect();
        let dir = self.runtime_dir.clone().unwrap_or_else(runtime_dir);
        reaching(config, urls, &secret, &dir)
    }
}

impl Aether {
    /// Connects to the bus `lan` names with `config`'s other settings: to
    /// the node of this machine ([`NodeRecord`]), else to one announced on
    /// the LAN ([`LanOptions::find`]), with the password the bus's secret
    /// gives. Fails with a message that says what to run when none is
    /// found.
    pub async fn discover(config: AetherConfig, lan: &LanOptions) -> Result<Aether, ConnectError> {
        Aether::connect(lan.find(config).await?).await
    }

    /// [`discover`](Self::discover) with the bus `config`'s `[aether.lan]`
    /// names ([`LanOptions::from_config`]).
    pub async fn join_lan(config: AetherConfig) -> Result<Aether, ConnectError> {
        let lan = LanOptions::from_config(&config.lan);
        Aether::discover(config, &lan).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bus_names_are_checked() {
        assert!(check_bus_name("home").is_ok());
        assert!(check_bus_name("lab-2_b").is_ok());
        for bad in ["", "a b", "x.y", "../etc", &"x".repeat(65), "é"] {
            assert!(check_bus_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_program_reaches_the_node_of_its_machine_with_the_derived_password() {
        let dir = tempfile::tempdir().unwrap();
        let secret_file = dir.path().join("secret");
        std::fs::write(&secret_file, LanSecret::generate()).unwrap();
        let lan = LanOptions {
            bus: "home".into(),
            runtime_dir: Some(dir.path().to_path_buf()),
            ..LanOptions::default()
        };
        let none = lan.resolve(AetherConfig::default()).unwrap_err();
        assert_eq!(none.kind(), ConnectErrorKind::Unreachable);
        assert!(
            none.to_string().contains("aether node --bus home"),
            "{none}"
        );
        NodeRecord {
            bus: "home".into(),
            name: "pc".into(),
            url: "nats://127.0.0.1:4999".into(),
            monitor: "http://127.0.0.1:8999".into(),
            secret_file: secret_file.clone(),
            pid: std::process::id(),
            data: None,
        }
        .write_in(dir.path())
        .unwrap();
        let config = lan.resolve(AetherConfig::default()).unwrap();
        assert_eq!(config.nats.urls, ["nats://127.0.0.1:4999"]);
        assert_eq!(config.nats.auth.user.as_deref(), Some(CLIENT_USER));
        let secret = LanSecret::load(&secret_file).unwrap();
        assert_eq!(config.nats.auth.password, Some(secret.client_password()));
        assert_eq!(config.security, crate::config::SecurityConfig::default());
        // Over TLS, trusting the bus's own authority only.
        assert!(config.nats.tls.required);
        let ca = config.nats.tls.ca_file.as_ref().unwrap();
        assert_eq!(
            std::fs::read_to_string(ca).unwrap(),
            secret.authority().pem()
        );
        // Sealed channels and signatures asked for without keys: the
        // secret's; a key named stays.
        let mut asking = AetherConfig::default();
        asking.security.require_signatures = true;
        asking.security.encryption = vec![
            crate::config::EncryptionRule {
                channels: vec!["home.>".into()],
                key: None,
                key_file: None,
                key_env: None,
            },
            crate::config::EncryptionRule {
                channels: vec!["lab.>".into()],
                key: None,
                key_file: None,
                key_env: Some("LAB_KEY".into()),
            },
        ];
        let config = lan.resolve(asking).unwrap();
        assert_eq!(config.security.encryption[0].key, Some(secret.seal_key()));
        assert_eq!(config.security.encryption[1].key, None);
        assert_eq!(
            config.security.signing_key_base,
            Some(secret.signing_base())
        );
        // A secret file of its own that is not one: a clear error.
        std::fs::write(dir.path().join("short"), "abc").unwrap();
        let wrong = LanOptions {
            secret_file: Some(dir.path().join("short")),
            ..lan
        };
        let err = wrong.resolve(AetherConfig::default()).unwrap_err();
        assert_eq!(err.kind(), ConnectErrorKind::Credentials);
        assert!(err.to_string().contains("at least 16"), "{err}");
    }
}
