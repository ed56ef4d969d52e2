//! Helpers for the gateway's tests: a gateway on an aether, a raw HTTP/1.1
//! client (no HTTP client crate needed), a server-sent-events reader, and
//! bounded waits.

#![allow(dead_code)]

use std::{
    future::Future,
    net::SocketAddr,
    time::{Duration, Instant},
};

use aether_core::Aether;
use aether_gateway::{Gateway, GatewayConfig};
use aether_ops::shutdown::Shutdown;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

/// A gateway config on a free loopback port, snapshots every 50 ms.
pub fn config() -> GatewayConfig {
    GatewayConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        snapshot_interval_ms: 50,
        ..Default::default()
    }
}

/// A gateway with `config` on `aether`.
pub async fn start(aether: &Aether, config: GatewayConfig) -> Gateway {
    Gateway::start(aether, config, Shutdown::new())
        .await
        .expect("the gateway starts")
}

/// An aether, a gateway with `config` on it bridging the map `board` with
/// `token` (the rest of `config.bridge` kept), and a service's replica of
/// that map.
pub async fn board(
    token: &str,
    mut config: GatewayConfig,
) -> (Aether, Gateway, aether_core::state::StateMap) {
    let aether = Aether::default();
    config.bridge.token = Some(token.into());
    config.bridge.maps = vec!["board".into()];
    let gateway = start(&aether, config).await;
    let service = aether_core::state::StateMap::builder("board")
        .node("service")
        .open(&aether)
        .await
        .unwrap();
    (aether, gateway, service)
}

/// An HTTP answer.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    /// The header lines, lower case.
    pub headers: String,
    pub body: String,
}

/// `GET path` on `addr`, HTTP/1.1, the connection closed after; within 10 s.
pub async fn get(addr: SocketAddr, path: &str) -> Response {
    tokio::time::timeout(Duration::from_secs(10), get_unbounded(addr, path))
        .await
        .unwrap_or_else(|_| panic!("GET {path}: no answer within 10 s"))
}

async fn get_unbounded(addr: SocketAddr, path: &str) -> Response {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("send");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.expect("read");
    let split = find(&raw, b"\r\n\r\n").expect("a header block");
    let head = String::from_utf8_lossy(&raw[..split]).to_lowercase();
    let mut body = raw[split + 4..].to_vec();
    if head.contains("transfer-encoding: chunked") {
        body = dechunk(&body);
    }
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status code");
    Response {
        status,
        headers: head,
        body: String::from_utf8(body).expect("UTF-8 body"),
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn dechunk(mut body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(end) = find(body, b"\r\n") {
        let size_text = String::from_utf8_lossy(&body[..end]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap().trim(), 16)
            .expect("a chunk size");
        if size == 0 {
            break;
        }
        let start = end + 2;
        out.extend_from_slice(&body[start..start + size]);
        body = &body[start + size + 2..];
    }
    out
}

/// Reads `/events` until a `snapshot` event's JSON satisfies `done`, within
/// `bound`; returns that JSON.
pub async fn sse_until(
    addr: SocketAddr,
    bound: Duration,
    done: impl FnMut(&serde_json::Value) -> bool,
) -> serde_json::Value {
    tokio::time::timeout(bound, read_events(addr, done))
        .await
        .unwrap_or_else(|_| panic!("no such snapshot within {bound:?}"))
        .expect("the event stream ended")
}

/// Reads `/events` until the server ends the stream, within `bound`;
/// returns how many snapshots came.
pub async fn sse_until_end(addr: SocketAddr, bound: Duration) -> usize {
    let mut count = 0;
    let ended = tokio::time::timeout(
        bound,
        read_events(addr, |_| {
            count += 1;
            false
        }),
    )
    .await
    .unwrap_or_else(|_| panic!("the event stream still runs after {bound:?}"));
    assert!(ended.is_none());
    count
}

/// Reads `/events` (HTTP/1.0, so the stream is not chunked) until a
/// `snapshot` event's JSON satisfies `done` (that JSON), or the stream
/// ends (`None`).
async fn read_events(
    addr: SocketAddr,
    mut done: impl FnMut(&serde_json::Value) -> bool,
) -> Option<serde_json::Value> {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream
        .write_all(b"GET /events HTTP/1.0\r\n\r\n")
        .await
        .expect("send");
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 8192];
    let mut headers_seen = false;
    loop {
        let n = stream.read(&mut chunk).await.expect("read");
        if n == 0 {
            return None;
        }
        buffer.extend_from_slice(&chunk[..n]);
        if !headers_seen {
            let Some(split) = find(&buffer, b"\r\n\r\n") else {
                continue;
            };
            let head = String::from_utf8_lossy(&buffer[..split]).to_lowercase();
            assert!(head.starts_with("http/1.0 200") || head.starts_with("http/1.1 200"));
            assert!(head.contains("text/event-stream"), "{head}");
            buffer.drain(..split + 4);
            headers_seen = true;
        }
        // Events end with a blank line.
        while let Some(end) = find(&buffer, b"\n\n") {
            let event: Vec<u8> = buffer.drain(..end + 2).collect();
            let text = String::from_utf8(event).expect("UTF-8 event");
            let mut name = "message";
            let mut data = String::new();
            for line in text.lines() {
                if let Some(rest) = line.strip_prefix("event:") {
                    name = rest.trim();
                } else if let Some(rest) = line.strip_prefix("data:") {
                    data.push_str(rest.trim_start());
                }
            }
            if name == "snapshot" {
                let json: serde_json::Value = serde_json::from_str(&data).expect("a JSON snapshot");
                if done(&json) {
                    return Some(json);
                }
            }
        }
    }
}

/// Waits until `check` returns `Some`, checking every 20 ms; panics naming
/// `what` after `bound`.
pub async fn eventually<T, F, Fut>(what: &str, bound: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(start.elapsed() < bound, "{what}: not within {bound:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The value of the sample `name{labels}` (labels as written, sorted by
/// name, or empty) in a text exposition.
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let (key, value) = line.rsplit_once(' ')?;
            (key == series).then(|| value.parse().ok())?
        })
}

/// Every label value of `label` in the samples of `name`.
pub fn label_values(text: &str, name: &str, label: &str) -> Vec<String> {
    let prefix = format!("{name}{{");
    let needle = format!("{label}=\"");
    text.lines()
        .filter(|line| line.starts_with(&prefix))
        .filter_map(|line| {
            let start = line.find(&needle)? + needle.len();
            let end = start + line[start..].find('"')?;
            Some(line[start..end].to_string())
        })
        .collect()
}

/// Spawns the gateway program `command` with its stdout piped, and reads
/// the address it serves from its first line (`aether-gateway: serving
/// http://ADDR/`), within `bound`.
pub async fn spawn_serving(
    mut command: tokio::process::Command,
    bound: Duration,
) -> (tokio::process::Child, SocketAddr) {
    let mut child = command
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("the gateway starts");
    let (_, line) = aether_testkit::process::first_line(&mut child, bound).await;
    let addr = line
        .trim_start_matches("aether-gateway: serving http://")
        .trim_end_matches('/')
        .parse()
        .unwrap_or_else(|_| panic!("an address: {line}"));
    (child, addr)
}

/// The sample services' programs, built for the test (before its clock
/// starts: a first build takes a while): `[beta, alpha]`.
pub async fn service_programs(gateway_exe: &'static str) -> [String; 2] {
    tokio::task::spawn_blocking(move || {
        ["aether-service-beta", "aether-service-alpha"].map(|bin| {
            aether_testkit::workspace_program(gateway_exe, bin, bin)
                .to_string_lossy()
                .into_owned()
        })
    })
    .await
    .unwrap()
}

/// The counts of a service's summary line, after its `service-x:` prefix
/// (`created 3, confirmed 2, ...`); a `dropped queue_full 3 replay 1` part
/// gives `dropped queue_full` and `dropped replay`.
pub fn summary_counts(line: &str) -> std::collections::HashMap<String, u64> {
    let mut counts = std::collections::HashMap::new();
    for part in line.split(", ") {
        let mut words = part.trim().split(' ');
        let Some(name) = words.next() else { continue };
        let rest: Vec<&str> = words.collect();
        if let [value] = rest[..]
            && let Ok(n) = value.parse()
        {
            counts.insert(name.to_string(), n);
        }
        if name == "dropped" {
            for pair in rest.chunks(2) {
                if let [reason, n] = pair
                    && let Ok(n) = n.parse()
                {
                    counts.insert(format!("dropped {reason}"), n);
                }
            }
        }
    }
    counts
}

/// The waves of `family` the gateway observed, in `/metrics` text.
pub fn observed(text: &str, family: &str) -> u64 {
    let series = format!("aether_gateway_waves_observed_total{{family=\"{family}\"}}");
    sample(text, &series).map_or(0, |value| value as u64)
}
pub mod bridge;
pub mod cdp;
pub mod programs;
