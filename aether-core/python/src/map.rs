//! Replicated maps for Python: `Map` (any JSON value per key, last writer
//! wins), `NodeState` (each node writes only its own keys), and `Events`,
//! the changes a watch hears or the replicas that come and go.

use std::{
    path::PathBuf,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use aether_core::{
    Aether,
    state::{self, Presence, StateMap},
};
use futures_util::{Stream, StreamExt};
use pyo3::{
    exceptions::PyKeyError,
    prelude::*,
    types::{PyDict, PyList, PyTuple},
};
use tokio::sync::{Mutex, Notify};

use crate::{errors, value, wait};

fn builder(name: &str, node: Option<String>, dir: Option<PathBuf>) -> state::StateMapBuilder {
    // Values from other replicas are read by the rule a write is checked
    // by: JSON a script could write back, or raw bytes.
    let mut builder = StateMap::builder(name).values(value::takes);
    if let Some(node) = node {
        builder = builder.node(node);
    }
    if let Some(dir) = dir {
        builder = builder.state_dir(dir.join(name));
    }
    builder
}

/// A replica of a replicated map.
#[pyclass(module = "aether._aether", frozen)]
pub(crate) struct Map {
    map: StateMap,
    /// Each write waits this long to be held by another replica.
    acked: Option<Duration>,
}

impl Map {
    pub(crate) async fn open(
        aether: Aether,
        name: String,
        node: Option<String>,
        dir: Option<PathBuf>,
        acked: Option<Duration>,
    ) -> PyResult<Self> {
        let map = builder(&name, node, dir)
            .open(&aether)
            .await
            .map_err(errors::state)?;
        Ok(Self { map, acked })
    }
}

/// `key`'s value in `map`, or None.
fn read<'py>(py: Python<'py>, map: &StateMap, key: &str) -> PyResult<Option<Bound<'py, PyAny>>> {
    map.get(key)
        .map(|bytes| value::from_bytes(py, &bytes))
        .transpose()
}

/// Writes `value` (as JSON) at `key`: blocking, or an asyncio future.
fn write<'py>(
    py: Python<'py>,
    map: &StateMap,
    key: String,
    value: Option<&Bound<'py, PyAny>>,
    acked: Option<Duration>,
    async_: bool,
) -> PyResult<Bound<'py, PyAny>> {
    let body = match value {
        Some(value) => Some(value::map_value(value)?),
        None => None,
    };
    let map = map.clone();
    let write = async move {
        let stamp = match body {
            Some(body) => map.set(&key, body).await,
            None => map.delete(&key).await,
        }
        .map_err(errors::state)?;
        if let Some(timeout) = acked {
            map.flush(timeout).await.map_err(errors::state)?;
        }
        Ok(stamp.to_string())
    };
    wait::call(py, async_, write)
}

/// The replicas `map` hears, keepers among them only if `keepers`.
fn peers(map: &StateMap, keepers: bool) -> Vec<String> {
    if keepers {
        return map.peers();
    }
    let mut names: Vec<String> = map
        .peer_roles()
        .into_iter()
        .filter_map(|(name, keeper)| (!keeper).then_some(name))
        .collect();
    names.dedup();
    names
}

/// The keepers `map` hears.
fn only_keepers(map: &StateMap) -> Vec<String> {
    map.peer_roles()
        .into_iter()
        .filter_map(|(name, keeper)| keeper.then_some(name))
        .collect()
}

/// What a flush waited for, as a dict for Python.
struct Held(state::Held);

impl<'py> IntoPyObject<'py> for Held {
    type Target = PyAny;
    type Output = Bound<'py, PyAny>;
    type Error = PyErr;

    fn into_pyobject(self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let out = PyDict::new(py);
        out.set_item("writes", self.0.writes)?;
        out.set_item("by", PyList::new(py, &self.0.by)?)?;
        out.set_item("keepers", self.0.keepers)?;
        Ok(out.into_any())
    }
}

#[pymethods]
impl Map {
    /// The map's name.
    #[getter]
    fn name(&self) -> &str {
        self.map.name()
    }

    /// This replica's node name: the writer its changes carry.
    #[getter]
    fn node(&self) -> &str {
        self.map.node()
    }

    /// `key`'s value, or `default`.
    #[pyo3(signature = (key, default=None))]
    fn get<'py>(
        &self,
        py: Python<'py>,
        key: &str,
        default: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        Ok(match read(py, &self.map, key)? {
            Some(value) => value,
            None => default.unwrap_or_else(|| py.None().into_bound(py)),
        })
    }

    fn __getitem__<'py>(&self, py: Python<'py>, key: &str) -> PyResult<Bound<'py, PyAny>> {
        read(py, &self.map, key)?.ok_or_else(|| PyKeyError::new_err(key.to_string()))
    }

    /// Sets `key` to `value` (any JSON value); returns the write's stamp.
    #[pyo3(signature = (key, value, *, async_=false))]
    fn set<'py>(
        &self,
        py: Python<'py>,
        key: String,
        value: &Bound<'py, PyAny>,
        async_: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        write(py, &self.map, key, Some(value), self.acked, async_)
    }

    /// Deletes `key` (a tombstone that replicates); returns its stamp.
    #[pyo3(signature = (key, *, async_=false))]
    fn delete<'py>(
        &self,
        py: Python<'py>,
        key: String,
        async_: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        write(py, &self.map, key, None, self.acked, async_)
    }

    /// Waits until `replicas` other replicas, `keepers` of them keepers,
    /// hold every write of this replica not acknowledged yet, up to
    /// `timeout` seconds; `aether.NotHeld` if they do not in time. Returns
    /// `{"writes": n, "by": [names], "keepers": k}`.
    #[pyo3(signature = (timeout=5.0, *, replicas=1, keepers=0, async_=false))]
    fn flush<'py>(
        &self,
        py: Python<'py>,
        timeout: f64,
        replicas: i64,
        keepers: i64,
        async_: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        let timeout = value::seconds(timeout)?;
        let (Ok(replicas @ 1..), Ok(keepers)) =
            (usize::try_from(replicas), usize::try_from(keepers))
        else {
            return Err(pyo3::exceptions::PyValueError::new_err(format!(
                "flush waits for replicas=1 or more, keepers=0 or more: replicas={replicas}, \
                 keepers={keepers}"
            )));
        };
        let want = state::HeldBy {
            replicas: replicas.max(keepers),
            keepers,
        };
        let map = self.map.clone();
        wait::call(py, async_, async move {
            let held = map.flush_to(want, timeout).await.map_err(errors::state)?;
            Ok(Held(held))
        })
    }

    fn __contains__(&self, key: &str) -> bool {
        self.map.get(key).is_some()
    }

    fn __len__(&self) -> usize {
        self.map.len()
    }

    /// The keys now.
    fn keys<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let keys: Vec<String> = self.map.entries().into_iter().map(|(key, _)| key).collect();
        PyList::new(py, keys)
    }

    /// `(key, value)` pairs now.
    fn items<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let list = PyList::empty(py);
        for (key, bytes) in self.map.entries() {
            list.append((key, value::from_bytes(py, &bytes)?))?;
        }
        Ok(list)
    }

    /// Changes to the keys `pattern` matches (`>` every key), from now on;
    /// a key that is not a channel (spaces, empty tokens) is heard by its
    /// exact text, `*` or `>`.
    #[pyo3(signature = (pattern=">"))]
    fn watch(&self, pattern: &str) -> Events {
        let changes = self.map.watch(pattern).map(Item::Change);
        Events::new(changes)
    }

    /// Replicas joining and leaving, from now on.
    fn presence(&self) -> Events {
        Events::new(self.map.presence().map(Item::Presence))
    }

    /// The replicas heard now (not this one), keepers aside unless
    /// `keepers`.
    #[pyo3(signature = (*, keepers=false))]
    fn peers(&self, keepers: bool) -> Vec<String> {
        peers(&self.map, keepers)
    }

    /// Shows `value` (any JSON: a name, a status) in presence slot `slot`
    /// to every replica of the map while this one is open; never kept.
    fn set_presence(&self, slot: &str, value: &Bound<'_, PyAny>) -> PyResult<()> {
        let json = value::map_value(value)?;
        self.map.set_presence(slot, json).map_err(errors::state)
    }

    /// Clears presence slot `slot`, if it is set.
    fn clear_presence(&self, slot: &str) -> PyResult<()> {
        self.map.clear_presence(slot).map_err(errors::state)
    }

    /// The other replicas' presence values: `[{"node", "slot", "value"}]`,
    /// sorted by node and slot (a value that is not JSON as its bytes).
    fn presences<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let out = PyList::empty(py);
        for presence in self.map.presences() {
            let item = PyDict::new(py);
            item.set_item("node", presence.node)?;
            item.set_item("slot", presence.slot)?;
            item.set_item("value", value::from_bytes(py, &presence.value)?)?;
            out.append(item)?;
        }
        Ok(out)
    }

    /// The keepers heard now (`aether node`'s replicas, which keep the map
    /// for others).
    fn keepers(&self) -> Vec<String> {
        only_keepers(&self.map)
    }

    /// What this replica did: keys, tombstones, changes applied, refused by
    /// reason, peers.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let stats = self.map.stats();
        let out = PyDict::new(py);
        out.set_item("keys", stats.keys)?;
        out.set_item("tombstones", stats.tombstones)?;
        out.set_item("applied", stats.applied)?;
        out.set_item("stale", stats.stale)?;
        out.set_item("repaired", stats.repaired)?;
        out.set_item("peers", stats.peers)?;
        out.set_item("watch_lagged", stats.watch_lagged)?;
        out.set_item("ledger_failed", stats.ledger_failed)?;
        out.set_item("ledger_damaged", stats.ledger_damaged)?;
        out.set_item("unsent", stats.unsent)?;
        let refused = PyDict::new(py);
        for reason in state::Refusal::ALL {
            refused.set_item(reason.as_str(), stats.refused(reason))?;
        }
        out.set_item("refused", refused)?;
        Ok(out)
    }

    /// Says goodbye to its peers and closes; writes after it raise
    /// `aether.Closed`.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let map = self.map.clone();
        wait::block(py, async move {
            map.close().await;
            Ok(())
        })
    }

    fn __repr__(&self) -> String {
        format!(
            "Map({:?}, node={:?}, keys={})",
            self.map.name(),
            self.map.node(),
            self.map.len()
        )
    }
}

/// Node-owned state: this node writes only its own keys, reads anyone's.
#[pyclass(module = "aether._aether", frozen)]
pub(crate) struct NodeState {
    state: state::NodeState,
    map: Py<Map>,
}

impl NodeState {
    pub(crate) async fn open(
        aether: Aether,
        name: String,
        node: String,
        dir: Option<PathBuf>,
    ) -> PyResult<(state::NodeState, StateMap)> {
        let state = state::NodeState::open_with(&aether, builder(&name, Some(node), dir))
            .await
            .map_err(errors::state)?;
        let map = state.map().clone();
        Ok((state, map))
    }

    pub(crate) fn new(py: Python<'_>, state: state::NodeState, map: StateMap) -> PyResult<Self> {
        Ok(Self {
            state,
            map: Py::new(py, Map { map, acked: None })?,
        })
    }
}

#[pymethods]
impl NodeState {
    /// This node's name.
    #[getter]
    fn node(&self) -> &str {
        self.state.node()
    }

    /// The map underneath (keys `node/<name>/<key>`).
    #[getter]
    fn map(&self, py: Python<'_>) -> Py<Map> {
        self.map.clone_ref(py)
    }

    /// Sets this node's `key` to `value` (any JSON value).
    #[pyo3(signature = (key, value, *, async_=false))]
    fn update<'py>(
        &self,
        py: Python<'py>,
        key: &str,
        value: &Bound<'py, PyAny>,
        async_: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        let map = self.state.map();
        write(
            py,
            map,
            format!("node/{}/{key}", self.state.node()),
            Some(value),
            None,
            async_,
        )
    }

    /// Deletes this node's `key`.
    #[pyo3(signature = (key, *, async_=false))]
    fn remove<'py>(&self, py: Python<'py>, key: &str, async_: bool) -> PyResult<Bound<'py, PyAny>> {
        let map = self.state.map();
        write(
            py,
            map,
            format!("node/{}/{key}", self.state.node()),
            None,
            None,
            async_,
        )
    }

    /// Node `node`'s `key`, or `default`.
    #[pyo3(signature = (node, key, default=None))]
    fn read<'py>(
        &self,
        py: Python<'py>,
        node: &str,
        key: &str,
        default: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        Ok(
            match read(py, self.state.map(), &format!("node/{node}/{key}"))? {
                Some(value) => value,
                None => default.unwrap_or_else(|| py.None().into_bound(py)),
            },
        )
    }

    /// The nodes heard now (not this one), keepers aside unless
    /// `keepers`.
    #[pyo3(signature = (*, keepers=false))]
    fn peers(&self, keepers: bool) -> Vec<String> {
        peers(self.state.map(), keepers)
    }

    /// The keepers heard now.
    fn keepers(&self) -> Vec<String> {
        only_keepers(self.state.map())
    }

    /// Says goodbye and closes.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let state = self.state.clone();
        wait::block(py, async move {
            state.close().await;
            Ok(())
        })
    }
}

/// What an [`Events`] carries.
enum Item {
    Change(state::Change),
    Presence(Presence),
}

impl<'py> IntoPyObject<'py> for Item {
    type Target = PyAny;
    type Output = Bound<'py, PyAny>;
    type Error = PyErr;

    fn into_pyobject(self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        match self {
            Item::Change(change) => Ok(Bound::new(py, Change { change })?.into_any()),
            Item::Presence(Presence::Joined(name)) => {
                Ok(PyTuple::new(py, ["joined", name.as_str()])?.into_any())
            }
            Item::Presence(Presence::Left(name)) => {
                Ok(PyTuple::new(py, ["left", name.as_str()])?.into_any())
            }
        }
    }
}

type ItemStream = Pin<Box<dyn Stream<Item = Item> + Send>>;

/// A stream of changes, or of presence: `_next(timeout)` gives
/// `(ended, item)`, `item` None when the timeout passed first.
#[pyclass(module = "aether._aether", frozen)]
pub(crate) struct Events {
    stream: Arc<Mutex<ItemStream>>,
    stop: Arc<Notify>,
    stopped: Arc<AtomicBool>,
}

impl Events {
    fn new(stream: impl Stream<Item = Item> + Send + 'static) -> Self {
        Self {
            stream: Arc::new(Mutex::new(Box::pin(stream))),
            stop: Arc::new(Notify::new()),
            stopped: Arc::new(AtomicBool::new(false)),
        }
    }

    fn next_item(
        &self,
        timeout: Option<Duration>,
    ) -> impl Future<Output = PyResult<(bool, Option<Item>)>> + Send + 'static {
        let (stream, stop, stopped) = (
            Arc::clone(&self.stream),
            Arc::clone(&self.stop),
            Arc::clone(&self.stopped),
        );
        async move {
            if stopped.load(Ordering::Acquire) {
                return Ok((true, None));
            }
            let mut stream = stream.lock().await;
            let next = async {
                match timeout {
                    Some(timeout) => match tokio::time::timeout(timeout, stream.next()).await {
                        Ok(item) => (item.is_none(), item),
                        Err(_) => (false, None),
                    },
                    None => {
                        let item = stream.next().await;
                        (item.is_none(), item)
                    }
                }
            };
            tokio::select! {
                biased;
                () = stop.notified() => Ok((true, None)),
                next = next => Ok(next),
            }
        }
    }
}

#[pymethods]
impl Events {
    /// The next item, waiting up to `timeout` seconds (None: until one
    /// comes): `(ended, item)`.
    #[pyo3(signature = (timeout=None))]
    fn _next<'py>(&self, py: Python<'py>, timeout: Option<f64>) -> PyResult<Bound<'py, PyAny>> {
        let timeout = timeout.map(value::seconds).transpose()?;
        let (ended, item) = wait::block(py, self.next_item(timeout))?;
        (ended, item)
            .into_pyobject(py)
            .map(|tuple| tuple.into_any())
    }

    /// An asyncio future of `(ended, item)`; an item that comes after the
    /// future was cancelled is handed to `keep`.
    fn _next_async<'py>(&self, py: Python<'py>, keep: Py<PyAny>) -> PyResult<Bound<'py, PyAny>> {
        wait::future(py, self.next_item(None), Some(keep))
    }

    /// Ends the stream: a waiting `_next` returns `(True, None)` at once.
    fn close(&self) {
        self.stopped.store(true, Ordering::Release);
        self.stop.notify_waiters();
    }
}

/// A change of a key: its old and new values (None: unset or deleted),
/// the replica that wrote it and the write's stamp.
#[pyclass(module = "aether._aether", frozen)]
pub(crate) struct Change {
    change: state::Change,
}

#[pymethods]
impl Change {
    /// The key.
    #[getter]
    fn key(&self) -> &str {
        &self.change.key
    }

    /// Its value before (None: unset or deleted).
    #[getter(old)]
    fn old_value<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        self.change
            .old
            .as_ref()
            .map(|bytes| value::from_bytes(py, bytes))
            .transpose()
    }

    /// Its value now (None: deleted).
    #[getter(new)]
    fn new_value<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        self.change
            .new
            .as_ref()
            .map(|bytes| value::from_bytes(py, bytes))
            .transpose()
    }

    /// Whether the change deleted the key.
    #[getter]
    fn deleted(&self) -> bool {
        self.change.new.is_none()
    }

    /// The replica that wrote it.
    #[getter]
    fn writer(&self) -> &str {
        &self.change.writer
    }

    /// The write's stamp (its hybrid logical clock reading and writer).
    #[getter]
    fn stamp(&self) -> String {
        self.change.stamp.to_string()
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        let show = |value: PyResult<Option<Bound<'_, PyAny>>>| -> PyResult<String> {
            Ok(match value? {
                Some(value) => value.repr()?.to_string(),
                None => "None".to_string(),
            })
        };
        Ok(format!(
            "Change(key={:?}, old={}, new={}, writer={:?})",
            self.change.key,
            show(self.old_value(py))?,
            show(self.new_value(py))?,
            self.change.writer
        ))
    }
}
