//! `Vibrator` and `Wave` for Python. A vibrator's emits go through its
//! emitter (they never wait for a receive in another thread); its receive
//! queue and resonances are behind one lock, taken by `resonate` and
//! `receive`.

use std::{sync::Arc, time::Duration};

use aether_core::{Aether, Channel, Emitter};
use pyo3::{
    prelude::*,
    types::{PyBytes, PyDict, PyString},
};
use tokio::sync::Mutex;

use crate::{errors, value, wait};

/// A vibrator: emits waves, resonates on channel patterns, receives.
#[pyclass(module = "aether._aether", frozen)]
pub(crate) struct Vibrator {
    name: String,
    emitter: Emitter,
    receiver: Arc<Mutex<aether_core::Vibrator>>,
    /// The channel of the last emit, by the identity of its Python text:
    /// a script emits on a few channels, written as literals (the same
    /// object each time), so most emits skip reading and checking it.
    last_channel: std::sync::Mutex<Option<(Py<PyString>, Channel)>>,
}

impl Vibrator {
    pub(crate) async fn create(
        aether: Aether,
        name: String,
        noise_floor: Option<f64>,
        queue_capacity: Option<usize>,
    ) -> PyResult<Self> {
        let mut builder = aether_core::Vibrator::builder(name.clone());
        if let Some(floor) = noise_floor {
            builder = builder.noise_floor(floor);
        }
        if let Some(capacity) = queue_capacity {
            builder = builder.queue_capacity(capacity);
        }
        let vibrator = builder.create(&aether).await.map_err(errors::vibrator)?;
        Ok(Self {
            name,
            emitter: vibrator.emitter(),
            receiver: Arc::new(Mutex::new(vibrator)),
            last_channel: std::sync::Mutex::default(),
        })
    }

    /// `text` as a channel; the last one again when `text` is the same
    /// Python object.
    fn channel(&self, text: &Bound<'_, PyString>) -> PyResult<Channel> {
        let mut last = self.last_channel.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((object, channel)) = &*last
            && object.is(text)
        {
            return Ok(channel.clone());
        }
        let channel = Channel::from(&*value::text(text)?);
        *last = Some((text.clone().unbind(), channel.clone()));
        Ok(channel)
    }
}

/// A wave built from Python's arguments.
fn build(
    channel: Channel,
    payload: Option<&Bound<'_, PyAny>>,
    amplitude: f64,
    phase: f64,
    key: Option<&Bound<'_, PyString>>,
) -> PyResult<aether_core::Wave> {
    let body = value::payload_or_null(payload)?;
    let mut builder = aether_core::Wave::builder(channel)
        .amplitude(amplitude)
        .phase(phase)
        .payload(body);
    if let Some(key) = key {
        builder = builder.correlation_key(&*value::text(key)?);
    }
    builder.build().map_err(errors::wave)
}

#[pymethods]
impl Vibrator {
    /// Its name: the source of the waves it emits.
    #[getter]
    fn name(&self) -> &str {
        &self.name
    }

    /// Emits `payload` (any JSON value, or `bytes` as they are) on
    /// `channel`; returns the wave's id once the aether took it (over NATS
    /// with the channel durable: once JetStream stored it). The package's
    /// `Vibrator.emit` is this method itself: it is the hot path.
    #[pyo3(signature = (channel, payload=None, *, amplitude=1.0, phase=0.0, key=None, async_=false))]
    #[allow(clippy::too_many_arguments)]
    fn emit<'py>(
        &self,
        py: Python<'py>,
        channel: &Bound<'py, PyString>,
        payload: Option<&Bound<'py, PyAny>>,
        amplitude: f64,
        phase: f64,
        key: Option<&Bound<'py, PyString>>,
        async_: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        if !async_ {
            wait::refuse_in_event_loop(py, "emit", "await emit_async(...)")?;
        }
        let wave = build(self.channel(channel)?, payload, amplitude, phase, key)?;
        let emitter = self.emitter.clone();
        let emit = async move {
            emitter
                .emit(wave)
                .await
                .map(|id| id.to_string())
                .map_err(errors::emit)
        };
        wait::call(py, async_, emit)
    }

    /// Resonates on `pattern` (`*` one token, `>` the rest), alone or as a
    /// member of `group` (each wave to one member).
    #[pyo3(signature = (pattern, group=None))]
    fn resonate(&self, py: Python<'_>, pattern: String, group: Option<String>) -> PyResult<()> {
        let receiver = Arc::clone(&self.receiver);
        wait::block(py, async move {
            let mut vibrator = receiver.lock().await;
            match group {
                Some(group) => vibrator.resonate_in_group(pattern.as_str(), &group).await,
                None => vibrator.resonate_on(pattern.as_str()).await,
            }
            .map_err(errors::resonate)
        })
    }

    /// Stops resonating on `pattern`.
    fn stop_resonating(&self, py: Python<'_>, pattern: String) -> PyResult<()> {
        let receiver = Arc::clone(&self.receiver);
        wait::block(py, async move {
            receiver
                .lock()
                .await
                .stop_resonating(pattern.as_str())
                .await
                .map_err(errors::resonate)
        })
    }

    /// The next wave, waiting up to `timeout` seconds (None: until one
    /// comes or the aether closes); None when none came or it closed.
    #[pyo3(signature = (timeout=None))]
    fn receive(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<Option<Wave>> {
        let timeout = timeout.map(value::seconds).transpose()?;
        let receiver = Arc::clone(&self.receiver);
        wait::block(py, receive(receiver, timeout))
    }

    /// An asyncio future of the next wave; a wave that comes after the
    /// future was cancelled is handed to `keep` (the package queues it for
    /// the next receive).
    fn _receive_async<'py>(&self, py: Python<'py>, keep: Py<PyAny>) -> PyResult<Bound<'py, PyAny>> {
        let receiver = Arc::clone(&self.receiver);
        wait::future(py, receive(receiver, None), Some(keep))
    }

    /// A wave already queued, or None at once.
    fn try_receive(&self) -> Option<Wave> {
        let mut vibrator = self.receiver.try_lock().ok()?;
        vibrator.try_receive().map(Wave::from)
    }

    /// Waves in its queue now.
    fn queued(&self) -> usize {
        self.receiver
            .try_lock()
            .map(|vibrator| vibrator.queued())
            .unwrap_or(0)
    }

    /// Emits a request on `channel` and waits up to `timeout` seconds for
    /// the first reply: `aether.NoResponders` when nobody resonates on it,
    /// `aether.Timeout` when no reply came.
    #[pyo3(signature = (channel, payload=None, *, timeout=5.0, amplitude=1.0, key=None, async_=false))]
    #[allow(clippy::too_many_arguments)]
    fn request<'py>(
        &self,
        py: Python<'py>,
        channel: &Bound<'py, PyString>,
        payload: Option<&Bound<'py, PyAny>>,
        timeout: f64,
        amplitude: f64,
        key: Option<&Bound<'py, PyString>>,
        async_: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        let wave = build(self.channel(channel)?, payload, amplitude, 0.0, key)?;
        let timeout = value::seconds(timeout)?;
        let emitter = self.emitter.clone();
        let request = async move {
            emitter
                .request_with_timeout(wave, timeout)
                .await
                .map(Wave::from)
                .map_err(errors::request)
        };
        wait::call(py, async_, request)
    }

    /// Replies to `request` (a wave received with a reply channel) with
    /// `payload`.
    #[pyo3(signature = (request, payload=None, *, async_=false))]
    fn reply<'py>(
        &self,
        py: Python<'py>,
        request: &Wave,
        payload: Option<&Bound<'py, PyAny>>,
        async_: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        let body = value::payload_or_null(payload)?;
        let (emitter, request) = (self.emitter.clone(), request.wave.clone());
        let reply = async move {
            emitter
                .reply(&request, body)
                .await
                .map(|id| id.to_string())
                .map_err(errors::emit)
        };
        wait::call(py, async_, reply)
    }

    /// What this vibrator did: emitted, delivered to it, dropped by reason.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        value::stats_dict(py, &self.emitter.stats())
    }

    fn __repr__(&self) -> String {
        format!("Vibrator({:?})", self.name)
    }
}

async fn receive(
    receiver: Arc<Mutex<aether_core::Vibrator>>,
    timeout: Option<Duration>,
) -> PyResult<Option<Wave>> {
    let mut vibrator = receiver.lock().await;
    let wave = match timeout {
        Some(timeout) => tokio::time::timeout(timeout, vibrator.receive())
            .await
            .ok()
            .flatten(),
        None => vibrator.receive().await,
    };
    Ok(wave.map(Wave::from))
}

/// A wave received.
#[pyclass(module = "aether._aether", frozen)]
pub(crate) struct Wave {
    pub(crate) wave: aether_core::Wave,
}

impl From<aether_core::Wave> for Wave {
    fn from(wave: aether_core::Wave) -> Self {
        Self { wave }
    }
}

#[pymethods]
impl Wave {
    /// Its channel.
    #[getter]
    fn channel(&self) -> &str {
        self.wave.channel().as_str()
    }

    /// Its payload: the value when it is JSON, else its bytes.
    #[getter]
    fn payload<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        value::from_bytes(py, self.wave.payload_bytes())
    }

    /// Its payload's bytes.
    #[getter]
    fn data<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, self.wave.payload_bytes())
    }

    /// Its amplitude (importance), in [0, 1]; a wave emitted at 0 (or
    /// under the aether's expiry floor) expires at once, counted.
    #[getter]
    fn amplitude(&self) -> f64 {
        self.wave.amplitude().value()
    }

    /// Its phase, in radians: 0 asserts, π retracts.
    #[getter]
    fn phase(&self) -> f64 {
        self.wave.phase().radians()
    }

    /// Its correlation key (the channel when it was emitted without one).
    #[getter]
    fn key(&self) -> &str {
        self.wave.correlation_key()
    }

    /// The vibrator that emitted it, when known.
    #[getter]
    fn source(&self) -> Option<&str> {
        self.wave.source()
    }

    /// Its id.
    #[getter]
    fn id(&self) -> String {
        self.wave.id().to_string()
    }

    /// Whether it is a request (it has a reply channel).
    #[getter]
    fn is_request(&self) -> bool {
        self.wave.reply_to().is_some()
    }

    fn __repr__(&self) -> String {
        format!(
            "Wave(channel={:?}, source={:?}, key={:?}, amplitude={})",
            self.wave.channel().as_str(),
            self.wave.source(),
            self.wave.correlation_key(),
            self.wave.amplitude().value()
        )
    }
}
