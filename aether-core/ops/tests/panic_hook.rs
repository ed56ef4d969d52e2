//! The panic hook counts and logs panics of any thread, through the
//! process's logging (`logging::init_with_writer`, global: hence a test
//! binary of its own).

use std::{
    io::Write,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use aether_ops::{
    logging::{self, LoggingError},
    panic::install_panic_hook,
    settings::LogSettings,
};

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn panics_in_threads_are_logged_and_counted() {
    let out = Captured::default();
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

    let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
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
    assert!(
        !String::from_utf8(out.0.lock().unwrap().clone())
            .unwrap()
            .contains("not written")
    );
}
