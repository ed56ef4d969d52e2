// Aether browser client: one replica of a replicated map, through the
// gateway's bridge (`/bridge/<map>`). One ES module, no build step, no
// dependencies. Types: aether.d.ts beside it.
//
//   import { Aether } from "/aether.js";
//   const board = new Aether("ws://127.0.0.1:9464/bridge/board", { token });
//   board.on("*", (value, old, key) => render());
//   board.set("item/1", { text: "milk" });
//
// The page is a replica of its own: writes apply here at once, are stamped
// with this page's hybrid logical clock and sent; the gateway merges them
// by the rules every replica follows (the highest stamp wins, a delete is
// a tombstone). The map is cached in localStorage, so a reload renders at
// once, even while the gateway is down; writes made offline are kept there
// and sent when the connection is back, where they win or lose by their
// stamps like any write.

const DEFAULTS = {
  token: "",
  cache: true,
  cacheKey: null,
  maxKeyBytes: 256,
  maxValueBytes: 32 * 1024,
  sendPerSecond: 50,
  sendBurst: 100,
  backoffMs: 250,
  maxBackoffMs: 10000,
  WebSocket: globalThis.WebSocket,
  storage: globalThis.localStorage,
};

const encoder = new TextEncoder();
const ZERO_NODE = "0000000000000000";

/** A random replica id: 64 bits, 16 lower case hex digits, not all zero. */
function randomReplica() {
  const words = new Uint32Array(2);
  let id = ZERO_NODE;
  while (id === ZERO_NODE) {
    crypto.getRandomValues(words);
    id = words[0].toString(16).padStart(8, "0") + words[1].toString(16).padStart(8, "0");
  }
  return id;
}

/** A stamp as the bridge writes it: texts sort as stamps do. */
function stampText(physical, logical, replica) {
  return physical.toString(16).padStart(16, "0") + "-" +
    logical.toString(16).padStart(8, "0") + "-" + replica;
}

function parseStamp(text) {
  return { physical: BigInt("0x" + text.slice(0, 16)), logical: parseInt(text.slice(17, 25), 16) };
}

/** A hybrid logical clock: never goes back, moves past every stamp seen. */
class Clock {
  constructor(replica) {
    this.replica = replica;
    this.physical = 0n;
    this.logical = 0;
    this.offsetMs = 0; // the gateway's clock minus this page's
  }

  wallNs() {
    const ms = performance.timeOrigin + performance.now() + this.offsetMs;
    return BigInt(Math.floor(ms * 1000)) * 1000n;
  }

  now() {
    const wall = this.wallNs();
    if (wall > this.physical) {
      this.physical = wall;
      this.logical = 0;
    } else if (this.logical < 0xffffffff) {
      this.logical += 1;
    } else {
      this.physical += 1n;
      this.logical = 0;
    }
    return stampText(this.physical, this.logical, this.replica);
  }

  observe(text) {
    const { physical, logical } = parseStamp(text);
    if (physical > this.physical || (physical === this.physical && logical > this.logical)) {
      this.physical = physical;
      this.logical = logical;
    }
  }
}

function sameEntry(a, b) {
  return a.d === b.d && (a.d || JSON.stringify(a.v) === JSON.stringify(b.v));
}

function jsonCopy(value) {
  return value === undefined ? null : JSON.parse(JSON.stringify(value));
}

export class Aether {
  /**
   * @param {string} url the bridge's address, `ws://host:port/bridge/<map>`
   *   (`wss://` when the gateway serves TLS)
   * @param {object} options see aether.d.ts
   */
  constructor(url, options = {}) {
    this.url = url;
    this.options = { ...DEFAULTS, ...options };
    this.replica = randomReplica();
    this.clock = new Clock(this.replica);
    /** key -> { v: value, s: stamp, d: deleted } */
    this.entries = new Map();
    /** How many changes this copy has seen (a version for those who cache reads). */
    this.changes = 0;
    this.listeners = new Map();
    this.supersedeListeners = new Set();
    this.presenceListeners = new Set();
    this.statusListeners = new Set();
    this.refusedListeners = new Set();
    this.peers = new Map();
    this.status = "connecting";
    this.id = null;
    this.color = null;
    this.socket = null;
    this.attempt = 0;
    this.closed = false;
    this.outbox = new Map();
    this.tokens = this.options.sendBurst;
    this.refilled = performance.now();
    this.flushTimer = null;
    this.saveTimer = null;
    this.reconnectTimer = null;
    this.liveWaiters = [];
    this.snapshotParts = null;
    this.cacheKey = this.options.cacheKey || "aether:" + url;
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

  /** Sets `key` to `value` (any JSON value) here at once, and sends it. */
  set(key, value) {
    this.checkKey(key);
    const text = JSON.stringify(value === undefined ? null : value);
    if (encoder.encode(text).length > this.options.maxValueBytes) {
      throw new RangeError(`a value of more than ${this.options.maxValueBytes} bytes for ${JSON.stringify(key)}`);
    }
    const stamp = this.clock.now();
    this.apply(key, { v: JSON.parse(text), s: stamp, d: false }, false);
    this.queue(key, `{"type":"set","key":${JSON.stringify(key)},"value":${text},"stamp":"${stamp}"}`);
    return stamp;
  }

  /** Deletes `key` here at once (a tombstone), and sends it. */
  delete(key) {
    this.checkKey(key);
    const stamp = this.clock.now();
    this.apply(key, { v: null, s: stamp, d: true }, false);
    this.queue(key, JSON.stringify({ type: "delete", key, stamp }));
    return stamp;
  }

  checkKey(key) {
    if (typeof key !== "string" || key.length === 0) {
      throw new TypeError("a key is a non-empty string");
    }
    if (encoder.encode(key).length > this.options.maxKeyBytes) {
      throw new RangeError(`a key of more than ${this.options.maxKeyBytes} bytes`);
    }
  }

  // ---- listening ---------------------------------------------------------

  /**
   * Calls `callback(value, old, key)` on every change of `key` (`"*"`: any
   * key), local or remote; `value` is `undefined` once deleted. Returns a
   * function that stops it.
   */
  on(key, callback) {
    if (!this.listeners.has(key)) this.listeners.set(key, new Set());
    this.listeners.get(key).add(callback);
    return () => this.listeners.get(key)?.delete(callback);
  }

  /** Calls `callback({ key, mine, by })` when a write of this page lost to a higher stamp. */
  onSupersede(callback) {
    this.supersedeListeners.add(callback);
    return () => this.supersedeListeners.delete(callback);
  }

  /** Calls `callback({ key, reason })` when the gateway refused a write of this page. */
  onRefused(callback) {
    this.refusedListeners.add(callback);
    return () => this.refusedListeners.delete(callback);
  }

  /** Calls `callback(status)`: "connecting", "live", "offline", "unauthorized", "closed". */
  onStatus(callback) {
    this.statusListeners.add(callback);
    return () => this.statusListeners.delete(callback);
  }

  /** Resolves once the page is live (the map came from the gateway). */
  whenLive() {
    if (this.status === "live") return Promise.resolve();
    return new Promise((resolve) => this.liveWaiters.push(resolve));
  }

  // ---- presence ----------------------------------------------------------

  /** Shows this page's cursor to the map's other pages (not kept). */
  setPresence(x, y) {
    const text = JSON.stringify({ type: "presence", x: Math.round(x) | 0, y: Math.round(y) | 0 });
    if (this.status === "live") this.queue("\u0000presence", text);
  }

  /** The other pages' cursors: id -> { color, x, y }. */
  presence() {
    return new Map(this.peers);
  }

  /** Calls `callback(peers)` whenever a cursor moves, comes or goes. */
  onPresence(callback) {
    this.presenceListeners.add(callback);
    return () => this.presenceListeners.delete(callback);
  }

  /** Closes the connection for good (the cache is kept). */
  close() {
    this.closed = true;
    clearTimeout(this.reconnectTimer);
    this.saveNow();
    globalThis.removeEventListener?.("pagehide", this.onPageHide);
    this.socket?.close(1000, "closed");
    this.setStatus("closed");
  }

  // ---- the connection ----------------------------------------------------

  connect() {
    if (this.closed) return;
    this.setStatus(this.attempt === 0 ? "connecting" : "offline");
    let socket;
    try {
      socket = new this.options.WebSocket(this.url);
    } catch (error) {
      this.reconnect();
      return;
    }
    this.socket = socket;
    socket.onopen = () => {
      socket.send(JSON.stringify({ type: "auth", token: this.options.token, replica: this.replica }));
    };
    socket.onmessage = (event) => {
      let message;
      try {
        message = JSON.parse(event.data);
      } catch {
        return;
      }
      this.receive(message);
    };
    socket.onclose = (event) => {
      if (this.socket !== socket) return;
      this.socket = null;
      this.snapshotParts = null;
      this.peers.clear();
      this.firePresence();
      if (event.code === 1008 && event.reason === "unauthorized") {
        this.setStatus("unauthorized");
        return;
      }
      if (event.code === 1008 && event.reason === "replica_in_use") {
        // Another open page holds this id: take a new one, at once. Writes
        // stamped with the old one are sent again after the snapshot.
        this.replica = randomReplica();
        this.clock.replica = this.replica;
        this.connect();
        return;
      }
      this.reconnect();
    };
    socket.onerror = () => {};
  }

  reconnect() {
    if (this.closed) return;
    this.setStatus("offline");
    const base = Math.min(this.options.maxBackoffMs, this.options.backoffMs * 2 ** this.attempt);
    const delay = base * (0.8 + 0.4 * Math.random());
    this.attempt += 1;
    this.reconnectTimer = setTimeout(() => this.connect(), delay);
  }

  receive(message) {
    switch (message.type) {
      case "hello": {
        this.id = message.id;
        this.color = message.color;
        const gatewayMs = Number(BigInt("0x" + message.now.slice(0, 16)) / 1000000n);
        this.clock.offsetMs = gatewayMs - (performance.timeOrigin + performance.now());
        break;
      }
      case "snapshot-part":
        // A large map comes in parts; the snapshot that follows ends it.
        this.snapshotParts = Object.assign(this.snapshotParts || {}, message.entries);
        break;
      case "snapshot": {
        const theirs = Object.assign(this.snapshotParts || {}, message.entries);
        this.snapshotParts = null;
        for (const [key, e] of Object.entries(theirs)) {
          this.apply(key, { v: e.deleted ? null : e.value, s: e.stamp, d: !!e.deleted }, true);
        }
        this.attempt = 0;
        this.setStatus("live");
        // What this page holds above the gateway's: its own writes made
        // offline (or not yet sent), sent again.
        for (const [key, e] of this.entries) {
          const held = theirs[key];
          if (!held || held.stamp < e.s) {
            this.queue(key, e.d
              ? JSON.stringify({ type: "delete", key, stamp: e.s })
              : `{"type":"set","key":${JSON.stringify(key)},"value":${JSON.stringify(e.v)},"stamp":"${e.s}"}`);
          }
        }
        this.liveWaiters.splice(0).forEach((resolve) => resolve());
        break;
      }
      case "set":
        this.apply(message.key, { v: message.value, s: message.stamp, d: false }, true);
        break;
      case "delete":
        this.apply(message.key, { v: null, s: message.stamp, d: true }, true);
        break;
      case "refused": {
        // The gateway did not take this page's write: forget it here; the
        // gateway's entry, if any, follows.
        const old = this.entries.get(message.key);
        if (old && old.s.endsWith(this.replica)) {
          this.entries.delete(message.key);
          this.fire(message.key, undefined, old.d ? undefined : old.v);
          this.scheduleSave();
        }
        this.refusedListeners.forEach((cb) => cb({ key: message.key, reason: message.reason }));
        break;
      }
      case "presence":
        this.peers.set(message.id, { color: message.color, x: message.x, y: message.y });
        this.firePresence();
        break;
      case "presence-leave":
        this.peers.delete(message.id);
        this.firePresence();
        break;
      default:
        break;
    }
  }

  /**
   * Merges one entry: the higher stamp wins. Equal stamps with different
   * values (only a forged replica id makes them) settle on the gateway's:
   * its replica chose by the rule every replica follows.
   */
  apply(key, entry, remote) {
    const held = this.entries.get(key);
    if (held && held.s > entry.s) return false;
    if (held && held.s === entry.s && (!remote || sameEntry(held, entry))) return false;
    this.clock.observe(entry.s);
    this.entries.set(key, entry);
    if (remote && held && held.s.endsWith(this.replica)) {
      const by = { value: entry.d ? undefined : entry.v, stamp: entry.s };
      this.supersedeListeners.forEach((cb) => cb({ key, mine: held.s, by }));
    }
    const old = held && !held.d ? held.v : undefined;
    this.fire(key, entry.d ? undefined : entry.v, old);
    this.scheduleSave();
    return true;
  }

  fire(key, value, old) {
    this.changes += 1;
    for (const name of [key, "*"]) {
      this.listeners.get(name)?.forEach((cb) => {
        try {
          cb(value === undefined ? undefined : jsonCopy(value), old, key);
        } catch (error) {
          console.error(error);
        }
      });
    }
  }

  firePresence() {
    const peers = this.presence();
    this.presenceListeners.forEach((cb) => cb(peers));
  }

  setStatus(status) {
    if (this.status === status) return;
    this.status = status;
    this.statusListeners.forEach((cb) => cb(status));
  }

  // ---- sending, paced under the gateway's rate limit ---------------------

  queue(slot, text) {
    if (this.status !== "live") return; // sent by the snapshot's diff
    this.outbox.delete(slot);
    this.outbox.set(slot, text);
    this.flush();
  }

  flush() {
    const now = performance.now();
    const { sendPerSecond, sendBurst } = this.options;
    this.tokens = Math.min(sendBurst, this.tokens + ((now - this.refilled) / 1000) * sendPerSecond);
    this.refilled = now;
    while (this.tokens >= 1 && this.outbox.size > 0 && this.socket?.readyState === 1) {
      const [slot, text] = this.outbox.entries().next().value;
      this.outbox.delete(slot);
      this.socket.send(text);
      this.tokens -= 1;
    }
    if (this.outbox.size > 0 && this.flushTimer === null) {
      const wait = Math.max(1, ((1 - this.tokens) / sendPerSecond) * 1000);
      this.flushTimer = setTimeout(() => {
        this.flushTimer = null;
        this.flush();
      }, wait);
    }
  }

  // ---- the offline cache -------------------------------------------------

  loadCache() {
    const storage = this.options.cache ? this.options.storage : null;
    if (!storage) return;
    let cached;
    try {
      cached = JSON.parse(storage.getItem(this.cacheKey) || "null");
    } catch {
      cached = null;
    }
    if (!cached || typeof cached !== "object") return;
    if (typeof cached.offsetMs === "number") this.clock.offsetMs = cached.offsetMs;
    for (const [key, e] of Object.entries(cached.entries || {})) {
      if (Array.isArray(e) && typeof e[1] === "string" && e[1].length === 42) {
        this.apply(key, { v: e[0], s: e[1], d: e[2] === 1 }, false);
      }
    }
  }

  scheduleSave() {
    if (!this.options.cache || this.saveTimer !== null) return;
    this.saveTimer = setTimeout(() => this.saveNow(), 50);
  }

  /** Writes the cache, merged with what other tabs wrote there. */
  saveNow() {
    clearTimeout(this.saveTimer);
    this.saveTimer = null;
    const storage = this.options.cache ? this.options.storage : null;
    if (!storage) return;
    let cached = null;
    try {
      cached = JSON.parse(storage.getItem(this.cacheKey) || "null");
    } catch {
      cached = null;
    }
    const entries = cached && typeof cached.entries === "object" ? cached.entries : {};
    for (const [key, e] of this.entries) {
      const held = entries[key];
      if (!Array.isArray(held) || !(held[1] >= e.s)) {
        entries[key] = e.d ? [null, e.s, 1] : [e.v, e.s];
      }
    }
    try {
      storage.setItem(this.cacheKey, JSON.stringify({ offsetMs: this.clock.offsetMs, entries }));
    } catch (error) {
      console.warn("aether: the offline cache could not be written", error);
    }
  }
}

export default Aether;
