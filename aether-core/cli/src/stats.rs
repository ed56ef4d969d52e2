//! `stats`: the reports instances send on `_report.<instance>`, gathered
//! for a while, as a table (or JSON lines).

use std::collections::BTreeMap;

use crate::{
    Failure,
    cli::{Connection, StatsArgs},
    connect::connect,
    show,
};
use aether_core::{Vibrator, report::InstanceReport};

pub async fn run(connection: &Connection, args: StatsArgs) -> Result<(), Failure> {
    let aether = connect(connection).await?;
    let mut vibrator = Vibrator::builder(connection.name.clone())
        .create(&aether)
        .await
        .map_err(|e| Failure::usage(e.to_string()))?;
    vibrator
        .resonate_on(format!("{}.>", aether_core::report::REPORT_PREFIX))
        .await
        .map_err(|e| Failure::runtime(format!("cannot hear reports: {e}")))?;
    let mut latest: BTreeMap<String, InstanceReport> = BTreeMap::new();
    let mut refused = 0u64;
    let deadline = tokio::time::Instant::now() + args.wait;
    while let Ok(Some(wave)) = tokio::time::timeout_at(deadline, vibrator.receive()).await {
        match InstanceReport::parse(&wave) {
            Ok(report) => {
                latest.insert(report.instance.clone(), report);
            }
            Err(_) => refused += 1,
        }
    }
    if args.json {
        for report in latest.values() {
            println!(
                "{}",
                show::json_safe(serde_json::to_string(report).unwrap_or_default())
            );
        }
    } else {
        print!("{}", table(&latest));
        for report in latest.values() {
            if let Some(kept) = &report.keeper {
                println!(
                    "keeper {}: {}",
                    show::safe(&report.instance),
                    crate::keep::summary(kept)
                );
            }
        }
    }
    if refused > 0 {
        eprintln!("{refused} reports did not parse and were passed over");
    }
    if latest.is_empty() {
        eprintln!(
            "no instance reported within {:?}: instances report when [aether.report] interval_ms is set; wait longer with --wait",
            args.wait
        );
    }
    Ok(())
}

/// An instance's clock against the bus's time (`-7200000ms`: two hours
/// behind), ± how sure; `own` when it heard no time source (`own
/// -30000ms`: a source alone whose clock was set back 30 s keeps the
/// bus's time where it was).
fn clock(report: &InstanceReport) -> String {
    if report.clock_sources == 0 {
        return match report.clock_offset_ms {
            0 => "own".to_string(),
            offset => format!("own {:+}ms", -offset),
        };
    }
    format!(
        "{:+}ms ±{}",
        -report.clock_offset_ms, report.clock_uncertainty_ms
    )
}

/// A count by reason as its total and the largest reason: `7
/// (queue_full…)`.
fn by_reason(counts: &BTreeMap<String, u64>) -> String {
    let total: u64 = counts.values().sum();
    match counts
        .iter()
        .filter(|(_, n)| **n > 0)
        .max_by_key(|(_, n)| **n)
    {
        Some((reason, _)) => format!("{total} ({}…)", show::safe(reason)),
        None => total.to_string(),
    }
}

/// What an instance's replicas refused, by reason, all its maps together.
fn map_refusals(report: &InstanceReport) -> BTreeMap<String, u64> {
    let mut all = BTreeMap::new();
    for map in &report.maps {
        for (reason, n) in &map.refused {
            *all.entry(reason.clone()).or_insert(0) += n;
        }
    }
    all
}

/// The reports as an aligned table, one instance a row.
fn table(reports: &BTreeMap<String, InstanceReport>) -> String {
    let header = [
        "INSTANCE",
        "MEDIUM",
        "CONNECTION",
        "EMITTED",
        "DELIVERED",
        "DROPPED",
        "REFUSED",
        "QUEUED",
        "OUTBOX",
        "MALFORMED",
        "PANICS",
        "MAPS",
        "MAP-REFUSED",
        "CLOCK",
    ];
    let mut rows: Vec<Vec<String>> = vec![header.iter().map(|h| h.to_string()).collect()];
    for report in reports.values() {
        rows.push(vec![
            show::safe(&report.instance),
            show::safe(&report.medium),
            show::safe(&report.connection),
            report.emitted.to_string(),
            report.delivered.to_string(),
            by_reason(&report.dropped),
            by_reason(&report.refused_emits),
            format!("{}/{}", report.queued, report.queue_capacity),
            format!("{}/{}", report.outbox_len, report.outbox_capacity),
            report.malformed.to_string(),
            report.handler_panics.to_string(),
            report.maps.len().to_string(),
            by_reason(&map_refusals(report)),
            clock(report),
        ]);
    }
    let widths: Vec<usize> = (0..header.len())
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_lines_up_and_names_the_first_drop_reason() {
        let mut reports = BTreeMap::new();
        let mut report = InstanceReport {
            instance: "alpha-1".into(),
            medium: "nats".into(),
            connection: "connected".into(),
            emitted: 1200,
            handler_panics: 4,
            ..Default::default()
        };
        report.dropped.insert("queue_full".into(), 7);
        report.dropped.insert("expired".into(), 0);
        report.refused_emits.insert("outbox_full".into(), 1244);
        report.refused_emits.insert("rate_limited".into(), 3);
        for (map, malformed) in [("home", 80), ("sensors", 9)] {
            let mut replica = aether_core::report::MapReport {
                map: map.into(),
                ..Default::default()
            };
            replica.refused.insert("malformed".into(), malformed);
            replica.refused.insert("future".into(), 1);
            report.maps.push(replica);
        }
        reports.insert(report.instance.clone(), report);
        let text = table(&reports);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[0].starts_with("INSTANCE"));
        assert!(lines[1].contains("7 (queue_full…)"), "{text}");
        assert!(lines[1].contains("1247 (outbox_full…)"), "{text}");
        // Columns by characters (an ellipsis is three bytes).
        let column = |line: &str, word: &str| line.find(word).map(|at| line[..at].chars().count());
        assert_eq!(column(lines[0], "REFUSED"), column(lines[1], "1247"));
        assert_eq!(lines[0].find("MEDIUM"), lines[1].find("nats"));
        assert_eq!(column(lines[0], "PANICS"), column(lines[1], "4 "));
        // The maps' refusals together, the largest reason named.
        assert_eq!(
            column(lines[0], "MAP-REFUSED"),
            column(lines[1], "91 (malformed…)")
        );
    }
}
