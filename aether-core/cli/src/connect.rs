//! Reaching the bus: the settings directory's `[aether]` section if given,
//! the flags over it, and errors that say what to do.

use aether_core::{Aether, AetherConfig, ConnectErrorKind, lan::LanOptions};
use aether_ops::settings::client::{Access, aether_section};

use crate::{Failure, cli::Connection};

/// The server when none is given.
pub const DEFAULT_URL: &str = "nats://127.0.0.1:4222";

/// How the server was chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reached {
    /// Named: --nats, AETHER_NATS or the settings directory.
    Named,
    /// This machine's node of the bus, or one found on the LAN.
    Node,
    /// None named and no node runs: the default URL.
    Default,
}

/// The settings `--config-dir` gives (the defaults without it).
pub fn settings(connection: &Connection) -> Result<AetherConfig, Failure> {
    Ok(match &connection.config_dir {
        Some(dir) => {
            if !dir.join("default.toml").is_file() {
                return Err(Failure::usage(format!(
                    "{} has no default.toml: give the directory the programs read (--config-dir config)",
                    dir.display()
                )));
            }
            aether_section(dir).map_err(|e| Failure::usage(format!("settings: {e}")))?
        }
        None => AetherConfig::default(),
    })
}

/// The aether's settings: the directory's, then the flags.
pub async fn config(connection: &Connection) -> Result<(AetherConfig, Reached), Failure> {
    let mut config = settings(connection)?;
    let mut reached = Reached::Named;
    if !connection.nats.is_empty() {
        config.nats.urls = connection.nats.clone();
    } else if config.nats.urls.is_empty() || connection.config_dir.is_none() {
        // This machine's node of the bus, if one runs, or with the bus's
        // secret file one on the LAN; else the default.
        let lan = LanOptions {
            bus: connection.bus.clone(),
            secret_file: connection.secret_file.clone(),
            ..LanOptions::default()
        };
        match lan.find(config.clone()).await {
            Ok(found) => {
                config = found;
                reached = Reached::Node;
            }
            Err(e) if e.kind() == ConnectErrorKind::Unreachable => {
                if connection.secret_file.is_some() {
                    // The bus was asked for by its secret: no fallback.
                    return Err(Failure::runtime(format!("cannot connect: {e}")));
                }
                config.nats.urls = vec![DEFAULT_URL.to_string()];
                reached = Reached::Default;
            }
            Err(e) => return Err(Failure::usage(format!("bus {:?}: {e}", connection.bus))),
        }
    }
    if reached != Reached::Node {
        access(connection).apply(&mut config);
    }
    if let Some(domain) = &connection.js_domain {
        if config.durability.channels.is_empty() {
            return Err(Failure::usage(format!(
                "--js-domain {domain:?} names where durable channels are stored, and none is \
                 configured: give the settings that name them (--config-dir DIR, \
                 [aether.durability] channels)"
            )));
        }
        config.durability.domain = Some(domain.clone());
    }
    // A tool that comes and goes: it tries once, and says so if it cannot.
    config.nats.retry_on_initial_connect = false;
    config.nats.connection_name = Some(format!("aether-cli {}", std::process::id()));
    config
        .validate()
        .map_err(|e| Failure::usage(format!("settings: {e}")))?;
    Ok((config, reached))
}

/// The credentials and TLS the flags give.
fn access(connection: &Connection) -> Access {
    Access {
        creds: connection.creds.clone(),
        token: connection.token.clone(),
        user: connection.user.clone(),
        password: connection.password.clone(),
        tls_ca: connection.tls_ca.clone(),
        tls_cert: connection.tls_cert.clone(),
        tls_key: connection.tls_key.clone(),
    }
}

/// Connects to the bus the flags name, and says where on stderr.
pub async fn connect(connection: &Connection) -> Result<Aether, Failure> {
    connect_with(connection, |_| {}).await
}

/// [`connect`], the settings changed by `adjust` first (a keeper is one of
/// the bus's time sources).
pub async fn connect_with(
    connection: &Connection,
    adjust: impl FnOnce(&mut aether_core::AetherConfig),
) -> Result<Aether, Failure> {
    let (mut config, reached) = config(connection).await?;
    adjust(&mut config);
    // Credentials in a URL are never printed.
    let urls = config.nats.redacted_urls().join(", ");
    let mut tried = Aether::connect(config.clone()).await;
    // A node's server refuses logins for an instant while it reads its
    // configuration again (a route added): one more try.
    if reached == Reached::Node
        && tried
            .as_ref()
            .is_err_and(|e| e.kind() == ConnectErrorKind::Authorization)
    {
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        tried = Aether::connect(config).await;
    }
    let aether = tried.map_err(|error| {
        let hint = match error.kind() {
            ConnectErrorKind::Authorization if reached == Reached::Node => {
                "this machine's node refused the credentials its bus's secret gives: was the \
                 secret file replaced since the node started? (`aether node --status`)"
                    .to_string()
            }
            ConnectErrorKind::Unreachable => format!(
                "is a nats-server running there? Start one (`nats-server -js`), or this machine's node of a bus on the LAN (`aether node --secret-file FILE`), or name another with --nats URL (tried {urls})"
            ),
            ConnectErrorKind::Authorization => {
                "the server refused the credentials: check --creds, --token or --user/--password".to_string()
            }
            ConnectErrorKind::Credentials => {
                "the credentials file could not be read: check the path given to --creds".to_string()
            }
            ConnectErrorKind::Tls => {
                "TLS failed: check --tls-ca (the CA that signed the server's certificate), and --tls-cert/--tls-key if the server verifies clients".to_string()
            }
            _ => "check the settings".to_string(),
        };
        Failure::runtime(format!("cannot connect: {error}\n  {hint}"))
    })?;
    // The bus's time, before this command stamps or hops anything; a
    // machine whose clock is off is told so (a command logs no warnings).
    aether_core::bustime::start(&aether).await;
    eprintln!("{}", connected_line(&urls, reached, &connection.bus));
    let clock = aether_core::bustime::status();
    if clock.sources > 0
        && let Some(note) =
            aether_core::bustime::off_note(clock.offset_ns, aether.config().state.max_drift)
    {
        eprintln!("note: {note}");
    }
    Ok(aether)
}

/// The line that says which servers the tool uses, and why.
pub fn connected_line(urls: &str, reached: Reached, bus: &str) -> String {
    match reached {
        Reached::Named => format!("connected to {urls}"),
        Reached::Node => format!("connected to {urls}: a node of bus {bus:?}, over TLS"),
        Reached::Default => format!(
            "connected to {urls}: no node of bus {bus:?} runs on this machine, so the default \
             server (--nats URL, AETHER_NATS or --config-dir names another; --secret-file \
             finds the bus on the LAN and never falls back)"
        ),
    }
}

/// Says, after a map came back with nothing, that no other replica of it
/// answered: the map may live on another bus.
pub fn alone_note(map: &aether_core::state::StateMap, urls: &str) -> String {
    format!(
        "no other replica of map {:?} answered on {urls}: is a program that holds it running \
         on this bus (and subject prefix)?",
        map.name()
    )
}
