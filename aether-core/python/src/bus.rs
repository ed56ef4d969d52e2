//! `connect`: an aether for Python, embedded in this process or over NATS,
//! with the programs' settings folder and options.

use std::path::PathBuf;

use aether_core::{Aether, AetherConfig, ConnectError, lan::LanOptions};
use aether_ops::settings::client::{Access, aether_section};
use pyo3::{prelude::*, types::PyDict};

use crate::{errors, map, value, vibrator, wait};

/// How to reach the bus, as `connect`'s arguments give it.
#[derive(Default)]
pub(crate) struct Options {
    url: Option<String>,
    name: Option<String>,
    config_dir: Option<PathBuf>,
    access: Access,
}

impl Options {
    /// Embedded (no URL and no settings folder, or the URL `embedded`), or
    /// over NATS; and the settings.
    fn config(&self) -> PyResult<(bool, AetherConfig)> {
        let mut config = match &self.config_dir {
            Some(dir) => {
                if !dir.join("default.toml").is_file() {
                    return Err(errors::ConfigurationError::new_err(format!(
                        "{} has no default.toml: give the folder the programs read",
                        dir.display()
                    )));
                }
                aether_section(dir)
                    .map_err(|e| errors::ConfigurationError::new_err(format!("settings: {e}")))?
            }
            None => AetherConfig::default(),
        };
        let nats = match self.url.as_deref() {
            Some("embedded") => false,
            Some(urls) => {
                config.nats.urls = urls.split(',').map(|u| u.trim().to_string()).collect();
                true
            }
            None => self.config_dir.is_some(),
        };
        if let Some(name) = &self.name {
            config.report.instance = Some(name.clone());
            config.nats.connection_name = Some(format!("aether-python {name}"));
        } else if config.nats.connection_name.is_none() {
            config.nats.connection_name = Some(format!("aether-python {}", std::process::id()));
        }
        self.access.apply(&mut config);
        config.validate().map_err(errors::config)?;
        Ok((nats, config))
    }

    async fn open(self) -> PyResult<Aether> {
        let (nats, config) = self.config()?;
        if nats {
            Aether::connect(config).await.map_err(errors::connect)
        } else {
            Aether::new(config).map_err(errors::config)
        }
    }
}

/// Connects: `connect()` is an aether in this process only; `connect(url)`
/// one over the NATS servers of `url` (several separated by commas);
/// `connect(config_dir=...)` one over the servers of that settings
/// folder's `[aether.nats] urls` (its `[aether]` section and `AETHER__*`
/// variables apply, under the arguments). `async_=True` gives an asyncio
/// future instead of waiting.
#[pyfunction]
#[pyo3(signature = (url=None, *, name=None, config_dir=None, token=None, user=None, password=None, creds=None, tls_ca=None, tls_cert=None, tls_key=None, async_=false))]
#[allow(clippy::too_many_arguments)]
pub(crate) fn connect<'py>(
    py: Python<'py>,
    url: Option<String>,
    name: Option<String>,
    config_dir: Option<PathBuf>,
    token: Option<String>,
    user: Option<String>,
    password: Option<String>,
    creds: Option<PathBuf>,
    tls_ca: Option<PathBuf>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    async_: bool,
) -> PyResult<Bound<'py, PyAny>> {
    let options = Options {
        url,
        name,
        config_dir,
        access: Access {
            creds,
            token,
            user,
            password,
            tls_ca,
            tls_cert,
            tls_key,
        },
    };
    let open = async move { options.open().await.map(Bus::from) };
    wait::call(py, async_, open)
}

/// Connects to a bus on the LAN (`aether node`): this machine's node of
/// `bus`, waiting up to `wait` seconds for it to start (its record in the
/// runtime directory), or, with the bus's `secret_file`, a node announced
/// on the LAN within `wait` seconds; the password comes from the secret. `bus` and
/// `secret_file` default to `AETHER_BUS` and `AETHER_SECRET_FILE`.
#[pyfunction]
#[pyo3(signature = (bus=None, *, secret_file=None, wait=3.0, name=None, config_dir=None, async_=false))]
#[allow(clippy::too_many_arguments)]
pub(crate) fn discover<'py>(
    py: Python<'py>,
    bus: Option<String>,
    secret_file: Option<PathBuf>,
    wait: f64,
    name: Option<String>,
    config_dir: Option<PathBuf>,
    async_: bool,
) -> PyResult<Bound<'py, PyAny>> {
    let env = |key: &str| std::env::var(key).ok().filter(|v| !v.is_empty());
    let lan = LanOptions {
        bus: bus
            .or_else(|| env("AETHER_BUS"))
            .unwrap_or_else(|| aether_core::lan::DEFAULT_BUS.to_string()),
        secret_file: secret_file.or_else(|| env("AETHER_SECRET_FILE").map(PathBuf::from)),
        wait: value::seconds(wait)?,
        ..Default::default()
    };
    let options = Options {
        name,
        config_dir,
        ..Options::default()
    };
    let (_, config) = options.config()?;
    let open = async move {
        let config = find(config, &lan).await.map_err(errors::connect)?;
        Aether::connect(config)
            .await
            .map(Bus::from)
            .map_err(errors::connect)
    };
    wait::call(py, async_, open)
}

/// The settings that reach a node of the bus ([`LanOptions::find`]:
/// this machine's, waited for until `lan.wait` ends, or one on the LAN).
async fn find(config: AetherConfig, lan: &LanOptions) -> Result<AetherConfig, ConnectError> {
    lan.find(config).await
}

/// An aether: the bus a script is on.
#[pyclass(module = "aether._aether", frozen)]
pub(crate) struct Bus {
    pub(crate) aether: Aether,
}

impl From<Aether> for Bus {
    fn from(aether: Aether) -> Self {
        Self { aether }
    }
}

#[pymethods]
impl Bus {
    /// `embedded` or `nats`.
    #[getter]
    fn medium(&self) -> &'static str {
        match self.aether.connection().state {
            aether_core::ConnectionState::Embedded => "embedded",
            _ => "nats",
        }
    }

    /// The instance name in reports (`name=`), the default node name of
    /// its maps.
    #[getter]
    fn name(&self) -> String {
        self.aether.config().report.instance_name()
    }

    /// The connection: `embedded`, `connected`, `disconnected`, `closed`.
    #[getter]
    fn state(&self) -> String {
        self.aether.connection().state.to_string()
    }

    /// A vibrator named `name` on this bus.
    #[pyo3(signature = (name, *, noise_floor=None, queue_capacity=None))]
    fn vibrator(
        &self,
        py: Python<'_>,
        name: String,
        noise_floor: Option<f64>,
        queue_capacity: Option<usize>,
    ) -> PyResult<vibrator::Vibrator> {
        let aether = self.aether.clone();
        wait::block(py, async move {
            vibrator::Vibrator::create(aether, name, noise_floor, queue_capacity).await
        })
    }

    /// A replica of map `name` (waits up to `ready_timeout` for a peer's
    /// state); `async_=True` gives an asyncio future of it.
    #[pyo3(signature = (name, *, node=None, dir=None, acked=None, async_=false))]
    #[allow(clippy::too_many_arguments)]
    fn map<'py>(
        &self,
        py: Python<'py>,
        name: String,
        node: Option<String>,
        dir: Option<PathBuf>,
        acked: Option<f64>,
        async_: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        let acked = acked.map(value::seconds).transpose()?;
        let aether = self.aether.clone();
        let open = async move { map::Map::open(aether, name, node, dir, acked).await };
        wait::call(py, async_, open)
    }

    /// Node `node`'s replica of the node-owned map `name`.
    #[pyo3(signature = (name, node, *, dir=None))]
    fn node_state(
        &self,
        py: Python<'_>,
        name: String,
        node: String,
        dir: Option<PathBuf>,
    ) -> PyResult<map::NodeState> {
        let aether = self.aether.clone();
        let (state, map) = wait::block(py, async move {
            map::NodeState::open(aether, name, node, dir).await
        })?;
        map::NodeState::new(py, state, map)
    }

    /// This process's clock against the bus's: `offset_ms` (the bus's time
    /// is this machine's clock plus it), `uncertainty_ms`, the `sources`
    /// heard at the last measurement, `measurements` made. Stamps, drift
    /// checks and the horizon use the bus's time.
    fn clock<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let status = aether_core::bustime::status();
        let out = PyDict::new(py);
        out.set_item("offset_ms", status.offset_ns as f64 / 1e6)?;
        out.set_item("uncertainty_ms", status.uncertainty_ns as f64 / 1e6)?;
        out.set_item("sources", status.sources)?;
        out.set_item("measurements", status.measurements)?;
        Ok(out)
    }

    /// What this aether did: waves emitted, delivered, dropped by reason,
    /// and its connection.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let out = value::stats_dict(py, &self.aether.stats())?;
        let connection = self.aether.connection();
        out.set_item("connection", connection.state.to_string())?;
        out.set_item("outbox", connection.outbox_len)?;
        out.set_item("unsent", connection.unsent())?;
        Ok(out)
    }

    /// Waits until what was emitted left this process (up to `timeout`
    /// seconds), then closes.
    #[pyo3(signature = (timeout=5.0, *, async_=false))]
    fn drain<'py>(
        &self,
        py: Python<'py>,
        timeout: f64,
        async_: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        let aether = self.aether.clone();
        let timeout = value::seconds(timeout)?;
        wait::call(py, async_, async move {
            aether.drain(timeout).await.map_err(errors::emit)
        })
    }

    /// Closes at once: what is still unsent is dropped (and counted).
    fn close(&self) {
        self.aether.close();
    }

    /// Whether it was closed.
    #[getter]
    fn closed(&self) -> bool {
        self.aether.is_closed()
    }
}
