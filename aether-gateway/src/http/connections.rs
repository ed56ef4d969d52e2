//! The HTTP connections open, and who makes room when there are too many.
//!
//! `max_connections` bounds them all, `max_connections_per_address` those
//! of one IP address. A new connection never waits (a scrape must get
//! through while sockets that say nothing fill the limit):
//!
//! - past its address's bound, it is closed at once;
//! - at `max_connections`, the connection that has waited longest for a
//!   request is closed to make room: first one that never sent a request
//!   (the oldest), else one kept open after its answer (idle the longest);
//! - when every connection is answering a request, it is closed at once.
//!
//! A connection is *answering* from when its request head is read until
//! its answer's body has gone out (an `/events` stream, all its life);
//! else it *waits* for a request. The accept loop asks [`Connections::open`]
//! for a place; the middleware [`track`] marks each request.

use std::{
    collections::HashMap,
    net::IpAddr,
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll},
    time::Instant,
};

use axum::{body::Body, extract::Request, middleware::Next, response::Response};
use hyper::body::{Frame, SizeHint};
use prometheus::IntCounterVec;
use tokio::sync::Notify;

/// Why a connection is closed by the server before its peer closes it:
/// the label values of `aether_gateway_http_connections_closed_total`.
pub(crate) const CLOSE_REASONS: [&str; 4] =
    ["address_capacity", "capacity", "made_room", "stalled"];

/// The connections open, bounded.
#[derive(Debug)]
pub(crate) struct Connections {
    table: Mutex<Table>,
    max: usize,
    max_per_address: usize,
    closed: IntCounterVec,
}

#[derive(Debug, Default)]
struct Table {
    next_id: u64,
    open: HashMap<u64, Entry>,
    by_address: HashMap<IpAddr, usize>,
}

#[derive(Debug)]
struct Entry {
    address: IpAddr,
    /// Since when it waits for a request, and whether it sent one before;
    /// `None` while it answers one.
    waiting: Option<(Instant, bool)>,
    /// Told when it must make room.
    make_room: Arc<Notify>,
}

impl Table {
    fn remove(&mut self, id: u64) -> Option<Entry> {
        let entry = self.open.remove(&id)?;
        if let Some(n) = self.by_address.get_mut(&entry.address) {
            *n -= 1;
            if *n == 0 {
                self.by_address.remove(&entry.address);
            }
        }
        Some(entry)
    }

    /// The connection to close for room: of those that wait for a request,
    /// one that never sent any first, then the one waiting longest.
    fn room(&self) -> Option<u64> {
        self.open
            .iter()
            .filter_map(|(id, e)| e.waiting.map(|(since, served)| (served, since, *id)))
            .min()
            .map(|(_, _, id)| id)
    }
}

impl Connections {
    /// At most `max` connections, `max_per_address` from one IP address;
    /// each one closed by the server is counted in `closed`, by reason.
    pub(crate) fn new(max: usize, max_per_address: usize, closed: IntCounterVec) -> Arc<Self> {
        Arc::new(Self {
            table: Mutex::new(Table::default()),
            max,
            max_per_address,
            closed,
        })
    }

    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        // A panic elsewhere while it was held leaves a table still whole.
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A place for a new connection from `address`, made by closing one
    /// that waits if need be; the reason it is refused (and to be closed
    /// at once) when there is none.
    pub(crate) fn open(self: &Arc<Self>, address: IpAddr) -> Result<Connection, &'static str> {
        let mut table = self.table();
        if table.by_address.get(&address).copied().unwrap_or(0) >= self.max_per_address {
            self.closed.with_label_values(&["address_capacity"]).inc();
            return Err("address_capacity");
        }
        if table.open.len() >= self.max {
            let Some(victim) = table.room().and_then(|id| table.remove(id)) else {
                self.closed.with_label_values(&["capacity"]).inc();
                return Err("capacity");
            };
            victim.make_room.notify_one();
            self.closed.with_label_values(&["made_room"]).inc();
        }
        let id = table.next_id;
        table.next_id += 1;
        let make_room = Arc::new(Notify::new());
        table.open.insert(
            id,
            Entry {
                address,
                waiting: Some((Instant::now(), false)),
                make_room: make_room.clone(),
            },
        );
        *table.by_address.entry(address).or_insert(0) += 1;
        Ok(Connection {
            tracker: Tracker {
                id,
                connections: self.clone(),
                answering: Arc::new(AtomicBool::new(false)),
            },
            make_room,
        })
    }
}

/// A connection's place, given back when it is dropped.
#[derive(Debug)]
pub(crate) struct Connection {
    tracker: Tracker,
    make_room: Arc<Notify>,
}

impl Connection {
    /// What the router's [`track`] middleware needs of it.
    pub(crate) fn tracker(&self) -> Tracker {
        self.tracker.clone()
    }

    /// Resolves once it must make room: it waits for a request (or did
    /// when chosen), and is no longer counted.
    pub(crate) async fn must_make_room(&self) {
        self.make_room.notified().await;
    }

    /// Whether it answers a request now.
    pub(crate) fn answering(&self) -> bool {
        self.tracker.answering.load(Ordering::Acquire)
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.tracker.connections.table().remove(self.tracker.id);
    }
}

/// A handle on a connection's place, in each of its requests' extensions.
#[derive(Clone, Debug)]
pub(crate) struct Tracker {
    id: u64,
    connections: Arc<Connections>,
    /// Whether it answers a request, out of the table too (once chosen to
    /// make room).
    answering: Arc<AtomicBool>,
}

impl Tracker {
    /// Marks the connection answering until the guard is dropped.
    fn answering(&self) -> Answering {
        self.answering.store(true, Ordering::Release);
        if let Some(entry) = self.connections.table().open.get_mut(&self.id) {
            entry.waiting = None;
        }
        Answering(self.clone())
    }
}

/// The connection answers a request while this lives.
#[derive(Debug)]
struct Answering(Tracker);

impl Drop for Answering {
    fn drop(&mut self) {
        let tracker = &self.0;
        tracker.answering.store(false, Ordering::Release);
        if let Some(entry) = tracker.connections.table().open.get_mut(&tracker.id) {
            entry.waiting = Some((Instant::now(), true));
        }
    }
}

/// Middleware: marks the connection answering from the request until its
/// answer's body is dropped (hyper drops it once sent, or when the
/// connection ends).
pub(crate) async fn track(request: Request, next: Next) -> Response {
    let answering = request
        .extensions()
        .get::<Tracker>()
        .map(Tracker::answering);
    let response = next.run(request).await;
    match answering {
        None => response,
        Some(answering) => response.map(|body| {
            Body::new(Tracked {
                body,
                _answering: answering,
            })
        }),
    }
}

/// A body that holds its connection's [`Answering`] mark.
struct Tracked {
    body: Body,
    _answering: Answering,
}

impl hyper::body::Body for Tracked {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use prometheus::Opts;

    use super::*;

    fn connections(max: usize, per_address: usize) -> Arc<Connections> {
        let closed = IntCounterVec::new(Opts::new("closed", "closed"), &["reason"]).unwrap();
        Connections::new(max, per_address, closed)
    }

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 1));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 2));

    /// Room is made by one that never sent a request, the oldest first,
    /// then by the one idle longest; never by one answering; with every
    /// connection answering, the new one is refused.
    #[test]
    fn room_is_made_by_those_waiting_longest_silent_first() {
        let table = connections(3, 10);
        let served = table.open(A).unwrap();
        drop(served.tracker().answering()); // answered once, idle now
        let silent = table.open(A).unwrap();
        let answering = table.open(B).unwrap();
        let _busy = answering.tracker().answering();
        assert!(answering.answering() && !served.answering());

        let fourth = table.open(B).unwrap();
        assert!(is_told(&silent), "the silent one makes room");
        assert!(!is_told(&served));
        let _fourth_busy = fourth.tracker().answering();
        let fifth = table.open(B).unwrap();
        assert!(is_told(&served), "then the one idle longest");
        let _fifth_busy = fifth.tracker().answering();
        assert_eq!(table.open(A).unwrap_err(), "capacity");
        assert!(!is_told(&answering));
        // Dropping a connection gives its place back.
        drop(fifth);
        assert!(table.open(A).is_ok());
    }

    #[test]
    fn one_address_has_its_own_bound() {
        let table = connections(10, 2);
        let _a = (table.open(A).unwrap(), table.open(A).unwrap());
        assert_eq!(table.open(A).unwrap_err(), "address_capacity");
        let _b = table.open(B).unwrap();
        drop(_a);
        assert!(table.open(A).is_ok());
    }

    /// Whether `connection` was told to make room (without waiting).
    fn is_told(connection: &Connection) -> bool {
        use std::future::Future;
        let mut told = std::pin::pin!(connection.must_make_room());
        let waker = std::task::Waker::noop();
        told.as_mut()
            .poll(&mut Context::from_waker(waker))
            .is_ready()
    }
}
