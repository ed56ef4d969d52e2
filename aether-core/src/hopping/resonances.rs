//! A vibrator's hopping state: the key it hops with and its hopping
//! resonances, which stop with it. The vibrator holds it; the calls that
//! use it are in the parent module.

use std::sync::{Arc, OnceLock};

use tokio::task::AbortHandle;

use super::{gate::HopGate, sequence::HopKey};

/// A vibrator's hopping: its own secret, if any, and its hopping
/// resonances, whose windows stop when it is dropped.
#[derive(Default)]
pub(crate) struct Hopping {
    /// The key of its own secret, or of the aether's, made once.
    pub(super) key: OnceLock<HopKey>,
    /// Each base it hops on.
    pub(super) resonances: Vec<Resonance>,
}

/// One hopping resonance: its gate and the task that moves its window.
pub(super) struct Resonance {
    pub(super) gate: Arc<HopGate>,
    pub(super) task: AbortHandle,
}

impl Resonance {
    /// Stops delivering at once; the task's window unsubscribes when the
    /// aborted task is dropped.
    pub(super) fn stop(&self) {
        self.gate.stop();
        self.task.abort();
    }
}

impl Drop for Hopping {
    fn drop(&mut self) {
        for resonance in &self.resonances {
            resonance.stop();
        }
    }
}
