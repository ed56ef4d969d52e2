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

use std::{convert::Infallible, sync::Arc};

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
use prometheus::IntGauge;
use tokio::sync::watch;

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

/// Counts an open `/events` stream while it lives.
struct Client(IntGauge);

impl Client {
    fn new(gauge: IntGauge) -> Self {
        gauge.inc();
        Self(gauge)
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.0.dec();
    }
}

async fn events(
    State(state): State<AppState>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let client = Client::new(state.metrics.dashboard_clients.clone());
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
    Sse::new(stream).keep_alive(KeepAlive::default())
}
