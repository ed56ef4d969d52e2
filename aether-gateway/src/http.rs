//! The gateway's HTTP endpoints (axum, HTTP/1.1):
//!
//! | path | answer |
//! | --- | --- |
//! | `/metrics` | every metric, Prometheus text format |
//! | `/health` | 200 `ok` while the gateway runs (liveness) |
//! | `/ready` | 200 when its aether is embedded or connected to NATS, else 503 (readiness) |
//! | `/` | the live dashboard: one HTML page, plain JavaScript, no build step |
//! | `/events` | server-sent events: a `snapshot` event (JSON) every `snapshot_interval_ms` |
//! | `/snapshot` | the latest snapshot, JSON |
//! | `/bridge/{map}` | the browser bridge: a replicated map over WebSocket ([`crate::bridge`]) |
//! | `/board`, `/board.js` | the collaborative board, a page on the bridge's `board` map |
//! | `/aether.js`, `/aether.d.ts` | the bridge's JavaScript client (an ES module) and its TypeScript declarations |
//!
//! [`serve_http`] runs them on hyper's HTTP/1.1 server with two limits from
//! `[gateway]`: `header_read_timeout_ms`, after which a connection that has
//! not sent a whole request head is closed (and a TLS handshake not done by
//! then is dropped), and `max_connections`, the most HTTP connections open
//! at once (a WebSocket, once upgraded, counts under the bridge's own cap
//! instead). With `[gateway.tls]` every connection is TLS.

use std::{
    convert::Infallible,
    io,
    sync::Arc,
    time::{Duration, Instant},
};

use aether_core::Aether;
use aether_ops::shutdown::Shutdown;
use axum::{
    Extension, Router,
    extract::{ConnectInfo, State},
    http::{StatusCode, header},
    response::{
        Html, IntoResponse,
        sse::{Event, KeepAlive, Sse},
    },
    routing::get,
};
use futures_util::{Stream, stream};
use hyper::server::conn::http1;
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    service::TowerToHyperService,
};
use prometheus::IntGauge;
use tokio::{
    net::TcpListener,
    sync::{Semaphore, watch},
};

use crate::{
    metrics::{Metrics, TEXT_CONTENT_TYPE},
    observer::is_ready,
    snapshot::Published,
};

/// The dashboard page.
const DASHBOARD: &str = include_str!("dashboard.html");
/// The collaborative board.
const BOARD: &str = include_str!("../web/board.html");
/// The bridge's JavaScript client.
const CLIENT_JS: &str = include_str!("../web/aether.js");
/// Its TypeScript declarations.
const CLIENT_TS: &str = include_str!("../web/aether.d.ts");
/// The board's script.
const BOARD_JS: &str = include_str!("../web/board.js");

/// What the handlers share.
#[derive(Clone)]
pub(crate) struct AppState {
    pub(crate) metrics: Metrics,
    pub(crate) aether: Aether,
    pub(crate) snapshots: watch::Receiver<Arc<Published>>,
    pub(crate) shutdown: Shutdown,
    /// Permits for open `/events` streams (`max_event_streams`): fewer than
    /// the connections, so that streams, which live long, cannot take every
    /// connection and starve `/metrics` and `/health`.
    pub(crate) event_streams: Arc<Semaphore>,
    /// The browser bridge, when maps are bridged.
    pub(crate) bridge: Option<Arc<crate::bridge::Bridge>>,
}

/// The routes, on `state`.
pub(crate) fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(dashboard))
        .route("/metrics", get(metrics))
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/events", get(events))
        .route("/snapshot", get(snapshot))
        .route("/bridge/{map}", get(crate::bridge::upgrade))
        .route("/board", get(board))
        .route("/board.js", get(board_js))
        .route("/aether.js", get(client_js))
        .route("/aether.d.ts", get(client_ts))
        .with_state(state)
}

/// The limits [`serve_http`] holds every connection to.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ServeLimits {
    /// A connection that has not sent a whole request head within this
    /// (from when it opens, or from the previous answer) is closed.
    pub(crate) header_read_timeout: Duration,
    /// Most connections open at once; further ones wait in the listen
    /// backlog until one closes.
    pub(crate) max_connections: usize,
}

/// Reads `[gateway.tls]`'s certificate chain and key into a TLS acceptor.
pub(crate) fn tls_acceptor(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> Result<tokio_rustls::TlsAcceptor, String> {
    use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("certificate {}: {e}", cert.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "certificate {}: no certificate in it",
            cert.display()
        ));
    }
    let key =
        PrivateKeyDer::from_pem_file(key).map_err(|e| format!("key {}: {e}", key.display()))?;
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let config = tokio_rustls::rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("certificate and key: {e}"))?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// Most time between two warnings that the connection limit is reached.
const FULL_WARNING_EVERY: Duration = Duration::from_secs(10);

/// Serves `app` on `listener`, HTTP/1.1, within `limits`, until `stop`:
/// then stops accepting (the listener is closed), lets each connection
/// finish the request it is answering, closes the idle ones, and returns
/// once every connection is closed.
///
/// `axum::serve` gives no access to hyper's connection settings, so this is
/// its accept loop with hyper's `header_read_timeout` (on a Tokio timer)
/// and a semaphore of `max_connections` permits: a permit is taken before
/// each accept and given back when the connection closes.
pub(crate) async fn serve_http(
    listener: TcpListener,
    app: Router,
    limits: ServeLimits,
    tls: Option<tokio_rustls::TlsAcceptor>,
    stop: Shutdown,
) -> io::Result<()> {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    let mut last_full_warning: Option<Instant> = None;
    loop {
        let permit = match Arc::clone(&slots).try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                if last_full_warning.is_none_or(|at| at.elapsed() >= FULL_WARNING_EVERY) {
                    last_full_warning = Some(Instant::now());
                    tracing::warn!(
                        max_connections = limits.max_connections,
                        "HTTP connections at [gateway] max_connections: further ones wait \
                         until one closes"
                    );
                }
                tokio::select! {
                    () = stop.wait() => break,
                    permit = Arc::clone(&slots).acquire_owned() => match permit {
                        Ok(permit) => permit,
                        Err(_) => break, // never closed
                    },
                }
            }
        };
        let (stream, peer) = tokio::select! {
            () = stop.wait() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Per connection (reset before it was taken): the next
                    // one. Else (out of file descriptors): a pause first.
                    if !is_connection_error(&error) {
                        tracing::warn!(%error, "accepting an HTTP connection failed");
                        tokio::select! {
                            () = stop.wait() => break,
                            () = tokio::time::sleep(Duration::from_secs(1)) => {}
                        }
                    }
                    continue;
                }
            },
        };
        // Answers go out at once: without this, a second small write (the
        // bridge's snapshot after its hello) waits for the peer's delayed
        // acknowledgement of the first, some 40 ms.
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%error, "TCP_NODELAY could not be set");
        }
        let service = TowerToHyperService::new(app.clone().layer(Extension(ConnectInfo(peer))));
        let (http, tls, stop) = (http.clone(), tls.clone(), stop.clone());
        let handshake = limits.header_read_timeout;
        tokio::spawn(async move {
            match tls {
                None => serve_one(&http, stream, service, &stop).await,
                Some(tls) => match tokio::time::timeout(handshake, tls.accept(stream)).await {
                    Ok(Ok(stream)) => serve_one(&http, stream, service, &stop).await,
                    Ok(Err(error)) => tracing::debug!(%error, %peer, "TLS handshake failed"),
                    Err(_) => tracing::debug!(%peer, "TLS handshake not done in time"),
                },
            }
            drop(permit);
        });
    }
    drop(listener);
    // Every connection gives its permit back once it closed.
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    let _ = slots.acquire_many(all).await;
    Ok(())
}

/// Serves one connection (upgrades to WebSocket too) until it closes, or
/// until `stop`: then it finishes the request it is answering and closes.
async fn serve_one<I, S>(http: &http1::Builder, io: I, service: S, stop: &Shutdown)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    S: hyper::service::HttpService<hyper::body::Incoming> + Send,
    S::Future: Send + 'static,
    S::ResBody: Send + 'static,
    <S::ResBody as hyper::body::Body>::Data: Send,
    <S::ResBody as hyper::body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let connection = http
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    tokio::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        () = stop.wait() => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(error) = result {
        tracing::debug!(%error, "HTTP connection ended");
    }
}

/// Whether an accept error concerns that one connection only.
fn is_connection_error(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    // A scrape reads /proc and the resonance graph: short, but blocking.
    let metrics = state.metrics.clone();
    let body = tokio::task::spawn_blocking(move || metrics.render())
        .await
        .unwrap_or_default();
    ([(header::CONTENT_TYPE, TEXT_CONTENT_TYPE)], body)
}

async fn health() -> &'static str {
    "ok\n"
}

async fn ready(State(state): State<AppState>) -> (StatusCode, String) {
    let connection = state.aether.connection().state;
    if state.shutdown.is_triggered() {
        (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n".into())
    } else if is_ready(&state.aether) {
        (StatusCode::OK, format!("ready: {connection}\n"))
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {connection}\n"),
        )
    }
}

async fn dashboard() -> Html<&'static str> {
    Html(DASHBOARD)
}

async fn board() -> impl IntoResponse {
    (
        [(
            header::CONTENT_SECURITY_POLICY,
            "default-src 'self'; connect-src 'self' ws: wss:; style-src 'self' 'unsafe-inline'",
        )],
        Html(BOARD),
    )
}

async fn client_js() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        CLIENT_JS,
    )
}

async fn board_js() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        BOARD_JS,
    )
}

async fn client_ts() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        CLIENT_TS,
    )
}

async fn snapshot(State(state): State<AppState>) -> impl IntoResponse {
    let json = state.snapshots.borrow().json.clone();
    (
        [(header::CONTENT_TYPE, "application/json")],
        json.to_string(),
    )
}

/// Counts an open `/events` stream while it lives, and holds its permit.
struct Client(
    IntGauge,
    #[allow(dead_code)] tokio::sync::OwnedSemaphorePermit,
);

impl Client {
    fn new(gauge: IntGauge, permit: tokio::sync::OwnedSemaphorePermit) -> Self {
        gauge.inc();
        Self(gauge, permit)
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.0.dec();
    }
}

async fn events(
    State(state): State<AppState>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, (StatusCode, &'static str)> {
    let Ok(permit) = state.event_streams.clone().try_acquire_owned() else {
        return Err((
            StatusCode::SERVICE_UNAVAILABLE,
            "too many open event streams (max_event_streams); try again later\n",
        ));
    };
    let client = Client::new(state.metrics.dashboard_clients.clone(), permit);
    // The latest snapshot at once, then each new one. The stream ends when
    // the observer stops (its sender is dropped), so shutdown is not held
    // up by open dashboards.
    let stream = stream::unfold(
        (state.snapshots, true, client),
        |(mut snapshots, first, client)| async move {
            if !first {
                snapshots.changed().await.ok()?;
            }
            let json = snapshots.borrow_and_update().json.clone();
            let event = Event::default().event("snapshot").data(&*json);
            Some((Ok(event), (snapshots, false, client)))
        },
    );
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}
