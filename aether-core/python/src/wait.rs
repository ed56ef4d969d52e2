//! Running the core's futures for Python, on one tokio runtime of the
//! package's (two worker threads, made at first use):
//!
//! - [`block`]: a call that ends at once is done in the calling thread;
//!   otherwise the calling thread waits with the GIL released, so other
//!   Python threads (a map's handlers) run meanwhile; every 100 ms it takes
//!   the GIL back to look for signals, so Ctrl-C interrupts a wait with
//!   `KeyboardInterrupt`, and the future is dropped.
//! - [`future`]: an asyncio future of the running event loop. A call that
//!   ends at once is done in the calling thread too (so calls keep the
//!   order they were made in, as their blocking forms do) and the future
//!   comes back resolved; otherwise it is resolved from the runtime with
//!   `call_soon_threadsafe`, and no thread waits for it. When the asyncio
//!   future was cancelled meanwhile, a value that must not be lost (a wave
//!   taken from a queue) is handed to `keep` instead.
//!
//! At the interpreter's exit (`_exiting`), blocking calls end and the
//! runtime stops calling into Python; a process forked after the runtime
//! started has none of its threads, and refuses every call that would
//! need them (`_forked`).

use std::{
    future::Future,
    sync::{
        OnceLock,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    task::{Context, Poll, Waker},
    time::Duration,
};

use pyo3::{IntoPyObjectExt, prelude::*};
use tokio::runtime::Runtime;

/// How often a blocking wait looks for signals.
const SIGNAL_EVERY: Duration = Duration::from_millis(100);

/// The package's runtime.
pub(crate) fn runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        RUNTIME_STARTED.store(true, Ordering::Release);
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("aether-runtime")
            .enable_all()
            .build()
            .expect("a tokio runtime")
    })
}

/// Set once the interpreter exits (`atexit`): blocking calls end at once
/// with `aether.Closed`, and nothing is handed back to Python any more. A
/// thread the interpreter would stop while it waits outside the GIL would
/// abort the process instead of exiting.
static EXITING: AtomicBool = AtomicBool::new(false);
/// Threads waiting in [`block`] now.
static WAITING: AtomicUsize = AtomicUsize::new(0);
/// Runtime tasks handing a result to Python now: the exit waits for them
/// (a thread that takes the GIL while the interpreter finalizes aborts the
/// process).
static ATTACHING: AtomicUsize = AtomicUsize::new(0);
/// Set in a child process forked after the runtime started (its threads
/// are not there).
static FORKED: AtomicBool = AtomicBool::new(false);

/// In a forked child (`os.register_at_fork`): the runtime is gone here.
#[pyfunction]
pub(crate) fn _forked() {
    if RUNTIME_STARTED.load(Ordering::Acquire) {
        FORKED.store(true, Ordering::Release);
    }
}

/// The runtime was made in this process.
static RUNTIME_STARTED: AtomicBool = AtomicBool::new(false);

/// `Err` in a child forked after the runtime started.
pub(crate) fn usable() -> PyResult<()> {
    if FORKED.load(Ordering::Acquire) {
        return Err(crate::errors::Error::new_err(
            "this process was forked from one that had connected: the bus and everything made \
             from it cannot be used here (their threads stayed in the parent); connect in the \
             child, or fork before connecting",
        ));
    }
    Ok(())
}

fn exiting() -> PyErr {
    crate::errors::Closed::new_err("the interpreter is exiting")
}

/// Runs `work` to its end on the runtime while this thread waits with the
/// GIL released; a signal (Ctrl-C) ends the wait with its exception.
pub(crate) fn block<T, F>(py: Python<'_>, work: F) -> PyResult<T>
where
    F: Future<Output = PyResult<T>> + Send,
    T: Send,
{
    if EXITING.load(Ordering::Acquire) {
        return Err(exiting());
    }
    usable()?;
    let mut work = std::pin::pin!(work);
    // Most calls end without waiting (an emit handed to the connection, a
    // write to a map in memory): polled once here, in the runtime's
    // context and with the GIL held, they cost no thread switch.
    {
        let _context = runtime().enter();
        let mut cx = Context::from_waker(Waker::noop());
        if let Poll::Ready(result) = work.as_mut().poll(&mut cx) {
            return result;
        }
    }
    WAITING.fetch_add(1, Ordering::AcqRel);
    struct Waiting;
    impl Drop for Waiting {
        fn drop(&mut self) {
            WAITING.fetch_sub(1, Ordering::AcqRel);
        }
    }
    let _waiting = Waiting;
    loop {
        let done = py.detach(|| {
            runtime().block_on(async { tokio::time::timeout(SIGNAL_EVERY, &mut work).await })
        });
        match done {
            Ok(result) => return result,
            Err(_) if EXITING.load(Ordering::Acquire) => return Err(exiting()),
            Err(_) => py.check_signals()?,
        }
    }
}

/// Refuses a call that may block (`what`) from a thread that runs an
/// asyncio event loop: it would stall the loop. `instead` names what to
/// call there.
pub(crate) fn refuse_in_event_loop(py: Python<'_>, what: &str, instead: &str) -> PyResult<()> {
    static RUNNING_LOOP: pyo3::sync::PyOnceLock<Py<PyAny>> = pyo3::sync::PyOnceLock::new();
    let running = RUNNING_LOOP.get_or_try_init(py, || {
        py.import("asyncio.events")?
            .getattr("_get_running_loop")
            .map(Bound::unbind)
    })?;
    if running.call0(py)?.is_none(py) {
        return Ok(());
    }
    Err(crate::errors::BlockingInEventLoop::new_err(format!(
        "{what} blocks, and this thread runs an asyncio event loop: {instead} instead"
    )))
}

/// At the interpreter's exit (the package registers it with `atexit`):
/// blocking calls end, and this waits up to `timeout` seconds for the
/// threads inside them to leave.
#[pyfunction]
pub(crate) fn _exiting(py: Python<'_>, timeout: f64) {
    EXITING.store(true, Ordering::SeqCst);
    let deadline = std::time::Instant::now() + Duration::from_secs_f64(timeout.clamp(0.0, 10.0));
    py.detach(|| {
        while (WAITING.load(Ordering::SeqCst) > 0 || ATTACHING.load(Ordering::SeqCst) > 0)
            && std::time::Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(5));
        }
    });
}

/// `work`'s value: waited for ([`block`]), or, with `async_`, an asyncio
/// future of it ([`future`]): the two forms of every call that may wait.
pub(crate) fn call<'py, T, F>(py: Python<'py>, async_: bool, work: F) -> PyResult<Bound<'py, PyAny>>
where
    F: Future<Output = PyResult<T>> + Send + 'static,
    T: for<'a> IntoPyObject<'a> + Send + 'static,
{
    if async_ {
        future(py, work, None)
    } else {
        block(py, work)?.into_bound_py_any(py)
    }
}

/// An asyncio future of the running event loop, resolved with what `work`
/// gives; `keep(value)` is called instead (in the event loop) when the
/// asyncio future was cancelled before it.
pub(crate) fn future<'py, T, F>(
    py: Python<'py>,
    work: F,
    keep: Option<Py<PyAny>>,
) -> PyResult<Bound<'py, PyAny>>
where
    F: Future<Output = PyResult<T>> + Send + 'static,
    T: for<'a> IntoPyObject<'a> + Send + 'static,
{
    let event_loop = py
        .import("asyncio")?
        .call_method0("get_running_loop")
        .map_err(|_| {
            crate::errors::Error::new_err(
                "an _async call needs a running asyncio event loop (await it in a coroutine)",
            )
        })?;
    let future = event_loop.call_method0("create_future")?;
    usable()?;
    let mut work = Box::pin(work);
    // Polled once here first: most calls end at once, in the order they
    // were made, and the future comes back resolved.
    {
        let _context = runtime().enter();
        let mut cx = Context::from_waker(Waker::noop());
        if let Poll::Ready(result) = work.as_mut().poll(&mut cx) {
            match result.and_then(|value| value.into_py_any(py)) {
                Ok(value) => future.call_method1("set_result", (value,))?,
                Err(error) => future.call_method1("set_exception", (error.into_value(py),))?,
            };
            return Ok(future);
        }
    }
    let resolve = py.import("aether._bridge")?.getattr("resolve")?.unbind();
    let (event_loop, target) = (event_loop.unbind(), future.clone().unbind());
    runtime().spawn(async move {
        let result = work.await;
        attached(|| {
            Python::attach(|py| {
                let (ok, value) = match result.and_then(|value| value.into_py_any(py)) {
                    Ok(value) => (true, value),
                    Err(error) => (false, error.into_value(py).into_any()),
                };
                let keep = keep.unwrap_or_else(|| py.None());
                // A closed loop takes nothing: the program has moved on.
                let _ = event_loop.call_method1(
                    py,
                    "call_soon_threadsafe",
                    (resolve, target, ok, value, keep),
                );
            })
        });
    });
    Ok(future)
}

/// Runs `attach` (which takes the GIL) from a thread Python did not
/// start, unless the interpreter is exiting: the exit waits for it.
pub(crate) fn attached(attach: impl FnOnce()) {
    // Counted before the exit is looked at, so that the exit either sees
    // this hand-over and waits for it, or this sees the exit.
    ATTACHING.fetch_add(1, Ordering::SeqCst);
    struct Attaching;
    impl Drop for Attaching {
        fn drop(&mut self) {
            ATTACHING.fetch_sub(1, Ordering::SeqCst);
        }
    }
    let _attaching = Attaching;
    if !EXITING.load(Ordering::SeqCst) {
        attach();
    }
}
