//! Panics, logged and counted.
//!
//! A panic in a task or a thread may not end the program (Tokio catches
//! those of tasks), and the default hook only prints to stderr, outside the
//! logs. [`install_panic_hook`] logs every panic as a `tracing` error with
//! its message, location and thread, and counts it in a counter that a
//! metrics exporter reads (alert on it rising), then calls the hook that
//! was there before (by default, the one that prints the message and, with
//! `RUST_BACKTRACE=1`, the backtrace).

use std::{
    panic::PanicHookInfo,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

/// Installs the hook: every panic in this process, in any thread, is
/// counted in `counter` and logged, then handed to the previous hook.
/// Install it once, early in `main`, after logging is set up.
///
/// ```
/// use std::sync::{Arc, atomic::{AtomicU64, Ordering}};
///
/// let panics = Arc::new(AtomicU64::new(0));
/// aether_ops::panic::install_panic_hook(Arc::clone(&panics));
/// let _ = std::thread::spawn(|| panic!("boom")).join();
/// assert_eq!(panics.load(Ordering::Relaxed), 1);
/// ```
pub fn install_panic_hook(counter: Arc<AtomicU64>) {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        counter.fetch_add(1, Ordering::Relaxed);
        log(info);
        previous(info);
    }));
}

fn log(info: &PanicHookInfo<'_>) {
    let payload = info.payload();
    let message = payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(a panic payload that is not text)");
    let location = info
        .location()
        .map(|at| format!("{}:{}:{}", at.file(), at.line(), at.column()))
        .unwrap_or_else(|| "unknown".into());
    let thread = std::thread::current();
    tracing::error!(
        panic.message = message,
        panic.location = location.as_str(),
        thread = thread.name().unwrap_or("unnamed"),
        "panic"
    );
}
