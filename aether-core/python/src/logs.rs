//! The core's log in Python's `logging`: each event at INFO and above (or
//! what `AETHER_LOG` selects, as for the command line) goes to the logger
//! named after its module (`aether.bustime`, `aether.state.keeper`), so a
//! script sees the core's warnings as it sees its own, and a script that
//! configures nothing still sees warnings on stderr (`logging`'s last
//! resort).
//!
//! The threads that log (the runtime's, holding the core's locks) never
//! take the GIL: a line goes into a bounded queue, and one thread of its
//! own hands each to `logging`. Lines that find the queue full are
//! counted, and the next line handed over says how many.

use std::{
    io,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
        mpsc::{Receiver, SyncSender, sync_channel},
    },
};

use pyo3::prelude::*;
use tracing::{Level, Metadata};
use tracing_subscriber::{
    EnvFilter, fmt::MakeWriter, layer::SubscriberExt, util::SubscriberInitExt,
};

/// Lines waiting for the thread that hands them to `logging`.
const QUEUE: usize = 1024;

/// One line for `logging`.
struct Line {
    /// `logging`'s level number.
    level: u8,
    logger: String,
    text: String,
}

/// Sends the core's log to Python's `logging`, from import on.
pub(crate) fn install() {
    let (queue, lines) = sync_channel(QUEUE);
    let dropped = Arc::new(AtomicU64::new(0));
    let counted = dropped.clone();
    if std::thread::Builder::new()
        .name("aether-log".into())
        .spawn(move || hand_over(lines, &counted))
        .is_err()
    {
        return;
    }
    let filter = EnvFilter::try_from_env("AETHER_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let layer = tracing_subscriber::fmt::layer()
        .without_time()
        .with_target(false)
        .with_level(false)
        .with_ansi(false)
        .with_writer(Lines { queue, dropped });
    // Another subscriber already set (an embedding program's): it keeps
    // the log.
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(layer)
        .try_init();
}

/// Hands every line to `logging` until the queue closes.
fn hand_over(lines: Receiver<Line>, dropped: &AtomicU64) {
    for mut line in lines {
        let lost = dropped.swap(0, Ordering::Relaxed);
        if lost > 0 {
            line.text.push_str(&format!(
                " ({lost} earlier log lines were dropped: the queue was full)"
            ));
        }
        crate::wait::attached(|| {
            Python::attach(|py| {
                let logged = py.import("logging").and_then(|logging| {
                    logging
                        .call_method1("getLogger", (line.logger.as_str(),))?
                        .call_method1("log", (line.level, line.text.as_str()))
                });
                if let Err(error) = logged {
                    // A handler that raised: told as logging tells its own.
                    error.print(py);
                }
            })
        });
    }
}

/// The `logging` logger of a module of the core: `aether_core::state::keeper`
/// is `aether.state.keeper`; any other crate's under `aether.`.
fn logger_of(target: &str) -> String {
    let dotted = target.replace("::", ".");
    match dotted.strip_prefix("aether_core") {
        Some(rest) => format!("aether{rest}"),
        None => format!("aether.{dotted}"),
    }
}

/// `logging`'s level number of a tracing level.
fn level_of(level: &Level) -> u8 {
    match *level {
        Level::ERROR => 40,
        Level::WARN => 30,
        Level::INFO => 20,
        Level::DEBUG => 10,
        Level::TRACE => 5,
    }
}

/// The writers of the formatted events: one per event.
struct Lines {
    queue: SyncSender<Line>,
    dropped: Arc<AtomicU64>,
}

/// One event's text, queued when written whole.
struct Event<'a> {
    lines: &'a Lines,
    level: u8,
    logger: String,
    text: Vec<u8>,
}

impl<'a> MakeWriter<'a> for Lines {
    type Writer = Event<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        Event {
            lines: self,
            level: level_of(&Level::INFO),
            logger: "aether".into(),
            text: Vec::new(),
        }
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> Self::Writer {
        Event {
            lines: self,
            level: level_of(meta.level()),
            logger: logger_of(meta.target()),
            text: Vec::new(),
        }
    }
}

impl io::Write for Event<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.text.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for Event<'_> {
    fn drop(&mut self) {
        let text = String::from_utf8_lossy(&self.text).trim_end().to_string();
        if text.is_empty() {
            return;
        }
        let line = Line {
            level: self.level,
            logger: std::mem::take(&mut self.logger),
            text,
        };
        if self.lines.queue.try_send(line).is_err() {
            self.lines.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}
