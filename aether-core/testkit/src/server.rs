use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::Value;
use tempfile::TempDir;
use tokio::process::{Child, Command};
use tokio::time::{Instant, sleep, timeout};

use crate::raw::{ClientAuth, RawNats};
use crate::{Error, TestPki, free_port};

/// Default bound for a server to become ready.
const DEFAULT_STARTUP_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound on waiting for a process to exit after SIGKILL.
const KILL_TIMEOUT: Duration = Duration::from_secs(5);
/// Bound on waiting for a graceful exit after SIGTERM (then SIGKILL).
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// How many times a start is retried when the server could not bind its port(s).
const BIND_ATTEMPTS: usize = 4;
/// Lines of server log included in start errors.
const LOG_TAIL_LINES: usize = 40;

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

pub(crate) fn next_id() -> u64 {
    NEXT_ID.fetch_add(1, Ordering::Relaxed)
}

pub(crate) fn unique_suffix() -> String {
    format!("{}-{}", std::process::id(), next_id())
}

/// Finds the `nats-server` binary: `$NATS_SERVER_BIN` if set, then `PATH`, then
/// `/usr/sbin`, `/usr/bin` and `/usr/local/bin`. The error says to run
/// `apt-get install -y nats-server`.
pub fn nats_server_path() -> Result<PathBuf, Error> {
    fn executable(p: &Path) -> bool {
        std::fs::metadata(p)
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
    }
    if let Some(p) = std::env::var_os("NATS_SERVER_BIN")
        .map(PathBuf::from)
        .filter(|p| executable(p))
    {
        return Ok(p);
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let p = dir.join("nats-server");
            if executable(&p) {
                return Ok(p);
            }
        }
    }
    for dir in ["/usr/sbin", "/usr/bin", "/usr/local/bin"] {
        let p = Path::new(dir).join("nats-server");
        if executable(&p) {
            return Ok(p);
        }
    }
    Err(Error::ServerNotFound)
}

/// Server-side authentication configuration (an `authorization { ... }` block).
#[derive(Clone, Debug)]
pub enum Auth {
    /// `authorization { token: ... }`.
    Token(String),
    /// `authorization { users: [ { user, password } ] }`.
    UserPassword {
        /// User name.
        user: String,
        /// Password.
        password: String,
    },
    /// `authorization { users: [ { nkey: U... } ] }` (see [`NKeyUser`](crate::NKeyUser)).
    NKey {
        /// The user's public key (`U...`).
        public_key: String,
    },
    /// `authorization { users: [ { user, password, <extra> }, ... ] }`: several users, each
    /// with extra fields such as a `permissions: { ... }` block. The readiness probe logs in
    /// as the first.
    Users(Vec<User>),
}

/// One user of [`Auth::Users`].
#[derive(Clone, Debug)]
pub struct User {
    /// User name.
    pub user: String,
    /// Password.
    pub password: String,
    /// More fields of the user's entry, written as they are (e.g. `permissions: { ... }`).
    pub extra: String,
}

/// A `cluster { ... }` block: the cluster name, the route listen port on 127.0.0.1 (`None`
/// picks a free one at start) and the routes to solicit.
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    /// Cluster name (all nodes must agree).
    pub name: String,
    /// Route listen port on 127.0.0.1; `None` picks a free port.
    pub port: Option<u16>,
    /// Route addresses of the other nodes.
    pub routes: Vec<SocketAddr>,
    /// `no_advertise: true`: do not tell clients about the other nodes' client URLs.
    pub no_advertise: bool,
}

/// Options for [`NatsServer`]; create with [`NatsServer::builder`].
#[derive(Clone, Debug)]
pub struct NatsServerBuilder {
    jetstream: bool,
    tls: Option<(TestPki, bool)>,
    auth: Option<Auth>,
    port: Option<u16>,
    max_payload: Option<u32>,
    cluster: Option<ClusterConfig>,
    server_name: Option<String>,
    extra_config: Vec<String>,
    startup_timeout: Duration,
    trace: bool,
}

impl Default for NatsServerBuilder {
    fn default() -> Self {
        NatsServerBuilder {
            jetstream: false,
            tls: None,
            auth: None,
            port: None,
            max_payload: None,
            cluster: None,
            server_name: None,
            extra_config: Vec::new(),
            startup_timeout: DEFAULT_STARTUP_TIMEOUT,
            trace: false,
        }
    }
}

impl NatsServerBuilder {
    /// Enables JetStream with its store directory inside the server's temp dir (kept across
    /// [`NatsServer::restart`]).
    pub fn jetstream(mut self, enabled: bool) -> Self {
        self.jetstream = enabled;
        self
    }

    /// Enables TLS on the client port with the PKI's server certificate; with
    /// `verify_clients`, clients must present a certificate signed by the PKI's CA.
    /// The URL becomes `tls://...`.
    pub fn tls(mut self, pki: &TestPki, verify_clients: bool) -> Self {
        self.tls = Some((pki.clone(), verify_clients));
        self
    }

    /// Requires client authentication.
    pub fn auth(mut self, auth: Auth) -> Self {
        self.auth = Some(auth);
        self
    }

    /// Uses a fixed client port instead of a free one.
    pub fn port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }

    /// Sets `max_payload` (bytes).
    pub fn max_payload(mut self, bytes: u32) -> Self {
        self.max_payload = Some(bytes);
        self
    }

    /// Adds a `cluster { ... }` block (used by [`NatsCluster`](crate::NatsCluster)).
    pub fn cluster(mut self, cluster: ClusterConfig) -> Self {
        self.cluster = Some(cluster);
        self
    }

    /// Sets `server_name` (default: a unique `testkit-<pid>-<n>`).
    pub fn server_name(mut self, name: impl Into<String>) -> Self {
        self.server_name = Some(name.into());
        self
    }

    /// Appends a raw line to the top level of the config file, e.g. `"ping_interval: \"1s\""`
    /// or `"write_deadline: \"2s\""`.
    pub fn extra_config(mut self, line: impl Into<String>) -> Self {
        self.extra_config.push(line.into());
        self
    }

    /// Bounds the wait for readiness (default 10 s).
    pub fn startup_timeout(mut self, limit: Duration) -> Self {
        self.startup_timeout = limit;
        self
    }

    /// Runs the server with `-DV` (debug and protocol trace in the log).
    pub fn trace(mut self, enabled: bool) -> Self {
        self.trace = enabled;
        self
    }

    /// Starts the server and waits (bounded) until it accepts clients. Free ports are picked
    /// on 127.0.0.1; if the server cannot bind them, new ports are picked and the start is
    /// retried a few times.
    pub async fn start(self) -> Result<NatsServer, Error> {
        let bin = nats_server_path()?;
        let dir = tempfile::Builder::new()
            .prefix("aether-testkit-nats-")
            .tempdir()
            .map_err(|e| Error::io("creating the nats-server temp dir", e))?;
        let config_path = dir.path().join("nats-server.conf");
        let log_path = dir.path().join("nats-server.log");
        let server_name = self
            .server_name
            .clone()
            .unwrap_or_else(|| format!("testkit-{}", unique_suffix()));

        let mut last_err = None;
        for attempt in 0..BIND_ATTEMPTS {
            if attempt > 0 {
                sleep(Duration::from_millis(50 * attempt as u64)).await;
            }
            let port = match self.port {
                Some(p) => p,
                None => free_port()?,
            };
            let cluster_port = match &self.cluster {
                Some(c) => Some(match c.port {
                    Some(p) => p,
                    None => free_port()?,
                }),
                None => None,
            };
            let config = self.render_config(dir.path(), &server_name, port, cluster_port);
            std::fs::write(&config_path, config)
                .map_err(|e| Error::io(format!("writing {}", config_path.display()), e))?;
            // A fresh log per attempt, so failure messages show this attempt only.
            File::create(&log_path)
                .map_err(|e| Error::io(format!("creating {}", log_path.display()), e))?;

            let mut server = NatsServer {
                bin: bin.clone(),
                config_path: config_path.clone(),
                log_path: log_path.clone(),
                port,
                cluster_port,
                server_name: server_name.clone(),
                tls: self.tls.is_some(),
                auth: self.auth.clone(),
                jetstream: self.jetstream,
                trace: self.trace,
                startup_timeout: self.startup_timeout,
                child: Mutex::new(None),
                _pki: self.tls.as_ref().map(|(pki, _)| pki.clone()),
                dir: None,
            };
            match server.spawn_and_wait().await {
                Ok(()) => {
                    server.dir = Some(dir);
                    return Ok(server);
                }
                Err(e) => {
                    let _ = server.kill().await;
                    let retry = is_bind_failure(&e);
                    last_err = Some(e);
                    if !retry {
                        break;
                    }
                }
            }
        }
        Err(last_err.expect("at least one attempt"))
    }

    fn render_config(
        &self,
        dir: &Path,
        server_name: &str,
        port: u16,
        cluster_port: Option<u16>,
    ) -> String {
        let mut c = String::new();
        c.push_str("# generated by aether-testkit\n");
        c.push_str(&format!("server_name: {}\n", quote(server_name)));
        c.push_str(&format!("listen: \"127.0.0.1:{port}\"\n"));
        if let Some(max) = self.max_payload {
            c.push_str(&format!("max_payload: {max}\n"));
        }
        for line in &self.extra_config {
            c.push_str(line);
            c.push('\n');
        }
        if self.jetstream {
            let store = dir.join("jetstream");
            c.push_str(&format!(
                "jetstream {{\n  store_dir: {}\n  max_memory_store: 268435456\n  max_file_store: 1073741824\n}}\n",
                quote(&store.to_string_lossy())
            ));
        }
        if let Some((pki, verify)) = &self.tls {
            c.push_str(&format!(
                "tls {{\n  cert_file: {}\n  key_file: {}\n  ca_file: {}\n  verify: {verify}\n  timeout: 5\n}}\n",
                quote(&pki.server_cert_path().to_string_lossy()),
                quote(&pki.server_key_path().to_string_lossy()),
                quote(&pki.ca_pem_path().to_string_lossy()),
            ));
        }
        match &self.auth {
            None => {}
            Some(Auth::Token(token)) => {
                c.push_str(&format!(
                    "authorization {{\n  token: {}\n}}\n",
                    quote(token)
                ));
            }
            Some(Auth::UserPassword { user, password }) => {
                c.push_str(&format!(
                    "authorization {{\n  users: [\n    {{ user: {}, password: {} }}\n  ]\n}}\n",
                    quote(user),
                    quote(password)
                ));
            }
            Some(Auth::NKey { public_key }) => {
                c.push_str(&format!(
                    "authorization {{\n  users: [\n    {{ nkey: {} }}\n  ]\n}}\n",
                    quote(public_key)
                ));
            }
            Some(Auth::Users(users)) => {
                c.push_str("authorization {\n  users: [\n");
                for u in users {
                    let extra = if u.extra.is_empty() {
                        String::new()
                    } else {
                        format!(", {}", u.extra)
                    };
                    c.push_str(&format!(
                        "    {{ user: {}, password: {}{extra} }}\n",
                        quote(&u.user),
                        quote(&u.password)
                    ));
                }
                c.push_str("  ]\n}\n");
            }
        }
        if let (Some(cluster), Some(cport)) = (&self.cluster, cluster_port) {
            c.push_str(&format!(
                "cluster {{\n  name: {}\n  listen: \"127.0.0.1:{cport}\"\n",
                quote(&cluster.name)
            ));
            if cluster.no_advertise {
                c.push_str("  no_advertise: true\n");
            }
            c.push_str("  routes: [\n");
            for r in &cluster.routes {
                c.push_str(&format!("    \"nats-route://{r}\"\n"));
            }
            c.push_str("  ]\n}\n");
        }
        c
    }
}

/// Quotes a string for the nats-server config format.
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for ch in s.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            _ => out.push(ch),
        }
    }
    out.push('"');
    out
}

pub(crate) fn is_bind_failure(e: &Error) -> bool {
    match e {
        Error::StartFailed { log_tail, .. } => {
            log_tail.contains("address already in use") || log_tail.contains("Error listening")
        }
        _ => false,
    }
}

/// The last `lines` lines of `text`.
pub(crate) fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A running (or killed, restartable) `nats-server` process on 127.0.0.1.
///
/// The config, log and JetStream store live in a temp dir removed on drop; dropping the
/// value kills the process.
#[derive(Debug)]
pub struct NatsServer {
    bin: PathBuf,
    config_path: PathBuf,
    log_path: PathBuf,
    port: u16,
    cluster_port: Option<u16>,
    server_name: String,
    tls: bool,
    auth: Option<Auth>,
    jetstream: bool,
    trace: bool,
    startup_timeout: Duration,
    child: Mutex<Option<Child>>,
    _pki: Option<TestPki>,
    // Declared last so the directory is removed after the process is killed.
    dir: Option<TempDir>,
}

impl NatsServer {
    /// A builder with defaults: free port, no JetStream, no TLS, no auth.
    pub fn builder() -> NatsServerBuilder {
        NatsServerBuilder::default()
    }

    /// Starts a plain server with defaults.
    pub async fn start() -> Result<NatsServer, Error> {
        Self::builder().start().await
    }

    /// `nats://127.0.0.1:PORT`, or `tls://127.0.0.1:PORT` when TLS is on.
    pub fn url(&self) -> String {
        let scheme = if self.tls { "tls" } else { "nats" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// The client address, `127.0.0.1:PORT`.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    /// The client port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The cluster (route) port, when clustered.
    pub fn cluster_port(&self) -> Option<u16> {
        self.cluster_port
    }

    /// The configured `server_name` (also in the server's INFO).
    pub fn server_name(&self) -> &str {
        &self.server_name
    }

    /// The JetStream store directory, when JetStream is enabled.
    pub fn store_dir(&self) -> Option<PathBuf> {
        self.jetstream
            .then(|| self.config_path.with_file_name("jetstream"))
    }

    /// Path of the generated config file.
    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// Path of the log file (stdout and stderr of every run, appended across restarts).
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The server log so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// The OS process id while running.
    pub fn pid(&self) -> Option<u32> {
        self.child
            .lock()
            .expect("child mutex")
            .as_ref()
            .and_then(Child::id)
    }

    /// Whether the process is still running.
    pub fn is_running(&self) -> bool {
        let mut guard = self.child.lock().expect("child mutex");
        match guard.as_mut() {
            None => false,
            Some(child) => matches!(child.try_wait(), Ok(None)),
        }
    }

    /// Kills the process with SIGKILL and waits (bounded) for it to exit. No-op when not
    /// running.
    pub async fn kill(&mut self) -> Result<(), Error> {
        let Some(mut child) = self.child.get_mut().expect("child mutex").take() else {
            return Ok(());
        };
        let _ = child.start_kill();
        match timeout(KILL_TIMEOUT, child.wait()).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(Error::io("waiting for nats-server to exit", e)),
            Err(_) => Err(Error::Timeout(format!(
                "nats-server did not exit within {KILL_TIMEOUT:?} after SIGKILL"
            ))),
        }
    }

    /// Stops the process with SIGTERM (graceful shutdown) and waits up to 10 s, then
    /// SIGKILLs it. No-op when not running.
    pub async fn stop(&mut self) -> Result<(), Error> {
        let Some(mut child) = self.child.get_mut().expect("child mutex").take() else {
            return Ok(());
        };
        if let Some(pid) = child.id() {
            let pid = nix::unistd::Pid::from_raw(pid as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        }
        match timeout(STOP_TIMEOUT, child.wait()).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(Error::io("waiting for nats-server to exit", e)),
            Err(_) => {
                let _ = child.start_kill();
                let _ = timeout(KILL_TIMEOUT, child.wait()).await;
                Ok(())
            }
        }
    }

    /// Starts the server again with the same port(s), config and JetStream store, and waits
    /// until it is ready. A still-running process is killed first.
    pub async fn restart(&mut self) -> Result<(), Error> {
        self.kill().await?;
        let mut last_err = None;
        for attempt in 0..BIND_ATTEMPTS {
            if attempt > 0 {
                sleep(Duration::from_millis(100 * attempt as u64)).await;
            }
            match self.spawn_and_wait().await {
                Ok(()) => return Ok(()),
                Err(e) => {
                    let _ = self.kill().await;
                    let retry = is_bind_failure(&e);
                    last_err = Some(e);
                    if !retry {
                        break;
                    }
                }
            }
        }
        Err(last_err.expect("at least one attempt"))
    }

    fn start_failed(&self, reason: impl Into<String>) -> Error {
        Error::StartFailed {
            reason: reason.into(),
            log_tail: tail(&self.log(), LOG_TAIL_LINES),
        }
    }

    async fn spawn_and_wait(&mut self) -> Result<(), Error> {
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .map_err(|e| Error::io(format!("opening {}", self.log_path.display()), e))?;
        let _ = writeln!(
            log,
            "--- aether-testkit: starting {} ---",
            self.bin.display()
        );
        let log_err = log
            .try_clone()
            .map_err(|e| Error::io("cloning the log file handle", e))?;
        let mut cmd = Command::new(&self.bin);
        cmd.arg("-c").arg(&self.config_path);
        if self.trace {
            cmd.arg("-DV");
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err))
            .kill_on_drop(true);
        let child = cmd
            .spawn()
            .map_err(|e| Error::io(format!("spawning {}", self.bin.display()), e))?;
        *self.child.get_mut().expect("child mutex") = Some(child);
        self.wait_ready().await
    }

    async fn wait_ready(&mut self) -> Result<(), Error> {
        let deadline = Instant::now() + self.startup_timeout;
        let probe = Probe {
            addr: self.addr(),
            server_name: self.server_name.clone(),
            tls: self.tls,
            auth: self.auth.clone(),
            // Clustered JetStream needs a quorum: NatsCluster checks it once all nodes run.
            jetstream_standalone: self.jetstream && self.cluster_port.is_none(),
        };
        let mut last_probe_error = String::from("no probe yet");
        loop {
            if Instant::now() >= deadline {
                return Err(self.start_failed(format!(
                    "not ready within {:?} (last probe: {last_probe_error})",
                    self.startup_timeout
                )));
            }
            let exited = {
                let Some(child) = self.child.get_mut().expect("child mutex").as_mut() else {
                    return Err(self.start_failed("process handle missing"));
                };
                // Race the probe against the process exiting (e.g. it could not bind).
                tokio::select! {
                    status = child.wait() => Some(status),
                    r = timeout(Duration::from_secs(2), probe.run()) => {
                        match r {
                            Ok(Ok(())) => return Ok(()),
                            Ok(Err(e)) => last_probe_error = e.to_string(),
                            Err(_) => last_probe_error = "probe timed out".into(),
                        }
                        None
                    }
                }
            };
            match exited {
                Some(Ok(status)) => {
                    return Err(self.start_failed(format!("process exited early: {status}")));
                }
                Some(Err(e)) => return Err(Error::io("waiting on nats-server", e)),
                None => sleep(Duration::from_millis(20)).await,
            }
        }
    }
}

/// What a readiness probe needs to know about the server.
struct Probe {
    addr: SocketAddr,
    server_name: String,
    tls: bool,
    auth: Option<Auth>,
    jetstream_standalone: bool,
}

impl Probe {
    /// One readiness probe: INFO from *this* server (checked by server_name, so a foreign
    /// process on the port is not mistaken for ours), then for non-TLS servers a
    /// CONNECT/PING/PONG round trip (with credentials), and for standalone JetStream a
    /// `$JS.API.INFO` answer.
    async fn run(&self) -> Result<(), Error> {
        let info = RawNats::fetch_info(self.addr).await?;
        let name = info.get("server_name").and_then(|v| v.as_str());
        if name != Some(self.server_name.as_str()) {
            return Err(Error::Protocol(format!(
                "{} answered as {name:?}, expected {:?}",
                self.addr, self.server_name
            )));
        }
        if self.tls {
            return Ok(());
        }
        let auth = match &self.auth {
            None => ClientAuth::None,
            Some(Auth::Token(t)) => ClientAuth::Token(t.clone()),
            Some(Auth::UserPassword { user, password }) => ClientAuth::UserPassword {
                user: user.clone(),
                password: password.clone(),
            },
            // The server config has only the public key: INFO is all we can check.
            Some(Auth::NKey { .. }) => return Ok(()),
            Some(Auth::Users(users)) => match users.first() {
                Some(u) => ClientAuth::UserPassword {
                    user: u.user.clone(),
                    password: u.password.clone(),
                },
                None => ClientAuth::None,
            },
        };
        let mut raw = RawNats::connect_with(self.addr, auth).await?;
        if self.jetstream_standalone {
            jetstream_api_ready(&mut raw).await?;
        }
        Ok(())
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let Ok(slot) = self.child.get_mut() else {
            return;
        };
        if let Some(mut child) = slot.take() {
            let _ = child.start_kill();
            // Reap briefly so the port and files are released before the temp dir goes.
            for _ in 0..200 {
                if !matches!(child.try_wait(), Ok(None)) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }
}

/// Asks `$JS.API.INFO` once (1 s bound); `Ok` when the answer carries no error.
pub(crate) async fn jetstream_api_ready(raw: &mut RawNats) -> Result<(), Error> {
    js_request(raw, "$JS.API.INFO", b"", Duration::from_secs(1))
        .await
        .map(|_| ())
}

/// One JetStream API request; `Error::Protocol` when the answer carries an `error`,
/// `Error::Timeout` when none comes within `limit`.
pub(crate) async fn js_request(
    raw: &mut RawNats,
    subject: &str,
    payload: &[u8],
    limit: Duration,
) -> Result<Value, Error> {
    let inbox = format!("_TESTKIT_INBOX.{}", unique_suffix());
    let sid = 1_000_000 + next_id();
    raw.subscribe(&inbox, sid, None).await?;
    raw.publish(subject, Some(&inbox), payload).await?;
    let answer = raw.next_message(limit).await;
    raw.unsubscribe(sid).await?;
    match answer? {
        None => Err(Error::Timeout(format!("no answer to {subject}"))),
        Some(m) => {
            let v: Value = serde_json::from_slice(&m.payload)
                .map_err(|e| Error::Protocol(format!("bad answer to {subject}: {e}")))?;
            match v.get("error") {
                Some(err) => Err(Error::Protocol(format!("{subject} error: {err}"))),
                None => Ok(v),
            }
        }
    }
}
