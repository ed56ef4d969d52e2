//! Headless Chromium driven over the DevTools protocol (a WebSocket of JSON
//! commands): open pages, evaluate JavaScript in them, reload them.
//! Only what the browser tests need.

use std::{
    collections::HashMap,
    path::Path,
    process::Stdio,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use futures_util::{SinkExt, StreamExt, stream::SplitSink};
use serde_json::{Value, json};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    net::TcpStream,
    sync::{Mutex as AsyncMutex, oneshot},
};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, tungstenite::Message};

pub const CHROMIUM: &str = "/usr/bin/chromium";

type Sink = SplitSink<WebSocketStream<MaybeTlsStream<TcpStream>>, Message>;
type Waiting = Arc<Mutex<HashMap<u64, oneshot::Sender<Value>>>>;

/// A headless Chromium, killed when dropped.
pub struct Browser {
    _child: tokio::process::Child,
    _profile: tempfile::TempDir,
    sink: AsyncMutex<Sink>,
    waiting: Waiting,
    next: AtomicU64,
}

/// One page (a tab) of the browser.
pub struct Page<'a> {
    browser: &'a Browser,
    session: String,
    target: String,
}

/// Headless Chromium with a profile of its own in `profile`, or `None`
/// (with a note) when it is not installed.
pub fn chromium(profile: &Path) -> Option<tokio::process::Command> {
    if !Path::new(CHROMIUM).exists() {
        eprintln!(
            "note: {CHROMIUM} is not installed, so the page was not opened in a browser \
             (Debian: apt-get install -y chromium)"
        );
        return None;
    }
    let mut command = tokio::process::Command::new(CHROMIUM);
    command
        .args([
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-dev-shm-usage",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .stdin(Stdio::null())
        .kill_on_drop(true);
    Some(command)
}

impl Browser {
    /// Starts Chromium, or `None` (with a note) when it is not installed.
    pub async fn launch() -> Option<Self> {
        let profile = tempfile::tempdir().unwrap();
        let mut child = chromium(profile.path())?
            .args([
                // Tabs in the background keep their timers at full speed.
                "--disable-background-timer-throttling",
                "--disable-renderer-backgrounding",
                "--disable-backgrounding-occluded-windows",
                "--remote-debugging-port=0",
                "about:blank",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("chromium starts");
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let url = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(line) = lines.next_line().await.unwrap() {
                if let Some(url) = line.strip_prefix("DevTools listening on ") {
                    return url.trim().to_string();
                }
            }
            panic!("chromium ended without a DevTools address");
        })
        .await
        .expect("chromium's DevTools address within 30 s");
        // Chromium's further output is read and dropped, so it never blocks.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let (socket, _) = tokio_tungstenite::connect_async(url).await.unwrap();
        let (sink, mut stream) = socket.split();
        let waiting: Waiting = Arc::default();
        let answers = waiting.clone();
        tokio::spawn(async move {
            while let Some(Ok(message)) = stream.next().await {
                let Ok(text) = message.to_text() else {
                    continue;
                };
                let Ok(value) = serde_json::from_str::<Value>(text) else {
                    continue;
                };
                if let Some(id) = value["id"].as_u64()
                    && let Some(tx) = answers.lock().unwrap().remove(&id)
                {
                    let _ = tx.send(value);
                }
            }
        });
        Some(Self {
            _child: child,
            _profile: profile,
            sink: AsyncMutex::new(sink),
            waiting,
            next: AtomicU64::new(1),
        })
    }

    /// Sends a command (to a page's session, if given) and returns its
    /// result; panics on an error or after 30 s.
    pub async fn call(&self, method: &str, params: Value, session: Option<&str>) -> Value {
        let answer = self.call_raw(method, params, session).await;
        assert!(answer.get("error").is_none(), "{method}: {answer}");
        answer["result"].clone()
    }

    /// Sends a command and returns the whole answer, an error too (a page
    /// that is reloading has no context to evaluate in for a moment).
    pub async fn call_raw(&self, method: &str, params: Value, session: Option<&str>) -> Value {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let mut command = json!({"id": id, "method": method, "params": &params});
        if let Some(session) = session {
            command["sessionId"] = json!(session);
        }
        let (tx, rx) = oneshot::channel();
        self.waiting.lock().unwrap().insert(id, tx);
        self.sink
            .lock()
            .await
            .send(Message::text(command.to_string()))
            .await
            .unwrap();
        tokio::time::timeout(Duration::from_secs(30), rx)
            .await
            .unwrap_or_else(|_| panic!("{method} {params}: no answer within 30 s"))
            .unwrap()
    }

    /// Opens `url` in a new tab.
    pub async fn open(&self, url: &str) -> Page<'_> {
        let target = self
            .call(
                "Target.createTarget",
                json!({"url": url, "newWindow": true}),
                None,
            )
            .await["targetId"]
            .as_str()
            .unwrap()
            .to_string();
        let session = self
            .call(
                "Target.attachToTarget",
                json!({"targetId": target, "flatten": true}),
                None,
            )
            .await["sessionId"]
            .as_str()
            .unwrap()
            .to_string();
        Page {
            browser: self,
            session,
            target,
        }
    }
}

impl Page<'_> {
    /// Evaluates `expression` in the page (awaiting a promise) and returns
    /// its value; panics if it throws.
    pub async fn eval(&self, expression: &str) -> Value {
        let result = self
            .browser
            .call(
                "Runtime.evaluate",
                json!({"expression": expression, "awaitPromise": true, "returnByValue": true}),
                Some(&self.session),
            )
            .await;
        assert!(
            result.get("exceptionDetails").is_none(),
            "{expression}: {}",
            result["exceptionDetails"]
        );
        result["result"]["value"].clone()
    }

    /// Waits (up to `seconds`) until `condition`, a JavaScript expression,
    /// is true in the page; panics with `what` if it does not become so.
    pub async fn wait_for(&self, what: &str, condition: &str, seconds: u64) {
        let script = format!(
            "new Promise((resolve) => {{ const end = Date.now() + {ms}; \
             const check = () => {{ let ok = false; try {{ ok = !!({condition}); }} catch (e) {{}} \
             if (ok) resolve(true); else if (Date.now() > end) resolve(false); \
             else setTimeout(check, 10); }}; check(); }})",
            ms = seconds * 1000
        );
        // The page may be loading (a reload): retried until it answers.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(seconds + 5);
        loop {
            let answer = self
                .browser
                .call_raw(
                    "Runtime.evaluate",
                    json!({"expression": script, "awaitPromise": true, "returnByValue": true}),
                    Some(&self.session),
                )
                .await;
            let value = &answer["result"]["result"]["value"];
            if *value == json!(true) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline && *value != json!(false),
                "not within {seconds} s: {what} ({answer})"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Reloads the page (from the page's own host).
    pub async fn reload(&self) {
        self.browser
            .call(
                "Page.reload",
                json!({"ignoreCache": false}),
                Some(&self.session),
            )
            .await;
    }

    /// Closes the tab.
    pub async fn close(self) {
        self.browser
            .call("Target.closeTarget", json!({"targetId": self.target}), None)
            .await;
    }
}
