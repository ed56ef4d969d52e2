//! The gateway on a LAN bus of `aether node`s, which run without JetStream
//! unless started with `--jetstream`. On loopback, a node's server as
//! `aether node` writes it (TLS from the bus's secret, its password, no
//! JetStream) and its record: `--lan` with the shipped settings, whose
//! durable channels need JetStream, starts without them and says so;
//! `require_durable_channels` makes it exit.

mod support;

use std::{
    net::TcpStream,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use aether_core::lan::{LanSecret, NodeRecord};
use support::{get, programs::PROGRAM};

const CONFIG: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../config");
const BUS: &str = "pagetest";

/// A settings folder holding the shipped files named.
fn shipped(files: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for file in files {
        std::fs::copy(Path::new(CONFIG).join(file), dir.path().join(file)).unwrap();
    }
    dir
}

/// A node's server on loopback as `aether node` configures it (TLS with a
/// certificate of the bus's authority, the password the secret gives, no
/// JetStream), and the record that tells this machine's programs of it.
struct FakeNode {
    server: std::process::Child,
    _dir: tempfile::TempDir,
    runtime: PathBuf,
}

impl FakeNode {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let secret_file = dir.path().join("secret");
        std::fs::write(&secret_file, LanSecret::generate()).unwrap();
        let secret = LanSecret::load(&secret_file).unwrap();
        let cert = secret
            .authority()
            .issue("node", &["127.0.0.1".parse().unwrap()]);
        std::fs::write(dir.path().join("node.pem"), &cert.cert_pem).unwrap();
        std::fs::write(dir.path().join("node-key.pem"), &cert.key_pem).unwrap();
        let port = aether_testkit::free_port().unwrap();
        let conf = dir.path().join("nats-server.conf");
        std::fs::write(
            &conf,
            format!(
                "listen: \"127.0.0.1:{port}\"\ntls {{\n  cert_file: {:?}\n  key_file: {:?}\n}}\n\
                 authorization {{\n  user: \"aether\"\n  password: {:?}\n}}\n",
                dir.path().join("node.pem"),
                dir.path().join("node-key.pem"),
                secret.client_password().expose(),
            ),
        )
        .unwrap();
        let server = Command::new(aether_testkit::nats_server_path().unwrap())
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "nats-server did not listen");
            std::thread::sleep(Duration::from_millis(20));
        }
        let runtime = dir.path().join("run");
        std::fs::create_dir(&runtime).unwrap();
        std::fs::set_permissions(
            &runtime,
            std::os::unix::fs::PermissionsExt::from_mode(0o700),
        )
        .unwrap();
        NodeRecord {
            bus: BUS.into(),
            name: "node".into(),
            url: format!("nats://127.0.0.1:{port}"),
            monitor: "http://127.0.0.1:1".into(),
            secret_file,
            pid: std::process::id(),
            data: None,
        }
        .write_in(&runtime.join("aether"))
        .unwrap();
        Self {
            server,
            _dir: dir,
            runtime,
        }
    }

    /// The gateway with `--lan` and the settings in `settings`, on this
    /// node's bus.
    fn gateway(&self, settings: &Path) -> tokio::process::Command {
        let mut command = aether_testkit::program(PROGRAM);
        command
            .args(["--lan", "--listen", "127.0.0.1:0", "--config-dir"])
            .arg(settings)
            .env("AETHER_BUS", BUS)
            .env("XDG_RUNTIME_DIR", &self.runtime)
            .env_remove("AETHER_RUNTIME_DIR")
            .stderr(Stdio::piped());
        command
    }
}

impl Drop for FakeNode {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
    }
}

/// `--lan` with the shipped settings on a bus without JetStream: the
/// gateway serves, having said once that the durable channels are off and
/// how to have them; asked to require them, it exits saying why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lan_bus_without_jetstream_starts_the_gateway_without_durable_channels() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let node = FakeNode::start();
        let settings = shipped(&["default.toml"]);
        let (mut gateway, addr) =
            support::spawn_serving(node.gateway(settings.path()), Duration::from_secs(20)).await;
        // Its log, read as it comes (a full pipe would stop it).
        let mut log = gateway.stderr.take().unwrap();
        let said = tokio::spawn(async move {
            let mut said = String::new();
            let _ = tokio::io::AsyncReadExt::read_to_string(&mut log, &mut said).await;
            said
        });
        assert_eq!(get(addr, "/ready").await.status, 200, "connected");
        support::programs::stop_gateway(gateway).await;
        let said = said.await.unwrap();
        let warnings: Vec<&str> = said
            .lines()
            .filter(|l| l.contains("no JetStream"))
            .collect();
        assert_eq!(warnings.len(), 1, "{said}");
        for words in ["WARN", "orders.*", "inventory.*", "aether node --jetstream"] {
            assert!(warnings[0].contains(words), "{words}: {said}");
        }

        // Required: it exits with status 1, saying why and what to do.
        let mut required = node.gateway(settings.path());
        required.env("AETHER__GATEWAY__REQUIRE_DURABLE_CHANNELS", "true");
        let out = tokio::time::timeout(Duration::from_secs(20), required.output())
            .await
            .expect("it exits")
            .unwrap();
        let said = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{said}");
        for words in [
            "durability.channels",
            "require_durable_channels",
            "--jetstream",
        ] {
            assert!(said.contains(words), "{words}: {said}");
        }
    })
    .await
    .expect("bounded");
}
