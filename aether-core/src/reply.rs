//! Request/reply: one reply subscription per vibrator, shared by all of its
//! requests (`_INBOX.<vibrator>.<n>`), waking each request's waiter.

use std::{
    collections::HashMap,
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use tokio::sync::oneshot;

use crate::{Channel, Wave};

/// Channel prefix of reply channels.
pub(crate) const INBOX_PREFIX: &str = "_INBOX";

/// Whether `channel` is a reply inbox (`_INBOX.…`), of a vibrator or of a
/// NATS client.
pub(crate) fn is_reply_channel(channel: &Channel) -> bool {
    channel
        .as_str()
        .strip_prefix(INBOX_PREFIX)
        .is_some_and(|rest| rest.starts_with('.'))
}

pub(crate) struct ReplyMux {
    prefix: String,
    next: AtomicU64,
    pending: Mutex<HashMap<u64, oneshot::Sender<Wave>>>,
}

impl ReplyMux {
    pub(crate) fn new(vibrator_id: u64) -> Self {
        Self {
            prefix: format!("{INBOX_PREFIX}.{vibrator_id:016x}"),
            next: AtomicU64::new(0),
            pending: Mutex::new(HashMap::new()),
        }
    }

    /// The pattern all replies to this vibrator arrive on.
    pub(crate) fn pattern(&self) -> Channel {
        Channel::new(format!("{}.*", self.prefix))
    }

    /// A fresh reply channel and the receiver its reply will arrive on.
    pub(crate) fn register(&self) -> (Channel, u64, oneshot::Receiver<Wave>) {
        let token = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.lock().insert(token, tx);
        (Channel::new(format!("{}.{token}", self.prefix)), token, rx)
    }

    /// Forgets a request that gave up waiting.
    pub(crate) fn cancel(&self, token: u64) {
        self.lock().remove(&token);
    }

    /// Hands a reply to its waiter. `false` if nobody waits for it (late or
    /// unknown reply).
    pub(crate) fn complete(&self, wave: Wave) -> bool {
        let token = wave
            .channel()
            .as_str()
            .rsplit_once('.')
            .and_then(|(_, t)| t.parse::<u64>().ok());
        let waiter = token.and_then(|t| self.lock().remove(&t));
        match waiter {
            Some(tx) => tx.send(wave).is_ok(),
            None => false,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, oneshot::Sender<Wave>>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }
}
