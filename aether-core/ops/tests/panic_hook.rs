//! The panic hook counts and logs panics of any thread, through the
//! process's logging (`logging::init_with_writer`, global: hence a test
//! binary of its own).

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

use aether_ops::{
    logging::{self, LoggingError},
    panic::install_panic_hook,
    settings::LogSettings,
};
use aether_testkit::LogBuffer;

#[test]
fn panics_in_threads_are_logged_and_counted() {
    let out = LogBuffer::default();
    let writer = out.clone();
    let handle =
        logging::init_with_writer(&LogSettings::default(), move || writer.clone()).unwrap();
    assert!(matches!(
        logging::init(&LogSettings::default()),
        Err(LoggingError::AlreadyInitialized(_))
    ));

    let panics = Arc::new(AtomicU64::new(0));
    install_panic_hook(Arc::clone(&panics));
    let joined = std::thread::Builder::new()
        .name("worker-7".into())
        .spawn(|| panic!("the wave was too strong: {}", 1.5))
        .unwrap()
        .join();
    assert!(joined.is_err());
    assert_eq!(panics.load(Ordering::Relaxed), 1);
    let caught = std::panic::catch_unwind(|| panic!("again"));
    assert!(caught.is_err());
    assert_eq!(panics.load(Ordering::Relaxed), 2);

    let text = out.text();
    let line = text
        .lines()
        .find(|line| line.contains("worker-7"))
        .unwrap_or_else(|| panic!("no log of the panic in {text}"));
    assert!(line.contains("ERROR"), "{line}");
    assert!(line.contains("the wave was too strong: 1.5"), "{line}");
    assert!(line.contains("tests/panic_hook.rs:"), "{line}");

    // The global logging's level changes too.
    handle.set_level("error").unwrap();
    tracing::warn!("not written");
    assert!(!out.text().contains("not written"));
}
