//! Python values to the bytes the core carries, and back: JSON for any
//! value JSON can hold (`None`, bools, numbers, strings, lists, tuples and
//! dicts with string keys), raw for `bytes`. What JSON cannot hold (a set,
//! an object, NaN, a dict with non-string keys) is refused with
//! `aether.InvalidValue` before anything is sent.
//!
//! A map's values follow one rule both ways ([`map_value_of`]): a write is
//! checked by it, and a replica takes a value from another only if it
//! passes (JSON as a script writes it, or raw bytes that are not JSON at
//! all); JSON that breaks it (NaN, `1e999`, a lone surrogate, an integer of
//! a thousand digits, deep nesting, a byte order mark) is refused and
//! counted as malformed, as the core counts other malformed state.

use std::time::Duration;

use bytes::Bytes;
use pyo3::{
    prelude::*,
    types::{PyByteArray, PyBytes, PyDict},
};

use crate::errors::{self, InvalidValue};

/// How deep a value may nest.
const MAX_DEPTH: usize = 128;

/// Why the direct encoding stopped.
enum Fast {
    /// A type it does not write: the general path takes it.
    Unsupported,
    /// A value JSON cannot hold.
    Invalid(String),
}

/// Writes `value` as JSON straight into `out` for the plain types (`None`,
/// bool, str, int within 64 bits, float, list, tuple, dict with str keys),
/// the bulk of what scripts send.
fn encode(value: &Bound<'_, PyAny>, out: &mut Vec<u8>, depth: usize) -> Result<(), Fast> {
    use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};
    if depth > MAX_DEPTH {
        return Err(Fast::Invalid(format!(
            "a value nested deeper than {MAX_DEPTH}"
        )));
    }
    if value.is_none() {
        out.extend_from_slice(b"null");
    } else if let Ok(b) = value.cast_exact::<PyBool>() {
        out.extend_from_slice(if b.is_true() { b"true" } else { b"false" });
    } else if let Ok(s) = value.cast_exact::<PyString>() {
        let text = s
            .to_cow()
            .map_err(|_| Fast::Invalid("text holding a lone surrogate".to_string()))?;
        serde_json::to_writer(&mut *out, &*text).map_err(|e| Fast::Invalid(e.to_string()))?;
    } else if let Ok(i) = value.cast_exact::<PyInt>() {
        if let Ok(n) = i.extract::<i64>() {
            out.extend_from_slice(n.to_string().as_bytes());
        } else if let Ok(n) = i.extract::<u64>() {
            out.extend_from_slice(n.to_string().as_bytes());
        } else {
            return Err(Fast::Unsupported);
        }
    } else if let Ok(f) = value.cast_exact::<PyFloat>() {
        let f = f.value();
        if !f.is_finite() {
            return Err(Fast::Invalid("NaN or an infinity".to_string()));
        }
        serde_json::to_writer(&mut *out, &f).map_err(|e| Fast::Invalid(e.to_string()))?;
    } else if let Ok(list) = value.cast_exact::<PyList>() {
        out.push(b'[');
        for (n, item) in list.iter().enumerate() {
            if n > 0 {
                out.push(b',');
            }
            encode(&item, out, depth + 1)?;
        }
        out.push(b']');
    } else if let Ok(tuple) = value.cast_exact::<PyTuple>() {
        out.push(b'[');
        for (n, item) in tuple.iter().enumerate() {
            if n > 0 {
                out.push(b',');
            }
            encode(&item, out, depth + 1)?;
        }
        out.push(b']');
    } else if let Ok(dict) = value.cast_exact::<PyDict>() {
        out.push(b'{');
        for (n, (key, item)) in dict.iter().enumerate() {
            let Ok(key) = key.cast_exact::<PyString>() else {
                return Err(Fast::Unsupported);
            };
            if n > 0 {
                out.push(b',');
            }
            let key = key
                .to_cow()
                .map_err(|_| Fast::Invalid("a key holding a lone surrogate".to_string()))?;
            serde_json::to_writer(&mut *out, &*key).map_err(|e| Fast::Invalid(e.to_string()))?;
            out.push(b':');
            encode(&item, out, depth + 1)?;
        }
        out.push(b'}');
    } else {
        return Err(Fast::Unsupported);
    }
    Ok(())
}

/// `value` as JSON, its bytes.
pub(crate) fn to_json(value: &Bound<'_, PyAny>) -> PyResult<Bytes> {
    let mut out = Vec::with_capacity(128);
    match encode(value, &mut out, 0) {
        Ok(()) => return Ok(Bytes::from(out)),
        Err(Fast::Invalid(problem)) => {
            return Err(InvalidValue::new_err(format!(
                "{problem} cannot be sent as JSON"
            )));
        }
        Err(Fast::Unsupported) => {}
    }
    let json: serde_json::Value = pythonize::depythonize(value).map_err(|e| {
        InvalidValue::new_err(format!("{} cannot be sent as JSON: {e}", type_name(value)))
    })?;
    check_finite(value)?;
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
    if let Ok(view) = value.cast::<pyo3::types::PyMemoryView>() {
        // A buffer is sent as its bytes, as `bytes(view)` gives them.
        let bytes = view.call_method0("tobytes")?;
        let bytes = bytes.cast::<PyBytes>()?;
        return Ok(Bytes::copy_from_slice(bytes.as_bytes()));
    }
    to_json(value)
}

/// A payload given or not: None (or nothing) is JSON `null`.
pub(crate) fn payload_or_null(value: Option<&Bound<'_, PyAny>>) -> PyResult<Bytes> {
    match value {
        Some(value) if !value.is_none() => payload(value),
        _ => Ok(Bytes::from_static(b"null")),
    }
}

/// `text` as Rust text; text that is not valid Unicode (a lone
/// surrogate) raises `aether.InvalidValue`, as other bad values do.
pub(crate) fn text<'a>(
    text: &'a Bound<'_, pyo3::types::PyString>,
) -> PyResult<std::borrow::Cow<'a, str>> {
    text.to_cow().map_err(|error| {
        let py = text.py();
        if !error.is_instance_of::<pyo3::exceptions::PyUnicodeEncodeError>(py) {
            return error;
        }
        let start = error
            .value(py)
            .getattr("start")
            .and_then(|start| start.extract::<usize>())
            .unwrap_or(0);
        let head: String = text.to_string_lossy().chars().take(40).collect();
        InvalidValue::new_err(format!(
            "{head:?} is not text that can be sent: it holds a lone surrogate at {start}"
        ))
    })
}

/// What `bytes` hold: the value when they are JSON, else the bytes. Read
/// by Python's own `json.loads`, so numbers come back as Python writes them.
pub(crate) fn from_bytes<'py>(py: Python<'py>, bytes: &[u8]) -> PyResult<Bound<'py, PyAny>> {
    static LOADS: pyo3::sync::PyOnceLock<Py<PyAny>> = pyo3::sync::PyOnceLock::new();
    let loads = LOADS.get_or_try_init(py, || {
        py.import("json")?.getattr("loads").map(Bound::unbind)
    })?;
    let raw = PyBytes::new(py, bytes);
    match loads.bind(py).call1((&raw,)) {
        Ok(value) => Ok(value),
        Err(_) => Ok(raw.into_any()),
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
fn check_finite(value: &Bound<'_, PyAny>) -> PyResult<()> {
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

/// `seconds` as a duration, refused when negative or not finite.
pub(crate) fn seconds(seconds: f64) -> PyResult<Duration> {
    Duration::try_from_secs_f64(seconds).map_err(|_| {
        errors::InvalidValue::new_err(format!(
            "a duration of {seconds} s: it must be a finite number >= 0"
        ))
    })
}

/// A statistics snapshot as a dict: the counts, and `dropped` by reason.
pub(crate) fn stats_dict<'py>(
    py: Python<'py>,
    stats: &aether_core::StatsSnapshot,
) -> PyResult<Bound<'py, PyDict>> {
    let out = PyDict::new(py);
    out.set_item("emitted", stats.emitted)?;
    out.set_item("published", stats.published)?;
    out.set_item("delivered", stats.delivered)?;
    out.set_item("unrouted", stats.unrouted)?;
    out.set_item("rate_limited", stats.rate_limited)?;
    let dropped = PyDict::new(py);
    for (reason, count) in stats.drops() {
        dropped.set_item(reason.as_str(), count)?;
    }
    out.set_item("dropped", dropped)?;
    Ok(out)
}

/// What a map's value is, by the one rule a write from Python is checked
/// by and a value from another replica is read by.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Value {
    /// JSON as a script writes it: UTF-8 text with no byte order mark,
    /// finite numbers, integers within 64 bits, text without a lone
    /// surrogate, nothing inside more than [`MAX_DEPTH`] lists or objects.
    Json,
    /// Not JSON at all (what a Rust program wrote as raw bytes): read as
    /// `bytes`.
    Raw,
    /// JSON that breaks the rule: a script could neither write it back nor
    /// always print it, so a replica refuses it (counted as malformed).
    Malformed(&'static str),
}

/// The rule for a map's value: `bytes` as [`Value`].
pub(crate) fn map_value_of(bytes: &[u8]) -> Value {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return Value::Raw;
    };
    let (text, bom) = match text.strip_prefix('\u{feff}') {
        Some(rest) => (rest, true),
        None => (text, false),
    };
    let mut scan = Scan {
        text: text.as_bytes(),
        at: 0,
        problem: bom.then_some("JSON after a byte order mark"),
    };
    if scan.document().is_none() {
        return Value::Raw;
    }
    match scan.problem {
        Some(problem) => Value::Malformed(problem),
        None => Value::Json,
    }
}

/// Whether a replica takes `bytes` from another as a value (the map's
/// value check: JSON by the rule, or raw bytes).
pub(crate) fn takes(bytes: &[u8]) -> bool {
    !matches!(map_value_of(bytes), Value::Malformed(_))
}

/// A map's value as JSON, by the same rule as [`takes`]: `InvalidValue`
/// when `value` is not one.
pub(crate) fn map_value(value: &Bound<'_, PyAny>) -> PyResult<Bytes> {
    let json = to_json(value)?;
    match map_value_of(&json) {
        Value::Json => Ok(json),
        Value::Malformed(problem) => Err(InvalidValue::new_err(format!(
            "{problem} cannot be a map's value"
        ))),
        Value::Raw => Err(InvalidValue::new_err(format!(
            "{} cannot be a map's value: it is not JSON",
            type_name(value)
        ))),
    }
}

/// A scan of JSON text without recursion: `None` when it is not JSON
/// (with NaN and infinities, deep nesting, any number and any escape taken
/// as JSON), the first break of the rule in `problem`.
struct Scan<'a> {
    text: &'a [u8],
    at: usize,
    problem: Option<&'static str>,
}

impl Scan<'_> {
    fn peek(&self) -> Option<u8> {
        self.text.get(self.at).copied()
    }

    fn space(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.at += 1;
        }
    }

    fn eat(&mut self, byte: u8) -> bool {
        let ate = self.peek() == Some(byte);
        if ate {
            self.at += 1;
        }
        ate
    }

    fn word(&mut self, word: &str) -> bool {
        let ate = self.text[self.at..].starts_with(word.as_bytes());
        if ate {
            self.at += word.len();
        }
        ate
    }

    fn breaks(&mut self, problem: &'static str) {
        self.problem.get_or_insert(problem);
    }

    fn document(&mut self) -> Option<()> {
        // The open lists and objects: `true` for an object.
        let mut open: Vec<bool> = Vec::new();
        self.space();
        loop {
            // A value, inside `open.len()` lists and objects.
            if open.len() > MAX_DEPTH {
                self.breaks("a value nested deeper than 128");
            }
            match self.peek()? {
                b'{' | b'[' => {
                    let object = self.peek() == Some(b'{');
                    self.at += 1;
                    self.space();
                    if self.eat(if object { b'}' } else { b']' }) {
                        // Empty: the value ends here.
                    } else {
                        open.push(object);
                        if object {
                            self.key()?;
                        }
                        continue;
                    }
                }
                b'"' => self.string()?,
                b't' if self.word("true") => {}
                b'f' if self.word("false") => {}
                b'n' if self.word("null") => {}
                b'N' if self.word("NaN") => self.breaks("NaN"),
                b'I' if self.word("Infinity") => self.breaks("an infinity"),
                b'-' if self.word("-Infinity") => self.breaks("an infinity"),
                b'-' | b'0'..=b'9' => self.number()?,
                _ => return None,
            }
            // After a value: the next of its list or object, or its end.
            loop {
                self.space();
                let Some(&object) = open.last() else {
                    return (self.at == self.text.len()).then_some(());
                };
                if self.eat(b',') {
                    self.space();
                    if object {
                        self.key()?;
                    }
                    break;
                }
                if !self.eat(if object { b'}' } else { b']' }) {
                    return None;
                }
                open.pop();
            }
        }
    }

    /// An object's key and its colon, then the space before its value.
    fn key(&mut self) -> Option<()> {
        if self.peek() != Some(b'"') {
            return None;
        }
        self.string()?;
        self.space();
        self.eat(b':').then_some(())?;
        self.space();
        Some(())
    }

    fn string(&mut self) -> Option<()> {
        self.at += 1;
        loop {
            match self.peek()? {
                b'"' => {
                    self.at += 1;
                    return Some(());
                }
                b'\\' => {
                    self.at += 1;
                    match self.peek()? {
                        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => self.at += 1,
                        b'u' => {
                            let unit = self.unit()?;
                            if (0xD800..0xDC00).contains(&unit) {
                                let low = if self.text[self.at..].starts_with(b"\\u") {
                                    self.at += 1;
                                    Some(self.unit()?)
                                } else {
                                    None
                                };
                                if !low.is_some_and(|low| (0xDC00..0xE000).contains(&low)) {
                                    self.breaks("text holding a lone surrogate");
                                }
                            } else if (0xDC00..0xE000).contains(&unit) {
                                self.breaks("text holding a lone surrogate");
                            }
                        }
                        _ => return None,
                    }
                }
                0..0x20 => return None,
                _ => self.at += 1,
            }
        }
    }

    /// `uXXXX`: the code unit.
    fn unit(&mut self) -> Option<u32> {
        let hex = self.text.get(self.at + 1..self.at + 5)?;
        let unit = u32::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?;
        if !hex.iter().all(u8::is_ascii_hexdigit) {
            return None;
        }
        self.at += 5;
        Some(unit)
    }

    fn number(&mut self) -> Option<()> {
        let start = self.at;
        self.eat(b'-');
        let digits = |scan: &mut Self| {
            let from = scan.at;
            while scan.peek().is_some_and(|b| b.is_ascii_digit()) {
                scan.at += 1;
            }
            scan.at > from
        };
        if self.eat(b'0') {
            if self.peek().is_some_and(|b| b.is_ascii_digit()) {
                return None;
            }
        } else if !digits(self) {
            return None;
        }
        let mut integer = true;
        if self.eat(b'.') {
            integer = false;
            digits(self).then_some(())?;
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            integer = false;
            self.at += 1;
            if !self.eat(b'+') {
                self.eat(b'-');
            }
            digits(self).then_some(())?;
        }
        let text = std::str::from_utf8(&self.text[start..self.at]).ok()?;
        if integer {
            if text.parse::<i64>().is_err() && text.parse::<u64>().is_err() {
                self.breaks("an integer beyond 64 bits");
            }
        } else if !text.parse::<f64>().is_ok_and(f64::is_finite) {
            self.breaks("a number beyond a float's range");
        }
        Some(())
    }
}
