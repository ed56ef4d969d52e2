//! The browser bridge: replicated maps over WebSocket, at `/bridge/<map>`.
//!
//! The gateway holds one replica of each map in `[gateway.bridge] maps`.
//! A browser connects, sends the token first, and gets the map whole; from
//! then on its writes and the map's changes go both ways as JSON messages
//! (`protocol`). The browser is a replica of its own: it stamps its writes
//! with its own hybrid logical clock, and the gateway merges them with
//! [`StateMap::merge`], by the rules every replica follows, so a tab, a
//! Rust service and another tab converge, and writes a tab made offline
//! merge by their stamps when it is back. Presence (a page's cursor and
//! value) goes to the other pages at once and, through the replica, to
//! other gateways and services (`presence`); it is not kept.
//!
//! Every connection is held to `[gateway.bridge]`'s limits. Until its
//! token is checked it holds a place among the unauthenticated sockets
//! (`max_unauthenticated`, in all and per address), where a newcomer takes
//! the place of the oldest when they are full, so silent sockets never keep
//! a page that sends the token at once out; it must send the token within
//! `first_message_ms` (compared in constant time, before any state is
//! sent). Only then does it take a place among the pages (`max_connections`,
//! in all and per address; one more is closed with 1013). Then a message
//! size cap (1009), a rate limit (1008), a send timeout for browsers that
//! stop reading, and the map's caps. A page speaks for itself only: its
//! replica id is its own among the open pages, it stamps no write with
//! another open page's id or the gateway's, and it writes no node-owned
//! key. Snapshots are built once per version of the map and shared, and
//! the bytes of snapshots being sent at once are bounded. Every refusal is
//! counted (`aether_bridge_refused_total`, `aether_bridge_writes_total`).

pub(crate) mod protocol;

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque},
    net::{IpAddr, SocketAddr},
    num::NonZeroU32,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use aether_core::{
    Aether,
    state::{self, Change, Stamped, StateErrorKind, StateMap},
};
use aether_ops::shutdown::Shutdown;
use axum::{
    extract::{
        ConnectInfo, Path, State,
        ws::{
            CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade,
            rejection::WebSocketUpgradeRejection,
        },
    },
    http::StatusCode,
    response::{IntoResponse, Response},
};
use bytes::Bytes;
use futures_util::{FutureExt, StreamExt};
use governor::{Quota, RateLimiter};
use prometheus::{IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry};
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::sync::{Semaphore, broadcast, oneshot};

mod hub;
mod metrics;
mod presence;

use self::hub::{Cursor, Hub, Prevs};
pub(crate) use self::metrics::BridgeMetrics;
pub use self::metrics::{REFUSALS, WRITE_OUTCOMES, outcome_of};
use self::protocol::{EntryOut, Inbound, Outbound, bus_now, parse_replica, parse_stamp};
use crate::settings::BridgeConfig;

/// Close codes (RFC 6455 and IANA's registry).
mod close {
    pub(super) const GOING_AWAY: u16 = 1001;
    pub(super) const POLICY: u16 = 1008;
    pub(super) const TOO_BIG: u16 = 1009;
    pub(super) const INTERNAL: u16 = 1011;
    pub(super) const TRY_AGAIN_LATER: u16 = 1013;
}

/// The most often one page's cursor is sent to the others (20 a second).
const CURSOR_EVERY: Duration = Duration::from_millis(50);

/// About the most bytes of one snapshot message: a larger map goes as
/// `snapshot-part`s, then the `snapshot`. Each connection's send buffer
/// keeps the size of the largest message it sent, so this bounds it.
const SNAPSHOT_PART_BYTES: usize = 256 * 1024;

/// Most (key, stamp) pairs a connection remembers of the writes it merged,
/// to leave their changes out when they come back from the map.
const OWN_WRITES: usize = 4096;

/// Most changes sent to a page in one `changes` message.
const CHANGES_AT_ONCE: usize = 512;

/// Most pages' writes a map remembers the `prev` of, to pass it on with
/// the write to its other pages (who tell a lost race by it).
const PREVS: usize = 16_384;

/// Connections open, in all and per address.
#[derive(Default)]
struct Slots {
    total: usize,
    by_address: HashMap<IpAddr, usize>,
}

/// Sockets open without the token yet, oldest first: each can be told to
/// go when a newcomer needs its place.
#[derive(Default)]
struct Unauthenticated {
    next: u64,
    order: BTreeMap<u64, (IpAddr, oneshot::Sender<()>)>,
    by_address: HashMap<IpAddr, BTreeSet<u64>>,
}

impl Unauthenticated {
    fn remove(&mut self, n: u64) -> Option<oneshot::Sender<()>> {
        let (address, evict) = self.order.remove(&n)?;
        if let Some(mine) = self.by_address.get_mut(&address) {
            mine.remove(&n);
            if mine.is_empty() {
                self.by_address.remove(&address);
            }
        }
        Some(evict)
    }
}

/// What a token lets a page do: the maps it opens (`None`: every one) and
/// what it writes there.
#[derive(Debug)]
struct Rights {
    maps: Option<HashSet<String>>,
    read_only: bool,
    /// Empty: any key.
    prefixes: Vec<String>,
}

impl Rights {
    /// The bridge's own token's.
    const ALL: Rights = Rights {
        maps: None,
        read_only: false,
        prefixes: Vec::new(),
    };

    fn opens(&self, map: &str) -> bool {
        self.maps.as_ref().is_none_or(|maps| maps.contains(map))
    }

    fn writes(&self, key: &str) -> bool {
        !self.read_only
            && (self.prefixes.is_empty()
                || self.prefixes.iter().any(|p| key.starts_with(p.as_str())))
    }
}

/// The bridge: its maps, its token, its limits.
pub(crate) struct Bridge {
    hubs: HashMap<String, Arc<Hub>>,
    config: BridgeConfig,
    token: String,
    /// The digests of the tokens, each with its rights: the bridge's own
    /// token (every map, every write) first.
    tokens: Vec<([u8; 32], Arc<Rights>)>,
    slots: Mutex<Slots>,
    unauthenticated: Mutex<Unauthenticated>,
    /// Bytes of snapshots being sent to pages at once.
    snapshot_bytes: Semaphore,
    metrics: BridgeMetrics,
    stop: Shutdown,
    next_id: AtomicU64,
}

impl std::fmt::Debug for Bridge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bridge")
            .field("maps", &self.hubs.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// A random token: 128 bits from the operating system, hex.
fn random_token() -> String {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).expect("the operating system gives random bytes");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Bridge {
    /// Opens a replica of each map of `config` on `aether`. `None` when no
    /// map is bridged.
    pub(crate) async fn start(
        aether: &Aether,
        config: &BridgeConfig,
        registry: &Registry,
        stop: Shutdown,
    ) -> Result<Option<Arc<Self>>, crate::GatewayError> {
        if config.maps.is_empty() {
            return Ok(None);
        }
        let metrics = BridgeMetrics::new(registry, &config.maps)?;
        let mut hubs = HashMap::new();
        for name in &config.maps {
            let hub = Arc::new(Hub {
                map: tokio::sync::OnceCell::new(),
                name: name.clone(),
                aether: aether.clone(),
                cursors: broadcast::channel(1024).0,
                positions: Mutex::new(HashMap::new()),
                replicas: Mutex::new(HashSet::new()),
                prevs: Mutex::new(Prevs::default()),
                snapshot: tokio::sync::Mutex::new(None),
            });
            let opening = hub.clone();
            tokio::spawn(async move {
                let _ = opening.map().await;
            });
            hubs.insert(name.clone(), hub);
        }
        let token = config.token.clone().unwrap_or_else(random_token);
        let digest = |token: &str| -> [u8; 32] { Sha256::digest(token.as_bytes()).into() };
        let tokens = std::iter::once((digest(&token), Arc::new(Rights::ALL)))
            .chain(config.tokens.iter().map(|t| {
                let rights = Rights {
                    maps: t.maps.as_ref().map(|maps| maps.iter().cloned().collect()),
                    read_only: t.read_only,
                    prefixes: t.prefixes.clone().unwrap_or_default(),
                };
                (digest(&t.token), Arc::new(rights))
            }))
            .collect();
        Ok(Some(Arc::new(Self {
            tokens,
            token,
            hubs,
            config: config.clone(),
            slots: Mutex::new(Slots::default()),
            unauthenticated: Mutex::new(Unauthenticated::default()),
            snapshot_bytes: Semaphore::new(config.max_snapshot_bytes_in_flight),
            metrics,
            stop,
            next_id: AtomicU64::new(1),
        })))
    }

    /// The token browsers send.
    pub(crate) fn token(&self) -> &str {
        &self.token
    }

    /// Closes the bridged replicas (they say goodbye to their peers).
    pub(crate) async fn close(&self) {
        for hub in self.hubs.values() {
            if let Some(map) = hub.map.get() {
                map.close().await;
            }
        }
    }

    /// The rights of `token` on `map`, if it opens it: compared as
    /// digests, in constant time and with every token, so neither its
    /// bytes, its length nor which token it is leak through timing.
    fn rights_of(&self, token: &str, map: &str) -> Option<Arc<Rights>> {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let mut found = None;
        for (theirs, rights) in &self.tokens {
            if bool::from(digest.ct_eq(theirs)) {
                found = Some(rights.clone());
            }
        }
        found.filter(|rights| rights.opens(map))
    }

    /// A connection slot for `address`, or the refusal's reason.
    fn take_slot(self: &Arc<Self>, address: IpAddr) -> Result<Slot, &'static str> {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        if slots.total >= self.config.max_connections {
            return Err("capacity");
        }
        let mine = slots.by_address.entry(address).or_insert(0);
        if *mine >= self.config.max_connections_per_address {
            return Err("address_capacity");
        }
        *mine += 1;
        slots.total += 1;
        Ok(Slot {
            bridge: self.clone(),
            address,
        })
    }
}

impl Bridge {
    /// A place among the sockets without the token for one from `address`:
    /// when they are full (from that address, or in all), the oldest such
    /// socket is told to go (counted, `evicted`) and the newcomer takes its
    /// place, so a page that sends its token at once always gets in. The
    /// receiver fires when this socket is the one told to go.
    fn take_unauthenticated(
        self: &Arc<Self>,
        address: IpAddr,
    ) -> (UnauthenticatedSlot, oneshot::Receiver<()>) {
        let mut waiting = self
            .unauthenticated
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let from_here = waiting.by_address.get(&address).map_or(0, BTreeSet::len);
        let oldest = if from_here >= self.config.max_unauthenticated_per_address {
            waiting
                .by_address
                .get(&address)
                .and_then(|mine| mine.first().copied())
        } else if waiting.order.len() >= self.config.max_unauthenticated {
            waiting.order.keys().next().copied()
        } else {
            None
        };
        if let Some(evict) = oldest.and_then(|n| waiting.remove(n)) {
            // Counted here: the socket told to go closes without counting.
            self.metrics.refuse("evicted");
            let _ = evict.send(());
        }
        let n = waiting.next;
        waiting.next += 1;
        let (evict, evicted) = oneshot::channel();
        waiting.order.insert(n, (address, evict));
        waiting.by_address.entry(address).or_default().insert(n);
        let slot = UnauthenticatedSlot {
            bridge: self.clone(),
            n,
        };
        (slot, evicted)
    }
}

/// A socket's place among those without the token, given back when it
/// sends the token or closes.
struct UnauthenticatedSlot {
    bridge: Arc<Bridge>,
    n: u64,
}

impl Drop for UnauthenticatedSlot {
    fn drop(&mut self) {
        let mut waiting = self
            .bridge
            .unauthenticated
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        waiting.remove(self.n);
    }
}

/// A connection's place in the caps, given back when it closes.
struct Slot {
    bridge: Arc<Bridge>,
    address: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut slots = self.bridge.slots.lock().unwrap_or_else(|e| e.into_inner());
        slots.total -= 1;
        if let Some(n) = slots.by_address.get_mut(&self.address) {
            *n -= 1;
            if *n == 0 {
                slots.by_address.remove(&self.address);
            }
        }
    }
}

/// `GET /bridge/{map}`: the WebSocket upgrade.
pub(crate) async fn upgrade(
    State(bridge): State<Option<Arc<Bridge>>>,
    Path(map): Path<String>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let hub = bridge
        .as_ref()
        .and_then(|bridge| bridge.hubs.get(&map).cloned());
    let (Some(bridge), Some(hub)) = (bridge.clone(), hub) else {
        if let Some(bridge) = &bridge {
            bridge.metrics.refuse("unknown_map");
        }
        // A page is told why at once (a 404 to its upgrade would look to
        // it like a gateway that is down); a plain request gets the 404.
        return match ws {
            Ok(ws) => ws.on_upgrade(|mut socket| async move {
                close_with(&mut socket, close::POLICY, "unknown_map".into()).await;
            }),
            Err(_) => (
                StatusCode::NOT_FOUND,
                "no such bridged map ([gateway.bridge] maps)\n",
            )
                .into_response(),
        };
    };
    let ws = match ws {
        Ok(ws) => ws,
        Err(rejection) => return rejection.into_response(),
    };
    let size = bridge.config.max_message_bytes;
    ws.max_message_size(size)
        .max_frame_size(size)
        .on_upgrade(move |socket| async move {
            Connection::run(bridge, hub, map, peer, socket).await;
        })
}

/// Why a connection ends.
enum End {
    /// The browser closed it, or went.
    Gone,
    /// A limit or a bad message: counted, closed with this code.
    Refused(&'static str, u16, &'static str),
    /// The gateway stops.
    Stopping,
}

/// One browser connection.
struct Connection {
    bridge: Arc<Bridge>,
    hub: Arc<Hub>,
    /// The gateway's replica of the map.
    replica_map: StateMap,
    /// What this page shows of itself (its color, cursor and presence
    /// value), whether it changed since it was last sent to the others,
    /// and when it was.
    shown: presence::Record,
    shown_due: bool,
    /// The others' presence as this page was told it, and what is still to
    /// tell it ([`presence::Others`]).
    others: presence::Others,
    cursor_sent: tokio::time::Instant,
    map: String,
    socket: WebSocket,
    id: Arc<str>,
    replica: u64,
    /// The writes this connection merged, whose changes are not sent back.
    own_writes: OwnWrites,
    /// Writes a second (`writes_per_s`, `write_burst`): a message of many
    /// writes costs as many.
    write_limiter: governor::DefaultDirectRateLimiter,
    /// What the page's token lets it write.
    rights: Arc<Rights>,
}

/// The (key, stamp) of the writes one connection merged, the latest
/// [`OWN_WRITES`]: their changes are the page's own, not sent back to it.
/// Remembered by connection, not by the stamp's replica id, so a change
/// stamped with a page's id that another sent still reaches it.
#[derive(Default)]
struct OwnWrites {
    set: HashSet<(String, aether_core::state::Stamp)>,
    order: VecDeque<(String, aether_core::state::Stamp)>,
}

impl OwnWrites {
    fn insert(&mut self, key: &str, stamp: aether_core::state::Stamp) {
        let entry = (key.to_string(), stamp);
        if self.set.insert(entry.clone()) {
            self.order.push_back(entry);
        }
        while self.order.len() > OWN_WRITES {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
    }

    /// Whether the change of `key` stamped `stamp` is one of these (then
    /// forgotten: each comes back once).
    fn take(&mut self, key: &str, stamp: aether_core::state::Stamp) -> bool {
        let entry = (key.to_string(), stamp);
        if self.set.remove(&entry) {
            self.order.retain(|e| e != &entry);
            true
        } else {
            false
        }
    }
}

impl Connection {
    async fn run(
        bridge: Arc<Bridge>,
        hub: Arc<Hub>,
        map: String,
        peer: SocketAddr,
        mut socket: WebSocket,
    ) {
        let (waiting, evicted) = bridge.take_unauthenticated(peer.ip());
        let deadline = Duration::from_millis(bridge.config.first_message_ms);
        let first = tokio::select! {
            first = tokio::time::timeout(deadline, socket.recv()) => first,
            _ = evicted => {
                let text = "evicted: too many connections without the token; try again";
                close_with(&mut socket, close::TRY_AGAIN_LATER, text.into()).await;
                return;
            }
        };
        let replica = match first {
            Err(_) => Err(End::Refused(
                "deadline",
                close::POLICY,
                "no token within first_message_ms",
            )),
            Ok(None) => Err(End::Gone),
            Ok(Some(Err(error))) => Err(read_error(&error)),
            Ok(Some(Ok(Message::Text(text)))) => {
                bridge.metrics.messages.with_label_values(&["in"]).inc();
                match Inbound::parse(text.as_str()) {
                    Ok(Inbound::Auth { token, replica }) => {
                        match (bridge.rights_of(&token, &map), parse_replica(&replica)) {
                            // A token for other maps is no token here.
                            (None, _) => Err(End::Refused("token", close::POLICY, "unauthorized")),
                            (Some(rights), Some(id)) => Ok((id, rights)),
                            (Some(_), None) => Err(End::Refused(
                                "malformed",
                                close::POLICY,
                                "replica must be 16 lower case hex digits, not all zero",
                            )),
                        }
                    }
                    _ => Err(End::Refused(
                        "malformed",
                        close::POLICY,
                        "the first message must be auth",
                    )),
                }
            }
            Ok(Some(Ok(_))) => Err(End::Refused(
                "malformed",
                close::POLICY,
                "the first message must be auth, as text",
            )),
        };
        let (replica, rights) = match replica {
            Ok(taken) => taken,
            Err(end) => {
                drop(waiting);
                finish(&bridge, &mut socket, end).await;
                return;
            }
        };
        // The token is good: from now on a page's place, not a waiting
        // socket's.
        drop(waiting);
        let slot = match bridge.take_slot(peer.ip()) {
            Ok(slot) => slot,
            Err(reason) => {
                bridge.metrics.refuse(reason);
                let text = format!("{reason}: too many connections; try again later");
                close_with(&mut socket, close::TRY_AGAIN_LATER, text.into()).await;
                return;
            }
        };
        let Some(replica_map) = hub.map().await else {
            drop(slot);
            close_with(
                &mut socket,
                close::INTERNAL,
                "map_not_open: the map is not open; try again later".into(),
            )
            .await;
            return;
        };
        // One page per replica id: another page's id (or the gateway's) is
        // refused, and the page picks another.
        let Some(claim) = hub.claim(replica, replica_map.replica_id()) else {
            let end = End::Refused("replica_in_use", close::POLICY, "replica_in_use");
            drop(slot);
            finish(&bridge, &mut socket, end).await;
            return;
        };
        let n = bridge.next_id.fetch_add(1, Ordering::Relaxed);
        let id: Arc<str> = format!("{n:x}").into();
        let hue = n.wrapping_mul(137) % 360;
        let color = format!("hsl({hue}, 70%, 45%)");
        let gauge = bridge
            .metrics
            .connections
            .with_label_values(&[map.as_str()]);
        gauge.inc();
        let mut connection = Connection {
            bridge: bridge.clone(),
            hub,
            replica_map,
            shown: presence::Record {
                color: Some(color),
                ..presence::Record::default()
            },
            shown_due: false,
            others: presence::Others::default(),
            cursor_sent: tokio::time::Instant::now() - CURSOR_EVERY,
            map,
            socket,
            id,
            replica,
            own_writes: OwnWrites::default(),
            rights,
            write_limiter: RateLimiter::direct(
                Quota::per_second(NonZeroU32::new(bridge.config.writes_per_s).expect("validated"))
                    .allow_burst(NonZeroU32::new(bridge.config.write_burst).expect("validated")),
            ),
        };
        let end = connection.serve().await;
        gauge.dec();
        connection.hub.lock_positions().remove(&connection.id);
        let _ = connection.hub.cursors.send(Cursor::Left {
            id: connection.id.clone(),
        });
        let _ = connection.replica_map.clear_presence(&connection.id);
        // The page's place and replica id are free again before the
        // closing handshake (up to a second).
        drop(claim);
        drop(slot);
        finish(&bridge, &mut connection.socket, end).await;
    }

    /// After the token: hello, the map, the cursors, then both ways until
    /// the end.
    async fn serve(&mut self) -> End {
        let stop = self.bridge.stop.clone();
        let mut watch = self.replica_map.watch(">");
        let mut cursors = self.hub.cursors.subscribe();
        let hello = Outbound::Hello {
            id: &self.id,
            color: self.shown.color.as_deref().unwrap_or_default(),
            map: &self.map,
            now: bus_now(),
            limits: protocol::Limits {
                max_key_bytes: self.replica_map.config().max_key_bytes,
                max_value_bytes: self.replica_map.config().max_value_bytes,
                max_drift_ms: u64::try_from(self.replica_map.config().max_drift.as_millis())
                    .unwrap_or(u64::MAX),
                max_message_bytes: self.bridge.config.max_message_bytes,
                messages_per_s: self.bridge.config.messages_per_s,
                burst: self.bridge.config.burst,
                writes_per_s: self.bridge.config.writes_per_s,
                write_burst: self.bridge.config.write_burst,
                max_presence_bytes: presence::MAX_PAGE_PRESENCE_BYTES,
            },
            rights: protocol::RightsOut {
                read_only: self.rights.read_only,
                prefixes: (!self.rights.prefixes.is_empty()).then_some(&self.rights.prefixes[..]),
            },
        }
        .text();
        if let Err(end) = self.send(hello).await {
            return end;
        }
        if let Err(end) = self.send_snapshot().await {
            return end;
        }
        self.others.all_again(&self.hub.lock_positions(), &self.id);
        if let Err(end) = self.send_others().await {
            return end;
        }
        // The page is among the others from now on, with its color, before
        // it says anything of itself.
        self.shown_due = true;
        self.send_cursor();
        let config = &self.bridge.config;
        let quota = Quota::per_second(NonZeroU32::new(config.messages_per_s).expect("validated"))
            .allow_burst(NonZeroU32::new(config.burst).expect("validated"));
        let limiter = RateLimiter::direct(quota);
        let mut missed = 0;
        loop {
            let cursor_due = self.cursor_sent + CURSOR_EVERY;
            let others_due = self.others.due();
            // In this order: the map's changes before the page's next
            // message, so that a page writing many at once hears its own
            // writes taken (and others') as it goes, and never falls
            // behind the map's changes for its own burst.
            let step = tokio::select! {
                biased;
                () = stop.wait() => return End::Stopping,
                change = watch.next() => match change {
                    None => return End::Stopping,
                    Some(change) => self.send_changes(change, &mut watch, &mut missed).await,
                },
                () = tokio::time::sleep_until(others_due.unwrap_or(cursor_due)), if others_due.is_some() => {
                    self.send_others().await
                }
                () = tokio::time::sleep_until(cursor_due), if self.shown_due => {
                    self.send_cursor();
                    Ok(())
                }
                message = self.socket.recv() => {
                    if limiter.check().is_err() {
                        return End::Refused("rate_limited", close::POLICY, "rate limit");
                    }
                    match message {
                        None | Some(Ok(Message::Close(_))) => return End::Gone,
                        Some(Err(error)) => return read_error(&error),
                        Some(Ok(Message::Text(text))) => {
                            self.bridge.metrics.messages.with_label_values(&["in"]).inc();
                            self.take(text.as_str()).await
                        }
                        Some(Ok(Message::Binary(_))) => Err(End::Refused(
                            "malformed",
                            close::POLICY,
                            "messages are JSON text",
                        )),
                        Some(Ok(Message::Ping(_) | Message::Pong(_))) => Ok(()),
                    }
                }
                cursor = cursors.recv() => match cursor {
                    Ok(Cursor::Moved { id, text }) if id != self.id => {
                        self.others.changed(id, Some(text));
                        self.send_others().await
                    }
                    Ok(Cursor::Left { id }) if id != self.id => {
                        self.others.changed(id, None);
                        self.send_others().await
                    }
                    Ok(_) => Ok(()),
                    // Fell behind the others' changes: told every one as
                    // it is now, and those gone meanwhile.
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        self.others.all_again(&self.hub.lock_positions(), &self.id);
                        self.send_others().await
                    }
                    Err(broadcast::error::RecvError::Closed) => return End::Stopping,
                },
            };
            if let Err(end) = step {
                return end;
            }
        }
    }

    /// Sends `first` and the changes that came with it (those the watch
    /// holds now, up to [`CHANGES_AT_ONCE`] or about half a message of the
    /// page's size): a lone change as `set` or `delete`, more as one
    /// `changes`. Past what the watch kept, the map whole instead.
    async fn send_changes(
        &mut self,
        first: Change,
        watch: &mut state::Watch,
        missed: &mut u64,
    ) -> Result<(), End> {
        let mut changes = vec![first];
        let mut bytes = 0;
        let most = self.bridge.config.max_message_bytes / 2;
        while changes.len() < CHANGES_AT_ONCE && bytes < most {
            let Some(Some(change)) = watch.next().now_or_never() else {
                break;
            };
            bytes += change.key.len() + change.new.as_ref().map_or(0, Bytes::len);
            changes.push(change);
        }
        if watch.missed() != *missed {
            *missed = watch.missed();
            self.bridge.metrics.resyncs.inc();
            return self.send_snapshot().await;
        }
        changes.retain(|change| !self.own_writes.take(&change.key, change.stamp));
        match changes.as_slice() {
            [] => Ok(()),
            [change] => self.send_change(change).await,
            _ => {
                let values: Vec<_> = changes
                    .iter()
                    .map(|change| change.new.as_ref().map(|value| self.json(value)))
                    .collect();
                let out: Vec<_> = changes
                    .iter()
                    .zip(&values)
                    .filter_map(|(change, value)| {
                        let value = match value {
                            // Not JSON (counted): not sent.
                            Some(None) => return None,
                            Some(Some(value)) => Some(&**value),
                            None => None,
                        };
                        Some(protocol::ChangeOut {
                            key: &change.key,
                            value,
                            deleted: value.is_none(),
                            stamp: change.stamp.to_string(),
                            prev: self.hub.lock_prevs().of(&change.key, change.stamp),
                        })
                    })
                    .collect();
                let text = Outbound::Changes { changes: out }.text();
                self.send(text).await
            }
        }
    }

    /// Takes one message from the browser.
    async fn take(&mut self, text: &str) -> Result<(), End> {
        let malformed = |why| End::Refused("malformed", close::POLICY, why);
        let message = Inbound::parse(text)
            .map_err(|_| malformed("not a message of the bridge's protocol"))?;
        match message {
            Inbound::Auth { .. } => Err(malformed("auth comes once, first")),
            Inbound::Set {
                key,
                value,
                stamp,
                prev,
            } => {
                self.spend_writes(1)?;
                self.take_write(&key, Some(value), &stamp, prev).await
            }
            Inbound::Delete { key, stamp, prev } => {
                self.spend_writes(1)?;
                self.take_write(&key, None, &stamp, prev).await
            }
            Inbound::Writes { writes } => {
                self.spend_writes(writes.len())?;
                for w in writes {
                    self.take_write(&w.key, w.value, &w.stamp, w.prev).await?;
                }
                Ok(())
            }
            // Messages are taken in order: every write before it is merged
            // (or answered) by now.
            Inbound::Sync { id } => {
                let now = bus_now();
                self.send(Outbound::Synced { id, now }.text()).await
            }
            Inbound::Presence { x, y, value } => {
                match value {
                    Some(Some(value)) if value.get().len() > presence::MAX_PAGE_PRESENCE_BYTES => {
                        return Err(End::Refused(
                            "too_large",
                            close::TOO_BIG,
                            "presence value too large",
                        ));
                    }
                    Some(Some(value)) if !protocol::reads_whole(value.get().as_bytes()) => {
                        return Err(End::Refused(
                            "malformed",
                            close::POLICY,
                            "a presence value nested too deep or out of range",
                        ));
                    }
                    Some(value) => self.shown.value = value.map(ToOwned::to_owned),
                    None => {}
                }
                self.shown.x = x.or(self.shown.x);
                self.shown.y = y.or(self.shown.y);
                // Each change goes to every other page: at most one a
                // CURSOR_EVERY from one page, the latest one, so one page
                // cannot multiply its rate by the number of pages.
                self.shown_due = true;
                if self.cursor_sent.elapsed() >= CURSOR_EVERY {
                    self.send_cursor();
                }
                Ok(())
            }
        }
    }

    /// Takes `n` writes from the page's allowance (`writes_per_s`,
    /// `write_burst`): past it the page is closed, as past the message
    /// rate.
    fn spend_writes(&mut self, n: usize) -> Result<(), End> {
        let limited = || End::Refused("rate_limited", close::POLICY, "write rate limit");
        let n = u32::try_from(n)
            .ok()
            .and_then(NonZeroU32::new)
            .ok_or_else(limited)?;
        match self.write_limiter.check_n(n) {
            Ok(Ok(())) => Ok(()),
            _ => Err(limited()),
        }
    }

    /// One write of the page, as it came: checked, then merged.
    async fn take_write(
        &mut self,
        key: &str,
        value: Option<&RawValue>,
        stamp: &str,
        prev: Option<Option<String>>,
    ) -> Result<(), End> {
        let malformed = |why| End::Refused("malformed", close::POLICY, why);
        let stamp = parse_stamp(stamp).ok_or_else(|| malformed("bad stamp"))?;
        let prev = parse_prev(prev).ok_or_else(|| malformed("bad prev"))?;
        let value = match value {
            Some(value) if !protocol::reads_whole(value.get().as_bytes()) => {
                return Err(malformed("a value nested too deep or out of range"));
            }
            Some(value) => Some(Bytes::copy_from_slice(value.get().as_bytes())),
            None => None,
        };
        self.write(key, value, stamp, prev).await
    }

    /// Sends what this page shows, as it is now, to the map's other pages
    /// here, and through the gateway's replica to every other replica.
    fn send_cursor(&mut self) {
        if !std::mem::take(&mut self.shown_due) {
            return;
        }
        self.cursor_sent = tokio::time::Instant::now();
        let text: Arc<str> = self.shown.text(&self.id).into();
        self.hub
            .lock_positions()
            .insert(self.id.clone(), text.clone());
        let json = serde_json::to_vec(&self.shown).expect("a record serializes");
        if let Err(error) = self.replica_map.set_presence(&self.id, json) {
            tracing::debug!(map = %self.map, %error, "a page's presence not set");
        }
        let _ = self.hub.cursors.send(Cursor::Moved {
            id: self.id.clone(),
            text,
        });
    }

    /// Tells this page the others' presence changes its allowance of
    /// presence bytes lets it have now; the rest wait their turn.
    async fn send_others(&mut self) -> Result<(), End> {
        while let Some(text) = self.others.next() {
            self.send(text.to_string()).await?;
        }
        Ok(())
    }

    /// Merges a browser's write into the gateway's replica. A write that
    /// lost, or was refused, is answered with the key's entry here, so the
    /// browser converges.
    async fn write(
        &mut self,
        key: &str,
        value: Option<Bytes>,
        stamp: aether_core::state::Stamp,
        prev: Option<Option<aether_core::state::Stamp>>,
    ) -> Result<(), End> {
        let outcome = if !self.rights.writes(key) {
            // Read-only, or outside the token's prefixes.
            "forbidden"
        } else if state::owner_of(key).is_some() {
            // A page writes shared keys only: a node's keys are its own.
            "not_owner"
        } else if stamp.node != self.replica
            && (stamp.node == self.replica_map.replica_id()
                || self.hub.lock_replicas().contains(&stamp.node))
        {
            // In another open page's name, or the gateway's. (A stamp of
            // a page that is not connected is a write it made offline,
            // relayed from the cache: taken.)
            "stamp"
        } else {
            self.own_writes.insert(key, stamp);
            // Known before the change reaches the other pages' connections.
            if let Some(prev) = prev {
                self.hub.lock_prevs().insert(key, stamp, prev);
            }
            let outcome = match self.replica_map.merge(key, value, stamp).await {
                Ok(true) => "applied",
                Ok(false) => "stale",
                Err(error) => metrics::outcome_of(error.kind()),
            };
            if outcome != "applied" {
                self.own_writes.take(key, stamp);
            }
            outcome
        };
        self.bridge
            .metrics
            .writes
            .with_label_values(&[outcome])
            .inc();
        match outcome {
            "applied" => Ok(()),
            "stale" => self.send_entry(key).await,
            reason => {
                // A key too long to keep is not echoed back whole.
                let shown = if reason == "invalid_key" { "" } else { key };
                let text = Outbound::Refused { key: shown, reason }.text();
                self.send(text).await?;
                self.send_entry(key).await
            }
        }
    }

    /// The key's entry here, if it has one, as `set` or `delete`.
    async fn send_entry(&mut self, key: &str) -> Result<(), End> {
        let Some(entry) = self.replica_map.stamped(key) else {
            return Ok(());
        };
        self.send_stamped(&entry).await
    }

    async fn send_stamped(&mut self, entry: &Stamped) -> Result<(), End> {
        let stamp = entry.stamp.to_string();
        let prev = self.hub.lock_prevs().of(&entry.key, entry.stamp);
        let text = match &entry.value {
            None => Outbound::Delete {
                key: &entry.key,
                stamp,
                prev,
            }
            .text(),
            Some(value) => {
                let Some(value) = self.json(value) else {
                    return Ok(());
                };
                Outbound::Set {
                    key: &entry.key,
                    value: &value,
                    stamp,
                    prev,
                }
                .text()
            }
        };
        self.send(text).await
    }

    async fn send_change(&mut self, change: &Change) -> Result<(), End> {
        let entry = Stamped {
            key: change.key.clone(),
            value: change.new.clone(),
            stamp: change.stamp,
            writer: change.writer.clone(),
        };
        self.send_stamped(&entry).await
    }

    /// Sends the map whole: the messages shared by every page while the
    /// map stays the same, each once its bytes fit in what may be in
    /// flight to pages at once (`max_snapshot_bytes_in_flight`).
    async fn send_snapshot(&mut self) -> Result<(), End> {
        let parts = self.hub.snapshot(&self.replica_map, &self.bridge).await;
        let most = self.bridge.config.max_snapshot_bytes_in_flight;
        let bridge = self.bridge.clone();
        for text in parts.iter() {
            let bytes = u32::try_from(text.len().clamp(1, most)).unwrap_or(u32::MAX);
            // Never closed: acquiring fails only if it were.
            let _permit = bridge.snapshot_bytes.acquire_many(bytes).await;
            self.send(text.clone()).await?;
        }
        Ok(())
    }

    /// A value as JSON, or `None` (counted) if a service wrote bytes that
    /// are not.
    fn json(&self, value: &Bytes) -> Option<Box<RawValue>> {
        json(&self.bridge.metrics, value)
    }

    /// Sends one message, within `send_timeout_ms`.
    async fn send(&mut self, text: impl Into<Utf8Bytes>) -> Result<(), End> {
        let timeout = Duration::from_millis(self.bridge.config.send_timeout_ms);
        let message = Message::Text(text.into());
        match tokio::time::timeout(timeout, self.socket.send(message)).await {
            Err(_) => Err(End::Refused(
                "slow",
                close::POLICY,
                "the browser did not read",
            )),
            Ok(Err(_)) => Err(End::Gone),
            Ok(Ok(())) => {
                self.bridge
                    .metrics
                    .messages
                    .with_label_values(&["out"])
                    .inc();
                Ok(())
            }
        }
    }
}

/// A value as JSON, or `None` (counted) if a service wrote bytes that are
/// not.
fn json(metrics: &BridgeMetrics, value: &Bytes) -> Option<Box<RawValue>> {
    let parsed = std::str::from_utf8(value)
        .ok()
        .and_then(|text| RawValue::from_string(text.to_string()).ok());
    if parsed.is_none() {
        metrics.not_json.inc();
    }
    parsed
}

/// What a read error means: a message over the size cap, or a connection
/// that broke.
fn read_error(error: &axum::Error) -> End {
    use tokio_tungstenite::tungstenite;
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        if let Some(tungstenite::Error::Capacity(_)) = e.downcast_ref::<tungstenite::Error>() {
            return End::Refused("too_large", close::TOO_BIG, "message too big");
        }
        source = e.source();
    }
    End::Gone
}

/// A message's `prev` read: `Some(None)` when the page did not say,
/// `Some(Some(None))` when it held no entry, `None` when it is no stamp.
fn parse_prev(prev: Option<Option<String>>) -> Option<Option<Option<aether_core::state::Stamp>>> {
    match prev {
        None => Some(None),
        Some(None) => Some(Some(None)),
        Some(Some(text)) => parse_stamp(&text).map(|stamp| Some(Some(stamp))),
    }
}

/// Counts a refusal and closes with its code.
async fn finish(bridge: &Bridge, socket: &mut WebSocket, end: End) {
    match end {
        End::Gone => {}
        End::Stopping => close_with(socket, close::GOING_AWAY, "stopping".into()).await,
        End::Refused(reason, code, text) => {
            bridge.metrics.refuse(reason);
            // The reason first, as a page's client reads it: `rate_limited:
            // rate limit`; a wrong token is `unauthorized`.
            let text = match reason {
                "token" => "unauthorized".into(),
                _ if reason == text => reason.into(),
                _ => format!("{reason}: {text}").into(),
            };
            close_with(socket, code, text).await;
        }
    }
}

/// Sends a close frame, for at most a second (the browser may be gone).
///
/// Then it reads, unanswered, until the browser's own close frame (the
/// closing handshake), for at most another second: a socket dropped while
/// the browser is still sending is reset, and the browser may then lose
/// the close frame and its reason (it saw `rate_limited` as a lost
/// connection most times).
async fn close_with(socket: &mut WebSocket, code: u16, reason: std::borrow::Cow<'static, str>) {
    let frame = CloseFrame {
        code,
        reason: reason.as_ref().into(),
    };
    let sent = tokio::time::timeout(
        Duration::from_secs(1),
        socket.send(Message::Close(Some(frame))),
    )
    .await;
    if matches!(sent, Ok(Ok(()))) {
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            while let Some(Ok(message)) = socket.recv().await {
                if matches!(message, Message::Close(_)) {
                    break;
                }
            }
        })
        .await;
    }
}
