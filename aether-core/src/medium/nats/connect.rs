//! Connecting to NATS: the client's options from the settings (TLS,
//! credentials, reconnects), files checked before the handshake, and
//! connect errors that say what to do.

#[allow(clippy::wildcard_imports)]
use super::*;

/// `Ok` if `path` (the setting `key`) can be read and holds a PEM block
/// whose label ends with `label` (`CERTIFICATE`, `PRIVATE KEY`): a file that
/// cannot be used is refused here, naming it, rather than deep in the
/// handshake.
pub(super) fn pem_file(path: &std::path::Path, key: &str, label: &str) -> Result<(), ConnectError> {
    let text = std::fs::read(path).map_err(|e| {
        ConnectError::new(
            ConnectErrorKind::Tls,
            format!("{key} = {}: cannot be read ({e})", path.display()),
        )
    })?;
    let text = String::from_utf8_lossy(&text);
    let found = text.lines().any(|line| {
        line.strip_prefix("-----BEGIN ")
            .and_then(|rest| rest.strip_suffix("-----"))
            .is_some_and(|l| l.ends_with(label))
    });
    if !found {
        return Err(ConnectError::new(
            ConnectErrorKind::Tls,
            format!(
                "{key} = {}: holds no PEM {label} (a block that begins \"-----BEGIN ...{label}-----\")",
                path.display()
            ),
        ));
    }
    Ok(())
}

/// Takes credentials out of the servers' URLs (`nats://user:password@host`,
/// `nats://token@host`) into the options, where no `[aether.nats.auth]` is
/// set: the client then never holds them in an address it may log.
pub(super) fn credentials_out_of_urls(
    servers: Vec<async_nats::ServerAddr>,
    mut options: ConnectOptions,
    auth: &crate::config::NatsAuth,
) -> (Vec<async_nats::ServerAddr>, ConnectOptions) {
    let configured = auth.token.is_some()
        || auth.user.is_some()
        || auth.nkey_seed.is_some()
        || auth.credentials_file.is_some();
    let mut taken = false;
    let servers = servers
        .into_iter()
        .map(|server| {
            let Some(user) = server.username().map(str::to_string) else {
                return server;
            };
            let password = server.password().map(str::to_string);
            if !configured && !taken {
                options = match password {
                    Some(password) => options.clone().user_and_password(user, password),
                    None => options.clone().token(user),
                };
                taken = true;
            }
            let mut url = server.clone().into_inner();
            let stripped = url.set_username("").is_ok() && url.set_password(None).is_ok();
            match stripped {
                true => async_nats::ServerAddr::from_url(url).unwrap_or(server),
                false => server,
            }
        })
        .collect();
    (servers, options)
}

/// The error of a failed connect to `urls` (redacted), saying which servers
/// were tried and, for TLS, what to check.
pub(super) fn connect_error(urls: &[String], e: async_nats::ConnectError) -> ConnectError {
    use async_nats::ConnectErrorKind as K;
    let kind = match e.kind() {
        K::Authentication | K::AuthorizationViolation => ConnectErrorKind::Authorization,
        K::Tls => ConnectErrorKind::Tls,
        // A refused handshake comes back as an I/O error around the rustls
        // error: retrying would not help, so say it is TLS.
        K::Io if is_tls_handshake(&e) => ConnectErrorKind::Tls,
        K::ServerParse => ConnectErrorKind::Config,
        _ => ConnectErrorKind::Unreachable,
    };
    let tried = urls.join(", ");
    let mut cause = e.to_string();
    let mut source: &dyn std::error::Error = &e;
    while let Some(next) = source.source() {
        let text = next.to_string();
        if !cause.contains(&text) {
            cause = format!("{cause}: {text}");
        }
        source = next;
    }
    let advice = match kind {
        ConnectErrorKind::Tls => tls_advice(&cause),
        ConnectErrorKind::Authorization => {
            "check the credentials in [aether.nats.auth] (or the URL) against the server's users"
        }
        ConnectErrorKind::Unreachable => {
            "check that a nats-server listens there and the address and port are right"
        }
        _ => "check [aether.nats]",
    };
    let mut error = ConnectError::new(kind, format!("{tried}: {cause}; {advice}"));
    error.set_source(e);
    error
}

/// What to check for a TLS failure, from the words of its cause.
pub(super) fn tls_advice(cause: &str) -> &'static str {
    if cause.contains("InvalidContentType") || cause.contains("corrupt message") {
        "the server did not answer in TLS: it serves plain NATS on that port; enable TLS on \
         the server, or set [aether.nats.tls] required = false and use a nats:// URL"
    } else if cause.contains("BadCertificate")
        || cause.contains("CertificateRequired")
        || cause.contains("certificate required")
    {
        "the server refused this client's certificate: it requires one (mutual TLS); set \
         [aether.nats.tls] cert_file and key_file to a certificate signed by a CA the server \
         trusts"
    } else if cause.contains("UnknownIssuer") || cause.contains("invalid peer certificate") {
        "the server's certificate is not signed by a trusted authority: set \
         [aether.nats.tls] ca_file to the CA that signed it"
    } else if cause.contains("NotValidForName") {
        "the server's certificate does not name the host in the URL: connect by a name the \
         certificate holds"
    } else {
        "check [aether.nats.tls] (ca_file, cert_file, key_file) and the server's TLS settings"
    }
}

/// Whether a connect error is a TLS handshake refused (a certificate not
/// trusted, or refused by the server).
pub(super) fn is_tls_handshake(e: &async_nats::ConnectError) -> bool {
    std::error::Error::source(e)
        .and_then(|s| s.downcast_ref::<std::io::Error>())
        .and_then(|io| io.get_ref())
        .is_some_and(|inner| inner.is::<async_nats::rustls::Error>())
}

/// The client's options from the configuration.
pub(super) async fn options(
    config: &AetherConfig,
    shared: &Arc<Shared>,
) -> Result<ConnectOptions, ConnectError> {
    let nats = &config.nats;
    let max_delay = nats.reconnect_delay_max;
    let events = shared.clone();
    let mut options = ConnectOptions::new()
        .subscription_capacity(nats.subscription_capacity)
        .client_capacity(nats.client_capacity)
        .connection_timeout(nats.connect_timeout)
        .ping_interval(nats.ping_interval)
        .request_timeout(Some(config.request_timeout))
        // Reply subjects are channels under the prefix, so a replier emits
        // its reply like any wave.
        .custom_inbox_prefix(nats.inbox_prefix())
        .max_reconnects(nats.max_reconnects)
        .reconnect_delay_callback(move |attempts| {
            let exponent = attempts.min(16) as u32;
            Duration::from_millis(10u64 << exponent).min(max_delay)
        })
        .event_callback(move |event| {
            let shared = events.clone();
            async move { shared.on_event(event) }
        });
    if let Some(name) = &nats.connection_name {
        options = options.name(name);
    }
    if nats.retry_on_initial_connect {
        options = options.retry_on_initial_connect();
    }
    if nats.tls_required() {
        options = options.require_tls(true);
    }
    if let Some(ca) = &nats.tls.ca_file {
        pem_file(ca, "nats.tls.ca_file", "CERTIFICATE")?;
        options = options.add_root_certificates(ca.clone());
    }
    if let (Some(cert), Some(key)) = (&nats.tls.cert_file, &nats.tls.key_file) {
        pem_file(cert, "nats.tls.cert_file", "CERTIFICATE")?;
        pem_file(key, "nats.tls.key_file", "PRIVATE KEY")?;
    }
    if let (Some(cert), Some(key)) = (&nats.tls.cert_file, &nats.tls.key_file) {
        options = options.add_client_certificate(cert.clone(), key.clone());
    }
    let auth = &nats.auth;
    if let Some(token) = &auth.token {
        options = options.token(token.expose().to_string());
    }
    if let (Some(user), Some(password)) = (&auth.user, &auth.password) {
        options = options.user_and_password(user.clone(), password.expose().to_string());
    }
    if let Some(seed) = &auth.nkey_seed {
        options = options.nkey(seed.expose().to_string());
    }
    if let Some(path) = &auth.credentials_file {
        options = options.credentials_file(path).await.map_err(|e| {
            ConnectError::new(
                ConnectErrorKind::Credentials,
                format!("cannot use credentials file {}: {e}", path.display()),
            )
        })?;
    }
    Ok(options)
}
