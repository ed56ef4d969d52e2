//! The exceptions: `aether.Error` and one subclass per kind of failure a
//! script handles differently. The message is always the core's, which says
//! what was wrong and what to do.

use aether_core::{
    ConfigError, ConnectError, ConnectErrorKind, EmitError, EmitErrorKind, RequestError,
    RequestErrorKind, ResonateError, ResonateErrorKind, VibratorError, VibratorErrorKind,
    WaveError,
    state::{StateError, StateErrorKind},
};
use pyo3::{create_exception, prelude::*};

create_exception!(
    aether,
    Error,
    pyo3::exceptions::PyException,
    "Every error of aether."
);
create_exception!(
    aether,
    InvalidChannel,
    Error,
    "A channel or pattern that is not valid."
);
create_exception!(
    aether,
    InvalidName,
    Error,
    "A vibrator, map or node name that is not valid."
);
create_exception!(
    aether,
    InvalidValue,
    Error,
    "A value that cannot be sent: not JSON, out of range, or a wrong type."
);
create_exception!(
    aether,
    TooLarge,
    InvalidValue,
    "A value or key longer than the limits allow."
);
create_exception!(
    aether,
    NoResponders,
    Error,
    "A request nobody resonates on."
);
create_exception!(aether, Timeout, Error, "No answer in time.");
create_exception!(
    aether,
    Closed,
    Error,
    "The bus, the map or the vibrator was closed."
);
create_exception!(
    aether,
    Full,
    Error,
    "An outbox or a map is full: nothing was sent or written."
);
create_exception!(
    aether,
    RateLimited,
    Error,
    "Over a rate limit: nothing was sent or written."
);
create_exception!(aether, NotOwner, Error, "A node-owned key of another node.");
create_exception!(
    aether,
    NotHeld,
    Error,
    "No keeper or other replica acknowledged a map's writes in time: they are held here only."
);
create_exception!(
    aether,
    NotSent,
    Error,
    "A map's changes are not leaving (the bus refused the last send): the write is kept here and sent later, or by anti-entropy."
);
create_exception!(
    aether,
    LedgerFailed,
    Error,
    "A map's ledger could not be opened, read or written: this machine's state directory, or a keeper's disk, full or failing."
);
create_exception!(
    aether,
    StampOutOfRange,
    Error,
    "A write stamped more than max_drift ahead of this replica's clock, or before the tombstone horizon."
);
create_exception!(aether, Denied, Error, "Refused by the access rules.");
create_exception!(
    aether,
    ConnectionError,
    Error,
    "The bus could not be reached, or refused the credentials."
);
create_exception!(
    aether,
    ConfigurationError,
    Error,
    "A setting that is not valid."
);
create_exception!(
    aether,
    BlockingInEventLoop,
    Error,
    "A blocking call made from a running asyncio event loop: use its _async form."
);

/// Adds the exceptions to the module.
pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("Error", py.get_type::<Error>())?;
    m.add("InvalidChannel", py.get_type::<InvalidChannel>())?;
    m.add("InvalidName", py.get_type::<InvalidName>())?;
    m.add("InvalidValue", py.get_type::<InvalidValue>())?;
    m.add("TooLarge", py.get_type::<TooLarge>())?;
    m.add("NoResponders", py.get_type::<NoResponders>())?;
    m.add("Timeout", py.get_type::<Timeout>())?;
    m.add("Closed", py.get_type::<Closed>())?;
    m.add("Full", py.get_type::<Full>())?;
    m.add("RateLimited", py.get_type::<RateLimited>())?;
    m.add("NotOwner", py.get_type::<NotOwner>())?;
    m.add("NotHeld", py.get_type::<NotHeld>())?;
    m.add("NotSent", py.get_type::<NotSent>())?;
    m.add("LedgerFailed", py.get_type::<LedgerFailed>())?;
    m.add("StampOutOfRange", py.get_type::<StampOutOfRange>())?;
    m.add("Denied", py.get_type::<Denied>())?;
    m.add("ConnectionError", py.get_type::<ConnectionError>())?;
    m.add("ConfigurationError", py.get_type::<ConfigurationError>())?;
    m.add("BlockingInEventLoop", py.get_type::<BlockingInEventLoop>())?;
    m.add("STATE_ERRORS", state_errors(py)?)?;
    Ok(())
}

/// Each of the core's state error kinds, by its name (`not_sent`), and the
/// exception it raises: a kind the core adds later, and this crate does not
/// map, shows as the base `Error` (the tests refuse it).
fn state_errors(py: Python<'_>) -> PyResult<Bound<'_, pyo3::types::PyDict>> {
    let errors = pyo3::types::PyDict::new(py);
    for kind in StateErrorKind::ALL {
        errors.set_item(
            kind.as_str(),
            state(StateError::new(*kind, "")).get_type(py),
        )?;
    }
    Ok(errors)
}

pub(crate) fn emit(error: EmitError) -> PyErr {
    let message = error.to_string();
    match error.kind() {
        EmitErrorKind::InvalidChannel => InvalidChannel::new_err(message),
        EmitErrorKind::Payload => InvalidValue::new_err(message),
        EmitErrorKind::Closed => Closed::new_err(message),
        EmitErrorKind::OutboxFull => Full::new_err(message),
        EmitErrorKind::RateLimited => RateLimited::new_err(message),
        EmitErrorKind::TimedOut => Timeout::new_err(message),
        EmitErrorKind::Denied => Denied::new_err(message),
        EmitErrorKind::TooLarge => TooLarge::new_err(message),
        _ => Error::new_err(message),
    }
}

pub(crate) fn resonate(error: ResonateError) -> PyErr {
    let message = error.to_string();
    match error.kind() {
        ResonateErrorKind::InvalidChannel | ResonateErrorKind::InvalidGroup => {
            InvalidChannel::new_err(message)
        }
        ResonateErrorKind::Closed => Closed::new_err(message),
        ResonateErrorKind::Denied => Denied::new_err(message),
        _ => Error::new_err(message),
    }
}

pub(crate) fn request(error: RequestError) -> PyErr {
    let message = error.to_string();
    match error.kind() {
        RequestErrorKind::NoResponders => NoResponders::new_err(message),
        RequestErrorKind::TimedOut => Timeout::new_err(message),
        RequestErrorKind::Closed => Closed::new_err(message),
        RequestErrorKind::RateLimited => RateLimited::new_err(message),
        _ => Error::new_err(message),
    }
}

pub(crate) fn connect(error: ConnectError) -> PyErr {
    let message = error.to_string();
    match error.kind() {
        ConnectErrorKind::Config => ConfigurationError::new_err(message),
        _ => ConnectionError::new_err(message),
    }
}

pub(crate) fn vibrator(error: VibratorError) -> PyErr {
    let message = error.to_string();
    match error.kind() {
        VibratorErrorKind::InvalidName => InvalidName::new_err(message),
        VibratorErrorKind::Closed => Closed::new_err(message),
        _ => InvalidValue::new_err(message),
    }
}

pub(crate) fn state(error: StateError) -> PyErr {
    let message = error.to_string();
    match error.kind() {
        StateErrorKind::InvalidName => InvalidName::new_err(message),
        StateErrorKind::InvalidKey => InvalidValue::new_err(message),
        StateErrorKind::TooLarge => TooLarge::new_err(message),
        StateErrorKind::NotOwner => NotOwner::new_err(message),
        StateErrorKind::Payload => InvalidValue::new_err(message),
        StateErrorKind::Config => ConfigurationError::new_err(message),
        StateErrorKind::Closed => Closed::new_err(message),
        StateErrorKind::Full => Full::new_err(message),
        StateErrorKind::NotHeld => NotHeld::new_err(message),
        StateErrorKind::NotSent => NotSent::new_err(message),
        StateErrorKind::Ledger => LedgerFailed::new_err(message),
        StateErrorKind::Stamp => StampOutOfRange::new_err(message),
        // A kind added to the core later (the enum is non-exhaustive).
        _ => Error::new_err(message),
    }
}

pub(crate) fn config(error: ConfigError) -> PyErr {
    ConfigurationError::new_err(error.to_string())
}

pub(crate) fn wave(error: WaveError) -> PyErr {
    match error {
        WaveError::Channel(e) => InvalidChannel::new_err(e.to_string()),
        other => InvalidValue::new_err(other.to_string()),
    }
}
