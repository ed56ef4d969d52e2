//! Python values to the bytes the core carries, and back: JSON for any
//! value JSON can hold (`None`, bools, numbers, strings, lists, tuples and
//! dicts with string keys), raw for `bytes`. What JSON cannot hold (a set,
//! an object, NaN, a dict with non-string keys) is refused with
//! `aether.InvalidValue` before anything is sent.

use bytes::Bytes;
use pyo3::{
    prelude::*,
    types::{PyByteArray, PyBytes},
};

use crate::errors::InvalidValue;

/// `value` as JSON, its bytes.
pub(crate) fn to_json(value: &Bound<'_, PyAny>) -> PyResult<Bytes> {
    let json: serde_json::Value = pythonize::depythonize(value).map_err(|e| {
        InvalidValue::new_err(format!("{} cannot be sent as JSON: {e}", type_name(value)))
    })?;
    check_finite(&json, value)?;
    serde_json::to_vec(&json).map(Bytes::from).map_err(|e| {
        InvalidValue::new_err(format!("{} cannot be sent as JSON: {e}", type_name(value)))
    })
}

/// A payload: raw for `bytes` and `bytearray`, else JSON.
pub(crate) fn payload(value: &Bound<'_, PyAny>) -> PyResult<Bytes> {
    if let Ok(bytes) = value.cast::<PyBytes>() {
        return Ok(Bytes::copy_from_slice(bytes.as_bytes()));
    }
    if let Ok(bytes) = value.cast::<PyByteArray>() {
        return Ok(Bytes::from(bytes.to_vec()));
    }
    to_json(value)
}

/// What `bytes` hold: the value when they are JSON, else the bytes.
pub(crate) fn from_bytes<'py>(py: Python<'py>, bytes: &[u8]) -> PyResult<Bound<'py, PyAny>> {
    match serde_json::from_slice::<serde_json::Value>(bytes) {
        Ok(json) => Ok(
            pythonize::pythonize(py, &json).map_err(|e| InvalidValue::new_err(e.to_string()))?
        ),
        Err(_) => Ok(PyBytes::new(py, bytes).into_any()),
    }
}

fn type_name(value: &Bound<'_, PyAny>) -> String {
    value
        .get_type()
        .name()
        .map(|name| format!("a value of type {name}"))
        .unwrap_or_else(|_| "a value".to_string())
}

/// What JSON cannot hold, though it would convert: NaN and infinities
/// (they would become `null`) and sets (which `json.dumps` refuses too).
fn check_finite(_json: &serde_json::Value, value: &Bound<'_, PyAny>) -> PyResult<()> {
    if let Some(problem) = not_json(value)? {
        return Err(InvalidValue::new_err(format!(
            "{problem} cannot be sent as JSON"
        )));
    }
    Ok(())
}

/// The first part of `value` (at any depth) that JSON cannot hold.
fn not_json(value: &Bound<'_, PyAny>) -> PyResult<Option<&'static str>> {
    if let Ok(float) = value.cast::<pyo3::types::PyFloat>() {
        return Ok((!float.value().is_finite()).then_some("NaN or an infinity"));
    }
    if value.is_instance_of::<pyo3::types::PySet>()
        || value.is_instance_of::<pyo3::types::PyFrozenSet>()
    {
        return Ok(Some("a set"));
    }
    if let Ok(dict) = value.cast::<pyo3::types::PyDict>() {
        for (_, item) in dict.iter() {
            if let Some(problem) = not_json(&item)? {
                return Ok(Some(problem));
            }
        }
        return Ok(None);
    }
    if let Ok(list) = value.cast::<pyo3::types::PyList>() {
        for item in list.iter() {
            if let Some(problem) = not_json(&item)? {
                return Ok(Some(problem));
            }
        }
        return Ok(None);
    }
    if let Ok(tuple) = value.cast::<pyo3::types::PyTuple>() {
        for item in tuple.iter() {
            if let Some(problem) = not_json(&item)? {
                return Ok(Some(problem));
            }
        }
    }
    Ok(None)
}
