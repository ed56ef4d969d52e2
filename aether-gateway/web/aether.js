// Aether browser client: one replica of a replicated map, through the
// gateway's bridge (`/bridge/<map>`). ES modules, no build step, no
// dependencies: this one and those of `aether/` beside it (stamps and the
// clock, the JSON check, the offline cache, the error). Types: aether.d.ts.
//
//   import { Aether } from "/aether.js";
//   const board = new Aether("ws://127.0.0.1:9464/bridge/board", { token });
//   board.on("*", (value, old, key) => render());
//   board.set("item/1", { text: "milk" });
//
// The page is a replica of its own: writes apply here at once, are stamped
// with this page's hybrid logical clock and sent; the gateway merges them
// by the rules every replica follows (the highest stamp wins, a delete is
// a tombstone). The map is cached in localStorage, a storage item per key,
// so a reload renders at once, even while the gateway is down; writes made
// offline are kept there and sent when the connection is back, where they
// win or lose by their stamps like any write.

import { OfflineCache, defaultStorage } from "./aether/cache.js";
import { AetherError } from "./aether/error.js";
import { LONE_SURROGATE, checkJson, jsonCopy, wellFormed } from "./aether/json.js";
import { Outbox } from "./aether/outbox.js";
import { Clock, beats, isOffset, isStamp, parseStamp, randomReplica } from "./aether/stamps.js";

export { AetherError, checkJson };

const DEFAULTS = {
  cache: true,
  cacheKey: null,
  // Until the first `hello` tells the map's (and after it, the last one
  // told, from the cache): the gateway's defaults, `[aether.state]` in
  // config/default.toml (a test holds them equal).
  maxKeyBytes: 256,
  maxValueBytes: 32 * 1024,
  // The gateway's bound on a page's presence value (its `hello` tells it).
  maxPresenceBytes: 4096 - 128,
  sendPerSecond: 50,
  sendBurst: 100,
  backoffMs: 250,
  maxBackoffMs: 10000,
};

const encoder = new TextEncoder();

/** Statuses after which the client neither connects nor takes writes. */
const TERMINAL = new Set(["unauthorized", "unknown_map", "closed"]);

/** Why a socket closed, as a reason code: the gateway's (`rate_limited: ...`), else by the close code. */
function closeReason(event, opened) {
  const match = /^([a-z_]+)(:|$)/.exec(event.reason || "");
  if (match) return match[1];
  switch (event.code) {
    case 1000: return "closed";
    case 1001: return "stopping";
    case 1006: return opened ? "connection_lost" : "unreachable";
    case 1008: return "policy";
    case 1009: return "too_large";
    case 1011: return "internal";
    case 1013: return "capacity";
    default: return `close_${event.code}`;
  }
}

export class Aether {
  /**
   * @param {string} url the bridge's address, `ws://host:port/bridge/<map>`
   *   (`wss://` when the gateway serves TLS)
   * @param {object} options see aether.d.ts; `token` is required
   */
  constructor(url, options) {
    if (typeof url !== "string" || !/^wss?:\/\/[^/]/.test(url)) {
      throw new TypeError(`the bridge's address is ws://host:port/bridge/<map> (or wss://), not ${JSON.stringify(url)}`);
    }
    if (options == null || typeof options !== "object") {
      throw new TypeError("options are required, with options.token: the bridge's token ([gateway.bridge] token)");
    }
    // No token (an unset variable, say): the client is made, unauthorized
    // from the start, so the app renders and can say why; never connects.
    const noToken = options.token === undefined || options.token === null || options.token === "";
    if (!noToken && typeof options.token !== "string") {
      throw new TypeError("options.token is the bridge's token ([gateway.bridge] token): a string");
    }
    this.url = url;
    // The WebSocket class and the storage looked up now, not at import: a
    // polyfill installed after the import is found.
    this.options = {
      ...DEFAULTS,
      WebSocket: globalThis.WebSocket,
      storage: defaultStorage(),
      ...options,
      token: noToken ? "" : options.token,
    };
    /** The limits the app asked for, if any: the gateway's may be no looser. */
    this.askedLimits = { maxKeyBytes: options.maxKeyBytes, maxValueBytes: options.maxValueBytes };
    if (typeof this.options.WebSocket !== "function") {
      throw new TypeError("no WebSocket class here: pass options.WebSocket (in Node before 22, the ws package's)");
    }
    this.replica = randomReplica();
    this.clock = new Clock(this.replica);
    /**
     * key -> { v: value, s: stamp, d: deleted, p: the writer's previous
     * stamp (null: none, undefined: not known), u: written here (or by an
     * earlier load) and not confirmed by the gateway yet }
     */
    this.entries = new Map();
    /** How many changes this copy has seen (a version for those who cache reads). */
    this.changes = 0;
    this.listeners = new Map();
    this.prefixListeners = new Map();
    this.supersedeListeners = new Set();
    this.presenceListeners = new Set();
    this.myPresenceListeners = new Set();
    /** How many changes of the others' presence this page has seen. */
    this.presenceVersion = 0;
    /** What this page shows of itself: { x?, y?, value? }, sent again on each connect. */
    this.mine = {};
    this.statusListeners = new Set();
    this.refusedListeners = new Set();
    this.pendingListeners = new Set();
    this.errorListeners = new Set();
    this.peers = new Map();
    this.status = "connecting";
    this.statusReason = null;
    this.id = null;
    this.color = null;
    this.socket = null;
    this.attempt = 0;
    /** What this page sends, paced under the gateway's limits. */
    this.outbox = new Outbox(this.options, {
      send: (text) => this.socket.send(text),
      open: () => this.socket?.readyState === 1,
      live: () => this.status === "live",
      holding: () => this.transacting > 0,
    });
    /** Open transactions (`transact`): writes wait to leave until the last ends. */
    this.transacting = 0;
    /** Changes whose listeners are told once the group they came in is whole. */
    this.held = null;
    /** Whether the count of pending writes changed while held. */
    this.pendingHeld = false;
    /** A `synced` is being taken: the count's listeners are told after it. */
    this.confirming = false;
    /** What this page's token writes (`hello`): null, anything. */
    this.rights = null;
    this.saveTimer = null;
    this.reconnectTimer = null;
    this.liveWaiters = [];
    this.snapshotParts = null;
    /** key -> the stamp of a write the gateway has not confirmed yet. */
    this.unconfirmed = new Map();
    /** The last clock readings, {offsetMs, rttMs}: the fastest is followed. */
    this.readings = [];
    this.authSentAt = 0;
    this.pendingWaiters = [];
    /** Keys changed here whose storage item is not written yet. */
    this.dirty = new Set();
    this.cacheFull = false;
    /** Keys of cache items that could not be read: dropped and told once live. */
    this.unreadable = [];
    // One cache per address and token: a page with another token never
    // reads this one's, nor sends its writes.
    this.cache = new OfflineCache(this.options.cache ? this.options.storage : null,
      this.options.cacheKey || "aether:" + url, this.options.token);
    if (noToken) {
      this.status = "unauthorized";
      this.statusReason = "no_token";
      return;
    }
    this.loadCache();
    this.onPageHide = () => this.saveNow();
    globalThis.addEventListener?.("pagehide", this.onPageHide);
    this.connect();
  }

  // ---- reading -----------------------------------------------------------

  /** The value of `key`, or `undefined` when it is not set. */
  get(key) {
    const entry = this.entries.get(key);
    return entry && !entry.d ? jsonCopy(entry.v) : undefined;
  }

  /** Whether `key` is set. */
  has(key) {
    const entry = this.entries.get(key);
    return !!entry && !entry.d;
  }

  /** Every key set, sorted. */
  keys() {
    return [...this.entries.entries()].filter(([, e]) => !e.d).map(([k]) => k).sort();
  }

  /** Every key set and its value, sorted by key. */
  items() {
    return this.keys().map((k) => [k, this.get(k)]);
  }

  /** The stamp of `key`'s entry (a delete's too), or `undefined`. */
  stampOf(key) {
    return this.entries.get(key)?.s;
  }

  // ---- writing -----------------------------------------------------------

  /**
   * Sets `key` to `value` (a JSON value) here at once, keeps it in the
   * cache and sends it. Throws a TypeError for a value JSON cannot carry,
   * a RangeError over the caps, an AetherError once the client is closed,
   * unauthorized or on an unknown map, or when the cache is full
   * (`storage_full`): then nothing was written.
   */
  set(key, value) {
    this.writable();
    this.checkKey(key);
    return this.write(key, { v: this.checkValue(key, value), s: this.clock.now(), d: false });
  }

  /** Deletes `key` here at once (a tombstone), keeps it and sends it; throws as `set` does. */
  delete(key) {
    this.writable();
    this.checkKey(key);
    return this.write(key, { v: null, s: this.clock.now(), d: true });
  }

  /**
   * Writes many keys as one step: `entries` is an object or an iterable of
   * `[key, value]` (a value `undefined` deletes its key). Every key and
   * value is checked first: one `set` would refuse throws, having written
   * nothing. A cache that fills midway throws `storage_full` with the
   * writes before it made (and sent). The writes leave together (a message
   * of many), and another page applies them together. Returns their
   * stamps, in order.
   */
  setMany(entries) {
    this.writable();
    const list = entries != null && typeof entries[Symbol.iterator] === "function"
      ? [...entries]
      : Object.entries(entries ?? {});
    const checked = list.map((pair) => {
      if (!Array.isArray(pair) || pair.length !== 2) {
        throw new TypeError("setMany takes an object or an iterable of [key, value] pairs");
      }
      const [key, value] = pair;
      this.checkKey(key);
      if (value === undefined) return [key, undefined];
      return [key, this.checkValue(key, value)];
    });
    return this.transact(() =>
      checked.map(([key, value]) =>
        value === undefined
          ? this.write(key, { v: null, s: this.clock.now(), d: true })
          : this.write(key, { v: value, s: this.clock.now(), d: false }),
      ),
    );
  }

  /**
   * Runs `fn()` (synchronously: writes after an `await` in it are not of
   * the step), whose writes (`set`, `delete`, `setMany`) are one step:
   * this page's listeners (and `onPendingWrites`) are told once it
   * returns, and the writes leave together, so another page applies them
   * together (a group larger than a message, 64 KiB by default, leaves in
   * several). Returns what `fn` returns. Nothing is rolled back: a write
   * made before `fn` throws stays, and leaves.
   */
  transact(fn) {
    if (typeof fn !== "function") throw new TypeError("transact takes a function");
    this.writable();
    this.transacting += 1;
    try {
      return this.together(fn);
    } finally {
      this.transacting -= 1;
      if (this.transacting === 0) this.outbox.flushSoon();
    }
  }

  /** Runs `fn`; listeners of the changes it makes are told after it. */
  together(fn) {
    if (this.held !== null) return fn();
    this.held = [];
    try {
      return fn();
    } finally {
      const held = this.held;
      this.held = null;
      for (const [key, value, old] of held) this.fire(key, value, old);
      if (this.pendingHeld) {
        this.pendingHeld = false;
        this.firePending();
      }
    }
  }

  /** A value `set` takes, as the copy it keeps; throws as `set` does. */
  checkValue(key, value) {
    checkJson(key, value);
    const text = JSON.stringify(value);
    if (encoder.encode(text).length > this.options.maxValueBytes) {
      throw new RangeError(`a value of more than ${this.options.maxValueBytes} bytes for ${JSON.stringify(key)}`);
    }
    return JSON.parse(text);
  }

  write(key, entry) {
    entry.p = this.entries.get(key)?.s ?? null;
    entry.u = true; // not confirmed by the gateway yet: kept so in the cache
    this.keep(key, entry);
    this.apply(key, entry, false);
    this.track(key, entry.s);
    this.outbox.queue(key, entry);
    return entry.s;
  }

  writable() {
    if (TERMINAL.has(this.status)) {
      const ended = this.terminalError();
      throw new AetherError(ended.reason, `this client is ${this.status} (${ended.message}): it takes no more writes`);
    }
  }

  checkKey(key) {
    if (typeof key !== "string" || key.length === 0) {
      throw new TypeError("a key is a non-empty string");
    }
    if (!wellFormed(key)) {
      throw new TypeError(`the key ${JSON.stringify(key)} is ${LONE_SURROGATE}`);
    }
    if (encoder.encode(key).length > this.options.maxKeyBytes) {
      throw new RangeError(`a key of more than ${this.options.maxKeyBytes} bytes`);
    }
    if (key.startsWith("node/")) {
      // The gateway refuses them (not_owner): refused here, before the
      // page shows a value it would take back.
      throw new AetherError("not_owner", `${JSON.stringify(key)} is a node's own key (node/<name>/...): a page writes shared keys only`);
    }
    const rights = this.rights;
    if (rights !== null && (rights.readOnly || (rights.prefixes !== null && !rights.prefixes.some((p) => key.startsWith(p))))) {
      // As the gateway's hello told this page's token: refused here too.
      const why = rights.readOnly ? "this page's token is read-only" : `this page's token writes only keys under ${rights.prefixes.map((p) => JSON.stringify(p)).join(", ")}`;
      throw new AetherError("forbidden", `${JSON.stringify(key)}: ${why}`);
    }
  }

  /** How many keys this page wrote that the gateway has not confirmed yet. */
  get pendingWrites() {
    return this.unconfirmed.size;
  }

  /**
   * Resolves once every write made so far has reached the gateway (taken,
   * lost to a newer stamp, or refused: `onRefused` says). Rejects with an
   * AetherError if the client closes or becomes unauthorized first.
   */
  waitForPendingWrites() {
    if (TERMINAL.has(this.status)) return Promise.reject(this.terminalError());
    if (this.unconfirmed.size === 0) return Promise.resolve();
    return new Promise((resolve, reject) => {
      this.pendingWaiters.push({ left: new Map(this.unconfirmed), resolve, reject });
    });
  }

  // ---- listening ---------------------------------------------------------

  /**
   * Calls `callback(value, old, key)` on every change of `key` (`"*"`: any
   * key; `"todo/*"`: every key that begins with `todo/`), local or remote;
   * `value` is `undefined` once deleted. Returns a function that stops it.
   */
  on(key, callback) {
    const prefix = key !== "*" && typeof key === "string" && key.endsWith("*");
    const listeners = prefix ? this.prefixListeners : this.listeners;
    const name = prefix ? key.slice(0, -1) : key;
    if (!listeners.has(name)) listeners.set(name, new Set());
    listeners.get(name).add(callback);
    return () => listeners.get(name)?.delete(callback);
  }

  /**
   * Calls `callback({ key, mine, by, concurrent })` when a write of this page
   * lost a race: a higher stamp overwrote it, written by one who had not
   * seen it (`concurrent: true`), or by a service or another gateway's page
   * whose view is not known (`concurrent: null`). Not when a writer that
   * had seen this page's write changed the key after it.
   */
  onSupersede(callback) {
    this.supersedeListeners.add(callback);
    return () => this.supersedeListeners.delete(callback);
  }

  /** Calls `callback({ key, reason })` when a write of this page was not taken (refused by the gateway, or dropped as unauthorized). */
  onRefused(callback) {
    this.refusedListeners.add(callback);
    return () => this.refusedListeners.delete(callback);
  }

  /**
   * Calls `callback(status, reason)`: status "connecting", "live",
   * "offline", "unauthorized", "unknown_map", "closed"; reason why it went
   * offline (`unreachable`, `connection_lost`, `rate_limited`, `stopping`,
   * ...) or ended, else null.
   */
  onStatus(callback) {
    this.statusListeners.add(callback);
    return () => this.statusListeners.delete(callback);
  }

  /** Calls `callback(count)` when the number of writes not yet confirmed changes. */
  onPendingWrites(callback) {
    this.pendingListeners.add(callback);
    return () => this.pendingListeners.delete(callback);
  }

  /** Calls `callback(error)` (an AetherError) when a change could not be kept in the cache (`storage_full`). */
  onError(callback) {
    this.errorListeners.add(callback);
    return () => this.errorListeners.delete(callback);
  }

  /**
   * Resolves once the page is live (the map came from the gateway); rejects
   * with an AetherError once the client cannot be: unauthorized, an
   * unknown map, closed.
   */
  whenLive() {
    if (this.status === "live") return Promise.resolve();
    if (TERMINAL.has(this.status)) return Promise.reject(this.terminalError());
    return new Promise((resolve, reject) => this.liveWaiters.push({ resolve, reject }));
  }

  terminalError() {
    const cause = this.status === "closed" ? "closed" : this.statusReason;
    const why = {
      no_token: "no token was given: options.token is the bridge's token ([gateway.bridge] token)",
      unauthorized: "the gateway refused the token",
      unknown_map: `the gateway bridges no map at ${this.url} ([gateway.bridge] maps)`,
      closed: "the client was closed",
    }[cause] ?? `the client is ${this.status}`;
    return new AetherError(cause === "no_token" ? "unauthorized" : cause, why);
  }


  // ---- presence ----------------------------------------------------------

  /** Shows this page's cursor to the map's other pages (not kept). */
  setPresence(x, y) {
    this.updatePresence({ x, y });
  }

  /**
   * Changes what this page shows of itself to every other page and
   * replica of the map, for as long as it is open (never kept): `x` and
   * `y` (its cursor), `value` (any JSON: a name, an avatar, what it is
   * editing; `null` clears it). Fields left out stay. Throws, having
   * changed nothing: TypeError (not JSON), RangeError (a value over
   * `maxPresenceBytes`).
   */
  updatePresence(patch) {
    if (patch == null || typeof patch !== "object") throw new TypeError("updatePresence takes { x?, y?, value? }");
    const next = { ...this.mine };
    const out = { type: "presence" };
    for (const field of Object.keys(patch)) {
      if (field !== "x" && field !== "y" && field !== "value") {
        throw new TypeError(`updatePresence takes x, y and value, not ${JSON.stringify(field)}`);
      }
    }
    for (const axis of ["x", "y"]) {
      if (patch[axis] === undefined) continue;
      if (typeof patch[axis] !== "number" || !Number.isFinite(patch[axis])) {
        throw new TypeError(`updatePresence's ${axis} is a number`);
      }
      next[axis] = out[axis] = Math.max(-(2 ** 31), Math.min(2 ** 31 - 1, Math.round(patch[axis])));
    }
    if (patch.value !== undefined) {
      if (patch.value === null) {
        delete next.value;
        out.value = null;
      } else {
        checkJson("presence", patch.value);
        const text = JSON.stringify(patch.value);
        if (encoder.encode(text).length > this.options.maxPresenceBytes) {
          throw new RangeError(`a presence value of more than ${this.options.maxPresenceBytes} bytes`);
        }
        next.value = out.value = JSON.parse(text);
      }
    }
    this.mine = next;
    if (this.status === "live") this.sendPresence(out);
    this.myPresenceListeners.forEach((cb) => cb(this.myPresence()));
  }

  /** What this page shows of itself: { id, color, x?, y?, value? }. */
  myPresence() {
    return { id: this.id, color: this.color, ...this.mine };
  }

  /** Calls `callback(mine)` whenever this page's own presence changes. */
  onMyPresence(callback) {
    this.myPresenceListeners.add(callback);
    return () => this.myPresenceListeners.delete(callback);
  }

  /**
   * The other pages and replicas: id -> { color, x?, y?, value? } (a page
   * of this gateway by its id, another replica's slot as `<node>/<slot>`).
   */
  presence() {
    return new Map(this.peers);
  }

  /** Calls `callback(peers)` whenever another page's presence changes, comes or goes. */
  onPresence(callback) {
    this.presenceListeners.add(callback);
    return () => this.presenceListeners.delete(callback);
  }

  /** Queues `message` (a presence change), merged with one not sent yet. */
  sendPresence(message) {
    this.outbox.presence(message);
  }

  /** Closes the connection for good (the cache is kept, with any unsent writes). */
  close() {
    if (this.status === "closed") return;
    clearTimeout(this.reconnectTimer);
    this.outbox.close();
    this.saveNow();
    globalThis.removeEventListener?.("pagehide", this.onPageHide);
    const socket = this.socket;
    this.socket = null;
    socket?.close(1000, "closed");
    // After another end (unauthorized, unknown_map) that end stays what
    // the client says.
    if (!TERMINAL.has(this.status)) this.end("closed", null);
  }

  // ---- the connection ----------------------------------------------------

  connect() {
    if (TERMINAL.has(this.status)) return;
    if (this.attempt === 0) this.setStatus("connecting", null);
    let socket;
    try {
      socket = new this.options.WebSocket(this.url);
    } catch {
      this.reconnect("unreachable");
      return;
    }
    this.socket = socket;
    let opened = false;
    socket.onopen = () => {
      if (this.socket !== socket) return;
      opened = true;
      this.authSentAt = performance.now();
      socket.send(JSON.stringify({ type: "auth", token: this.options.token, replica: this.replica }));
    };
    socket.onmessage = (event) => {
      if (this.socket !== socket) return; // one this client let go of
      let message;
      try {
        message = JSON.parse(event.data);
      } catch {
        return;
      }
      if (message && typeof message === "object") this.receive(message);
    };
    socket.onclose = (event) => {
      if (this.socket !== socket) return;
      this.socket = null;
      this.snapshotParts = null;
      this.outbox.lost(); // sent again from the snapshot's diff
      this.peers.clear();
      this.firePresence();
      const reason = closeReason(event, opened);
      if (reason === "unauthorized" || reason === "unknown_map") {
        this.drop(reason);
        return;
      }
      if (reason === "rate_limited") {
        this.outbox.slowDown();
      }
      if (reason === "replica_in_use") {
        // Another open page holds this id: take a new one, at once. Writes
        // stamped with the old one are sent again after the snapshot.
        this.replica = randomReplica();
        this.clock.replica = this.replica;
        this.connect();
        return;
      }
      this.reconnect(reason);
    };
    socket.onerror = () => {};
  }

  reconnect(reason) {
    if (TERMINAL.has(this.status)) return;
    this.setStatus("offline", reason);
    const base = Math.min(this.options.maxBackoffMs, this.options.backoffMs * 2 ** this.attempt);
    const delay = base * (0.8 + 0.4 * Math.random());
    this.attempt += 1;
    this.reconnectTimer = setTimeout(() => this.connect(), delay);
  }

  /**
   * The gateway will never take this page (a wrong token, an unknown map):
   * nothing written under it may reach the bus, by this page or by another
   * with the right token, so the copy and its cache are dropped, and each
   * write not confirmed is told to `onRefused`.
   */
  drop(reason) {
    const unsent = [...this.unconfirmed.keys()];
    this.unconfirmed.clear();
    this.cache.clear();
    this.dirty.clear();
    clearTimeout(this.saveTimer);
    this.saveTimer = null;
    const held = [...this.entries];
    this.entries.clear();
    for (const [key, e] of held) {
      if (!e.d) this.fire(key, undefined, e.v);
    }
    this.end(reason, reason);
    for (const key of unsent) {
      this.refusedListeners.forEach((cb) => cb({ key, reason }));
    }
    this.firePending();
  }

  /**
   * A reading of the bus's time, `now` as the gateway answered a message
   * sent at `sentAt`: when it arrives the bus's time is `now` at least, and
   * at most `now` plus the round trip (Cristian's algorithm). The page takes
   * the least, so that it never stamps ahead of the bus (a stamp ahead by
   * more than max_drift is refused; one behind is not). Of the last eight
   * readings the one with the shortest round trip sets the offset, the
   * least uncertain.
   */
  reading(now, sentAt) {
    if (!isStamp(now) || !(sentAt > 0)) return;
    const received = performance.now();
    const busMs = Number(BigInt("0x" + now.slice(0, 16)) / 1000n) / 1000;
    const rttMs = received - sentAt;
    this.readings.push({ offsetMs: busMs - (performance.timeOrigin + received), rttMs });
    if (this.readings.length > 8) this.readings.shift();
    const best = this.readings.reduce((a, b) => (b.rttMs < a.rttMs ? b : a));
    this.clock.offsetMs = best.offsetMs;
  }

  /**
   * Writes made before this page first heard the bus's time (a first load,
   * no cache) were stamped by its machine's clock: those more than
   * max_drift ahead of the bus's time, not sent yet, are stamped again now
   * (the gateway would refuse them, and the clock, which never goes back,
   * would keep every later write there too). Before the snapshot's diff
   * sends them.
   */
  restampAhead() {
    const clock = this.clock;
    const limit = clock.wallNs() + BigInt(Math.floor(clock.maxDriftMs * 1000)) * 1000n;
    if (clock.physical <= limit || this.status === "live") return;
    clock.physical = clock.wallNs();
    clock.logical = 0;
    for (const [key, e] of [...this.entries]) {
      if (!e.u || !e.s.endsWith(this.replica) || parseStamp(e.s).physical <= limit) continue;
      const old = e.s;
      e.s = clock.now();
      // The cache's item holds the old stamp, later than the new: replaced.
      this.forget(key, old);
      try {
        this.keep(key, e);
      } catch {
        this.markDirty(key);
      }
      if (this.unconfirmed.get(key) === old) this.unconfirmed.set(key, e.s);
      for (const waiter of this.pendingWaiters) {
        if (waiter.left.get(key) === old) waiter.left.set(key, e.s);
      }
    }
  }

  /**
   * The map's limits as the gateway's `hello` tells them (or the last load
   * cached them): `set` refuses what the gateway would. A limit the app
   * asked for stays when it is the stricter.
   */
  takeLimits(limits) {
    if (limits == null || typeof limits !== "object") return;
    const take = (name, theirs) => {
      if (!Number.isSafeInteger(theirs) || theirs < 1) return;
      const asked = this.askedLimits[name];
      this.options[name] = Number.isSafeInteger(asked) && asked > 0 ? Math.min(asked, theirs) : theirs;
    };
    take("maxKeyBytes", limits.max_key_bytes);
    take("maxValueBytes", limits.max_value_bytes);
    if (Number.isSafeInteger(limits.max_drift_ms) && limits.max_drift_ms > 0) this.clock.maxDriftMs = limits.max_drift_ms;
  }

  /** What this page's token writes, as `hello` tells it (none told: anything). */
  takeRights(rights) {
    this.rights = null;
    if (rights == null || typeof rights !== "object" || typeof rights.read_only !== "boolean") return;
    const prefixes = Array.isArray(rights.prefixes) && rights.prefixes.every((p) => typeof p === "string")
      ? rights.prefixes
      : null;
    this.rights = { readOnly: rights.read_only, prefixes };
  }

  /** Ends the client: a terminal status; waiting promises reject. */
  end(status, reason) {
    this.setStatus(status, reason);
    const error = this.terminalError();
    this.liveWaiters.splice(0).forEach((w) => w.reject(error));
    this.pendingWaiters.splice(0).forEach((w) => w.reject(error));
  }

  receive(message) {
    switch (message.type) {
      case "hello": {
        this.id = message.id;
        this.color = message.color;
        this.takeLimits(message.limits);
        this.outbox.takePace(message.limits);
        this.takeRights(message.rights);
        if (Number.isSafeInteger(message.limits?.max_presence_bytes) && message.limits.max_presence_bytes > 0) {
          this.options.maxPresenceBytes = message.limits.max_presence_bytes;
        }
        this.reading(message.now, this.authSentAt);
        this.restampAhead();
        break;
      }
      case "snapshot-part":
        // A large map comes in parts; the snapshot that follows ends it.
        // Keyed by the map's keys: no prototype (a key may be "constructor").
        this.snapshotParts = Object.assign(this.snapshotParts || Object.create(null), message.entries);
        break;
      case "snapshot": {
        const theirs = Object.assign(this.snapshotParts || Object.create(null), message.entries);
        this.snapshotParts = null;
        // Cache items that could not be read go before the gateway's
        // entries are kept in their place.
        const unreadable = this.unreadable.splice(0);
        for (const key of unreadable) {
          this.dirty.delete(key);
          this.cache.forgetUnreadable(key);
        }
        for (const [key, e] of Object.entries(theirs)) {
          if (e && isStamp(e.stamp)) {
            this.apply(key, { v: e.deleted ? null : e.value, s: e.stamp, d: !!e.deleted }, true);
          }
        }
        this.attempt = 0;
        this.setStatus("live", null);
        // What this page holds above the gateway's: its own writes made
        // offline (or not yet sent), and those of earlier loads the cache
        // kept, sent again; what the gateway holds already is confirmed.
        for (const key of unreadable) {
          this.refusedListeners.forEach((cb) => cb({ key, reason: "malformed" }));
        }
        for (const [key, e] of [...this.entries]) {
          const held = theirs[key];
          if (!held || held.stamp < e.s) {
            if (!this.sendable(key, e)) {
              // Dropped: the gateway's entry, if any, is this page's now.
              if (held) this.apply(key, { v: held.deleted ? null : held.value, s: held.stamp, d: !!held.deleted }, true);
              continue;
            }
            this.track(key, e.s);
            this.outbox.queue(key, e);
          } else {
            this.confirm(key, held.stamp);
          }
        }
        // A sync once live (after the writes above, which it confirms): a
        // reading of the bus's time with its round trip short (the
        // hello's waited for the token's check).
        this.outbox.syncSoon();
        // What this page shows (if only that it is here), shown again.
        this.sendPresence({ ...this.mine });
        this.outbox.flush();
        this.liveWaiters.splice(0).forEach((w) => w.resolve());
        break;
      }
      case "set":
      case "delete":
        this.applyChange(message, message.type === "delete");
        break;
      case "changes":
        // Changes that came together: applied as one step, listeners told
        // once all are in.
        if (Array.isArray(message.changes)) {
          this.together(() => {
            for (const change of message.changes) {
              if (change && typeof change === "object") this.applyChange(change, change.deleted === true);
            }
          });
        }
        break;
      case "synced": {
        // The gateway took every message before this sync: the writes of
        // this sync and of any earlier one.
        const { sentAt, confirmed } = this.outbox.synced(message.id);
        if (sentAt !== undefined) this.reading(message.now, sentAt);
        // Listeners of the count are told once for all of them.
        this.confirming = true;
        try {
          for (const [key, stamp] of confirmed) this.confirm(key, stamp);
        } finally {
          this.confirming = false;
        }
        this.firePending();
        break;
      }
      case "refused": {
        // The gateway did not take this page's write: forget it here; the
        // gateway's entry, if any, follows.
        const old = this.entries.get(message.key);
        if (old && (old.s.endsWith(this.replica) || old.u)) this.discard(message.key, old);
        this.settle(message.key);
        this.refusedListeners.forEach((cb) => cb({ key: message.key, reason: message.reason }));
        break;
      }
      case "presence": {
        if (typeof message.id !== "string") break;
        const peer = { color: message.color };
        if (Number.isFinite(message.x)) peer.x = message.x;
        if (Number.isFinite(message.y)) peer.y = message.y;
        if (message.value !== undefined) peer.value = message.value;
        this.peers.set(message.id, peer);
        this.firePresence();
        break;
      }

      case "presence-leave":
        this.peers.delete(message.id);
        this.firePresence();
        break;
      default:
        break;
    }
  }

  /** A `set` or `delete` from the gateway (alone, or one of `changes`). */
  applyChange(change, deleted) {
    if (typeof change.key !== "string" || !isStamp(change.stamp)) return;
    if (!deleted && !("value" in change)) return;
    const prev = change.prev === null || isStamp(change.prev) ? change.prev : undefined;
    this.apply(change.key, { v: deleted ? null : change.value, s: change.stamp, d: deleted, p: prev }, true);
  }

  /** Merges one entry, if it wins over the one held (`beats`). */
  apply(key, entry, remote) {
    const held = this.entries.get(key);
    if (held && !beats(entry, held)) return false;
    this.clock.observe(entry.s);
    this.entries.set(key, entry);
    if (remote && held && held.s !== entry.s && held.s.endsWith(this.replica)) {
      // Lost a race unless the winner's writer had seen this write (its
      // previous stamp of the key is this one or later).
      const concurrent = entry.p === undefined ? null : entry.p === null || entry.p < held.s ? true : false;
      if (concurrent !== false) {
        const by = { value: entry.d ? undefined : entry.v, stamp: entry.s };
        this.supersedeListeners.forEach((cb) => cb({ key, mine: held.s, by, concurrent }));
      }
    }
    if (remote) this.markDirty(key);
    const old = held && !held.d ? held.v : undefined;
    this.fire(key, entry.d ? undefined : entry.v, old);
    return true;
  }

  fire(key, value, old) {
    if (this.held !== null) {
      this.held.push([key, value, old]);
      return;
    }
    this.changes += 1;
    const call = (cb) => {
      try {
        cb(value === undefined ? undefined : jsonCopy(value), old, key);
      } catch (error) {
        console.error(error);
      }
    };
    this.listeners.get(key)?.forEach(call);
    this.listeners.get("*")?.forEach(call);
    for (const [prefix, callbacks] of this.prefixListeners) {
      if (key.startsWith(prefix)) callbacks.forEach(call);
    }
  }

  firePresence() {
    this.presenceVersion += 1;
    const peers = this.presence();
    this.presenceListeners.forEach((cb) => cb(peers));
  }

  setStatus(status, reason) {
    if (this.status === status && this.statusReason === reason) return;
    this.status = status;
    this.statusReason = reason;
    this.statusListeners.forEach((cb) => cb(status, reason));
  }

  /**
   * Whether a held entry may be sent: one the cache kept that `set` would
   * refuse (an earlier client's, or a changed storage) would make the
   * gateway close the connection at every attempt, so it is dropped and
   * told to `onRefused` (`malformed`).
   */
  sendable(key, entry) {
    try {
      this.checkKey(key);
      if (!entry.d) this.checkValue(key, entry.v);
      return true;
    } catch {
      this.discard(key, entry);
      this.settle(key);
      this.refusedListeners.forEach((cb) => cb({ key, reason: "malformed" }));
      return false;
    }
  }

  // ---- writes not yet confirmed ------------------------------------------

  track(key, stamp) {
    const before = this.unconfirmed.size;
    this.unconfirmed.set(key, stamp);
    if (this.unconfirmed.size !== before) this.firePending();
  }

  /** The gateway holds `key` at `stamp` or later: writes up to it reached it. */
  confirm(key, stamp) {
    const mine = this.unconfirmed.get(key);
    if (mine !== undefined && mine <= stamp) {
      this.unconfirmed.delete(key);
      this.firePending();
    }
    const entry = this.entries.get(key);
    if (entry?.u && entry.s <= stamp) {
      entry.u = false;
      this.markDirty(key);
    }
    this.settleWaiters((left) => {
      const waited = left.get(key);
      if (waited !== undefined && waited <= stamp) left.delete(key);
    });
  }

  /** A write of `key` was refused: nothing of it is pending. */
  settle(key) {
    if (this.unconfirmed.delete(key)) this.firePending();
    this.settleWaiters((left) => left.delete(key));
  }

  settleWaiters(change) {
    this.pendingWaiters = this.pendingWaiters.filter((w) => {
      change(w.left);
      if (w.left.size > 0) return true;
      w.resolve();
      return false;
    });
  }

  firePending() {
    if (this.confirming) return; // told once the answer is taken
    if (this.held !== null) {
      this.pendingHeld = true; // told once the step is done
      return;
    }
    const count = this.unconfirmed.size;
    if (count === this.lastPending) return;
    this.lastPending = count;
    this.pendingListeners.forEach((cb) => cb(count));
  }

  // ---- the offline cache (aether/cache.js) ------------------------------

  loadCache() {
    try {
      const { meta, entries } = this.cache.load();
      if (meta && isOffset(meta.offsetMs)) this.clock.offsetMs = meta.offsetMs;
      if (meta) this.takeLimits(meta.limits);
      for (const [key, entry] of entries) {
        if (!entry) {
          this.unreadable.push(key);
          continue;
        }
        // A write no gateway confirmed yet (this page's before a reload,
        // or another tab's): pending here too, until one does.
        if (this.apply(key, entry, false) && entry.u) this.track(key, entry.s);
      }
    } catch {
      // an unreadable cache renders nothing; the gateway's map follows
    }
  }

  /** Writes one entry's item now, unless another tab wrote a newer one; throws when storage is full. */
  keep(key, entry) {
    if (!this.cache.storage) return;
    this.cache.keep(key, entry);
    this.dirty.delete(key);
  }

  markDirty(key) {
    if (!this.cache.storage) return;
    this.dirty.add(key);
    if (this.saveTimer === null) this.saveTimer = setTimeout(() => this.saveNow(), 50);
  }

  /** Takes `entry` of `key` out of the copy and the cache, told to the listeners. */
  discard(key, entry) {
    this.entries.delete(key);
    this.forget(key, entry.s);
    if (!entry.d) this.fire(key, undefined, entry.v);
  }

  /** Takes `key`'s item out of the cache (with `stamp`: only if it holds no newer write). */
  forget(key, stamp) {
    this.dirty.delete(key);
    this.cache.forget(key, stamp);
  }

  /** Writes the changes not kept yet (tabs merge by stamps: a newer item is never overwritten). */
  saveNow() {
    clearTimeout(this.saveTimer);
    this.saveTimer = null;
    if (!this.cache.storage) return;
    let failed = null;
    for (const key of [...this.dirty]) {
      const entry = this.entries.get(key);
      try {
        if (entry) this.keep(key, entry);
        else this.dirty.delete(key);
      } catch (error) {
        failed = error;
        break;
      }
    }
    try {
      const limits = {
        max_key_bytes: this.options.maxKeyBytes,
        max_value_bytes: this.options.maxValueBytes,
        max_drift_ms: this.clock.maxDriftMs,
      };
      this.cache.keepMeta({ offsetMs: this.clock.offsetMs, limits });
    } catch (error) {
      failed = failed || error;
    }
    const full = failed !== null;
    if (full && !this.cacheFull) {
      const error = failed instanceof AetherError ? failed
        : new AetherError("storage_full", "the offline cache could not be written: a reload offline shows an older copy");
      this.errorListeners.forEach((cb) => cb(error));
      if (this.errorListeners.size === 0) console.warn("aether:", error.message);
    }
    this.cacheFull = full;
    if (full && this.saveTimer === null && !TERMINAL.has(this.status)) {
      this.saveTimer = setTimeout(() => this.saveNow(), 1000); // tried again while space is short
    }
  }
}

export default Aether;
