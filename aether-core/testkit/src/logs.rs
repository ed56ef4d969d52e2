//! A log sink for tests that check what a program logs.

use std::{
    io,
    sync::{Arc, Mutex},
};

/// An in-memory log sink: give clones of it to a `tracing_subscriber` writer
/// (`.with_writer(move || buffer.clone())`) and read what was written with
/// [`LogBuffer::text`].
#[derive(Clone, Default)]
pub struct LogBuffer(Arc<Mutex<Vec<u8>>>);

impl LogBuffer {
    /// Captures every event of this thread, at every level down to TRACE,
    /// into this buffer until the guard is dropped. Use it on a
    /// current-thread runtime, so that the code under test runs on this
    /// thread.
    ///
    /// tracing caches each callsite's interest once, process-wide: with only
    /// thread-local subscribers, a callsite first hit on another thread
    /// (which has none) would be cached as "never" and its events missed
    /// here (tokio-rs/tracing#3611). So a global subscriber that keeps
    /// nothing is set too, which makes every callsite "sometimes".
    pub fn capture_this_thread(&self) -> tracing::subscriber::DefaultGuard {
        let _ = tracing::subscriber::set_global_default(tracing_subscriber::registry());
        let writer = self.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::set_default(subscriber)
    }

    /// Everything written so far, as text (invalid UTF-8 replaced).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
    }
}

impl io::Write for LogBuffer {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A [`LogBuffer`] is a `tracing_subscriber` writer itself:
/// `fmt().with_writer(buffer.clone())`.
impl<'w> tracing_subscriber::fmt::MakeWriter<'w> for LogBuffer {
    type Writer = LogBuffer;

    fn make_writer(&'w self) -> LogBuffer {
        self.clone()
    }
}
