//! A second capture of the durable channels, never silent: at the start
//! with a domain, the server's own JetStream must hold no stream that
//! overlaps them; at each connect and every [`PROBE_EVERY`] the bus is
//! asked which streams capture them (`super::super::captures`, the probe);
//! an acknowledgement from another domain than the configured one is
//! logged.

use std::sync::{Arc, atomic::Ordering};

use async_nats::jetstream;

use futures_util::StreamExt;

use super::{ATTEMPT, Durable, PROBE_EVERY, PROBE_WAIT, WRONG_DOMAIN_WARN_EVERY};
use crate::{
    ConnectError, ConnectErrorKind,
    connection::{ConnectionEvent, ConnectionState},
    medium::nats::{Shared, captures},
};

impl Durable {
    /// Warns (at most every [`WRONG_DOMAIN_WARN_EVERY`] acknowledgements)
    /// when a wave was acknowledged by a stream of another domain than
    /// `durability.domain`: a stream made there since the start captures
    /// the durable channels too.
    pub(super) fn check_ack_domain(&self, ack: &jetstream::publish::PublishAck) {
        let Some(domain) = &self.config.domain else {
            return;
        };
        let from = ack.domain.as_str();
        if from == domain {
            return;
        }
        let n = self.wrong_domain.fetch_add(1, Ordering::Relaxed);
        if n.is_multiple_of(WRONG_DOMAIN_WARN_EVERY) {
            tracing::error!(
                stream = %ack.stream,
                acknowledged_by = from,
                expected = %domain,
                waves = n + 1,
                "a durable wave was acknowledged by a stream of another JetStream domain than \
                 durability.domain: a stream there captures these channels too, and every \
                 wave is stored twice; remove it"
            );
        }
    }

    /// With a `domain`, refuses to start when the JetStream of the server
    /// this program connects to (a leaf's own, of another domain) holds a
    /// stream whose subjects overlap the durable channels: it would store
    /// and acknowledge the waves it captures, which then never reach the
    /// domain's stream while the link to it is cut. Streams elsewhere (the
    /// JetStream of another leaf) are the capture watcher's to report
    /// ([`watch_captures`]): they stop no one here.
    pub(super) async fn refuse_a_second_capture(&self) -> Result<(), ConnectError> {
        let Some(domain) = &self.config.domain else {
            return Ok(());
        };
        let local = jetstream::ContextBuilder::new()
            .timeout(ATTEMPT)
            .build(self.client.clone());
        // No JetStream here (a leaf without one), or the domain's own. Read
        // as JSON: nats-server 2.9's answer is not read whole by the
        // client's account type.
        let info = tokio::time::timeout(
            ATTEMPT,
            self.client.request("$JS.API.INFO", bytes::Bytes::new()),
        )
        .await;
        let Ok(Ok(info)) = info else {
            return Ok(());
        };
        let Ok(info) = serde_json::from_slice::<serde_json::Value>(&info.payload) else {
            return Ok(());
        };
        if info.get("error").is_some() {
            return Ok(());
        }
        let own = info
            .get("domain")
            .and_then(|d| d.as_str())
            .map(str::to_string);
        if own.as_deref() == Some(domain.as_str()) {
            return Ok(());
        }
        // By name, then each one's subjects: what nats-server 2.9 answers
        // to a whole listing is not read whole by the client.
        let mut names = local.stream_names();
        while let Some(name) = names.next().await {
            let name = match name {
                Ok(name) => name,
                Err(error) => {
                    tracing::warn!(%error, "could not list the streams of this server's own JetStream");
                    break;
                }
            };
            let Ok(stream) = local.get_stream(&name).await else {
                continue;
            };
            let stream = stream.cached_info();
            let overlap = stream.config.subjects.iter().find_map(|theirs| {
                self.subjects
                    .iter()
                    .find(|ours| captures::collide(theirs, ours))
                    .map(|ours| (theirs, ours))
            });
            if let Some((theirs, ours)) = overlap {
                return Err(ConnectError::new(
                    ConnectErrorKind::Config,
                    format!(
                        "the stream {:?} of this server's own JetStream (domain {}) also \
                         captures {theirs}, which overlaps the durable channels ({ours}): \
                         durable waves would be stored there as well as in domain {domain:?} \
                         (durability.domain), and stranded there while the link to it is cut; \
                         remove that stream, or run this server without JetStream",
                        stream.config.name,
                        own.as_deref().unwrap_or("none"),
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Streams now answering for the durable channel that most answer for
    /// (`ConnectionStatus::durable_captures`): 1 when all is well, more when
    /// streams in two JetStream domains capture the same channels.
    pub(in crate::medium::nats) fn captures(&self) -> usize {
        self.captures.load(Ordering::Relaxed)
    }
}

/// Asks which streams capture the durable channels after each connect and
/// every [`PROBE_EVERY`] (a leaf's link may come back without this
/// program's connection noticing), keeping the answer for the status and
/// saying so when more than one does, and when that ends.
pub(super) async fn watch_captures(durable: std::sync::Weak<Durable>, shared: Arc<Shared>) {
    let mut events = shared.events.subscribe();
    let mut doubled_before = false;
    loop {
        let Some(durable) = durable.upgrade() else {
            return;
        };
        if shared.counters.state() == ConnectionState::Connected {
            match captures::probe(&durable.client, &durable.subjects, PROBE_WAIT).await {
                Ok(found) => {
                    // The most since the start: a cut link hides the
                    // second stream without mending anything.
                    durable
                        .captures
                        .fetch_max(captures::most(&found), Ordering::Relaxed);
                    match captures::doubled(&found) {
                        Some((subject, streams)) if !doubled_before => {
                            doubled_before = true;
                            tracing::error!(
                                subject = %subject,
                                streams = ?streams,
                                "more than one JetStream stream captures the durable channels: \
                                 streams of two JetStream domains (a leaf node's own and its \
                                 hub's, or another leaf's) each store every wave and the nearer acknowledges it, so \
                                 while the link between them is cut waves are stored on one side \
                                 only and its consumers never see them; keep one: remove the \
                                 leaf's stream and set durability.domain to the hub's domain \
                                 (docs/guide/edge.md)"
                            );
                        }
                        None if doubled_before => {
                            doubled_before = false;
                            tracing::info!(
                                "one JetStream stream answers for the durable channels again \
                                 (or a link to the other is cut); durable_captures keeps the \
                                 most seen until this program starts again"
                            );
                        }
                        _ => {}
                    }
                }
                Err(error) => {
                    tracing::debug!(%error, "could not ask which streams capture the durable channels");
                }
            }
        }
        drop(durable);
        let next = tokio::time::sleep(PROBE_EVERY);
        tokio::pin!(next);
        loop {
            tokio::select! {
                event = events.recv() => match event {
                    Ok(ConnectionEvent::Connected) => break,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                    _ => {}
                },
                () = &mut next => break,
            }
        }
    }
}
