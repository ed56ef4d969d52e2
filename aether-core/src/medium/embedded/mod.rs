//! The embedded medium: in process, no network, no configuration.
//!
//! Its [`Router`] finds the receive queues whose patterns match a wave's
//! channel; waves that diffract bend to a parent channel when nobody hears
//! them, waves that reflect come back to their source, and waves on durable
//! channels ([`durable`]) are kept in the durable outbox until an
//! application takes them.

pub(crate) mod durable;
pub(crate) mod router;

use std::{sync::Arc, time::Duration};

use crate::{
    AetherConfig, Channel, ConfigError, DropReason, EmitError, EmitErrorKind, ReflectionReason,
    RequestError, RequestErrorKind, Wave,
    diffraction::Bending,
    medium::{Listener, SubscriptionId, no_responders},
    reflection,
    reply::ReplyMux,
    stats::Counters,
};

use self::{
    durable::EmbeddedDurable,
    router::{Reached, Router},
};

/// The embedded medium of one aether.
pub(crate) struct EmbeddedMedium {
    router: Arc<Router>,
    /// Durable channels (`[aether.durability]`), when configured.
    durable: Option<Arc<EmbeddedDurable>>,
    stats: Arc<Counters>,
    /// The settings diffraction bends by.
    bending: Bending,
}

impl EmbeddedMedium {
    /// The medium for `config`, counting in `stats`; opens the durable
    /// outbox when durable channels are configured.
    pub(crate) fn open(config: &AetherConfig, stats: Arc<Counters>) -> Result<Self, ConfigError> {
        Ok(Self {
            router: Arc::default(),
            durable: EmbeddedDurable::open(config)?,
            stats,
            bending: Bending::of(config),
        })
    }

    /// Adds a resonance; a resonance on durable channels first gets the
    /// waves waiting for it, in order, before any newer one.
    pub(crate) fn subscribe(&self, pattern: Channel, listener: Listener) -> SubscriptionId {
        match &self.durable {
            None => self.router.subscribe(pattern, listener),
            Some(durable) => durable.subscribe(&self.router, &self.stats, &pattern.clone(), || {
                self.router.subscribe(pattern, listener)
            }),
        }
    }

    pub(crate) fn unsubscribe(&self, ids: &[SubscriptionId]) {
        self.router.unsubscribe(ids);
    }

    /// What can be done with an admitted wave without waiting: routes it,
    /// or reflects it if it was dropped. A wave on a durable channel is
    /// given back for [`EmbeddedMedium::publish_durable`].
    #[inline(always)]
    pub(crate) fn publish_now(&self, wave: Wave, dropped: Option<DropReason>) -> Option<Wave> {
        if let Some(reason) = dropped {
            self.reflect_dropped(wave, reason);
            return None;
        }
        if let Some(durable) = &self.durable
            && durable.is_durable(wave.channel())
        {
            return Some(wave);
        }
        if wave.is_tracked() {
            self.route_tracked(wave);
        } else {
            self.router.route(wave, &self.stats);
        }
        None
    }

    /// Keeps an admitted wave on a durable channel in the durable outbox
    /// (synced, with a directory) and routes it; returns once the outbox
    /// holds it. The file is written off the async workers. A durable wave
    /// neither diffracts nor reflects on "nobody heard it": the outbox
    /// always hears it.
    #[cold]
    pub(crate) async fn publish_durable(&self, wave: Wave) -> Result<(), EmitError> {
        let durable = self.durable.clone().expect("given back by publish_now");
        let (router, stats) = (self.router.clone(), self.stats.clone());
        let emit = move || durable.emit(&router, &stats, wave);
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => runtime
                .spawn_blocking(emit)
                .await
                .map_err(|e| EmitError::with_source(EmitErrorKind::Medium, e))?,
            Err(_) => emit(),
        }
    }

    /// A wave that diffracts or reflects: when nobody resonates on its
    /// channel it bends to the parent channel (`diffraction.rs`) until
    /// someone does; when it cannot be delivered it comes back to its
    /// source (`reflection.rs`).
    #[cold]
    #[inline(never)]
    fn route_tracked(&self, mut wave: Wave) {
        let stats = &*self.stats;
        let emitted = wave.channel().clone();
        loop {
            let routing = wave.channel().clone();
            wave = match self.router.route_on(&routing, wave, stats) {
                Reached::Listeners => return,
                Reached::Nobody(unheard) => unheard,
            };
            let failure = if wave.is_diffracting() {
                match self.bending.bend(&mut wave, stats) {
                    Ok(()) => continue,
                    Err(failure) => failure,
                }
            } else {
                stats.unrouted();
                ReflectionReason::NoResonator
            };
            self.reflect_failed(wave, emitted, failure);
            return;
        }
    }

    /// A wave the checks dropped (and counted): it comes back to its source
    /// if it reflects on failure.
    #[cold]
    fn reflect_dropped(&self, wave: Wave, reason: DropReason) {
        let emitted = wave.channel().clone();
        self.reflect_failed(wave, emitted, reason.into());
    }

    /// Sends `wave`, which failed for `reason`, back to its source if it
    /// reflects on failure; `emitted` is the channel it was emitted on.
    fn reflect_failed(&self, wave: Wave, emitted: Channel, reason: ReflectionReason) {
        if let Some(reflected) = wave.failed(reason, emitted) {
            self.reflect(reflected);
        }
    }

    /// Routes a reflection to its source's reflection channel, counted as
    /// emitted and reflected.
    pub(crate) fn reflect(&self, reflected: Wave) {
        let stats = &*self.stats;
        stats.emitted();
        stats.reflected();
        let Some(routing) = reflection::channel_of(reflected.source(), reflected.origin()) else {
            // It names no source to return to.
            stats.unrouted();
            return;
        };
        if let Reached::Nobody(_) = self.router.route_on(&routing, reflected, stats) {
            // Its source is gone.
            stats.unrouted();
        }
    }

    /// Emits `wave` as a request: the reply comes to the asker's reply
    /// inbox (`replies`, resonating from its first request on); `admit`
    /// stamps and checks the wave once it names that inbox.
    pub(crate) async fn request<'a>(
        &self,
        mut wave: Wave,
        timeout: Duration,
        replies: impl Future<Output = Result<&'a Arc<ReplyMux>, RequestError>>,
        admit: impl FnOnce(&mut Wave) -> Result<Option<DropReason>, EmitError>,
    ) -> Result<Wave, RequestError> {
        let mux = replies.await?;
        let (reply_to, token, reply) = mux.register();
        let _forget = ForgetOnDrop { mux, token };
        wave.set_reply_to(reply_to);
        let channel = wave.channel().clone();
        if admit(&mut wave)?.is_some() || self.router.route(wave, &self.stats) == 0 {
            return Err(no_responders(&channel));
        }
        match tokio::time::timeout(timeout, reply).await {
            Ok(Ok(wave)) => Ok(wave),
            Ok(Err(_)) => Err(RequestError::new(
                RequestErrorKind::Closed,
                "the aether was closed; create a new one",
            )),
            Err(_) => Err(RequestError::new(
                RequestErrorKind::TimedOut,
                format!("no reply to {:?} within {timeout:?}", channel.as_str()),
            )),
        }
    }

    /// A vibrator hands `wave` to its application: a durable one is taken
    /// now (in memory; the mark is written off this thread).
    pub(crate) fn hand_out(&self, wave: &Wave) -> bool {
        if let Some(durable) = &self.durable {
            durable.hand_out(wave);
        }
        true
    }

    /// Waits until what was handed out on durable channels is marked taken
    /// in the durable outbox's file (a killed process then does not deliver
    /// it again).
    pub(crate) async fn flush(&self) -> Result<(), EmitError> {
        let Some(durable) = self.durable.clone() else {
            return Ok(());
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => runtime
                .spawn_blocking(move || durable.settle())
                .await
                .map_err(|e| EmitError::with_source(EmitErrorKind::Medium, e)),
            Err(_) => {
                durable.settle();
                Ok(())
            }
        }
    }

    /// A vibrator went away with `waves` never handed out: durable ones go
    /// to another resonator, or wait.
    pub(crate) fn release<'a>(&self, waves: impl Iterator<Item = &'a Wave>) {
        if let Some(durable) = &self.durable {
            durable.release(&self.router, &self.stats, waves);
        }
    }
}

/// Removes a request's waiter when the request ends, however it ends.
struct ForgetOnDrop<'a> {
    mux: &'a ReplyMux,
    token: u64,
}

impl Drop for ForgetOnDrop<'_> {
    fn drop(&mut self) {
        self.mux.cancel(self.token);
    }
}
