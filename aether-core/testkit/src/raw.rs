use std::collections::VecDeque;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpStream, ToSocketAddrs};
use tokio::time::{Instant, timeout, timeout_at};

use crate::Error;

/// Default bound for connecting and for [`RawNats::ping`].
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// A control line longer than this without `\r\n` is a protocol error.
const MAX_CONTROL_LINE: usize = 1 << 20;

/// Credentials [`RawNats`] puts into its `CONNECT`.
#[derive(Clone, Debug, Default)]
pub enum ClientAuth {
    /// No credentials.
    #[default]
    None,
    /// `"auth_token"`.
    Token(String),
    /// `"user"` and `"pass"`.
    UserPassword {
        /// User name.
        user: String,
        /// Password.
        password: String,
    },
    /// `"nkey"` and `"sig"`: the server nonce signed with this user seed (`SU...`).
    NKey {
        /// The user seed.
        seed: String,
    },
}

/// A message delivered by the server (`MSG`, or `HMSG` with raw headers).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawMessage {
    /// The subject it was published to.
    pub subject: String,
    /// The subscription id it was delivered for.
    pub sid: u64,
    /// The reply subject, if any.
    pub reply: Option<String>,
    /// The raw header block (`NATS/1.0\r\n...\r\n\r\n`) for `HMSG`, `None` for `MSG`.
    pub headers: Option<Vec<u8>>,
    /// The payload bytes.
    pub payload: Vec<u8>,
}

enum Op {
    Info(Value),
    Msg(RawMessage),
    Ping,
    Pong,
    Ok,
    Err(String),
}

/// A minimal NATS text-protocol client over a plain TCP stream (no TLS), for tests that must
/// show a non-Aether client interoperating, or that need byte-level control.
///
/// Writes go straight to the socket (no buffering, so no flush is needed); reads parse with
/// exact byte counts from an internal buffer, so dropping a pending read (for example under
/// `tokio::time::timeout`) loses no data.
#[derive(Debug)]
pub struct RawNats {
    reader: OwnedReadHalf,
    writer: OwnedWriteHalf,
    buf: Vec<u8>,
    info: Value,
    pending: VecDeque<RawMessage>,
    pings_sent: u64,
    pongs_received: u64,
}

impl std::fmt::Debug for Op {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Op::Info(_) => f.write_str("INFO"),
            Op::Msg(_) => f.write_str("MSG"),
            Op::Ping => f.write_str("PING"),
            Op::Pong => f.write_str("PONG"),
            Op::Ok => f.write_str("+OK"),
            Op::Err(e) => write!(f, "-ERR {e}"),
        }
    }
}

impl RawNats {
    /// Connects without credentials: reads `INFO`, sends `CONNECT` and `PING`, and waits for
    /// `PONG` (bounded by 5 s). A `-ERR` answer becomes [`Error::Server`].
    pub async fn connect(addr: impl ToSocketAddrs) -> Result<RawNats, Error> {
        Self::connect_with(addr, ClientAuth::None).await
    }

    /// Like [`connect`](Self::connect), with credentials in the `CONNECT`.
    pub async fn connect_with(
        addr: impl ToSocketAddrs,
        auth: ClientAuth,
    ) -> Result<RawNats, Error> {
        match timeout(DEFAULT_TIMEOUT, Self::connect_inner(addr, auth)).await {
            Ok(result) => result,
            Err(_) => Err(Error::Timeout(format!(
                "RawNats connect did not complete within {DEFAULT_TIMEOUT:?}"
            ))),
        }
    }

    /// Connects, reads the server's `INFO` line and closes again (bounded by 5 s). Works for
    /// TLS and auth servers too, since nats-server 2.9 sends `INFO` in plain text first.
    pub async fn fetch_info(addr: impl ToSocketAddrs) -> Result<Value, Error> {
        let fut = async {
            let mut raw = Self::open(addr).await?;
            raw.read_info().await?;
            Ok(raw.info)
        };
        match timeout(DEFAULT_TIMEOUT, fut).await {
            Ok(result) => result,
            Err(_) => Err(Error::Timeout(format!(
                "no INFO from the server within {DEFAULT_TIMEOUT:?}"
            ))),
        }
    }

    async fn open(addr: impl ToSocketAddrs) -> Result<RawNats, Error> {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|e| Error::io("RawNats: TCP connect", e))?;
        let _ = stream.set_nodelay(true);
        let (reader, writer) = stream.into_split();
        Ok(RawNats {
            reader,
            writer,
            buf: Vec::with_capacity(8192),
            info: Value::Null,
            pending: VecDeque::new(),
            pings_sent: 0,
            pongs_received: 0,
        })
    }

    async fn read_info(&mut self) -> Result<(), Error> {
        match self.read_op().await? {
            Op::Info(info) => {
                self.info = info;
                Ok(())
            }
            Op::Err(e) => Err(Error::Server(e)),
            other => Err(Error::Protocol(format!(
                "expected INFO as the first line, got {other:?}"
            ))),
        }
    }

    async fn connect_inner(addr: impl ToSocketAddrs, auth: ClientAuth) -> Result<RawNats, Error> {
        let mut raw = Self::open(addr).await?;
        raw.read_info().await?;
        let mut connect = serde_json::json!({
            "verbose": false,
            "pedantic": false,
            "tls_required": false,
            "name": "aether-testkit-raw",
            "lang": "rust",
            "version": env!("CARGO_PKG_VERSION"),
            "protocol": 1,
            "headers": false,
            "no_responders": false,
        });
        let obj = connect.as_object_mut().expect("json object");
        match auth {
            ClientAuth::None => {}
            ClientAuth::Token(token) => {
                obj.insert("auth_token".into(), Value::String(token));
            }
            ClientAuth::UserPassword { user, password } => {
                obj.insert("user".into(), Value::String(user));
                obj.insert("pass".into(), Value::String(password));
            }
            ClientAuth::NKey { seed } => {
                let nonce = raw
                    .info
                    .get("nonce")
                    .and_then(Value::as_str)
                    .ok_or_else(|| {
                        Error::Protocol("server INFO has no nonce for NKey auth".into())
                    })?
                    .to_string();
                let kp =
                    nkeys::KeyPair::from_seed(&seed).map_err(|e| Error::NKey(e.to_string()))?;
                obj.insert("nkey".into(), Value::String(kp.public_key()));
                obj.insert(
                    "sig".into(),
                    Value::String(crate::nkey::sign_nonce(&seed, &nonce)?),
                );
            }
        }
        let line = format!("CONNECT {connect}\r\n");
        raw.write(line.as_bytes()).await?;
        raw.ping_inner().await?;
        Ok(raw)
    }

    /// The most recent `INFO` the server sent (the first one, or a later async update).
    pub fn info(&self) -> &Value {
        &self.info
    }

    async fn write(&mut self, bytes: &[u8]) -> Result<(), Error> {
        self.writer
            .write_all(bytes)
            .await
            .map_err(|e| Error::io("RawNats: write", e))
    }

    /// Sends `SUB <subject> [queue] <sid>`.
    pub async fn subscribe(
        &mut self,
        subject: &str,
        sid: u64,
        queue: Option<&str>,
    ) -> Result<(), Error> {
        let line = match queue {
            Some(q) => format!("SUB {subject} {q} {sid}\r\n"),
            None => format!("SUB {subject} {sid}\r\n"),
        };
        self.write(line.as_bytes()).await
    }

    /// Sends `UNSUB <sid>`.
    pub async fn unsubscribe(&mut self, sid: u64) -> Result<(), Error> {
        self.write(format!("UNSUB {sid}\r\n").as_bytes()).await
    }

    /// Sends `PUB <subject> [reply] <#bytes>\r\n<payload>\r\n`.
    pub async fn publish(
        &mut self,
        subject: &str,
        reply: Option<&str>,
        payload: &[u8],
    ) -> Result<(), Error> {
        let mut frame = match reply {
            Some(r) => format!("PUB {subject} {r} {}\r\n", payload.len()),
            None => format!("PUB {subject} {}\r\n", payload.len()),
        }
        .into_bytes();
        frame.extend_from_slice(payload);
        frame.extend_from_slice(b"\r\n");
        self.write(&frame).await
    }

    /// Sends `PING` and waits for its `PONG` (bounded by 5 s), proving that every command sent
    /// before was processed. Messages arriving meanwhile are kept for
    /// [`next_message`](Self::next_message).
    pub async fn ping(&mut self) -> Result<(), Error> {
        self.ping_timeout(DEFAULT_TIMEOUT).await
    }

    /// Like [`ping`](Self::ping) with an explicit bound; [`Error::Timeout`] when it runs out.
    /// A late `PONG` is matched to its own `PING`, so a later ping still works.
    pub async fn ping_timeout(&mut self, limit: Duration) -> Result<(), Error> {
        match timeout(limit, self.ping_inner()).await {
            Ok(result) => result,
            Err(_) => Err(Error::Timeout(format!("no PONG within {limit:?}"))),
        }
    }

    async fn ping_inner(&mut self) -> Result<(), Error> {
        self.write(b"PING\r\n").await?;
        self.pings_sent += 1;
        let target = self.pings_sent;
        while self.pongs_received < target {
            match self.read_op().await? {
                Op::Msg(m) => self.pending.push_back(m),
                op => self.handle_control(op).await?,
            }
        }
        Ok(())
    }

    async fn handle_control(&mut self, op: Op) -> Result<(), Error> {
        match op {
            Op::Info(info) => self.info = info,
            Op::Ping => self.write(b"PONG\r\n").await?,
            Op::Pong => self.pongs_received += 1,
            Op::Ok => {}
            Op::Err(e) => return Err(Error::Server(e)),
            Op::Msg(m) => self.pending.push_back(m),
        }
        Ok(())
    }

    /// Waits up to `limit` for the next message: `Ok(None)` when none came in time. Answers
    /// server `PING`s, skips `+OK`, and fails on `-ERR` ([`Error::Server`]) or when the
    /// connection closes ([`Error::ConnectionClosed`]).
    pub async fn next_message(&mut self, limit: Duration) -> Result<Option<RawMessage>, Error> {
        if let Some(m) = self.pending.pop_front() {
            return Ok(Some(m));
        }
        let deadline = Instant::now() + limit;
        loop {
            let op = match timeout_at(deadline, self.read_op()).await {
                Ok(op) => op?,
                Err(_) => return Ok(None),
            };
            match op {
                Op::Msg(m) => return Ok(Some(m)),
                op => self.handle_control(op).await?,
            }
        }
    }

    /// Reads one protocol operation; cancel safe (bytes are only consumed once parsed).
    async fn read_op(&mut self) -> Result<Op, Error> {
        loop {
            if let Some(op) = self.try_parse()? {
                return Ok(op);
            }
            let mut chunk = [0u8; 16 * 1024];
            let n = self
                .reader
                .read(&mut chunk)
                .await
                .map_err(|e| Error::io("RawNats: read", e))?;
            if n == 0 {
                return Err(Error::ConnectionClosed);
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    fn try_parse(&mut self) -> Result<Option<Op>, Error> {
        let Some(eol) = self.buf.windows(2).position(|w| w == b"\r\n") else {
            if self.buf.len() > MAX_CONTROL_LINE {
                return Err(Error::Protocol("control line too long".into()));
            }
            return Ok(None);
        };
        let line = std::str::from_utf8(&self.buf[..eol])
            .map_err(|_| Error::Protocol("control line is not UTF-8".into()))?
            .to_string();
        let (verb, rest) = match line.find([' ', '\t']) {
            Some(i) => (&line[..i], line[i + 1..].trim()),
            None => (line.as_str(), ""),
        };
        let verb = verb.to_ascii_uppercase();
        let body_start = eol + 2;
        let op = match verb.as_str() {
            "MSG" | "HMSG" => {
                let args: Vec<&str> = rest.split_ascii_whitespace().collect();
                let with_headers = verb == "HMSG";
                let (subject, sid, reply, hdr_len, total) = match (with_headers, args.as_slice()) {
                    (false, [s, sid, n]) => (*s, *sid, None, 0, *n),
                    (false, [s, sid, r, n]) => (*s, *sid, Some(*r), 0, *n),
                    (true, [s, sid, h, n]) => (*s, *sid, None, parse_len(h, &line)?, *n),
                    (true, [s, sid, r, h, n]) => (*s, *sid, Some(*r), parse_len(h, &line)?, *n),
                    _ => return Err(Error::Protocol(format!("malformed {verb}: {line:?}"))),
                };
                let total = parse_len(total, &line)?;
                if hdr_len > total {
                    return Err(Error::Protocol(format!("header size > total: {line:?}")));
                }
                let sid = sid
                    .parse::<u64>()
                    .map_err(|_| Error::Protocol(format!("non-numeric sid: {line:?}")))?;
                let end = body_start + total;
                if self.buf.len() < end + 2 {
                    return Ok(None);
                }
                if &self.buf[end..end + 2] != b"\r\n" {
                    return Err(Error::Protocol(format!(
                        "payload of {line:?} not followed by CRLF"
                    )));
                }
                let headers =
                    with_headers.then(|| self.buf[body_start..body_start + hdr_len].to_vec());
                let payload = self.buf[body_start + hdr_len..end].to_vec();
                let msg = RawMessage {
                    subject: subject.to_string(),
                    sid,
                    reply: reply.map(str::to_string),
                    headers,
                    payload,
                };
                self.buf.drain(..end + 2);
                return Ok(Some(Op::Msg(msg)));
            }
            "PING" => Op::Ping,
            "PONG" => Op::Pong,
            "+OK" => Op::Ok,
            "-ERR" => Op::Err(rest.trim_matches('\'').to_string()),
            "INFO" => Op::Info(
                serde_json::from_str(rest)
                    .map_err(|e| Error::Protocol(format!("bad INFO JSON ({e}): {rest:?}")))?,
            ),
            _ => return Err(Error::Protocol(format!("unknown operation: {line:?}"))),
        };
        self.buf.drain(..body_start);
        Ok(Some(op))
    }
}

fn parse_len(s: &str, line: &str) -> Result<usize, Error> {
    s.parse::<usize>()
        .map_err(|_| Error::Protocol(format!("bad byte count {s:?} in {line:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncBufReadExt;
    use tokio::net::TcpListener;

    /// A fake server: sends INFO, answers CONNECT+PING with PONG, then dribbles `script`
    /// one byte at a time, and returns every line the client sent afterwards.
    async fn fake_server(
        script: &'static [u8],
    ) -> (std::net::SocketAddr, tokio::task::JoinHandle<Vec<String>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let (r, mut w) = stream.into_split();
            let mut lines = tokio::io::BufReader::new(r).lines();
            w.write_all(b"INFO {\"server_id\":\"fake\",\"nonce\":\"abc\"} \r\n")
                .await
                .unwrap();
            let connect = lines.next_line().await.unwrap().unwrap();
            assert!(connect.starts_with("CONNECT {"), "{connect}");
            assert_eq!(lines.next_line().await.unwrap().unwrap(), "PING");
            w.write_all(b"PONG\r\n").await.unwrap();
            for b in script {
                w.write_all(std::slice::from_ref(b)).await.unwrap();
                w.flush().await.unwrap();
            }
            let mut seen = vec![];
            while let Ok(Ok(Some(line))) =
                tokio::time::timeout(Duration::from_millis(300), lines.next_line()).await
            {
                seen.push(line);
            }
            seen
        });
        (addr, task)
    }

    #[tokio::test]
    async fn parses_fragmented_msg_hmsg_ping_ok_and_err() {
        let script: &'static [u8] = b"+OK\r\nPING\r\nMSG a.b 3 5\r\nhe\r\no\r\n\
            MSG a.c 4 reply.x 0\r\n\r\n\
            HMSG h.s 9 r.y 18 23\r\nNATS/1.0\r\nK: V\r\n\r\nhello\r\n\
            INFO {\"server_id\":\"fake2\"}\r\n\
            -ERR 'Permissions Violation'\r\n";
        let (addr, server) = fake_server(script).await;
        let mut raw = RawNats::connect(addr).await.unwrap();
        let m = raw.next_message(DEFAULT_TIMEOUT).await.unwrap().unwrap();
        assert_eq!(
            (m.subject.as_str(), m.sid, m.reply.as_deref()),
            ("a.b", 3, None)
        );
        assert_eq!(m.payload, b"he\r\no");
        let m = raw.next_message(DEFAULT_TIMEOUT).await.unwrap().unwrap();
        assert_eq!((m.subject.as_str(), m.sid), ("a.c", 4));
        assert_eq!(m.reply.as_deref(), Some("reply.x"));
        assert!(m.payload.is_empty() && m.headers.is_none());
        let m = raw.next_message(DEFAULT_TIMEOUT).await.unwrap().unwrap();
        assert_eq!(m.headers.as_deref(), Some(&b"NATS/1.0\r\nK: V\r\n\r\n"[..]));
        assert_eq!(m.payload, b"hello");
        match raw.next_message(DEFAULT_TIMEOUT).await {
            Err(Error::Server(e)) => assert_eq!(e, "Permissions Violation"),
            other => panic!("{other:?}"),
        }
        assert_eq!(raw.info()["server_id"], "fake2");
        drop(raw);
        let sent = server.await.unwrap();
        assert_eq!(
            sent,
            vec!["PONG".to_string()],
            "the server PING is answered"
        );
    }

    #[tokio::test]
    async fn rejects_garbage() {
        let (addr, _server) = fake_server(b"MSG a 1 notanumber\r\n").await;
        let mut raw = RawNats::connect(addr).await.unwrap();
        assert!(matches!(
            raw.next_message(DEFAULT_TIMEOUT).await,
            Err(Error::Protocol(_))
        ));
    }
}
