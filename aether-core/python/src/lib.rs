//! Aether for Python: the extension module `aether._aether`, which the
//! package `aether` (`python/aether/`) wraps. Every rule stays in the Rust
//! core; this crate only carries values across:
//!
//! | module | what it binds |
//! | --- | --- |
//! | `bus` | `connect`: an aether, embedded or over NATS, from arguments and a settings folder; `discover`: a bus on the LAN |
//! | `vibrator` | `Vibrator` and `Wave`: emit, resonate, receive, request, reply |
//! | `map` | `Map` and `NodeState`: replicated maps, their changes and presence |
//! | `wait` | running the core's futures: blocking (the GIL released, Ctrl-C heard) or as asyncio futures |
//! | `logs` | the core's log in Python's `logging` |
//! | `value` | Python values to JSON and back |
//! | `errors` | the exception hierarchy, from the core's error kinds |

#![forbid(unsafe_code)]

mod bus;
mod errors;
mod logs;
mod map;
mod value;
mod vibrator;
mod wait;

use pyo3::prelude::*;

/// The extension module.
#[pymodule]
fn _aether(m: &Bound<'_, PyModule>) -> PyResult<()> {
    errors::register(m)?;
    logs::install();
    m.add_function(wrap_pyfunction!(bus::connect, m)?)?;
    m.add_function(wrap_pyfunction!(bus::discover, m)?)?;
    m.add_function(wrap_pyfunction!(wait::_exiting, m)?)?;
    m.add_function(wrap_pyfunction!(wait::_forked, m)?)?;
    m.add_class::<bus::Bus>()?;
    m.add_class::<vibrator::Vibrator>()?;
    m.add_class::<vibrator::Wave>()?;
    m.add_class::<map::Map>()?;
    m.add_class::<map::NodeState>()?;
    m.add_class::<map::Change>()?;
    m.add_class::<map::Events>()?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
