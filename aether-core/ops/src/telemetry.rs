//! Traces: the spans of the waves ([`aether_core::spans`]: `aether.emit`,
//! a producer span, and `aether.receive`, a consumer span, linked by the W3C
//! trace context each wave carries), and any other `tracing` span at `info`
//! or above, exported over OTLP/HTTP (protobuf) when
//! `[telemetry] otlp_endpoint` is set.
//!
//! [`init`] sets up the process's logging ([`crate::logging`]) and, when
//! an endpoint is set, beside it: an OpenTelemetry layer (its own filter,
//! `info`, so the log level never hides spans), a batch span processor
//! (its own thread; spans are sent every 5 s, or `OTEL_BSP_SCHEDULE_DELAY`
//! milliseconds, and at shutdown), and the bridge that lets
//! `aether-core` read and set span contexts ([`OtelSpanContexts`]). The
//! [`TelemetryGuard`] it returns sends what is left when dropped. Without
//! an endpoint (the default) there is none of this: no exporter, no thread,
//! and an emit pays one atomic load.
//!
//! ```no_run
//! use aether_ops::{settings::{LogSettings, TelemetrySettings}, telemetry};
//!
//! let settings = TelemetrySettings {
//!     otlp_endpoint: Some("http://127.0.0.1:4318".into()), // a collector's OTLP/HTTP port
//!     service_name: None,                                   // the program's name
//! };
//! let (log, _guard) = telemetry::init(&LogSettings::default(), &settings, "my-service")?;
//! // ... the program runs; dropping the guard sends the last spans.
//! # Ok::<(), telemetry::TelemetryError>(())
//! ```

use std::{fmt, io::IsTerminal, time::Duration};

use aether_core::{TraceContext, spans::SpanContexts};
use opentelemetry::{
    Context,
    trace::{
        SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState, TracerProvider,
    },
};
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::{Resource, trace::SdkTracerProvider};
use tracing::level_filters::LevelFilter;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::Layer;

use crate::{
    logging::{self, ExtraLayer, LogHandle, LoggingError},
    settings::{LogSettings, TelemetrySettings},
};

/// The path of the OTLP/HTTP traces endpoint, added to `otlp_endpoint`.
pub const TRACES_PATH: &str = "/v1/traces";
/// How long one export may take before it is given up.
pub const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);
/// The instrumentation scope of the spans.
pub const SCOPE: &str = "aether";

/// Telemetry could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TelemetryError {
    /// Logging could not be set up.
    #[error(transparent)]
    Logging(#[from] LoggingError),
    /// The OTLP exporter could not be built (for example an endpoint that
    /// is not a URL).
    #[error("telemetry.otlp_endpoint {endpoint:?}: the OTLP exporter cannot be built: {reason}")]
    Exporter {
        /// The endpoint of the settings.
        endpoint: String,
        /// Why.
        reason: String,
    },
    /// This process already exports spans.
    #[error("telemetry is already set up in this process")]
    AlreadyInitialized,
}

/// Sends the spans still waiting when dropped (or at [`TelemetryGuard::shutdown`]),
/// at most [`EXPORT_TIMEOUT`] long. Keep it until the program ends.
#[must_use = "dropping the guard stops the span export"]
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
}

impl TelemetryGuard {
    /// Whether spans are exported.
    pub fn exports(&self) -> bool {
        self.provider.is_some()
    }

    /// Sends the spans still waiting and stops the export. Then and at drop,
    /// nothing more is sent.
    pub fn shutdown(&mut self) {
        if let Some(provider) = self.provider.take()
            && let Err(error) = provider.shutdown_with_timeout(EXPORT_TIMEOUT)
        {
            tracing::warn!(%error, "the last spans may not have been exported");
        }
    }
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl fmt::Debug for TelemetryGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TelemetryGuard")
            .field("exports", &self.exports())
            .finish()
    }
}

/// Sets up the process's logging (as [`logging::init`]) and, when
/// `telemetry.otlp_endpoint` is set, the export of spans to it, reporting
/// as `telemetry.service_name` (default: `program`). Returns the handle
/// that changes the log level and the guard that ends the export.
///
/// Fails if logging is already set up in this process, if the log level
/// does not parse, or if the exporter cannot be built.
pub fn init(
    log: &LogSettings,
    telemetry: &TelemetrySettings,
    program: &str,
) -> Result<(LogHandle, TelemetryGuard), TelemetryError> {
    let Some(endpoint) = &telemetry.otlp_endpoint else {
        let handle = logging::init(log)?;
        return Ok((handle, TelemetryGuard { provider: None }));
    };
    let service = telemetry.service_name.as_deref().unwrap_or(program);
    let provider = exporting_provider(endpoint, service)?;
    let ansi = std::io::stderr().is_terminal();
    let (dispatch, handle) =
        logging::build_with(log, std::io::stderr, ansi, Some(layer(&provider)))?;
    let guard = TelemetryGuard {
        provider: Some(provider),
    };
    logging::install(dispatch)?;
    aether_core::spans::install(OtelSpanContexts)
        .map_err(|_| TelemetryError::AlreadyInitialized)?;
    tracing::info!(
        endpoint = %traces_url(endpoint),
        service,
        "spans are exported over OTLP"
    );
    Ok((handle, guard))
}

/// Why `endpoint` cannot be an `otlp_endpoint`, if it cannot: it must be
/// an `http://` URL with a host, an optional port and path, and nothing
/// else. (`https://` is refused: the exporter is built without TLS; send
/// to a collector nearby, which forwards.)
pub fn check_endpoint(endpoint: &str) -> Result<(), String> {
    if endpoint.starts_with("https://") {
        return Err("https is not supported: give the http:// URL of a collector nearby".into());
    }
    let Some(rest) = endpoint.strip_prefix("http://") else {
        return Err("must be an http:// URL, like http://127.0.0.1:4318".into());
    };
    if endpoint
        .chars()
        .any(|c| c.is_whitespace() || c.is_control())
    {
        return Err("must not contain spaces or control characters".into());
    }
    if rest.contains(['?', '#']) {
        return Err("must not have a query or a fragment".into());
    }
    let authority = rest.split('/').next().unwrap_or_default();
    // `host`, `host:port`, `[v6]` or `[v6]:port`.
    let (host, port) = match authority.strip_prefix('[') {
        Some(v6) => match v6.split_once(']') {
            Some((host, "")) => (host, None),
            Some((host, port)) => (host, Some(port.strip_prefix(':').unwrap_or(port))),
            None => ("", None),
        },
        None => match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        },
    };
    if let Some(port) = port
        && port.parse::<u16>().is_err()
    {
        return Err(format!("the port {port:?} is not a number from 0 to 65535"));
    }
    if host.is_empty() || host.contains('@') {
        return Err("must name a host, like http://127.0.0.1:4318".into());
    }
    Ok(())
}

/// `endpoint` with [`TRACES_PATH`], unless it ends with it already.
pub fn traces_url(endpoint: &str) -> String {
    let base = endpoint.trim_end_matches('/');
    if base.ends_with(TRACES_PATH) {
        base.to_string()
    } else {
        format!("{base}{TRACES_PATH}")
    }
}

/// A tracer provider that sends spans to `endpoint` over OTLP/HTTP
/// (protobuf) in batches, reporting as `service`.
fn exporting_provider(endpoint: &str, service: &str) -> Result<SdkTracerProvider, TelemetryError> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(traces_url(endpoint))
        .with_timeout(EXPORT_TIMEOUT)
        .build()
        .map_err(|error| TelemetryError::Exporter {
            endpoint: endpoint.to_string(),
            reason: error.to_string(),
        })?;
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(
            Resource::builder()
                .with_service_name(service.to_string())
                .build(),
        )
        .build())
}

/// The layer that hands the process's spans (at `info` or above) to
/// `provider`. With [`OtelSpanContexts`] installed, the spans of the waves
/// are linked across processes.
pub fn layer(provider: &SdkTracerProvider) -> ExtraLayer {
    Box::new(
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer(SCOPE))
            .with_filter(LevelFilter::INFO),
    )
}

/// The bridge between `tracing` spans made through
/// `tracing-opentelemetry` and the trace context a wave carries: installed
/// by [`init`] with [`aether_core::spans::install`].
#[derive(Clone, Copy, Debug, Default)]
pub struct OtelSpanContexts;

impl SpanContexts for OtelSpanContexts {
    fn context_of(&self, span: &tracing::Span) -> Option<TraceContext> {
        let context = span.context();
        let span = context.span();
        let context = span.span_context();
        if !context.is_valid() {
            return None;
        }
        TraceContext::new(
            context.trace_id().to_bytes(),
            context.span_id().to_bytes(),
            context.trace_flags().to_u8(),
        )
        .ok()
    }

    fn set_parent(&self, span: &tracing::Span, parent: TraceContext) {
        let remote = SpanContext::new(
            TraceId::from_bytes(parent.trace_id()),
            SpanId::from_bytes(parent.span_id()),
            TraceFlags::new(parent.flags()),
            true,
            TraceState::default(),
        );
        // Refused only for a span without the layer or already started:
        // the span then stays in its own trace.
        let _ = span.set_parent(Context::new().with_remote_span_context(remote));
    }
}

#[cfg(test)]
mod tests {
    use aether_core::{Aether, Vibrator, spans};
    use opentelemetry::trace::{SpanKind, TraceId};
    use opentelemetry_sdk::trace::{InMemorySpanExporter, SpanData};
    use tracing::Instrument;

    use super::*;
    use crate::test_support::Captured;

    fn find<'a>(spans: &'a [SpanData], name: &str, channel: &str) -> &'a SpanData {
        spans
            .iter()
            .find(|s| {
                s.name == name
                    && s.attributes.iter().any(|kv| {
                        kv.key.as_str() == "messaging.destination.name"
                            && kv.value.as_str() == channel
                    })
            })
            .unwrap_or_else(|| panic!("no {name} on {channel} in {spans:#?}"))
    }

    fn attribute(span: &SpanData, key: &str) -> String {
        span.attributes
            .iter()
            .find(|kv| kv.key.as_str() == key)
            .map(|kv| kv.value.as_str().into_owned())
            .unwrap_or_default()
    }

    /// On the embedded medium, through the real OpenTelemetry layer: the
    /// receiver's span is a child of the emitter's, and a reply emitted in
    /// it continues the trace. The log level (`warn`) does not hide them.
    #[tokio::test(flavor = "current_thread")]
    async fn spans_of_a_wave_form_one_trace() {
        let exporter = InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(exporter.clone())
            .build();
        let settings = LogSettings {
            level: "warn".into(),
            ..LogSettings::default()
        };
        let (dispatch, _log) = logging::build_with(
            &settings,
            Captured::default(),
            false,
            Some(layer(&provider)),
        )
        .unwrap();
        let _default = tracing::dispatcher::set_default(&dispatch);
        // The only installation in this test binary.
        spans::install(OtelSpanContexts).unwrap();

        let aether = Aether::default();
        let mut shop = Vibrator::create("shop", &aether).await.unwrap();
        shop.resonate_on("inventory.*").await.unwrap();
        let mut inventory = Vibrator::create("inventory", &aether).await.unwrap();
        inventory.resonate_on("orders.*").await.unwrap();

        shop.emit_wave("orders.created", 7).await.unwrap();
        let order = inventory.receive().await.unwrap();
        let span = inventory.span_of(&order);
        async { inventory.emit_wave("inventory.reserved", 7).await.unwrap() }
            .instrument(span)
            .await;
        let answer = shop.receive().await.unwrap();
        drop(shop.span_of(&answer));
        provider.force_flush().unwrap();

        let spans = exporter.get_finished_spans().unwrap();
        let emit = find(&spans, spans::EMIT_SPAN, "orders.created");
        let receive = find(&spans, spans::RECEIVE_SPAN, "orders.created");
        let reply = find(&spans, spans::EMIT_SPAN, "inventory.reserved");
        let back = find(&spans, spans::RECEIVE_SPAN, "inventory.reserved");
        assert_eq!(emit.span_kind, SpanKind::Producer);
        assert_eq!(receive.span_kind, SpanKind::Consumer);
        assert_eq!(attribute(emit, "messaging.system"), "aether");
        assert_eq!(
            attribute(emit, "messaging.message.id"),
            order.id().to_string()
        );
        assert_eq!(attribute(receive, "messaging.client.id"), "inventory");
        assert_eq!(attribute(receive, "aether.source"), "shop");

        let trace = emit.span_context.trace_id();
        assert_ne!(trace, TraceId::INVALID);
        let carried = order.trace_context().unwrap();
        assert_eq!(carried.trace_id(), trace.to_bytes());
        assert_eq!(carried.span_id(), emit.span_context.span_id().to_bytes());
        assert!(carried.is_sampled());
        assert_eq!(receive.span_context.trace_id(), trace);
        assert_eq!(receive.parent_span_id, emit.span_context.span_id());
        assert!(receive.parent_span_is_remote);
        assert_eq!(reply.span_context.trace_id(), trace);
        assert_eq!(reply.parent_span_id, receive.span_context.span_id());
        assert_eq!(back.span_context.trace_id(), trace);
        assert_eq!(back.parent_span_id, reply.span_context.span_id());
    }

    #[test]
    fn endpoints_are_checked() {
        for good in [
            "http://127.0.0.1:4318",
            "http://collector",
            "http://collector:4318/otlp/",
            "http://[::1]:4318",
        ] {
            assert_eq!(check_endpoint(good), Ok(()), "{good}");
        }
        for (bad, said) in [
            ("collector:4318", "http://"),
            ("https://collector:4318", "https is not supported"),
            ("http://", "host"),
            ("http://:4318", "host"),
            ("http://collector:43x8", "port"),
            ("http://collector:99999", "port"),
            ("http://collector:4318?x=1", "query"),
            ("http://coll ector", "spaces"),
            ("http://user@collector", "host"),
        ] {
            let why = check_endpoint(bad).unwrap_err();
            assert!(why.contains(said), "{bad}: {why}");
        }
    }

    #[test]
    fn the_traces_path_is_added_once() {
        for (endpoint, url) in [
            ("http://collector:4318", "http://collector:4318/v1/traces"),
            ("http://collector:4318/", "http://collector:4318/v1/traces"),
            (
                "http://collector:4318/v1/traces",
                "http://collector:4318/v1/traces",
            ),
            ("http://gw/otlp", "http://gw/otlp/v1/traces"),
        ] {
            assert_eq!(traces_url(endpoint), url);
        }
    }
}
