//! The W3C trace context a wave carries, so that the span that emitted it and
//! the span that receives it belong to one trace.
//!
//! Aether does not depend on a tracing system: a [`TraceContext`] is the
//! three fields of a W3C `traceparent` (version `00`), set by whoever emits
//! (for example from an OpenTelemetry span) and read by whoever receives.

use std::{fmt, str::FromStr};

/// The trace a wave belongs to and the span that emitted it: a W3C
/// `traceparent` of version `00`.
///
/// ```
/// use aether_core::TraceContext;
///
/// let header = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
/// let context: TraceContext = header.parse()?;
/// assert!(context.is_sampled());
/// assert_eq!(context.to_string(), header);
/// # Ok::<(), aether_core::TraceContextError>(())
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceContext {
    trace_id: [u8; 16],
    span_id: [u8; 8],
    flags: u8,
}

/// Bit 0 of the trace flags: the trace is sampled (recorded).
pub const TRACE_FLAG_SAMPLED: u8 = 0x01;

impl TraceContext {
    /// A context from its parts. An all-zero trace id or span id is invalid
    /// (W3C Trace Context, section 3.2.2).
    pub fn new(trace_id: [u8; 16], span_id: [u8; 8], flags: u8) -> Result<Self, TraceContextError> {
        if trace_id == [0; 16] {
            return Err(TraceContextError("the trace id is all zeros".into()));
        }
        if span_id == [0; 8] {
            return Err(TraceContextError("the span id is all zeros".into()));
        }
        Ok(Self {
            trace_id,
            span_id,
            flags,
        })
    }

    /// The 16-byte trace id.
    pub fn trace_id(&self) -> [u8; 16] {
        self.trace_id
    }

    /// The 8-byte id of the span that emitted the wave.
    pub fn span_id(&self) -> [u8; 8] {
        self.span_id
    }

    /// The trace flags (bit 0: sampled).
    pub fn flags(&self) -> u8 {
        self.flags
    }

    /// Whether the trace is sampled.
    pub fn is_sampled(&self) -> bool {
        self.flags & TRACE_FLAG_SAMPLED != 0
    }
}

/// `00-<trace id>-<span id>-<flags>`, lowercase hex: the `traceparent`
/// header.
impl fmt::Display for TraceContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("00-")?;
        for byte in self.trace_id {
            write!(f, "{byte:02x}")?;
        }
        f.write_str("-")?;
        for byte in self.span_id {
            write!(f, "{byte:02x}")?;
        }
        write!(f, "-{:02x}", self.flags)
    }
}

impl fmt::Debug for TraceContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TraceContext({self})")
    }
}

/// Parses a `traceparent` header of version `00` (lowercase hex, as the
/// W3C requires).
impl FromStr for TraceContext {
    type Err = TraceContextError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = |what: &str| TraceContextError(format!("traceparent {text:?}: {what}"));
        let parts: Vec<&str> = text.split('-').collect();
        let [version, trace_id, span_id, flags] = parts[..] else {
            return Err(bad("expected 4 fields separated by '-'"));
        };
        if version != "00" {
            return Err(bad("only version 00 is read"));
        }
        let trace_id =
            hex::<16>(trace_id).ok_or_else(|| bad("the trace id is not 32 hex digits"))?;
        let span_id = hex::<8>(span_id).ok_or_else(|| bad("the span id is not 16 hex digits"))?;
        let [flags] = hex::<1>(flags).ok_or_else(|| bad("the flags are not 2 hex digits"))?;
        Self::new(trace_id, span_id, flags).map_err(|e| bad(&e.0))
    }
}

/// `N` bytes from exactly `2 * N` lowercase hex digits.
fn hex<const N: usize>(text: &str) -> Option<[u8; N]> {
    let digits = text.as_bytes();
    if digits.len() != 2 * N {
        return None;
    }
    let value = |d: u8| match d {
        b'0'..=b'9' => Some(d - b'0'),
        b'a'..=b'f' => Some(d - b'a' + 10),
        _ => None,
    };
    let mut out = [0; N];
    for (byte, pair) in out.iter_mut().zip(digits.chunks_exact(2)) {
        *byte = value(pair[0])? << 4 | value(pair[1])?;
    }
    Some(out)
}

/// A trace context that is not valid: says what is wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceContextError(String);

impl fmt::Display for TraceContextError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid trace context: {}", self.0)
    }
}

impl std::error::Error for TraceContextError {}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn refuses_what_the_w3c_refuses() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902bé-01",
        ] {
            let err = bad.parse::<TraceContext>().unwrap_err();
            assert!(
                err.to_string().starts_with("invalid trace context"),
                "{err}"
            );
        }
    }

    proptest! {
        #[test]
        fn traceparent_round_trips(trace in any::<[u8; 16]>(), span in any::<[u8; 8]>(), flags in any::<u8>()) {
            match TraceContext::new(trace, span, flags) {
                Ok(context) => {
                    let text = context.to_string();
                    prop_assert_eq!(text.len(), 55);
                    prop_assert_eq!(text.parse::<TraceContext>().unwrap(), context);
                }
                Err(_) => prop_assert!(trace == [0; 16] || span == [0; 8]),
            }
        }

        #[test]
        fn parsing_never_panics(text in "\\PC{0,80}") {
            let _ = text.parse::<TraceContext>();
        }
    }
}
