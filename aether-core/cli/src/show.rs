//! Printing waves for people (pretty JSON payloads, control characters
//! escaped, so a hostile payload cannot drive the terminal) and as JSON
//! lines for scripts.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aether_core::{Phase, Wave, attenuation::DEFAULT_ATTENUATION_FACTOR};
use bytes::Bytes;
use serde_json::{Value, json};

/// Unix nanoseconds now.
pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// A phase by name where it has one.
pub fn phase_name(phase: Phase) -> String {
    if phase == Phase::ASSERT {
        "assert".into()
    } else if phase == Phase::RETRACT {
        "retract".into()
    } else {
        format!("{:.3}", phase.radians())
    }
}

/// A phase from the command line: `assert`, `retract`, or radians.
pub fn parse_phase(text: &str) -> Result<Phase, String> {
    match text.to_ascii_lowercase().as_str() {
        "assert" => Ok(Phase::ASSERT),
        "retract" => Ok(Phase::RETRACT),
        other => {
            let radians: f64 = other
                .parse()
                .map_err(|_| format!("phase {text:?}: assert, retract, or radians in [0, 2π)"))?;
            Phase::new(radians).map_err(|e| format!("phase {text:?}: {e}"))
        }
    }
}

/// A payload from the command line: JSON if it parses as JSON, else the
/// text itself.
pub fn payload_of(text: &str) -> Bytes {
    match serde_json::from_str::<Value>(text) {
        Ok(value) => Bytes::from(value.to_string()),
        Err(_) => Bytes::copy_from_slice(text.as_bytes()),
    }
}

/// How long ago `at` was, for people.
pub fn age(at: Option<SystemTime>) -> String {
    let Some(at) = at else {
        return "?".into();
    };
    let age = SystemTime::now()
        .duration_since(at)
        .unwrap_or(Duration::ZERO);
    if age < Duration::from_millis(1) {
        format!("{}us", age.as_micros())
    } else if age < Duration::from_secs(1) {
        format!("{:.1}ms", age.as_secs_f64() * 1000.0)
    } else {
        format!("{:.1}s", age.as_secs_f64())
    }
}

/// Whether `c` reorders the text around it on a terminal: the Unicode
/// bidirectional controls (embeddings, overrides, isolates, marks). Text
/// from the network could hide what it says behind them.
pub fn is_bidi_control(c: char) -> bool {
    matches!(
        c,
        '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
    )
}

/// Text with every control character escaped (`\u{1b}`), newlines too, and
/// the bidirectional controls (`\u{202e}`).
pub fn safe(text: &str) -> String {
    text.chars()
        .flat_map(|c| {
            if c.is_control() || is_bidi_control(c) {
                c.escape_default().collect::<Vec<_>>()
            } else {
                vec![c]
            }
        })
        .collect()
}

/// JSON text with the bidirectional controls inside it written as JSON
/// escapes (`\u202e`): the same value, shown as it is.
pub fn json_safe(json: String) -> String {
    if !json.chars().any(is_bidi_control) {
        return json;
    }
    json.chars()
        .map(|c| {
            if is_bidi_control(c) {
                format!("\\u{:04x}", u32::from(c))
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// A payload for people: pretty JSON (strings escaped), or text, or the
/// byte count of what is neither.
pub fn payload_text(bytes: &[u8]) -> String {
    if bytes.is_empty() {
        return "(empty)".into();
    }
    if let Ok(value) = serde_json::from_slice::<Value>(bytes) {
        // serde_json escapes control characters inside strings; the
        // bidirectional controls are escaped here.
        return json_safe(serde_json::to_string_pretty(&value).unwrap_or_default());
    }
    match std::str::from_utf8(bytes) {
        Ok(text) => safe(text),
        Err(_) => format!("({} bytes, not UTF-8)", bytes.len()),
    }
}

/// A payload for JSON lines: the value itself when it is JSON, else text.
fn payload_json(bytes: &[u8]) -> (&'static str, Value) {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(value) => ("payload", value),
        Err(_) => (
            "text",
            Value::String(String::from_utf8_lossy(bytes).into_owned()),
        ),
    }
}

/// One wave for people: a header line, then the payload indented.
pub fn wave_text(wave: &Wave) -> String {
    let amplitude = wave.effective_amplitude(now_ns(), DEFAULT_ATTENUATION_FACTOR);
    let mut head = format!(
        "[{}] {}  amplitude {:.3}  phase {}  hops {}  from {}  age {}",
        clock(),
        safe(wave.channel().as_str()),
        amplitude,
        phase_name(wave.phase()),
        wave.propagation_count(),
        safe(wave.source().unwrap_or("?")),
        age(wave.emitted_at()),
    );
    if !wave.correlation_key().is_empty() {
        head.push_str(&format!("  key {}", safe(wave.correlation_key())));
    }
    let body = payload_text(wave.payload_bytes());
    let body: Vec<String> = body.lines().map(|l| format!("  {l}")).collect();
    format!("{head}\n{}", body.join("\n"))
}

/// A JSON value as one line, with the bidirectional controls escaped.
pub fn json_line(value: &Value) -> String {
    json_safe(value.to_string())
}

/// One wave as a JSON object, for one line.
pub fn wave_json(wave: &Wave) -> Value {
    let (field, payload) = payload_json(wave.payload_bytes());
    let age_ms = wave
        .emitted_at()
        .and_then(|at| SystemTime::now().duration_since(at).ok())
        .map(|d| d.as_secs_f64() * 1000.0);
    let mut object = json!({
        "channel": wave.channel().as_str(),
        "id": wave.id().to_string(),
        "amplitude": wave.effective_amplitude(now_ns(), DEFAULT_ATTENUATION_FACTOR),
        "source_amplitude": wave.source_amplitude().value(),
        "phase": phase_name(wave.phase()),
        "hops": wave.propagation_count(),
        "source": wave.source(),
        "age_ms": age_ms,
        "key": wave.correlation_key(),
    });
    object[field] = payload;
    object
}

/// The wall clock, `HH:MM:SS.mmm` UTC.
pub fn clock() -> String {
    let ns = now_ns();
    let ms = (ns / 1_000_000) % 86_400_000;
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        ms / 3_600_000,
        ms / 60_000 % 60,
        ms / 1000 % 60,
        ms % 1000
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_never_reach_the_terminal() {
        let hostile = "ok\u{1b}[2J\u{7}\r\nnext";
        let shown = payload_text(hostile.as_bytes());
        assert!(!shown.chars().any(|c| c.is_control()), "{shown:?}");
        let json = payload_text(br#"{"a": "\u001b[31mred"}"#);
        assert!(
            !json.chars().any(|c| c.is_control() && c != '\n'),
            "{json:?}"
        );
        assert_eq!(payload_text(&[0xff, 0xfe]), "(2 bytes, not UTF-8)");
    }

    #[test]
    fn payloads_are_json_when_they_parse() {
        assert_eq!(payload_of(r#"{ "a" : 1 }"#), Bytes::from(r#"{"a":1}"#));
        assert_eq!(payload_of("plain words"), Bytes::from("plain words"));
        assert_eq!(payload_of("21.5"), Bytes::from("21.5"));
    }

    #[test]
    fn bidirectional_controls_never_reach_the_terminal() {
        let hostile = "invoice\u{202e}fdp.exe\u{2066}x\u{200f}";
        let shown = safe(hostile);
        assert!(!shown.chars().any(is_bidi_control), "{shown:?}");
        assert!(shown.contains("\\u{202e}"), "{shown:?}");
        let json = json_line(&serde_json::json!({ "key": hostile }));
        assert!(!json.chars().any(is_bidi_control), "{json}");
        let back: Value = serde_json::from_str(&json).unwrap();
        assert_eq!(back["key"], hostile, "the same value");
        let pretty = payload_text(serde_json::to_string(&hostile).unwrap().as_bytes());
        assert!(!pretty.chars().any(is_bidi_control), "{pretty}");
    }

    #[test]
    fn phases_by_name_or_radians() {
        assert_eq!(parse_phase("retract"), Ok(Phase::RETRACT));
        assert_eq!(parse_phase("ASSERT"), Ok(Phase::ASSERT));
        assert!(parse_phase("NaN").is_err());
        assert!(parse_phase("sideways").is_err());
        assert_eq!(phase_name(parse_phase("1.5").unwrap()), "1.500");
    }
}
