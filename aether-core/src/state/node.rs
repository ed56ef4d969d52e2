//! Node-owned state: each node writes only its own keys (`node/<name>/…`)
//! of a map, reads any node's, and sees who is there.

#[allow(clippy::wildcard_imports)]
use super::*;

/// Node-owned state: each node writes only its own keys, reads any node's,
/// and sees who is there (the shape of a distributed state network).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use aether_core::{Aether, state::NodeState};
///
/// let aether = Aether::default();
/// let sensor = NodeState::open(&aether, "sensors", "sensor_kitchen").await?;
/// let monitor = NodeState::open(&aether, "sensors", "monitor").await?;
/// sensor.update("temperature", "72.5").await?;
/// monitor.changed("sensor_kitchen", "temperature").await;
/// assert_eq!(monitor.read("sensor_kitchen", "temperature").as_deref(), Some(&b"72.5"[..]));
/// assert_eq!(monitor.peers(), ["sensor_kitchen"]);
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct NodeState {
    map: StateMap,
}

impl NodeState {
    /// Opens node `node`'s replica of the node-owned map `name`.
    pub async fn open(
        aether: &Aether,
        name: impl Into<String>,
        node: impl Into<String>,
    ) -> Result<NodeState, StateError> {
        Self::open_with(aether, StateMap::builder(name).node(node)).await
    }

    /// Opens it with a builder's settings.
    pub async fn open_with(
        aether: &Aether,
        builder: StateMapBuilder,
    ) -> Result<NodeState, StateError> {
        let map = builder.open(aether).await?;
        if map.node().contains('/') {
            return Err(StateError::new(
                StateErrorKind::InvalidName,
                "a node name holds no '/'",
            ));
        }
        Ok(NodeState { map })
    }

    /// This node's name.
    pub fn node(&self) -> &str {
        self.map.node()
    }

    fn key(node: &str, key: &str) -> String {
        format!("node/{node}/{key}")
    }

    /// Sets this node's `key`.
    pub async fn update(&self, key: &str, value: impl Into<Bytes>) -> Result<Stamp, StateError> {
        self.map.set(&Self::key(self.node(), key), value).await
    }

    /// Deletes this node's `key`.
    pub async fn remove(&self, key: &str) -> Result<Stamp, StateError> {
        self.map.delete(&Self::key(self.node(), key)).await
    }

    /// Node `node`'s `key`.
    pub fn read(&self, node: &str, key: &str) -> Option<Bytes> {
        self.map.get(&Self::key(node, key))
    }

    /// Waits until node `node`'s `key` changes here (from now on).
    pub async fn changed(&self, node: &str, key: &str) {
        self.map.changed(&Self::key(node, key)).await;
    }

    /// The live nodes, this one aside.
    pub fn peers(&self) -> Vec<String> {
        self.map.peers()
    }

    /// Joins and leaves, from now on.
    pub fn presence(&self) -> impl Stream<Item = Presence> + Send + Unpin + 'static {
        self.map.presence()
    }

    /// The map underneath (its keys are `node/<name>/<key>`).
    pub fn map(&self) -> &StateMap {
        &self.map
    }

    /// Leaves: peers see it go at once.
    pub async fn close(&self) {
        self.map.close().await;
    }
}
