//! The aether: the medium every vibrator emits into and resonates on.

use std::{
    collections::HashMap,
    fmt,
    sync::{
        Arc, Mutex, Weak,
        atomic::{AtomicBool, Ordering},
    },
};

use crate::{
    AetherConfig, ConfigError, EmitError, EmitErrorKind, Wave,
    inbox::Inbox,
    medium::{Listener, Medium, Routed, SubscriptionId, embedded::EmbeddedMedium},
    stats::{Counters, DropReason, StatsSnapshot},
    wave::unix_nanos,
};

/// A handle to an aether. Cheap to clone; every clone is the same aether.
///
/// `Aether::default()` is the embedded medium with the default settings: in
/// process, no network, no configuration.
///
/// ```
/// use aether_core::{Aether, AetherConfig};
///
/// let aether = Aether::default();
/// let tuned = Aether::new(AetherConfig { channel_buffer_size: 10_000, ..Default::default() })?;
/// assert_eq!(tuned.config().channel_buffer_size, 10_000);
/// # Ok::<(), aether_core::ConfigError>(())
/// ```
#[derive(Clone)]
pub struct Aether {
    inner: Arc<Inner>,
}

struct Inner {
    config: AetherConfig,
    stats: Counters,
    medium: Medium,
    closed: AtomicBool,
    /// Every live receive queue, to close them all with the aether.
    inboxes: Mutex<HashMap<u64, Weak<Inbox>>>,
}

impl Aether {
    /// An aether on the embedded medium with `config`, refused if a setting is
    /// out of range.
    pub fn new(config: AetherConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                stats: Counters::default(),
                medium: Medium::Embedded(EmbeddedMedium::default()),
                closed: AtomicBool::new(false),
                inboxes: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// The settings it runs with.
    pub fn config(&self) -> &AetherConfig {
        &self.inner.config
    }

    /// Counters of every wave emitted into this aether, read without locks.
    pub fn stats(&self) -> StatsSnapshot {
        self.inner.stats.snapshot()
    }

    /// Closes the aether: emits fail with `Closed`, and every vibrator's
    /// `receive` returns the waves already queued, then `None`.
    pub fn close(&self) {
        self.inner.closed.store(true, Ordering::SeqCst);
        let inboxes: Vec<Arc<Inbox>> = self
            .lock_inboxes()
            .drain()
            .filter_map(|(_, weak)| weak.upgrade())
            .collect();
        for inbox in inboxes {
            inbox.close();
        }
    }

    /// Whether [`Aether::close`] was called.
    pub fn is_closed(&self) -> bool {
        self.inner.closed.load(Ordering::SeqCst)
    }

    fn lock_inboxes(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Weak<Inbox>>> {
        self.inner.inboxes.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn register_inbox(&self, inbox: &Arc<Inbox>) -> bool {
        let mut inboxes = self.lock_inboxes();
        // Checked under the lock that `close` drains, so no queue is missed.
        if self.is_closed() {
            return false;
        }
        inboxes.insert(inbox.id(), Arc::downgrade(inbox));
        true
    }

    pub(crate) fn deregister_inbox(&self, id: u64) {
        self.lock_inboxes().remove(&id);
    }

    pub(crate) fn subscribe(
        &self,
        pattern: crate::Channel,
        listener: Listener,
    ) -> Option<SubscriptionId> {
        (!self.is_closed()).then(|| self.inner.medium.subscribe(pattern, listener))
    }

    pub(crate) fn unsubscribe(&self, ids: &[SubscriptionId]) {
        self.inner.medium.unsubscribe(ids);
    }

    /// Checks, measures and routes a stamped wave: the path every emit takes.
    #[inline]
    pub(crate) fn dispatch(&self, mut wave: Wave, now_ns: u64) -> Result<Routed, EmitError> {
        if self.is_closed() {
            return Err(EmitError::new(
                EmitErrorKind::Closed,
                "the aether was closed; create a new one to emit again",
            ));
        }
        wave.channel()
            .validate_concrete()
            .map_err(|e| EmitError::with_source(EmitErrorKind::InvalidChannel, e))?;
        if let Some(reply_to) = wave.reply_to() {
            reply_to
                .validate_concrete()
                .map_err(|e| EmitError::with_source(EmitErrorKind::InvalidChannel, e))?;
        }
        let config = &self.inner.config;
        let stats = &self.inner.stats;
        stats.emitted();
        if wave.propagation_count() > config.max_propagation {
            stats.dropped(DropReason::PropagationLimit);
            return Ok(Routed::default());
        }
        if wave.propagation_count() > 0 || wave.decay_per_s() > 0.0 {
            let now = if now_ns == 0 { unix_nanos() } else { now_ns };
            wave.measure(now, config.attenuation_factor);
        }
        if wave.amplitude().value() < config.min_amplitude {
            stats.dropped(DropReason::Expired);
            return Ok(Routed::default());
        }
        Ok(self.inner.medium.route(wave, stats))
    }
}

impl Default for Aether {
    fn default() -> Self {
        Self::new(AetherConfig::default()).expect("the default configuration is valid")
    }
}

impl fmt::Debug for Aether {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Aether")
            .field("medium", &"embedded")
            .field("closed", &self.is_closed())
            .field("config", &self.inner.config)
            .finish()
    }
}
