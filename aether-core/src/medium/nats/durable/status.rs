//! What the stream reports of itself: its state and limits, its copies
//! and leader, and each durable consumer's backlog (`aether stream`, the
//! gateway's stream gauges).

use std::time::Duration;

use async_nats::jetstream::{Context, stream};
use futures_util::StreamExt;

use super::ATTEMPT;
use crate::{ConnectError, ConnectErrorKind};

/// A stream's copy on a server its group has not heard for this long is
/// reported offline (the group's leader hears each follower every second).
const PEER_UNHEARD: Duration = Duration::from_secs(10);

/// The stream `name`'s state, limits, copies and consumers, as the server
/// reports them now (each answer bounded by [`ATTEMPT`]): a look-up only.
pub(in crate::medium::nats) async fn stream_status_of(
    js: &Context,
    name: &str,
) -> Result<crate::connection::StreamStatus, ConnectError> {
    let unreachable = |e: String| {
        ConnectError::new(
            ConnectErrorKind::Unreachable,
            format!("the stream {name} did not answer: {e}"),
        )
    };
    let stream = tokio::time::timeout(ATTEMPT, js.get_stream(name))
        .await
        .map_err(|_| unreachable(format!("no answer within {ATTEMPT:?}")))?
        .map_err(|e| unreachable(e.to_string()))?;
    let info = stream.cached_info();
    let oldest_age = if info.state.messages == 0 {
        Duration::ZERO
    } else {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos() as i128;
        let age = now - info.state.first_timestamp.unix_timestamp_nanos();
        Duration::from_nanos(u64::try_from(age.max(0)).unwrap_or(u64::MAX))
    };
    let (leader, replicas_current, replicas_offline, replicas_lagging) = match &info.cluster {
        Some(cluster) if cluster.leader.is_some() || !cluster.replicas.is_empty() => {
            let peers = &cluster.replicas;
            // A peer the group has not heard for [`PEER_UNHEARD`] is gone,
            // whatever the server says yet (it calls a dead one lagging
            // for minutes before it calls it offline).
            let gone = |p: &stream::PeerInfo| p.offline || p.active >= PEER_UNHEARD;
            let offline = peers.iter().filter(|p| gone(p)).count();
            let current = peers.iter().filter(|p| p.current && !gone(p)).count();
            let lagging = peers.len() - offline - current;
            let leading = usize::from(cluster.leader.is_some());
            (cluster.leader.clone(), current + leading, offline, lagging)
        }
        // One server without clustering: one copy, its own.
        _ => (None, 1, 0, 0),
    };
    let consumer_backlogs = consumer_backlogs(&stream).await;
    Ok(crate::connection::StreamStatus {
        leader,
        replicas_current,
        replicas_offline,
        replicas_lagging,
        consumer_backlogs,
        name: info.config.name.clone(),
        messages: info.state.messages,
        bytes: info.state.bytes,
        max_bytes: u64::try_from(info.config.max_bytes).unwrap_or(0),
        max_messages: u64::try_from(info.config.max_messages).unwrap_or(0),
        max_age: info.config.max_age,
        oldest_age,
        first_sequence: info.state.first_sequence,
        last_sequence: info.state.last_sequence,
        replicas: info.config.num_replicas,
        consumers: info.state.consumer_count,
    })
}

/// The backlogs of `stream`'s consumers, by name: as many as one
/// listing gives within [`ATTEMPT`], at most
/// [`MAX_CONSUMERS_LISTED`](crate::connection::MAX_CONSUMERS_LISTED).
async fn consumer_backlogs(stream: &stream::Stream) -> Vec<crate::connection::ConsumerBacklog> {
    let mut backlogs = Vec::new();
    let listing = async {
        let mut consumers = stream.consumers();
        while let Some(Ok(info)) = consumers.next().await {
            backlogs.push(crate::connection::ConsumerBacklog::new(
                info.name,
                info.num_pending,
                info.num_ack_pending as u64,
                info.num_redelivered as u64,
            ));
            if backlogs.len() >= crate::connection::MAX_CONSUMERS_LISTED {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(ATTEMPT, listing).await;
    backlogs.sort_by(|a, b| a.name.cmp(&b.name));
    backlogs
}
