//! Durable channels on the embedded medium.
//!
//! With `[aether.durability] channels` set, an emit on a durable channel is
//! appended to the durable outbox ([`crate::medium::disk_outbox`]; written and
//! synced when it has an `outbox_dir`) before `emit` returns, then routed as
//! usual. The wave stays in the outbox until an application takes it: the
//! first [`Vibrator`](crate::Vibrator) whose `receive`, `try_receive` or
//! stream hands it out acknowledges it (a taken mark), like a queue group;
//! the other resonators that queued it still get their copy. A wave that no
//! queue took (nobody resonated, every queue refused it) waits in the
//! outbox and is routed again when a vibrator resonates on a pattern that
//! matches it; so is a wave left in the queue of a vibrator that was
//! dropped, once no other queue holds it. A process started with the same
//! `outbox_dir` (after a crash, even SIGKILL) finds every wave that was not
//! taken and delivers each once, in order, as its vibrators resonate.
//!
//! Routing a durable wave and routing the waiting ones to a new resonance
//! happen under one lock, so a resonance gets the waiting waves before any
//! newer one.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard},
};

use crate::{
    AetherConfig, Channel, ConfigError, EmitError, EmitErrorKind, Wave,
    admission::Life,
    medium::{
        disk_outbox::{AppendError, DurableOutbox, Entry},
        embedded::router::Router,
    },
    stats::Counters,
    subject,
    wave::wire,
};

/// The durable side of an embedded aether.
pub(crate) struct EmbeddedDurable {
    /// The durable patterns.
    patterns: Vec<Channel>,
    /// Entries are named `<subject_prefix>.<channel>`, as over NATS, so an
    /// outbox means the same on both mediums.
    prefix: String,
    limits: wire::Limits,
    /// The life rules of its waves.
    life: Life,
    outbox: DurableOutbox,
    flight: Mutex<Flight>,
}

/// Which pending waves sit in receive queues.
#[derive(Default)]
struct Flight {
    /// Pending wave id -> how many receive queues hold it, not yet taken.
    /// A pending wave not in here waits for a resonance.
    offered: HashMap<u128, usize>,
}

impl EmbeddedDurable {
    /// The durable side, when durable channels are configured: opens the
    /// outbox with what a previous process left in it.
    pub(crate) fn open(config: &AetherConfig) -> Result<Option<Arc<Self>>, ConfigError> {
        let durability = &config.durability;
        if !durability.is_enabled() {
            return Ok(None);
        }
        let outbox = match &durability.outbox_dir {
            None => DurableOutbox::in_memory(durability.outbox_max_bytes),
            Some(dir) => DurableOutbox::open(dir, durability.outbox_max_bytes).map_err(|e| {
                ConfigError::new(
                    "durability.outbox_dir",
                    format!("{} ({e})", dir.display()),
                    "cannot be used as the durable outbox",
                )
            })?,
        };
        Ok(Some(Arc::new(Self {
            patterns: durability.patterns(),
            prefix: config.nats.subject_prefix.clone(),
            limits: wire::Limits {
                max_body_bytes: config.nats.max_wave_bytes.max(wire::DEFAULT_MAX_BODY_BYTES),
            },
            life: Life::of(config),
            outbox,
            flight: Mutex::new(Flight::default()),
        })))
    }

    fn lock(&self) -> MutexGuard<'_, Flight> {
        // Every change is one insert or remove: a panic leaves it whole.
        self.flight.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether waves on `channel` are durable. The bus's own channels
    /// (`_...`) never are.
    #[inline]
    pub(crate) fn is_durable(&self, channel: &Channel) -> bool {
        !channel.is_system() && self.patterns.iter().any(|p| channel.matches(p))
    }

    /// Keeps an admitted wave on a durable channel in the outbox (synced
    /// with a directory) and routes it. Blocking: call it off the async
    /// workers.
    pub(crate) fn emit(
        &self,
        router: &Router,
        stats: &Counters,
        wave: Wave,
    ) -> Result<(), EmitError> {
        let id = wave.id().as_u128();
        let entry = Entry {
            subject: subject::channel_subject(&self.prefix, wave.channel()),
            id,
            body: wire::encode(&wave),
        };
        let mut flight = self.lock();
        match self.outbox.append(entry) {
            Ok(()) => {}
            Err(AppendError::Full(bytes)) => {
                return Err(EmitError::new(
                    EmitErrorKind::OutboxFull,
                    format!(
                        "durable wave not kept: the durable outbox holds {bytes} bytes of waves \
                         no application took yet; receive them, retry later or raise \
                         durability.outbox_max_bytes"
                    ),
                ));
            }
            Err(e @ AppendError::Io { .. }) => {
                return Err(EmitError::with_source(EmitErrorKind::Medium, e));
            }
        }
        let queued = router.route_durable(wave, stats);
        if queued > 0 {
            *flight.offered.entry(id).or_default() += queued;
        }
        Ok(())
    }

    /// Runs `subscribe` (which adds a resonance on `pattern` to `medium`)
    /// and routes the waiting waves that `pattern` matches, in order,
    /// before any newer durable wave.
    pub(crate) fn subscribe<R>(
        &self,
        router: &Router,
        stats: &Counters,
        pattern: &Channel,
        subscribe: impl FnOnce() -> R,
    ) -> R {
        let mut flight = self.lock();
        let subscribed = subscribe();
        if !pattern.is_system() {
            self.route_waiting(&mut flight, router, stats, |channel, _| {
                channel.matches(pattern)
            });
        }
        subscribed
    }

    /// A vibrator handed `wave` to its application: if it is a pending
    /// durable wave, it is taken (acknowledged) now. Called from a
    /// vibrator's `poll`: no file I/O here.
    pub(crate) fn hand_out(&self, wave: &Wave) {
        if !self.is_durable(wave.channel()) {
            return;
        }
        let id = wave.id().as_u128();
        let mut flight = self.lock();
        flight.offered.remove(&id);
        // In memory only: the outbox's own thread writes the taken mark.
        self.outbox.take(id);
    }

    /// Waits until the taken marks of every wave handed out so far are in
    /// the file. Blocking.
    pub(crate) fn settle(&self) {
        self.outbox.settle();
    }

    /// A vibrator went away with `waves` queued and never handed out: a
    /// durable one that no other queue holds is routed again now (it waits
    /// if nobody else resonates).
    pub(crate) fn release<'a>(
        &self,
        router: &Router,
        stats: &Counters,
        waves: impl Iterator<Item = &'a Wave>,
    ) {
        let mut flight = self.lock();
        let mut waiting = Vec::new();
        for wave in waves {
            let id = wave.id().as_u128();
            if let Some(holders) = flight.offered.get_mut(&id) {
                *holders -= 1;
                if *holders == 0 {
                    flight.offered.remove(&id);
                    waiting.push(id);
                }
            }
        }
        if !waiting.is_empty() {
            self.route_waiting(&mut flight, router, stats, |_, id| waiting.contains(&id));
        }
    }

    /// Routes, oldest first, the pending waves that no queue holds and that
    /// `wanted` picks; a wave that decayed meanwhile is dropped (counted as
    /// expired) and taken out.
    fn route_waiting(
        &self,
        flight: &mut Flight,
        router: &Router,
        stats: &Counters,
        wanted: impl Fn(&Channel, u128) -> bool,
    ) {
        for entry in self.outbox.pending() {
            if flight.offered.contains_key(&entry.id) {
                continue;
            }
            let Some(channel) = subject::subject_channel(&self.prefix, &entry.subject) else {
                continue;
            };
            if !wanted(&channel, entry.id) {
                continue;
            }
            let mut wave = match wire::decode(channel, entry.body, &self.limits) {
                Ok(wave) => wave,
                Err(error) => {
                    tracing::warn!(%error, "a durable wave in the outbox does not decode; dropping it");
                    self.outbox.take(entry.id);
                    continue;
                }
            };
            if let Err(reason) = self.life.judge(&mut wave, 0) {
                stats.dropped(reason);
                self.outbox.take(entry.id);
                continue;
            }
            let queued = router.route_durable(wave, stats);
            if queued > 0 {
                flight.offered.insert(entry.id, queued);
            }
        }
    }
}
