//! One trace across two processes: the `aether-service-alpha` and
//! `aether-service-beta` programs on a nats-server of their own, with
//! `[telemetry] otlp_endpoint` pointing at a small OTLP/HTTP receiver in this
//! test. The spans of one order form one trace: alpha's `aether.emit` of
//! `orders.created` -> beta's `aether.receive` -> beta's `aether.emit` of its
//! answer -> alpha's `aether.receive` of the answer, each the parent of the
//! next, the wave's trace context carried in the NATS envelope.

use std::{
    path::PathBuf,
    process::Stdio,
    sync::{Arc, Mutex},
    time::Duration,
};

use aether_testkit::NatsServer;
use axum::{Router, body::Bytes, extract::State, http::StatusCode, routing::post};
use opentelemetry_proto::tonic::{
    collector::trace::v1::ExportTraceServiceRequest,
    common::v1::{KeyValue, any_value::Value},
    trace::v1::span::SpanKind,
};
use prost::Message;
use tokio::io::{AsyncBufReadExt, BufReader};

const ALPHA: &str = env!("CARGO_BIN_EXE_aether-service-alpha");
const BOUND: Duration = Duration::from_secs(60);

/// A span as the receiver got it.
#[derive(Clone, Debug)]
struct Received {
    service: String,
    name: String,
    kind: i32,
    trace_id: Vec<u8>,
    span_id: Vec<u8>,
    parent_span_id: Vec<u8>,
    attributes: Vec<(String, String)>,
}

impl Received {
    fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    fn is(&self, service: &str, name: &str, channel_prefix: &str) -> bool {
        self.service == service
            && self.name == name
            && self
                .attribute("messaging.destination.name")
                .is_some_and(|channel| channel.starts_with(channel_prefix))
    }
}

type Spans = Arc<Mutex<Vec<Received>>>;

fn text(value: &KeyValue) -> String {
    match value.value.as_ref().and_then(|v| v.value.as_ref()) {
        Some(Value::StringValue(s)) => s.clone(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

/// POST /v1/traces: OTLP/HTTP with a protobuf body.
async fn traces(State(spans): State<Spans>, body: Bytes) -> (StatusCode, &'static str) {
    let Ok(request) = ExportTraceServiceRequest::decode(body) else {
        return (StatusCode::BAD_REQUEST, "not an ExportTraceServiceRequest");
    };
    let mut spans = spans.lock().unwrap();
    for resource in request.resource_spans {
        let service = resource
            .resource
            .iter()
            .flat_map(|r| &r.attributes)
            .find(|kv| kv.key == "service.name")
            .map(text)
            .unwrap_or_default();
        for span in resource.scope_spans.into_iter().flat_map(|s| s.spans) {
            spans.push(Received {
                service: service.clone(),
                name: span.name,
                kind: span.kind,
                trace_id: span.trace_id,
                span_id: span.span_id,
                parent_span_id: span.parent_span_id,
                attributes: span
                    .attributes
                    .iter()
                    .map(|kv| (kv.key.clone(), text(kv)))
                    .collect(),
            });
        }
    }
    (StatusCode::OK, "")
}

/// An OTLP/HTTP receiver on a free loopback port: its base URL and what
/// it received.
async fn receiver() -> (String, Spans) {
    let spans = Spans::default();
    let app = Router::new()
        .route("/v1/traces", post(traces))
        .with_state(spans.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, spans)
}

/// The four spans of one order, alpha -> beta -> beta -> alpha, each the
/// parent of the next, in one trace.
fn round_trip(spans: &[Received]) -> Option<[Received; 4]> {
    const ALPHA_NAME: &str = "aether-service-alpha";
    const BETA_NAME: &str = "aether-service-beta";
    let child_of = |parent: &Received, service: &str, name: &str, channel: &str| {
        spans
            .iter()
            .find(|s| {
                s.is(service, name, channel)
                    && s.trace_id == parent.trace_id
                    && s.parent_span_id == parent.span_id
            })
            .cloned()
    };
    spans
        .iter()
        .filter(|s| s.is(ALPHA_NAME, "aether.emit", "orders.created"))
        .find_map(|order| {
            let heard = child_of(order, BETA_NAME, "aether.receive", "orders.created")?;
            let answer = child_of(&heard, BETA_NAME, "aether.emit", "inventory.")?;
            let back = child_of(&answer, ALPHA_NAME, "aether.receive", "inventory.")?;
            Some([order.clone(), heard, answer, back])
        })
}

/// The `aether-service-beta` program, built by cargo: the binaries of a
/// dependency are not built for this package's tests.
fn beta_program() -> PathBuf {
    aether_testkit::workspace_program(ALPHA, "aether-service-beta", "aether-service-beta")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_order_is_one_trace_from_alpha_to_beta_and_back() {
    // Built before the clock starts: a first build takes a while.
    let beta_program = tokio::task::spawn_blocking(beta_program).await.unwrap();
    tokio::time::timeout(BOUND, trace(beta_program))
        .await
        .expect("within 60 s");
}

async fn trace(beta_program: PathBuf) {
    let (endpoint, spans) = receiver().await;
    let server = NatsServer::builder().start().await.expect("nats-server");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("default.toml"),
        format!("[telemetry]\notlp_endpoint = \"{endpoint}\"\n[alpha]\ndrain_ms = 5000\n"),
    )
    .unwrap();
    let start = |program: &str| {
        let mut command = aether_testkit::program(program);
        command
            .arg("--config-dir")
            .arg(dir.path())
            .args(["--nats", &server.url()])
            // Spans leave every 100 ms rather than every 5 s.
            .env("OTEL_BSP_SCHEDULE_DELAY", "100")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        command
    };

    // Beta first, until it resonates on the orders.
    let mut beta = start(beta_program.to_str().unwrap()).spawn().unwrap();
    let mut beta_log = BufReader::new(beta.stderr.take().unwrap()).lines();
    loop {
        let line = beta_log
            .next_line()
            .await
            .unwrap()
            .expect("beta logs that it resonates");
        if line.contains("service-beta resonates") {
            break;
        }
    }
    tokio::spawn(async move { while let Ok(Some(_)) = beta_log.next_line().await {} });

    // Alpha: three orders, each answered, then it exits (sending its last
    // spans on the way out).
    let alpha = start(ALPHA)
        .args(["--count", "3", "--rate", "20"])
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&alpha.stdout);
    assert!(
        alpha.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&alpha.stderr)
    );
    assert!(stdout.contains("created 3,"), "{stdout}");
    assert!(stdout.contains("unanswered 0"), "{stdout}");

    // Beta's spans leave while it runs: wait for a whole round trip.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let [order, heard, answer, back] = loop {
        if let Some(found) = round_trip(&spans.lock().unwrap()) {
            break found;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no round trip in 20 s; received: {:#?}",
            spans.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(order.kind, SpanKind::Producer as i32);
    assert_eq!(heard.kind, SpanKind::Consumer as i32);
    assert_eq!(answer.kind, SpanKind::Producer as i32);
    assert_eq!(back.kind, SpanKind::Consumer as i32);
    assert_eq!(order.attribute("messaging.system"), Some("aether"));
    assert_eq!(
        order.attribute("messaging.client.id"),
        Some("service-alpha")
    );
    assert_eq!(heard.attribute("messaging.client.id"), Some("service-beta"));
    assert_eq!(heard.attribute("aether.source"), Some("service-alpha"));
    assert_eq!(
        order.attribute("messaging.message.id"),
        heard.attribute("messaging.message.id"),
        "one wave, emitted and received"
    );
    assert_eq!(
        order.parent_span_id,
        Vec::<u8>::new(),
        "the order starts the trace"
    );
    assert!(order.trace_id.iter().any(|b| *b != 0));

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(beta.id().unwrap() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = beta.wait().await.unwrap();
    assert!(status.success(), "beta exits with status 0: {status}");
}
