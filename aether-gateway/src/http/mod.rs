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
//! | `/page.js` | what the collaborative pages' scripts share |
//! | `/kanban`, `/kanban.js` | a kanban board on the bridge's `kanban` map |
//! | `/notebook`, `/notebook.js` | a Markdown notebook, a key per line, on the bridge's `notebook` map |
//! | `/map`, `/map.js` | any bridged map read live, a row per key (`map#token=…&map=<map>`) |
//! | `/aether.js`, `/aether/*.js`, `/aether.d.ts` | the bridge's JavaScript client (ES modules: `aether.js` imports those of `aether/`) and its TypeScript declarations |
//!
//! [`serve_http`] runs them on hyper's HTTP/1.1 server with these limits
//! from `[gateway]`:
//!
//! - `header_read_timeout_ms`: a connection that has not sent a whole
//!   request head by then is closed (and a TLS handshake not done by then
//!   is dropped);
//! - `write_stall_timeout_ms`: a connection whose peer takes no byte of
//!   what is written to it for that long is closed (`stall.rs`), so a peer
//!   that never reads holds neither its connection nor its `/events` slot;
//! - `max_connections` and `max_connections_per_address`: the connections
//!   open at once, in all and from one IP address; at the first, the
//!   connection that has waited longest for a request makes room for the
//!   new one (`connections.rs`). A WebSocket, once upgraded, counts under
//!   the bridge's own caps instead;
//! - `max_event_streams` and `max_event_streams_per_address`: the `/events`
//!   streams open at once, in all and from one address; past them a
//!   stream is answered 503;
//! - `allowed_hosts`: the `Host` names answered, on every path; another is
//!   answered 421 (`host.rs`).
//!
//! With `[gateway.tls]` every connection is TLS.

pub(crate) mod connections;
mod host;
mod stall;

use std::{
    collections::HashMap,
    convert::Infallible,
    io,
    net::{IpAddr, SocketAddr},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use aether_core::Aether;
use aether_ops::shutdown::Shutdown;
use axum::{
    Extension, Router,
    extract::{ConnectInfo, Path, State},
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
use prometheus::{IntCounterVec, IntGauge};
use tokio::{
    net::TcpListener,
    sync::{mpsc, watch},
};

pub(crate) use self::host::AllowedHosts;
use self::{connections::Connections, stall::WriteStall};

use crate::{
    metrics::{Metrics, TEXT_CONTENT_TYPE},
    observer::is_ready,
    snapshot::Published,
};

/// The dashboard page.
const DASHBOARD: &str = include_str!("../dashboard.html");
/// The collaborative board.
const BOARD: &str = include_str!("../../web/board.html");
/// The bridge's JavaScript client.
const CLIENT_JS: &str = include_str!("../../web/aether.js");
/// The modules it imports (`./aether/<file>`), served at `/aether/<file>`.
const CLIENT_MODULES: [(&str, &str); 5] = [
    ("cache.js", include_str!("../../web/aether/cache.js")),
    ("error.js", include_str!("../../web/aether/error.js")),
    ("json.js", include_str!("../../web/aether/json.js")),
    ("outbox.js", include_str!("../../web/aether/outbox.js")),
    ("stamps.js", include_str!("../../web/aether/stamps.js")),
];
/// Its TypeScript declarations.
const CLIENT_TS: &str = include_str!("../../web/aether.d.ts");
/// The board's script.
const BOARD_JS: &str = include_str!("../../web/board.js");
/// What the collaborative pages' scripts share.
const PAGE_JS: &str = include_str!("../../web/page.js");
/// The kanban board and its script.
const KANBAN: &str = include_str!("../../web/kanban.html");
const KANBAN_JS: &str = include_str!("../../web/kanban.js");
/// The notebook and its script.
const NOTEBOOK: &str = include_str!("../../web/notebook.html");
const NOTEBOOK_JS: &str = include_str!("../../web/notebook.js");
/// Any bridged map, read live, and its script.
const MAP: &str = include_str!("../../web/map.html");
const MAP_JS: &str = include_str!("../../web/map.js");

/// What the handlers share.
#[derive(Clone)]
pub(crate) struct AppState {
    pub(crate) metrics: Metrics,
    pub(crate) aether: Aether,
    pub(crate) snapshots: watch::Receiver<Arc<Published>>,
    pub(crate) shutdown: Shutdown,
    /// The places of open `/events` streams.
    pub(crate) event_streams: Arc<EventStreams>,
    /// The browser bridge, when maps are bridged.
    pub(crate) bridge: Option<Arc<crate::bridge::Bridge>>,
    /// The `Host` names answered.
    pub(crate) allowed_hosts: AllowedHosts,
}

/// The bridge's handler takes the bridge alone.
impl axum::extract::FromRef<AppState> for Option<Arc<crate::bridge::Bridge>> {
    fn from_ref(state: &AppState) -> Self {
        state.bridge.clone()
    }
}

/// The places of open `/events` streams: `max_event_streams` in all,
/// fewer than the connections, so that streams, which live long, cannot
/// take every connection and starve `/metrics` and `/health`; and
/// `max_event_streams_per_address` for one IP address. When every place is
/// taken, a newcomer from an address holding fewer than the most takes the
/// oldest place of the addresses holding the most (that stream ends; a
/// dashboard's reconnects by itself): streams from many addresses that
/// never read cannot keep a dashboard out for long, unless they come from
/// as many addresses as there are places.
#[derive(Debug)]
pub(crate) struct EventStreams {
    state: Mutex<Places>,
    max: usize,
    per_address: usize,
}

/// The places taken, oldest first.
#[derive(Debug, Default)]
struct Places {
    next: u64,
    taken: Vec<(u64, IpAddr, Arc<tokio::sync::Notify>)>,
}

impl Places {
    fn count(&self, address: IpAddr) -> usize {
        self.taken.iter().filter(|(_, a, _)| *a == address).count()
    }
}

impl EventStreams {
    pub(crate) fn new(max: usize, per_address: usize) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(Places::default()),
            max,
            per_address,
        })
    }

    /// A place for a stream to `address`, or the refusal's text.
    fn take(self: &Arc<Self>, address: IpAddr) -> Result<StreamPlace, &'static str> {
        let mut places = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let mine = places.count(address);
        if mine >= self.per_address {
            return Err("too many open event streams from this address \
                 (max_event_streams_per_address); try again later\n");
        }
        if places.taken.len() >= self.max {
            // The address that holds the most places gives up its oldest,
            // if it holds more than this one would.
            let mut counts: HashMap<IpAddr, usize> = HashMap::new();
            for (_, a, _) in &places.taken {
                *counts.entry(*a).or_insert(0) += 1;
            }
            let Some(&most) = counts.values().max() else {
                return Err("too many open event streams (max_event_streams); try again later\n");
            };
            if most <= mine {
                return Err("too many open event streams (max_event_streams); try again later\n");
            }
            // Of the addresses holding the most, the oldest place goes.
            let oldest = places
                .taken
                .iter()
                .position(|(_, a, _)| counts[a] == most)
                .expect("counted above");
            let (_, _, evicted) = places.taken.remove(oldest);
            evicted.notify_one();
        }
        places.next += 1;
        let id = places.next;
        let evicted = Arc::new(tokio::sync::Notify::new());
        places.taken.push((id, address, evicted.clone()));
        Ok(StreamPlace {
            streams: self.clone(),
            id,
            evicted,
        })
    }
}

/// An `/events` stream's place, given back when it is dropped (if it was
/// not taken by a newcomer before).
struct StreamPlace {
    streams: Arc<EventStreams>,
    id: u64,
    /// Told when a newcomer took this place: the stream ends.
    evicted: Arc<tokio::sync::Notify>,
}

impl Drop for StreamPlace {
    fn drop(&mut self) {
        let mut places = self.streams.state.lock().unwrap_or_else(|e| e.into_inner());
        places.taken.retain(|(id, _, _)| *id != self.id);
    }
}

/// The routes, on `state`; a request for a host name not allowed is
/// answered 421 whatever its path.
pub(crate) fn router(state: AppState) -> Router {
    let allowed_hosts = state.allowed_hosts.clone();
    Router::new()
        .route("/", get(dashboard))
        .route("/metrics", get(metrics))
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/events", get(events))
        .route("/snapshot", get(snapshot))
        .route("/bridge/{map}", get(crate::bridge::upgrade))
        .route("/board", get(|| page(BOARD)))
        .route("/board.js", get(|| script(BOARD_JS)))
        .route("/page.js", get(|| script(PAGE_JS)))
        .route("/kanban", get(|| page(KANBAN)))
        .route("/kanban.js", get(|| script(KANBAN_JS)))
        .route("/notebook", get(|| page(NOTEBOOK)))
        .route("/notebook.js", get(|| script(NOTEBOOK_JS)))
        .route("/map", get(|| page(MAP)))
        .route("/map.js", get(|| script(MAP_JS)))
        .route("/aether.js", get(|| script(CLIENT_JS)))
        .route("/aether/{file}", get(client_module))
        .route("/aether.d.ts", get(client_ts))
        .with_state(state)
        .layer(axum::middleware::from_fn_with_state(
            allowed_hosts,
            host::check,
        ))
}

/// The limits [`serve_http`] holds every connection to.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ServeLimits {
    /// A connection that has not sent a whole request head within this
    /// (from when it opens, or from the previous answer) is closed.
    pub(crate) header_read_timeout: Duration,
    /// A write that makes no progress for this long fails, and closes its
    /// connection.
    pub(crate) write_stall_timeout: Duration,
    /// Most connections open at once; at the limit, the one that has waited
    /// longest for a request makes room for a new one.
    pub(crate) max_connections: usize,
    /// Most connections open at once from one IP address; one more is
    /// closed at once.
    pub(crate) max_connections_per_address: usize,
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

/// Most time between two warnings that a connection was refused.
const REFUSED_WARNING_EVERY: Duration = Duration::from_secs(10);

/// Serves `app` on `listener`, HTTP/1.1, within `limits`, until `stop`:
/// then stops accepting (the listener is closed), lets each connection
/// finish the request it is answering, closes the idle ones, and returns
/// once every connection is closed. The connections it closes itself are
/// counted in `closed`, by reason ([`CLOSE_REASONS`]).
///
/// `axum::serve` gives no access to hyper's connection settings, so this is
/// its accept loop with hyper's `header_read_timeout` (on a Tokio timer),
/// each connection's IO in a [`WriteStall`], and a place for each in
/// [`Connections`], taken before it is served and given back when it
/// closes. Each connection's task holds a clone of a channel's sender: the
/// channel closes once every task has ended.
pub(crate) async fn serve_http(
    listener: TcpListener,
    app: Router,
    limits: ServeLimits,
    tls: Option<tokio_rustls::TlsAcceptor>,
    closed: IntCounterVec,
    stop: Shutdown,
) -> io::Result<()> {
    let stalled = closed.with_label_values(&["stalled"]);
    let connections = Connections::new(
        limits.max_connections,
        limits.max_connections_per_address,
        closed,
    );
    let app = app.layer(axum::middleware::from_fn(connections::track));
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    let (open_tx, mut all_closed) = mpsc::channel::<()>(1);
    let mut last_refused_warning: Option<Instant> = None;
    loop {
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
        let connection = match connections.open(peer.ip()) {
            Ok(connection) => connection,
            Err(reason) => {
                if last_refused_warning.is_none_or(|at| at.elapsed() >= REFUSED_WARNING_EVERY) {
                    last_refused_warning = Some(Instant::now());
                    tracing::warn!(
                        reason,
                        %peer,
                        max_connections = limits.max_connections,
                        max_connections_per_address = limits.max_connections_per_address,
                        "HTTP connection refused: closed at once (counted in \
                         aether_gateway_http_connections_closed_total)"
                    );
                }
                drop(stream);
                continue;
            }
        };
        // Answers go out at once: without this, a second small write (the
        // bridge's snapshot after its hello) waits for the peer's delayed
        // acknowledgement of the first, some 40 ms.
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%error, "TCP_NODELAY could not be set");
        }
        let stream = WriteStall::new(stream, limits.write_stall_timeout).counting(stalled.clone());
        let service = TowerToHyperService::new(
            app.clone()
                .layer(Extension(connection.tracker()))
                .layer(Extension(ConnectInfo(peer))),
        );
        let (http, tls, stop, open) = (http.clone(), tls.clone(), stop.clone(), open_tx.clone());
        let handshake = limits.header_read_timeout;
        tokio::spawn(async move {
            match tls {
                None => serve_one(&http, stream, service, &connection, &stop).await,
                Some(tls) => match tokio::time::timeout(handshake, tls.accept(stream)).await {
                    Ok(Ok(stream)) => serve_one(&http, stream, service, &connection, &stop).await,
                    Ok(Err(error)) => tracing::debug!(%error, %peer, "TLS handshake failed"),
                    Err(_) => tracing::debug!(%peer, "TLS handshake not done in time"),
                },
            }
            drop((connection, open));
        });
    }
    drop(listener);
    // Every connection's task drops its sender once it ends.
    drop(open_tx);
    let _ = all_closed.recv().await;
    Ok(())
}

/// Serves one connection (upgrades to WebSocket too) until it closes; or
/// until `stop`, then it finishes the request it is answering and closes;
/// or until it must make room, then it closes at once unless it has begun
/// answering a request since, which it finishes first.
async fn serve_one<I, S>(
    http: &http1::Builder,
    io: I,
    service: S,
    place: &connections::Connection,
    stop: &Shutdown,
) where
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
        () = place.must_make_room() => {
            if !place.answering() {
                tracing::debug!("HTTP connection closed to make room");
                return;
            }
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

/// A collaborative page: its own scripts only, its bridge anywhere.
async fn page(html: &'static str) -> impl IntoResponse {
    (
        [(
            header::CONTENT_SECURITY_POLICY,
            "default-src 'self'; connect-src 'self' ws: wss:; style-src 'self' 'unsafe-inline'",
        )],
        Html(html),
    )
}

async fn script(js: &'static str) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        js,
    )
}

/// One of the client's modules, or 404.
async fn client_module(Path(file): Path<String>) -> axum::response::Response {
    match CLIENT_MODULES.iter().find(|(name, _)| *name == file) {
        Some((_, js)) => script(js).await.into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
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

/// Counts an open `/events` stream while it lives, and holds its place.
struct Client(IntGauge, #[allow(dead_code)] StreamPlace);

impl Client {
    fn new(gauge: IntGauge, place: StreamPlace) -> Self {
        gauge.inc();
        Self(gauge, place)
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.0.dec();
    }
}

async fn events(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, (StatusCode, &'static str)> {
    let place = state
        .event_streams
        .take(peer.ip())
        .map_err(|why| (StatusCode::SERVICE_UNAVAILABLE, why))?;
    let client = Client::new(state.metrics.dashboard_clients.clone(), place);
    // The latest snapshot at once, then each new one. The stream ends when
    // the observer stops (its sender is dropped), so shutdown is not held
    // up by open dashboards.
    let stream = stream::unfold(
        (state.snapshots, true, client),
        |(mut snapshots, first, client)| async move {
            if !first {
                let evicted = client.1.evicted.clone();
                tokio::select! {
                    changed = snapshots.changed() => changed.ok()?,
                    // A newcomer took this place.
                    () = evicted.notified() => return None,
                }
            }
            let json = snapshots.borrow_and_update().json.clone();
            let event = Event::default().event("snapshot").data(&*json);
            Some((Ok(event), (snapshots, false, client)))
        },
    );
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

#[cfg(test)]
mod tests {
    /// The modules served are the files of `web/aether/`, each as it is
    /// there: a module added to the client is served, or this fails.
    #[test]
    fn the_client_modules_served_are_the_files_of_its_folder() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/web/aether");
        let mut files: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().into_string().unwrap())
            .collect();
        files.sort();
        let served: Vec<&str> = super::CLIENT_MODULES
            .iter()
            .map(|(name, _)| *name)
            .collect();
        assert_eq!(served, files);
        for (name, text) in super::CLIENT_MODULES {
            assert_eq!(
                std::fs::read_to_string(format!("{dir}/{name}")).unwrap(),
                text,
                "{name}"
            );
        }
    }
}
