//! The servers this benchmark starts for itself, each on a free loopback
//! port, each killed when its guard drops (at the end, or on a panic).
//!
//! It never connects to the machine's own servers: the well-known ports
//! (NATS 4222, Redis 6379, MQTT 1883) are refused outright.

use std::{
    net::{Ipv4Addr, TcpListener, TcpStream},
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// Ports that belong to the machine's own servers: never used.
const FORBIDDEN: [u16; 3] = [4222, 6379, 1883];

/// A server process of ours; killed, waited for and its directory removed
/// on drop.
pub struct Server {
    pub name: &'static str,
    pub port: u16,
    pub version: String,
    child: Child,
    dir: PathBuf,
}

impl Server {
    pub fn url(&self, scheme: &str) -> String {
        format!("{scheme}://127.0.0.1:{}", self.port)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
        eprintln!(
            "stopped {} (pid {}, port {})",
            self.name,
            self.child.id(),
            self.port
        );
    }
}

/// A free port on 127.0.0.1, never one of the machine's own servers'.
fn free_port() -> u16 {
    loop {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0");
        let port = listener.local_addr().expect("addr").port();
        if !FORBIDDEN.contains(&port) {
            return port;
        }
    }
}

/// A scratch directory of ours.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("aether-peers-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// `env` if set, else `name` on PATH, else in /usr/sbin or /usr/bin.
pub fn find(name: &str, env: &str) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(env) {
        let p = PathBuf::from(p);
        return p.is_file().then_some(p);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/bin")])
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

fn version(bin: &Path, arg: &str) -> String {
    Command::new(bin)
        .arg(arg)
        .output()
        .map(|o| {
            let text = String::from_utf8_lossy(&o.stdout).to_string()
                + &String::from_utf8_lossy(&o.stderr);
            text.lines().next().unwrap_or("").trim().to_string()
        })
        .unwrap_or_default()
}

/// Starts `bin args` and waits (10 s at most) until its port accepts.
fn spawn(
    name: &'static str,
    bin: &Path,
    args: &[String],
    port: u16,
    dir: PathBuf,
    version: String,
) -> Result<Server, String> {
    assert!(!FORBIDDEN.contains(&port), "never the machine's own port");
    let mut command = Command::new(bin);
    // Killed with this process even if it dies without unwinding (a
    // signal): the kernel sends SIGKILL when its parent goes.
    // SAFETY: prctl is async-signal-safe; nothing else runs between fork
    // and exec.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = command
        .args(args)
        .current_dir(&dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("{name}: {} does not start: {e}", bin.display()))?;
    let mut server = Server {
        name,
        port,
        version,
        child,
        dir,
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_ok() {
            eprintln!(
                "started {name} ({}) pid {} on 127.0.0.1:{port}",
                server.version,
                server.child.id()
            );
            return Ok(server);
        }
        if let Ok(Some(status)) = server.child.try_wait() {
            return Err(format!("{name} exited at start: {status}"));
        }
        if Instant::now() > deadline {
            return Err(format!("{name} not listening on {port} within 10 s"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// nats-server with JetStream (for NATS KV), its store in a temp dir.
pub fn nats() -> Result<Server, String> {
    let bin = find("nats-server", "NATS_SERVER_BIN")
        .ok_or("nats-server not found (PATH, /usr/sbin, NATS_SERVER_BIN)")?;
    let port = free_port();
    let dir = scratch("nats");
    let args = [
        "-a".into(),
        "127.0.0.1".into(),
        "-p".into(),
        port.to_string(),
        "-js".into(),
        "-sd".into(),
        dir.join("js").display().to_string(),
    ];
    let version = version(&bin, "--version");
    spawn("nats-server", &bin, &args, port, dir, version)
}

/// redis-server, no persistence, keyspace notifications for hashes on.
pub fn redis() -> Result<Server, String> {
    let bin = find("redis-server", "REDIS_SERVER_BIN").ok_or("redis-server not found")?;
    let port = free_port();
    let dir = scratch("redis");
    let args = [
        "--port".into(),
        port.to_string(),
        "--bind".into(),
        "127.0.0.1".into(),
        "--save".into(),
        "".into(),
        "--appendonly".into(),
        "no".into(),
        "--notify-keyspace-events".into(),
        "Kh".into(),
        "--dir".into(),
        dir.display().to_string(),
    ];
    let version = version(&bin, "--version")
        .split_whitespace()
        .find(|w| w.starts_with("v="))
        .map(|v| format!("Redis {}", &v[2..]))
        .unwrap_or_default();
    spawn("redis-server", &bin, &args, port, dir, version)
}

/// mosquitto on 127.0.0.1 only (a config file of ours), defaults otherwise.
pub fn mosquitto() -> Result<Server, String> {
    let bin = find("mosquitto", "MOSQUITTO_BIN").ok_or("mosquitto not found")?;
    let port = free_port();
    let dir = scratch("mosquitto");
    let conf = dir.join("mosquitto.conf");
    std::fs::write(
        &conf,
        // `user root`: started as root, mosquitto would otherwise switch
        // to its own user, which clears the parent-death signal.
        format!("listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nuser root\n"),
    )
    .map_err(|e| format!("mosquitto config: {e}"))?;
    let args = ["-c".into(), conf.display().to_string()];
    let version = version(&bin, "-h");
    spawn("mosquitto", &bin, &args, port, dir, version)
}
