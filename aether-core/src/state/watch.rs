//! Watching a map: the stream of changes to the keys a pattern matches,
//! and of what else a replica tells its watchers (superseded writes,
//! presence), with what a slow watcher missed counted.

#[allow(clippy::wildcard_imports)]
use super::*;

/// A stream of changes to the keys a pattern matches.
pub struct Watch {
    pub(super) pattern: Channel,
    pub(super) raw: String,
    pub(super) changes: Lossy<Change>,
}

impl Watch {
    /// Changes this watch missed because it fell behind (`watch_buffer`):
    /// a reader that must not miss any (a bridge to another replica) reads
    /// the whole map again when it grows.
    pub fn missed(&self) -> u64 {
        self.changes.missed
    }

    fn wants(&self, key: &str) -> bool {
        watch_wants(&self.raw, &self.pattern, key)
    }
}

/// Whether a watch on `raw` (parsed as `pattern`) hears `key`: a key that
/// is a concrete channel is matched as one; any other key (spaces, empty
/// tokens, wildcards of its own) only by its exact text, `*` or `>`.
pub(super) fn watch_wants(raw: &str, pattern: &Channel, key: &str) -> bool {
    if key == raw || raw == ">" {
        return true;
    }
    let channel = Channel::new(key);
    if channel.is_valid() && !channel.is_pattern() {
        channel.matches(pattern)
    } else {
        raw == "*"
    }
}

impl Stream for Watch {
    type Item = Change;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Change>> {
        loop {
            match Pin::new(&mut self.changes).poll_next(cx) {
                Poll::Ready(Some(change)) if !self.wants(&change.key) => continue,
                other => return other,
            }
        }
    }
}

impl fmt::Debug for Watch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Watch").field("pattern", &self.raw).finish()
    }
}

/// A broadcast to a replica's watchers, made at its first watcher: its
/// `watch_buffer` slots are not paid for by a replica nobody watches (a
/// keeper's many maps).
pub(super) struct Watchers<T> {
    capacity: usize,
    sender: std::sync::OnceLock<broadcast::Sender<T>>,
}

impl<T: Clone> Watchers<T> {
    pub(super) fn new(capacity: usize) -> Self {
        Self {
            capacity,
            sender: std::sync::OnceLock::new(),
        }
    }

    /// A new watcher, which hears what is sent from now on.
    pub(super) fn subscribe(&self) -> broadcast::Receiver<T> {
        self.sender
            .get_or_init(|| broadcast::channel(self.capacity).0)
            .subscribe()
    }

    /// How many watch now.
    pub(super) fn receiver_count(&self) -> usize {
        self.sender
            .get()
            .map_or(0, broadcast::Sender::receiver_count)
    }

    /// Tells every watcher; nothing if none watches.
    pub(super) fn send(&self, item: T) {
        if let Some(sender) = self.sender.get() {
            let _ = sender.send(item);
        }
    }
}

/// A broadcast stream whose misses are counted, not handed out.
pub(super) struct Lossy<T> {
    pub(super) inner: BroadcastStream<T>,
    pub(super) shared: Arc<Shared>,
    pub(super) missed: u64,
}

impl<T: Clone + Send + 'static> Stream for Lossy<T> {
    type Item = T;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        loop {
            match Pin::new(&mut self.inner).poll_next(cx) {
                Poll::Ready(Some(Ok(item))) => return Poll::Ready(Some(item)),
                Poll::Ready(Some(Err(BroadcastStreamRecvError::Lagged(missed)))) => {
                    self.missed += missed;
                    self.shared
                        .counters
                        .watch_lagged
                        .fetch_add(missed, Ordering::Relaxed);
                }
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}
