//! A bridge client for tests: a WebSocket to `/bridge/<map>` speaking the
//! bridge's JSON messages, with bounded reads.

use std::{
    net::SocketAddr,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::{
    MaybeTlsStream, WebSocketStream, connect_async,
    tungstenite::{Message, protocol::CloseFrame},
};

pub type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A connection to the bridge.
pub struct Client {
    pub socket: Socket,
    pub replica: String,
    logical: u32,
    /// Every message received, in order (after `connect`: the `hello`, then
    /// the `snapshot` with the entries of its parts).
    pub received: Vec<Value>,
    /// The `snapshot-part`s `connect` read, and the length of the longest
    /// message then.
    pub parts: Vec<Value>,
    pub longest: usize,
}

/// Unix nanoseconds now.
pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

/// A stamp as the bridge writes it.
pub fn stamp(physical_ns: u64, logical: u32, replica: &str) -> String {
    format!("{physical_ns:016x}-{logical:08x}-{replica}")
}

/// Opens a WebSocket to `/bridge/<map>` without saying anything.
pub async fn open(addr: SocketAddr, map: &str) -> Socket {
    let url = format!("ws://{addr}/bridge/{map}");
    let (socket, _) = tokio::time::timeout(Duration::from_secs(10), connect_async(url))
        .await
        .expect("the upgrade within 10 s")
        .expect("the upgrade");
    socket
}

/// Opens a WebSocket to `/bridge/<map>` from the loopback address `from`
/// (any of 127.0.0.0/8), without saying anything; `None` if the gateway
/// did not take it within 10 s.
pub async fn open_from(addr: SocketAddr, map: &str, from: std::net::IpAddr) -> Option<Socket> {
    let url = format!("ws://{addr}/bridge/{map}");
    let connect = async {
        let tcp = tokio::net::TcpSocket::new_v4().ok()?;
        tcp.bind(SocketAddr::new(from, 0)).ok()?;
        let stream = tcp.connect(addr).await.ok()?;
        let (socket, _) = tokio_tungstenite::client_async(url, MaybeTlsStream::Plain(stream))
            .await
            .ok()?;
        Some(socket)
    };
    tokio::time::timeout(Duration::from_secs(10), connect)
        .await
        .ok()
        .flatten()
}

impl Client {
    /// Connects with the replica id `replica`, sends `auth`; reads nothing.
    pub async fn connect_as(addr: SocketAddr, map: &str, token: &str, replica: &str) -> Self {
        let mut socket = open(addr, map).await;
        let auth = json!({"type": "auth", "token": token, "replica": replica});
        socket.send(Message::text(auth.to_string())).await.unwrap();
        Self {
            socket,
            replica: replica.to_string(),
            logical: 0,
            received: Vec::new(),
            parts: Vec::new(),
            longest: 0,
        }
    }

    /// Connects, sends `auth` with `token` and a replica id, and reads the
    /// `hello` and the `snapshot`.
    pub async fn connect(addr: SocketAddr, map: &str, token: &str) -> Self {
        let mut client = Self::connect_silent(addr, map, token).await;
        let hello = client.next().await;
        assert_eq!(hello["type"], "hello", "{hello}");
        let mut entries = serde_json::Map::new();
        loop {
            let mut message = client.next().await;
            client.longest = client.longest.max(message.to_string().len());
            let Some(part) = message["entries"].as_object_mut() else {
                panic!("a snapshot: {message}");
            };
            entries.append(part);
            match message["type"].as_str() {
                Some("snapshot-part") => client.parts.push(client.received.pop().unwrap()),
                Some("snapshot") => {
                    client.received.pop();
                    client
                        .received
                        .push(json!({"type": "snapshot", "entries": entries}));
                    return client;
                }
                _ => panic!("a snapshot: {message}"),
            }
        }
    }

    /// Connects and sends `auth`; reads nothing.
    pub async fn connect_silent(addr: SocketAddr, map: &str, token: &str) -> Self {
        let mut socket = open(addr, map).await;
        let replica = format!("{:016x}", rand_u64());
        let auth = json!({"type": "auth", "token": token, "replica": replica});
        socket.send(Message::text(auth.to_string())).await.unwrap();
        Self {
            socket,
            replica,
            logical: 0,
            received: Vec::new(),
            parts: Vec::new(),
            longest: 0,
        }
    }

    /// A fresh stamp of this client's replica.
    pub fn stamp(&mut self) -> String {
        self.logical += 1;
        stamp(now_ns(), self.logical, &self.replica)
    }

    pub async fn send(&mut self, message: Value) {
        self.send_text(message.to_string()).await;
    }

    pub async fn send_text(&mut self, text: String) {
        self.socket.send(Message::text(text)).await.unwrap();
    }

    /// Sets `key` to `value`, stamped now; returns the stamp.
    pub async fn set(&mut self, key: &str, value: Value) -> String {
        let stamp = self.stamp();
        self.send(json!({"type": "set", "key": key, "value": value, "stamp": stamp}))
            .await;
        stamp
    }

    /// The next JSON message, within 10 s.
    pub async fn next(&mut self) -> Value {
        self.try_next(Duration::from_secs(10))
            .await
            .expect("a message within 10 s")
    }

    /// The next JSON message within `wait`, or `None` (closed, or nothing).
    pub async fn try_next(&mut self, wait: Duration) -> Option<Value> {
        loop {
            let message = tokio::time::timeout(wait, self.socket.next())
                .await
                .ok()??;
            match message.ok()? {
                Message::Text(text) => {
                    let value: Value = serde_json::from_str(&text).expect("JSON from the bridge");
                    self.received.push(value.clone());
                    return Some(value);
                }
                Message::Close(_) => return None,
                _ => {}
            }
        }
    }

    /// Reads until a message of `type` (and `key`, if given) comes, within 10 s.
    pub async fn until(&mut self, kind: &str, key: Option<&str>) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let message = self
                .try_next(left)
                .await
                .unwrap_or_else(|| panic!("no {kind} {key:?} within 10 s: {:?}", self.received));
            // Changes that came together are looked in one by one, each as
            // the `set` or `delete` it would have been alone.
            let singles = if message["type"] == "changes" {
                message["changes"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(single)
                    .collect()
            } else {
                vec![message]
            };
            if let Some(found) = singles
                .into_iter()
                .find(|m| m["type"] == kind && key.is_none_or(|k| m["key"] == k))
            {
                return found;
            }
        }
    }
}

/// One change of a `changes` message as a `set` or `delete` message.
fn single(change: &Value) -> Value {
    let mut message = change.clone();
    let fields = message.as_object_mut().expect("a change is an object");
    let kind = if fields.remove("deleted").is_some() {
        "delete"
    } else {
        "set"
    };
    fields.insert("type".into(), kind.into());
    message
}

/// How the server closed `socket`: its close code and reason, read within
/// 10 s (messages before it are skipped).
pub async fn close_of(socket: &mut Socket) -> Option<(u16, String)> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match tokio::time::timeout(left, socket.next()).await {
            Err(_) => panic!("the bridge did not close within 10 s"),
            Ok(None) | Ok(Some(Err(_))) => return None,
            Ok(Some(Ok(Message::Close(frame)))) => {
                return frame
                    .map(|CloseFrame { code, reason }| (u16::from(code), reason.to_string()));
            }
            Ok(Some(Ok(_))) => {}
        }
    }
}

/// A random u64, not zero (the process's randomness is enough for ids).
pub fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(now_ns());
    h.finish() | 1
}
