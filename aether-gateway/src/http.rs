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
//!
//! [`serve_http`] runs them on hyper's HTTP/1.1 server with two limits from
//! `[gateway]`: `header_read_timeout_ms`, after which a connection that has
//! not sent a whole request head is closed, and `max_connections`, the most
//! connections open at once.

use std::{
    convert::Infallible,
    io,
    sync::Arc,
    time::{Duration, Instant},
};

use aether_core::Aether;
use aether_ops::shutdown::Shutdown;
use axum::{
    Router,
    extract::State,
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
    server::graceful::GracefulShutdown,
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
    stop: Shutdown,
) -> io::Result<()> {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let connections = GracefulShutdown::new();
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
        let stream = tokio::select! {
            () = stop.wait() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
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
        let connection =
            http.serve_connection(TokioIo::new(stream), TowerToHyperService::new(app.clone()));
        let connection = connections.watch(connection);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "HTTP connection ended");
            }
            drop(permit);
        });
    }
    drop(listener);
    connections.shutdown().await;
    Ok(())
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
