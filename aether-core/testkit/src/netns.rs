//! Hosts of a test's own: network namespaces on one bridge (itself in a
//! namespace of its own), one veth pair per host, addresses in
//! `10.231.0.0/24`. Nothing is added to the machine's own namespace, so
//! multicast DNS and routes stay among the test's hosts. Each host has its
//! own `HOME` and `XDG_RUNTIME_DIR` under the test's folder.
//!
//! Making namespaces needs root and `ip` (iproute2): [`Lan::create`] gives
//! `None` where they cannot be made, and the test says so and passes over.

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicUsize, Ordering},
        mpsc,
    },
    time::{Duration, Instant, SystemTime},
};

/// Runs `ip args`; true if it succeeded.
pub fn ip(args: &[&str]) -> bool {
    Command::new("ip")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Network namespaces on one bridge, removed when dropped.
pub struct Lan {
    tag: String,
    bridge: String,
    hosts: Vec<String>,
    /// Each host's current address (its last octet).
    octets: Vec<u8>,
    dir: PathBuf,
}

/// Lans made by this process so far (names stay apart between tests of one
/// binary running at once).
static MADE: AtomicUsize = AtomicUsize::new(0);

impl Lan {
    /// `n` hosts whose homes are under `dir`, or none when namespaces
    /// cannot be made here.
    pub fn create(n: usize, dir: &Path) -> Option<Self> {
        let tag = format!(
            "ae{}{}",
            std::process::id() % 100_000,
            char::from(b'a' + (MADE.fetch_add(1, Ordering::Relaxed) % 26) as u8)
        );
        let bridge = format!("{tag}br");
        if !ip(&["netns", "add", &bridge]) {
            return None;
        }
        let mut lan = Self {
            tag,
            bridge: bridge.clone(),
            hosts: Vec::new(),
            octets: Vec::new(),
            dir: dir.to_path_buf(),
        };
        let ok = ip(&["-n", &bridge, "link", "add", "br0", "type", "bridge"])
            && ip(&["-n", &bridge, "link", "set", "br0", "up"]);
        assert!(ok, "cannot make the bridge");
        for _ in 0..n {
            lan.add_host();
        }
        Some(lan)
    }

    /// One more host; its index.
    pub fn add_host(&mut self) -> usize {
        let i = self.hosts.len();
        let tag = &self.tag;
        let host = format!("{tag}h{i}");
        let (inside, outside) = (format!("{tag}v{i}"), format!("{tag}b{i}"));
        let octet = u8::try_from(i + 1).expect("at most 200 hosts");
        let address = format!("10.231.0.{octet}/24");
        let ok = ip(&["netns", "add", &host])
            && ip(&[
                "-n",
                &host,
                "link",
                "add",
                &inside,
                "type",
                "veth",
                "peer",
                "name",
                &outside,
                "netns",
                &self.bridge,
            ])
            && ip(&["-n", &self.bridge, "link", "set", &outside, "master", "br0"])
            && ip(&["-n", &self.bridge, "link", "set", &outside, "up"])
            && ip(&["-n", &host, "addr", "add", &address, "dev", &inside])
            && ip(&["-n", &host, "link", "set", &inside, "up", "multicast", "on"])
            && ip(&["-n", &host, "link", "set", "lo", "up"]);
        assert!(ok, "cannot make host {host}");
        for sub in ["home", "run"] {
            let path = self.dir.join(format!("host{i}")).join(sub);
            std::fs::create_dir_all(&path).expect("a host's folder");
            std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o700))
                .expect("a host's folder is its own");
        }
        self.hosts.push(host);
        self.octets.push(octet);
        i
    }

    /// How many hosts there are.
    pub fn len(&self) -> usize {
        self.hosts.len()
    }

    /// Whether there is no host.
    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty()
    }

    /// Host `i`'s namespace.
    pub fn host(&self, i: usize) -> &str {
        &self.hosts[i]
    }

    /// Host `i`'s address now.
    pub fn address(&self, i: usize) -> String {
        format!("10.231.0.{}", self.octets[i])
    }

    /// Host `i`'s `HOME`.
    pub fn home(&self, i: usize) -> PathBuf {
        self.dir.join(format!("host{i}/home"))
    }

    /// Host `i`'s `XDG_RUNTIME_DIR`.
    pub fn runtime(&self, i: usize) -> PathBuf {
        self.dir.join(format!("host{i}/run"))
    }

    /// Gives host `i` the address `10.231.0.<octet>` in place of the one it
    /// has, as a DHCP renewal would: the old one is gone at once.
    pub fn change_address(&mut self, i: usize, octet: u8) {
        let inside = format!("{}v{i}", self.tag);
        let old = format!("{}/24", self.address(i));
        let new = format!("10.231.0.{octet}/24");
        let host = self.hosts[i].clone();
        // Deleted first: deleting a subnet's first address deletes the
        // others of that subnet with it.
        let ok = ip(&["-n", &host, "addr", "del", &old, "dev", &inside])
            && ip(&["-n", &host, "addr", "add", &new, "dev", &inside]);
        assert!(ok, "cannot change host {i}'s address");
        self.octets[i] = octet;
    }

    /// Cuts host `i` off the LAN (`up: false`) or joins it again.
    pub fn link(&self, i: usize, up: bool) {
        let outside = format!("{}b{i}", self.tag);
        assert!(
            ip(&[
                "-n",
                &self.bridge,
                "link",
                "set",
                &outside,
                if up { "up" } else { "down" }
            ]),
            "cannot set host {i}'s link"
        );
    }

    /// `program args` run on host `i`, with the host's own `HOME` and
    /// `XDG_RUNTIME_DIR`, and none of the caller's `AETHER_*` settings.
    pub fn command(&self, i: usize, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", &self.hosts[i]])
            .arg(program)
            .env("HOME", self.home(i))
            .env("XDG_RUNTIME_DIR", self.runtime(i))
            .stdin(Stdio::null());
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("AETHER_") {
                command.env_remove(key);
            }
        }
        command
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        for host in self.hosts.iter().chain([&self.bridge]) {
            ip(&["netns", "del", host]);
        }
    }
}

/// A long-running program whose standard error and output lines are read
/// as they come (the pipes never fill); killed when dropped, and what it
/// said printed if the test is failing.
pub struct Running {
    /// The process.
    pub child: Child,
    lines: mpsc::Receiver<(SystemTime, String)>,
    /// The lines read so far (those of the stream not asked for marked
    /// `stdout: ` or `stderr: `).
    pub seen: Vec<String>,
    /// When each line of `seen` was read off the pipe.
    pub read_at: Vec<SystemTime>,
}

impl Running {
    /// Starts `command`; `stdout` says which stream is the one read plain.
    pub fn start(mut command: Command, stdout: bool) -> Self {
        command.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = command.spawn().expect("starts");
        let (tx, lines) = mpsc::channel();
        let out = child.stdout.take().expect("piped");
        let err = child.stderr.take().expect("piped");
        let tx2 = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                let line = if stdout {
                    format!("stderr: {line}")
                } else {
                    line
                };
                let _ = tx.send((SystemTime::now(), line));
            }
        });
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let line = if stdout {
                    line
                } else {
                    format!("stdout: {line}")
                };
                let _ = tx2.send((SystemTime::now(), line));
            }
        });
        Self {
            child,
            lines,
            seen: Vec::new(),
            read_at: Vec::new(),
        }
    }

    /// Waits up to `limit` for a line that `wanted` accepts (among those
    /// seen already, then new ones).
    pub fn wait_for(&mut self, limit: Duration, wanted: impl Fn(&str) -> bool) -> Option<String> {
        if let Some(line) = self.seen.iter().find(|l| wanted(l)) {
            return Some(line.clone());
        }
        let deadline = Instant::now() + limit;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok((at, line)) => {
                    self.seen.push(line.clone());
                    self.read_at.push(at);
                    if wanted(&line) {
                        return Some(line);
                    }
                }
                Err(_) => return None,
            }
        }
        None
    }

    /// Reads what came meanwhile, waiting no longer than `limit`.
    pub fn drain(&mut self, limit: Duration) {
        let _ = self.wait_for(limit, |_| false);
    }

    /// Forgets the lines seen so far: the next waits look at new ones.
    pub fn forget(&mut self) {
        while self.lines.try_recv().is_ok() {}
        self.seen.clear();
        self.read_at.clear();
    }

    /// Sends `signal` to the process.
    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(i32::try_from(self.child.id()).expect("a pid")),
            signal,
        );
    }

    /// Kills the process and waits for it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            while let Ok((_, line)) = self.lines.try_recv() {
                self.seen.push(line);
            }
            eprintln!("--- process {} said:", self.child.id());
            for line in &self.seen {
                eprintln!("  {line}");
            }
        }
    }
}
