//! Bad waves: what the sample services refuse, the reasons they count, and
//! a warning about them at most once per interval.
//!
//! A wave can be well formed (a valid envelope on a valid channel) and still
//! be no order or no answer: a payload that is not JSON, fields of the wrong
//! type, an order id that cannot be a correlation key. A service refuses
//! such a wave, counts it by reason in its report, and goes on; a flood of
//! them costs one log line per interval ([`RefusalLog`]), not one per wave.
//!
//! The sample services (`aether-service-alpha` and `aether-service-beta`)
//! use it for their orders and answers.

use std::{
    collections::BTreeMap,
    fmt,
    time::{Duration, Instant},
};

use aether_core::Wave;
use serde::de::{DeserializeOwned, IgnoredAny};

/// Most time between two warnings about refused waves.
pub const WARN_EVERY: Duration = Duration::from_secs(10);

/// Longest order id, in bytes: the limit of a correlation key. An order id
/// is 1 to this many bytes.
pub const MAX_ORDER_ID_BYTES: usize = aether_core::wire::MAX_CORRELATION_KEY_LEN;

/// Longest detail of a refusal that is logged, in bytes: a hostile payload
/// is not copied into the log.
const MAX_DETAIL_BYTES: usize = 160;

/// Refused: the payload is not JSON (not UTF-8, not well formed, or nested
/// deeper than the JSON reader allows).
pub const NOT_JSON: &str = "not_json";
/// Refused: JSON, but a field is missing or of the wrong type.
pub const BAD_FIELDS: &str = "bad_fields";
/// Refused: the order id is empty or longer than [`MAX_ORDER_ID_BYTES`].
pub const BAD_ORDER_ID: &str = "bad_order_id";

/// Why a wave is refused: a reason, counted, and a detail, logged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// The reason it is counted under, a short `snake_case` name.
    pub reason: &'static str,
    /// What was wrong, for the log; at most a few hundred bytes.
    pub detail: String,
}

impl Refusal {
    /// A refusal for `reason`, with `detail` cut to a short length.
    pub fn new(reason: &'static str, detail: impl fmt::Display) -> Self {
        let mut detail = detail.to_string();
        if detail.len() > MAX_DETAIL_BYTES {
            let mut end = MAX_DETAIL_BYTES;
            while !detail.is_char_boundary(end) {
                end -= 1;
            }
            detail.truncate(end);
            detail.push('…');
        }
        Self { reason, detail }
    }
}

/// The payload of `wave` as JSON of type `T`; refused as [`NOT_JSON`] when
/// it is not JSON at all, as [`BAD_FIELDS`] when it is JSON of another
/// shape.
pub fn read_json<T: DeserializeOwned>(wave: &Wave) -> Result<T, Refusal> {
    wave.json::<T>().map_err(|error| {
        // Only on the way out: is it JSON at all? (A JSON text is UTF-8.)
        let payload = wave.payload_bytes();
        let json = std::str::from_utf8(payload).is_ok()
            && serde_json::from_slice::<IgnoredAny>(payload).is_ok();
        Refusal::new(if json { BAD_FIELDS } else { NOT_JSON }, error)
    })
}

/// Whether `order_id` can be an order id, and so a correlation key: 1 to
/// [`MAX_ORDER_ID_BYTES`] bytes; refused as [`BAD_ORDER_ID`] otherwise.
pub fn check_order_id(order_id: &str) -> Result<(), Refusal> {
    if order_id.is_empty() || order_id.len() > MAX_ORDER_ID_BYTES {
        Err(Refusal::new(
            BAD_ORDER_ID,
            format_args!(
                "an order id of {} bytes (1 to {MAX_ORDER_ID_BYTES})",
                order_id.len()
            ),
        ))
    } else {
        Ok(())
    }
}

/// Counts refused waves by reason, and warns about them at most once per
/// interval, with how many were refused since the last warning.
#[derive(Debug)]
pub struct RefusalLog {
    service: &'static str,
    every: Duration,
    last_warning: Option<Instant>,
    since_warning: u64,
}

impl RefusalLog {
    /// A log for `service` that warns at most once per `every`.
    pub fn new(service: &'static str, every: Duration) -> Self {
        Self {
            service,
            every,
            last_warning: None,
            since_warning: 0,
        }
    }

    /// Counts `refusal` of a wave on `channel` in `counts` (by reason), and
    /// warns if no warning was given for [`every`](Self::new).
    pub fn refuse(
        &mut self,
        counts: &mut BTreeMap<&'static str, u64>,
        refusal: Refusal,
        channel: &str,
    ) {
        *counts.entry(refusal.reason).or_default() += 1;
        if let Some(refused) = self.due(Instant::now()) {
            tracing::warn!(
                reason = refusal.reason,
                channel,
                detail = ?refusal.detail,
                refused,
                "{}: bad waves refused, {refused} since the last warning (at most one \
                 warning per {} s); the report counts them by reason",
                self.service,
                self.every.as_secs_f64()
            );
        }
    }

    /// Counts one event now: `Some(n)` when it is time to warn about it,
    /// `n` the events since the last warning (this one included).
    pub fn due_now(&mut self) -> Option<u64> {
        self.due(Instant::now())
    }

    /// Counts one refusal at `now`: `Some(n)` when it is time to warn, `n`
    /// the refusals since the last warning (this one included), else `None`.
    fn due(&mut self, now: Instant) -> Option<u64> {
        self.since_warning += 1;
        match self.last_warning {
            Some(last) if now.saturating_duration_since(last) < self.every => None,
            _ => {
                self.last_warning = Some(now);
                Some(std::mem::take(&mut self.since_warning))
            }
        }
    }
}

/// `counts` for a report: `0`, or the total and each reason, as in
/// `5 (bad_fields 2, not_json 3)`.
pub fn summary<'a>(counts: &'a BTreeMap<&'static str, u64>) -> impl fmt::Display + 'a {
    struct Summary<'a>(&'a BTreeMap<&'static str, u64>);
    impl fmt::Display for Summary<'_> {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "{}", self.0.values().sum::<u64>())?;
            for (i, (reason, n)) in self.0.iter().enumerate() {
                let open = if i == 0 { " (" } else { ", " };
                write!(f, "{open}{reason} {n}")?;
            }
            if !self.0.is_empty() {
                f.write_str(")")?;
            }
            Ok(())
        }
    }
    Summary(counts)
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Order {
        order_id: String,
        qty: u64,
    }

    fn wave(payload: impl Into<Vec<u8>>) -> Wave {
        Wave::builder("orders.created")
            .payload(payload.into())
            .build()
            .unwrap()
    }

    #[test]
    fn tells_what_is_not_json_from_json_of_another_shape() {
        let reason = |payload: &[u8]| {
            read_json::<Order>(&wave(payload))
                .map(|_| ())
                .unwrap_err()
                .reason
        };
        assert_eq!(reason(b"\xff\xfe"), NOT_JSON);
        assert_eq!(reason(b"{\"order_id\": \"\xff\"}"), NOT_JSON);
        assert_eq!(reason(b""), NOT_JSON);
        assert_eq!(reason("[".repeat(10_000).as_bytes()), NOT_JSON);
        assert_eq!(reason(b"{\"order_id\": 5, \"qty\": \"\xff\"}"), NOT_JSON);
        assert_eq!(reason(b"{\"order_id\": 5, \"qty\": 1}"), BAD_FIELDS);
        assert_eq!(reason(b"{\"order_id\": \"a\", \"qty\": -1}"), BAD_FIELDS);
        assert_eq!(reason(b"{\"order_id\": \"a\"}"), BAD_FIELDS);
        assert_eq!(reason(b"[]"), BAD_FIELDS);
        assert!(read_json::<Order>(&wave(&b"{\"order_id\": \"a\", \"qty\": 1}"[..])).is_ok());
    }

    #[test]
    fn order_ids_are_1_to_256_bytes() {
        assert_eq!(check_order_id("").unwrap_err().reason, BAD_ORDER_ID);
        assert!(check_order_id("o").is_ok());
        assert!(check_order_id(&"o".repeat(256)).is_ok());
        assert_eq!(
            check_order_id(&"o".repeat(257)).unwrap_err().reason,
            BAD_ORDER_ID
        );
    }

    #[test]
    fn a_detail_is_cut_short() {
        let refusal = Refusal::new(NOT_JSON, "é".repeat(1_000));
        assert!(refusal.detail.len() <= MAX_DETAIL_BYTES + '…'.len_utf8());
        assert!(refusal.detail.ends_with('…'));
    }

    #[test]
    fn warns_at_most_once_per_interval_with_the_count_since_the_last() {
        let mut log = RefusalLog::new("test", Duration::from_secs(10));
        let start = Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);
        assert_eq!(log.due(at(0)), Some(1));
        assert_eq!(log.due(at(1)), None);
        assert_eq!(log.due(at(9_999)), None);
        assert_eq!(log.due(at(10_000)), Some(3));
        assert_eq!(log.due(at(15_000)), None);
        assert_eq!(log.due(at(30_000)), Some(2));
    }

    #[test]
    fn counts_by_reason_and_sums_them_up() {
        let mut counts = BTreeMap::new();
        assert_eq!(summary(&counts).to_string(), "0");
        let mut log = RefusalLog::new("test", WARN_EVERY);
        for reason in [NOT_JSON, BAD_FIELDS, NOT_JSON] {
            log.refuse(&mut counts, Refusal::new(reason, "x"), "orders.created");
        }
        assert_eq!(summary(&counts).to_string(), "3 (bad_fields 1, not_json 2)");
    }
}
