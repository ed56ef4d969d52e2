//! Spans of the waves: a producer span when a vibrator emits, a consumer span
//! when a vibrator handles what it received, linked through the W3C trace
//! context the wave carries ([`TraceContext`]), so that one trace follows a
//! flow from service to service.
//!
//! Aether makes the spans with [`tracing`]; a tracing system (OpenTelemetry,
//! through `tracing-opentelemetry`) gives them their trace and span ids.
//! What links the two is a [`SpanContexts`], installed once per process:
//! `aether_ops::telemetry` installs one when OTLP export is configured.
//! Until one is installed, no span is made and an emit pays one atomic load.
//!
//! | span | made by | kind | parent | attributes |
//! | --- | --- | --- | --- | --- |
//! | `aether.emit` | every emit (`Vibrator::emit`, `emit_wave`, `reply`, `request`, hopping waves) | producer | the current span, or the trace context the wave already carries | `messaging.system` = `aether`, `messaging.operation.type` = `send`, `messaging.destination.name` = the channel, `messaging.message.id` = the wave id, `messaging.client.id` = the emitting vibrator |
//! | `aether.receive` | handing a wave out (`Vibrator::receive`, `try_receive`, the stream), taken by [`Vibrator::span_of`](crate::Vibrator::span_of); [`receive_span`] | consumer | the trace context the wave carries (the emitter's `aether.emit`) | the same, with `messaging.operation.type` = `receive`, the receiving vibrator as `messaging.client.id`, and the wave's source as `aether.source` |
//!
//! On emit, the producer span's context is written into the wave
//! ([`Wave::set_trace_context`]) unless the wave already carries one (set by
//! the caller, or kept by a relayed wave): then that one stays, and the
//! producer span joins its trace. Over NATS the context travels in the
//! envelope (docs/guide/wire.md, "Wire format"); on the embedded medium the wave
//! itself carries it.
//!
//! A receiver runs its handling inside the consumer span, so that what it
//! emits meanwhile continues the trace:
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use aether_core::{Aether, Vibrator};
//! use tracing::Instrument;
//!
//! let aether = Aether::default();
//! let mut inventory = Vibrator::create("inventory", &aether).await?;
//! inventory.resonate_on("orders.*").await?;
//! let shop = Vibrator::create("shop", &aether).await?;
//! shop.emit_wave("orders.created", serde_json::json!({"order_id": 1})).await?;
//!
//! let order = inventory.receive().await.expect("open");
//! let span = inventory.span_of(&order); // Span::none() while tracing is off
//! async {
//!     inventory.emit_wave("inventory.reserved", serde_json::json!({"order_id": 1})).await
//! }
//! .instrument(span)
//! .await?;
//! # Ok(()) }
//! ```

use std::{fmt, sync::OnceLock};

use tracing::Span;

use crate::{TraceContext, Wave};

/// The name of the producer span made on emit.
pub const EMIT_SPAN: &str = "aether.emit";
/// The name of the consumer span a receiver handles a wave in.
pub const RECEIVE_SPAN: &str = "aether.receive";
/// The `tracing` target of both spans.
pub const TARGET: &str = "aether_core::spans";

/// What links `tracing` spans to the trace context a wave carries: the
/// bridge to a tracing system, installed once per process with [`install`].
pub trait SpanContexts: Send + Sync + 'static {
    /// The trace context of `span`: its trace id, its own span id and the
    /// trace flags; `None` if the tracing system gives it none.
    fn context_of(&self, span: &Span) -> Option<TraceContext>;

    /// Makes `parent` (a span of another process, typically) the parent of
    /// `span`, which has just been made and not yet entered.
    fn set_parent(&self, span: &Span, parent: TraceContext);
}

static CONTEXTS: OnceLock<Box<dyn SpanContexts>> = OnceLock::new();

/// Installs the process's [`SpanContexts`]: from then on, emits and
/// [`receive_span`] make spans (when the process's `tracing` subscriber
/// wants them). Once per process: a second call is refused.
pub fn install(contexts: impl SpanContexts) -> Result<(), AlreadyInstalled> {
    CONTEXTS
        .set(Box::new(contexts))
        .map_err(|_| AlreadyInstalled)
}

/// Whether a [`SpanContexts`] is installed, that is whether waves get spans.
pub fn is_installed() -> bool {
    CONTEXTS.get().is_some()
}

/// [`install`] was called a second time in this process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AlreadyInstalled;

impl fmt::Display for AlreadyInstalled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the span contexts of this process are already installed")
    }
}

impl std::error::Error for AlreadyInstalled {}

/// The producer span of `wave`, stamped and about to be sent by `emitter`,
/// with its context written into the wave (unless the wave carries one).
/// `Span::none()`, for one atomic load, when nothing is installed.
#[inline]
pub(crate) fn emitting(wave: &mut Wave, emitter: &str) -> Span {
    match CONTEXTS.get() {
        None => Span::none(),
        Some(contexts) => emit_span(contexts.as_ref(), wave, emitter),
    }
}

#[cold]
#[inline(never)]
fn emit_span(contexts: &dyn SpanContexts, wave: &mut Wave, emitter: &str) -> Span {
    let span = tracing::info_span!(
        target: TARGET,
        "aether.emit",
        otel.kind = "producer",
        messaging.system = "aether",
        messaging.operation.type = "send",
        messaging.destination.name = wave.channel().as_str(),
        messaging.message.id = %wave.id(),
        messaging.client.id = emitter,
    );
    if span.is_disabled() {
        return span;
    }
    match wave.trace_context() {
        Some(carried) => contexts.set_parent(&span, carried),
        None => wave.set_trace_context(contexts.context_of(&span)),
    }
    span
}

/// The consumer span in which `receiver` (a vibrator's name) handles
/// `wave`: its parent is the trace context the wave carries, so the trace
/// continues. Run the handling inside it (`tracing::Instrument`, or
/// `Span::in_scope`): waves emitted meanwhile are its children. A span
/// that is not entered records nothing but its start and end.
/// `Span::none()` when no [`SpanContexts`] is installed.
/// [`Vibrator::span_of`](crate::Vibrator::span_of) names the receiver.
pub fn receive_span(wave: &Wave, receiver: &str) -> Span {
    let Some(contexts) = CONTEXTS.get() else {
        return Span::none();
    };
    let span = tracing::info_span!(
        target: TARGET,
        "aether.receive",
        otel.kind = "consumer",
        messaging.system = "aether",
        messaging.operation.type = "receive",
        messaging.destination.name = wave.channel().as_str(),
        messaging.message.id = %wave.id(),
        messaging.client.id = receiver,
        aether.source = wave.source().unwrap_or_default(),
    );
    if let Some(parent) = wave.trace_context()
        && !span.is_disabled()
    {
        contexts.set_parent(&span, parent);
    }
    span
}

#[cfg(test)]
mod tests {
    //! The spans on the embedded medium, with a stand-in tracing system: a
    //! layer that gives each span a trace (its parent's, or a new one) and a
    //! span id, and records the spans as they close.

    use std::sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    };

    use tracing::{Instrument, Subscriber, field::Field, span};
    use tracing_subscriber::{
        Layer, Registry,
        layer::{Context, SubscriberExt},
        registry::LookupSpan,
    };

    use super::*;
    use crate::{Aether, Vibrator};

    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    struct Ids {
        trace: [u8; 16],
        span: [u8; 8],
        parent: Option<[u8; 8]>,
    }

    #[derive(Clone, Debug)]
    struct Recorded {
        name: &'static str,
        kind: String,
        channel: String,
        ids: Ids,
    }

    #[derive(Clone, Default)]
    struct Recorder(Arc<Mutex<Vec<Recorded>>>);

    #[derive(Default)]
    struct Fields {
        kind: String,
        channel: String,
    }

    impl tracing::field::Visit for Fields {
        fn record_str(&mut self, field: &Field, value: &str) {
            match field.name() {
                "otel.kind" => self.kind = value.to_string(),
                "messaging.destination.name" => self.channel = value.to_string(),
                _ => {}
            }
        }
        fn record_debug(&mut self, _: &Field, _: &dyn fmt::Debug) {}
    }

    static NEXT: AtomicU64 = AtomicU64::new(1);

    fn next_bytes() -> u64 {
        NEXT.fetch_add(1, Ordering::Relaxed)
    }

    impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Recorder {
        fn on_new_span(&self, attrs: &span::Attributes<'_>, id: &span::Id, ctx: Context<'_, S>) {
            let parent = if attrs.is_contextual() {
                ctx.lookup_current().map(|s| s.id())
            } else {
                attrs.parent().cloned()
            };
            let parent = parent
                .and_then(|p| ctx.span(&p))
                .and_then(|p| p.extensions().get::<Ids>().copied());
            let mut trace = [0; 16];
            trace[8..].copy_from_slice(&next_bytes().to_be_bytes());
            let ids = Ids {
                trace: parent.map_or(trace, |p| p.trace),
                span: next_bytes().to_be_bytes(),
                parent: parent.map(|p| p.span),
            };
            let mut fields = Fields::default();
            attrs.record(&mut fields);
            let span = ctx.span(id).expect("a new span");
            let mut extensions = span.extensions_mut();
            extensions.insert(ids);
            extensions.insert(fields);
        }

        fn on_close(&self, id: span::Id, ctx: Context<'_, S>) {
            let span = ctx.span(&id).expect("a closing span");
            let extensions = span.extensions();
            let fields = extensions.get::<Fields>().expect("recorded");
            self.0.lock().unwrap().push(Recorded {
                name: span.name(),
                kind: fields.kind.clone(),
                channel: fields.channel.clone(),
                ids: *extensions.get::<Ids>().expect("recorded"),
            });
        }
    }

    struct StandIn;

    fn with_ids<T>(span: &Span, f: impl FnOnce(&mut Ids) -> T) -> Option<T> {
        span.with_subscriber(|(id, dispatch)| {
            let registry = dispatch.downcast_ref::<Registry>()?;
            let span = registry.span(id)?;
            let mut extensions = span.extensions_mut();
            extensions.get_mut::<Ids>().map(f)
        })
        .flatten()
    }

    impl SpanContexts for StandIn {
        fn context_of(&self, span: &Span) -> Option<TraceContext> {
            with_ids(span, |ids| TraceContext::new(ids.trace, ids.span, 1).ok()).flatten()
        }
        fn set_parent(&self, span: &Span, parent: TraceContext) {
            with_ids(span, |ids| {
                ids.trace = parent.trace_id();
                ids.parent = Some(parent.span_id());
            });
        }
    }

    fn install_stand_in() {
        // tracing caches each callsite's interest process-wide: a callsite
        // first hit on a thread without a subscriber would be cached as
        // "never" and the recording tests would miss its spans. A global
        // subscriber that keeps nothing makes every callsite "sometimes".
        let _ = tracing::subscriber::set_global_default(Registry::default());
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| install(StandIn).expect("the first installation"));
        assert!(is_installed());
        assert_eq!(install(StandIn), Err(AlreadyInstalled));
    }

    fn find(spans: &[Recorded], name: &str, channel: &str) -> Recorded {
        spans
            .iter()
            .find(|s| s.name == name && s.channel == channel)
            .unwrap_or_else(|| panic!("no {name} on {channel} in {spans:#?}"))
            .clone()
    }

    #[tokio::test(flavor = "current_thread")]
    async fn the_receiver_span_is_a_child_of_the_emitter_span() {
        install_stand_in();
        let recorder = Recorder::default();
        let _default = tracing::subscriber::set_default(Registry::default().with(recorder.clone()));

        let aether = Aether::default();
        let mut shop = Vibrator::create("shop", &aether).await.unwrap();
        shop.resonate_on("inventory.*").await.unwrap();
        let mut inventory = Vibrator::create("inventory", &aether).await.unwrap();
        inventory.resonate_on("orders.*").await.unwrap();

        shop.emit_wave("orders.created", 1)
            .instrument(tracing::info_span!("checkout"))
            .await
            .unwrap();
        let order = inventory.receive().await.unwrap();
        let carried = order.trace_context().expect("the emit wrote its context");
        let span = inventory.span_of(&order);
        async { inventory.emit_wave("inventory.reserved", 1).await.unwrap() }
            .instrument(span)
            .await;
        let answer = shop.receive().await.unwrap();
        drop(shop.span_of(&answer));
        // Receiving opens the consumer span by itself: without `span_of`, it
        // ends when the vibrator receives again, or is dropped.
        shop.emit_wave("orders.created", 2).await.unwrap();
        let second = inventory.receive().await.unwrap();
        drop(inventory);

        let spans = recorder.0.lock().unwrap().clone();
        let receives: Vec<&Recorded> = spans
            .iter()
            .filter(|s| s.name == RECEIVE_SPAN && s.channel == "orders.created")
            .collect();
        assert_eq!(receives.len(), 2, "one consumer span per wave received");
        let second_emit = second.trace_context().expect("carried");
        assert_eq!(receives[1].ids.parent, Some(second_emit.span_id()));
        let checkout = find(&spans, "checkout", "");
        let emit = find(&spans, EMIT_SPAN, "orders.created");
        let receive = find(&spans, RECEIVE_SPAN, "orders.created");
        let reply = find(&spans, EMIT_SPAN, "inventory.reserved");
        let back = find(&spans, RECEIVE_SPAN, "inventory.reserved");
        assert_eq!(
            (emit.kind.as_str(), receive.kind.as_str()),
            ("producer", "consumer")
        );
        // The emit span is a child of the span it was made in, and its
        // context is the one the wave carries.
        assert_eq!(emit.ids.parent, Some(checkout.ids.span));
        assert_eq!(
            (carried.trace_id(), carried.span_id()),
            (emit.ids.trace, emit.ids.span)
        );
        // The receiver's span continues the trace, under the emit span.
        assert_eq!(receive.ids.trace, emit.ids.trace);
        assert_eq!(receive.ids.parent, Some(emit.ids.span));
        // What the receiver emits in its span continues it too.
        assert_eq!(reply.ids.parent, Some(receive.ids.span));
        assert_eq!(back.ids.parent, Some(reply.ids.span));
        assert!(
            [&reply, &back]
                .iter()
                .all(|s| s.ids.trace == emit.ids.trace),
            "{spans:#?}"
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_context_the_caller_set_stays_and_no_subscriber_means_no_span() {
        install_stand_in();
        let aether = Aether::default();
        let mut inventory = Vibrator::create("inventory", &aether).await.unwrap();
        inventory.resonate_on("orders.*").await.unwrap();
        let shop = Vibrator::create("shop", &aether).await.unwrap();

        // No subscriber wants the spans: nothing is written.
        shop.emit_wave("orders.created", 1).await.unwrap();
        let wave = inventory.receive().await.unwrap();
        assert_eq!(wave.trace_context(), None);

        let recorder = Recorder::default();
        let _default = tracing::subscriber::set_default(Registry::default().with(recorder.clone()));
        let set: TraceContext = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
            .parse()
            .unwrap();
        let wave = Wave::builder("orders.created")
            .trace_context(set)
            .build()
            .unwrap();
        shop.emit(wave).await.unwrap();
        let wave = inventory.receive().await.unwrap();
        assert_eq!(wave.trace_context(), Some(set));
        let spans = recorder.0.lock().unwrap().clone();
        let emit = find(&spans, EMIT_SPAN, "orders.created");
        assert_eq!(emit.ids.trace, set.trace_id());
        assert_eq!(emit.ids.parent, Some(set.span_id()));
    }
}
