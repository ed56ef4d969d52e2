//! Which JetStream streams capture the durable channels, found by asking
//! the bus itself.
//!
//! A probe is an empty message on a concrete subject of each durable
//! pattern, with a reply inbox and `Nats-Expected-Stream` naming a stream
//! that does not exist. Every stream that captures the subject answers it
//! with an error ("expected stream does not match") and stores nothing,
//! in whatever JetStream domain the message reaches: the server's own, a
//! hub's across a leaf link, another region's across a gateway. JetStream
//! forbids two streams of one domain to overlap, so two answers for one
//! subject mean two domains each storing every wave, the nearer one
//! acknowledging it: while the link between them is cut, waves are stored
//! on one side only and never reach the consumers on the other.
//!
//! Receivers pass probes over uncounted ([`is_probe`]).

use std::{collections::BTreeMap, time::Duration};

use async_nats::{Client, HeaderMap, Message};
use futures_util::StreamExt;

/// The stream a probe expects: no stream has this name (a stream's name
/// may not hold a space).
const EXPECTED: &str = "aether capture probe";
/// The token that stands for each wildcard of a pattern in its probe.
const TOKEN: &str = "_capture";
const EXPECTED_STREAM: &str = "Nats-Expected-Stream";

/// A concrete subject within the stream subject `pattern`: each `*` and a
/// final `>` become [`TOKEN`].
pub(super) fn probe_subject(pattern: &str) -> String {
    pattern
        .split('.')
        .map(|token| match token {
            "*" | ">" => TOKEN,
            other => other,
        })
        .collect::<Vec<_>>()
        .join(".")
}

/// Whether two NATS subjects (with `*` and `>`) have a subject in common.
pub(super) fn collide(a: &str, b: &str) -> bool {
    let (mut a, mut b) = (a.split('.'), b.split('.'));
    loop {
        match (a.next(), b.next()) {
            (Some(">"), Some(_)) | (Some(_), Some(">")) => return true,
            (Some(x), Some(y)) if x == y || x == "*" || y == "*" => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// Whether `message` is a capture probe (a message of no bus: not counted).
pub(super) fn is_probe(message: &Message) -> bool {
    message.payload.is_empty()
        && message
            .headers
            .as_ref()
            .and_then(|h| h.get(EXPECTED_STREAM))
            .is_some_and(|v| v.as_str() == EXPECTED)
}

/// The streams that answered the probe of each subject, by subject (the
/// stream subjects given, not their probes), each as JetStream named it.
pub(super) type Captures = BTreeMap<String, Vec<String>>;

/// Probes each of `subjects` and gathers the answers for `wait`.
pub(super) async fn probe(
    client: &Client,
    subjects: &[String],
    wait: Duration,
) -> Result<Captures, async_nats::Error> {
    let inbox = client.new_inbox();
    let mut answers = client.subscribe(format!("{inbox}.*")).await?;
    let mut headers = HeaderMap::new();
    headers.insert(EXPECTED_STREAM, EXPECTED);
    for (i, subject) in subjects.iter().enumerate() {
        client
            .publish_with_reply_and_headers(
                probe_subject(subject),
                format!("{inbox}.{i}"),
                headers.clone(),
                bytes::Bytes::new(),
            )
            .await?;
    }
    client.flush().await?;
    let mut captures: Captures = subjects.iter().map(|s| (s.clone(), Vec::new())).collect();
    let deadline = tokio::time::Instant::now() + wait;
    while let Ok(Some(answer)) = tokio::time::timeout_at(deadline, answers.next()).await {
        let Some(subject) = answer
            .subject
            .rsplit('.')
            .next()
            .and_then(|i| i.parse::<usize>().ok())
            .and_then(|i| subjects.get(i))
        else {
            continue;
        };
        // A stream's answer names it; anything else (a server's "no
        // responders", a stranger's message) is not a capture.
        let Some(stream) = serde_json::from_slice::<serde_json::Value>(&answer.payload)
            .ok()
            .and_then(|v| v.get("stream")?.as_str().map(str::to_string))
        else {
            continue;
        };
        captures.entry(subject.clone()).or_default().push(stream);
    }
    Ok(captures)
}

/// The most streams that answered for one subject.
pub(super) fn most(captures: &Captures) -> usize {
    captures.values().map(Vec::len).max().unwrap_or(0)
}

/// The first subject more than one stream captures, and those streams.
pub(super) fn doubled(captures: &Captures) -> Option<(&String, &Vec<String>)> {
    captures.iter().find(|(_, streams)| streams.len() > 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_probe_subject_is_concrete_and_within_its_pattern() {
        for (pattern, probe) in [
            ("aether.orders.*", "aether.orders._capture"),
            ("aether.orders.>", "aether.orders._capture"),
            ("aether.*.created", "aether._capture.created"),
            ("aether.orders.created", "aether.orders.created"),
            ("aether.>", "aether._capture"),
        ] {
            assert_eq!(probe_subject(pattern), probe);
            assert!(!probe.contains(['*', '>']));
        }
    }

    #[test]
    fn subjects_collide_when_some_subject_matches_both() {
        for (a, b) in [
            ("aether.orders.*", "aether.orders.created"),
            ("aether.orders.*", "aether.*.created"),
            ("aether.orders.>", "aether.orders.created.late"),
            ("aether.>", "aether.orders.*"),
            (">", "aether"),
            ("aether.orders.created", "aether.orders.created"),
        ] {
            assert!(collide(a, b), "{a} {b}");
            assert!(collide(b, a), "{b} {a}");
        }
        for (a, b) in [
            ("aether.orders.*", "aether.inventory.*"),
            ("aether.orders.*", "aether.orders.created.late"),
            ("aether.orders", "aether.orders.created"),
            ("aether.>", "aether"),
            ("other.>", "aether.orders.*"),
        ] {
            assert!(!collide(a, b), "{a} {b}");
            assert!(!collide(b, a), "{b} {a}");
        }
    }

    #[test]
    fn doubled_names_the_first_subject_with_two_streams() {
        let mut captures = Captures::new();
        captures.insert("aether.a.*".into(), vec!["AETHER".into()]);
        assert_eq!(most(&captures), 1);
        assert!(doubled(&captures).is_none());
        captures.insert("aether.b.*".into(), vec!["AETHER".into(), "SHOP".into()]);
        assert_eq!(most(&captures), 2);
        let (subject, streams) = doubled(&captures).unwrap();
        assert_eq!(subject, "aether.b.*");
        assert_eq!(streams.len(), 2);
        assert_eq!(most(&Captures::new()), 0);
    }
}
