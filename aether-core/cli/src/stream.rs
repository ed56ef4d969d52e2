//! `stream`: the durable channels' JetStream stream as the server reports
//! it, as `nats stream info` and `nats consumer info` show it: waves and
//! bytes against the limits, the copies and the leader, each durable
//! consumer's backlog. A look-up; nothing is changed.

use aether_core::Operator;
use aether_core::StreamStatus;

use crate::{
    Failure,
    cli::{Connection, StreamArgs},
    connect::connect,
    show,
};

pub async fn run(connection: &Connection, args: StreamArgs) -> Result<(), Failure> {
    let aether = connect(connection).await?;
    let status = aether
        .durable_stream()
        .await
        .map_err(|e| Failure::runtime(format!("stream: {e}")))?;
    if args.json {
        println!("{}", json(&status));
    } else {
        print!("{}", text(&status));
    }
    Ok(())
}

/// `limit` or `none` for a limit of 0.
fn limit(value: u64, unit: &str) -> String {
    match value {
        0 => "no limit".to_string(),
        n => format!("{n}{unit}"),
    }
}

/// The stream as people read it.
fn text(s: &StreamStatus) -> String {
    let mut out = format!(
        "stream {}: {} waves ({} to {}), {} bytes of {}; oldest {} s old, kept {}\n",
        show::safe(&s.name),
        s.messages,
        s.first_sequence,
        s.last_sequence,
        s.bytes,
        limit(s.max_bytes, " bytes"),
        s.oldest_age.as_secs(),
        limit(s.max_age.as_secs(), " s"),
    );
    out.push_str(&format!(
        "copies: {} configured, {} current, {} lagging, {} offline; leader {}\n",
        s.replicas,
        s.replicas_current,
        s.replicas_lagging,
        s.replicas_offline,
        s.leader.as_deref().map_or("none".to_string(), show::safe),
    ));
    if s.replicas_current < s.replicas {
        out.push_str(
            "warning: fewer copies are current than configured: a server is lost or behind\n",
        );
    }
    out.push_str(&format!("consumers: {}\n", s.consumers));
    if !s.consumer_backlogs.is_empty() {
        let rows: Vec<[String; 4]> = s
            .consumer_backlogs
            .iter()
            .map(|c| {
                [
                    show::safe(&c.name),
                    c.pending.to_string(),
                    c.ack_pending.to_string(),
                    c.redelivered.to_string(),
                ]
            })
            .collect();
        let header = ["CONSUMER", "PENDING", "ACK_PENDING", "REDELIVERED"].map(String::from);
        let widths: Vec<usize> = (0..4)
            .map(|c| {
                std::iter::once(&header)
                    .chain(&rows)
                    .map(|r| r[c].chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        for row in std::iter::once(&header).chain(&rows) {
            let cells: Vec<String> = row
                .iter()
                .zip(&widths)
                .map(|(cell, width)| format!("{cell:<width$}"))
                .collect();
            out.push_str("  ");
            out.push_str(cells.join("  ").trim_end());
            out.push('\n');
        }
    }
    out
}

/// The stream as one JSON object.
fn json(s: &StreamStatus) -> serde_json::Value {
    serde_json::json!({
        "name": s.name,
        "waves": s.messages,
        "bytes": s.bytes,
        "max_bytes": s.max_bytes,
        "max_waves": s.max_messages,
        "max_age_s": s.max_age.as_secs(),
        "oldest_age_s": s.oldest_age.as_secs(),
        "first_sequence": s.first_sequence,
        "last_sequence": s.last_sequence,
        "replicas": s.replicas,
        "replicas_current": s.replicas_current,
        "replicas_lagging": s.replicas_lagging,
        "replicas_offline": s.replicas_offline,
        "leader": s.leader,
        "consumers": s.consumers,
        "consumer_backlogs": s.consumer_backlogs.iter().map(|c| serde_json::json!({
            "name": c.name,
            "pending": c.pending,
            "ack_pending": c.ack_pending,
            "redelivered": c.redelivered,
        })).collect::<Vec<_>>(),
    })
}
