//! Replay: journaled waves emitted again, as re-emissions. Each wave is
//! the one observed (same id, source, payload, emission time) with one
//! more hop (`Wave::propagate`), so the aether treats it as any hop:
//! attenuated by `attenuation_factor`, measured again for time decay,
//! dropped past `max_propagation`. With an amplitude, the wave is
//! re-amplified instead (`Wave::reamplify`: raised to it, its decay clock
//! restarted, one hop).

use std::path::PathBuf;

use aether_core::Operator;
use aether_core::{Aether, Channel, Vibrator, Wave};
use aether_journal::{Damage, Reader};

use crate::{GatewayError, journal::decode_record};

/// Which journaled waves to take.
#[derive(Clone, Debug, PartialEq)]
pub struct Selection {
    /// The journal's directory.
    pub dir: PathBuf,
    /// Only waves observed at or after this time, Unix ms.
    pub from_ms: Option<u64>,
    /// Only waves observed at or before this time, Unix ms.
    pub to_ms: Option<u64>,
    /// Only waves on a channel that matches one of these patterns (all if
    /// empty).
    pub channels: Vec<Channel>,
}

impl Selection {
    fn takes(&self, time_ms: u64, wave: &Wave) -> bool {
        self.from_ms.is_none_or(|from| time_ms >= from)
            && self.to_ms.is_none_or(|to| time_ms <= to)
            && (self.channels.is_empty() || self.channels.iter().any(|p| wave.channel().matches(p)))
    }

    /// The selected waves, in journal order, with their record's sequence
    /// number and time, and how the read ended. Blocking.
    pub fn read(&self) -> Result<Selected, GatewayError> {
        let reader = Reader::open(&self.dir)?;
        let mut selected = Selected::default();
        let mut records = reader.records(0);
        for record in records.by_ref() {
            let record = record?;
            selected.read += 1;
            match decode_record(&record.payload) {
                Some(wave) if self.takes(record.time_ms, &wave) => {
                    selected.waves.push((record.seq, record.time_ms, wave));
                }
                Some(_) => {}
                None => selected.undecodable += 1,
            }
        }
        selected.damage = records.damage().cloned();
        Ok(selected)
    }
}

/// What [`Selection::read`] found.
#[derive(Debug, Default)]
pub struct Selected {
    /// Records read.
    pub read: u64,
    /// Records that are not waves (skipped).
    pub undecodable: u64,
    /// The waves selected: sequence number, time observed (Unix ms), wave.
    pub waves: Vec<(u64, u64, Wave)>,
    /// Where the journal stopped being readable, if it did (a record being
    /// written, at the end of a live journal).
    pub damage: Option<Damage>,
}

/// What a replay did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ReplayReport {
    /// Records read.
    pub read: u64,
    /// Waves selected and emitted.
    pub emitted: u64,
    /// Waves the aether refused (the error of the first is logged).
    pub refused: u64,
    /// Records that are not waves.
    pub undecodable: u64,
}

/// Emits the waves of `selection` on `aether` from a vibrator named
/// `name`, each with one more hop (or re-amplified to `amplitude`), in
/// journal order; then waits (up to 10 s) for them to leave the process.
pub async fn replay(
    aether: &Aether,
    name: &str,
    selection: Selection,
    amplitude: Option<f64>,
) -> Result<ReplayReport, GatewayError> {
    let selected = tokio::task::spawn_blocking(move || selection.read())
        .await
        .map_err(|e| GatewayError::Task(e.to_string()))??;
    if let Some(damage) = &selected.damage {
        tracing::info!(segment = %damage.segment.display(), offset = damage.offset, kind = %damage.kind, "the journal ends early");
    }
    let vibrator = Vibrator::create(name, aether).await?;
    let mut report = ReplayReport {
        read: selected.read,
        undecodable: selected.undecodable,
        ..Default::default()
    };
    for (_, _, mut wave) in selected.waves {
        // Kept sealed when its channel's payloads are: opened with this
        // aether's key, or not replayed.
        if let Err(reason) = aether.open_at_rest(&mut wave) {
            if report.refused == 0 {
                tracing::warn!(%reason, channel = %wave.channel(), "a journaled wave cannot be opened here; not replayed");
            }
            report.refused += 1;
            continue;
        }
        match amplitude {
            Some(a) => wave
                .reamplify(a)
                .map_err(|e| GatewayError::Replay(e.to_string()))?,
            None => wave.propagate(),
        }
        match vibrator.emit(wave).await {
            Ok(_) => report.emitted += 1,
            Err(error) => {
                if report.refused == 0 {
                    tracing::warn!(%error, "a replayed wave was refused");
                }
                report.refused += 1;
            }
        }
    }
    aether
        .flush(std::time::Duration::from_secs(10))
        .await
        .map_err(|e| GatewayError::Replay(e.to_string()))?;
    Ok(report)
}

/// Parses a time for `--from` and `--to`: RFC 3339
/// (`2026-05-01T12:00:00Z`) or Unix milliseconds.
pub fn parse_time(text: &str) -> Result<u64, String> {
    if let Ok(ms) = text.parse::<u64>() {
        return Ok(ms);
    }
    let at = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .map_err(|e| format!("{text:?} is neither RFC 3339 nor Unix milliseconds: {e}"))?;
    u64::try_from(at.unix_timestamp_nanos() / 1_000_000)
        .map_err(|_| format!("{text:?} is before 1970"))
}

/// Formats Unix milliseconds as RFC 3339, UTC.
pub fn format_time(ms: u64) -> String {
    let nanos = i128::from(ms) * 1_000_000;
    time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| ms.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339_or_unix_ms() {
        assert_eq!(parse_time("1700000000000"), Ok(1_700_000_000_000));
        assert_eq!(parse_time("2023-11-14T22:13:20Z"), Ok(1_700_000_000_000));
        assert_eq!(
            parse_time("2023-11-14T23:13:20.5+01:00"),
            Ok(1_700_000_000_500)
        );
        assert!(parse_time("yesterday").unwrap_err().contains("RFC 3339"));
        assert_eq!(format_time(1_700_000_000_000), "2023-11-14T22:13:20Z");
    }
}
