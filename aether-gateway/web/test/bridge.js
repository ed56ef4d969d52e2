// An in-memory stand-in for the gateway's bridge, speaking its protocol
// (docs/guide/browser.md) to clients given its `WebSocket` class: `auth`,
// then `hello` and `snapshot`; writes merged by stamps and sent to the
// other sockets with the writer's `prev`; `sync` answered with `synced`
// after the writes before it; a write to a `node/...` key refused
// (`not_owner`); a wrong token closed with 1008 `unauthorized`, a map
// not in `maps` (when given) with 1008 `unknown_map`; past the rate limit, 1008
// `rate_limited`; `writes` (many writes a message) counted against its write
// rate, and a group of writes sent on to the others as one `changes`. `down()` makes every connection fail as a stopped
// gateway's would; `up()` lets them in again.

import { Aether } from "../aether.js";

/** A page of the map `board` on `bridge`, with the token "secret" and quick reconnects. */
export function client(bridge, storage = new MemoryStorage(), extra = {}) {
  return new Aether("ws://gateway.test/bridge/board", {
    token: "secret",
    WebSocket: bridge.WebSocket,
    storage,
    backoffMs: 5,
    maxBackoffMs: 20,
    ...extra,
  });
}

export function stamp(physicalNs, logical, replica) {
  return BigInt(physicalNs).toString(16).padStart(16, "0") + "-" +
    logical.toString(16).padStart(8, "0") + "-" + replica;
}

export class Bridge {
  /** `legacy`: a gateway that tells no rates and takes one write a message. */
  constructor({ token = "secret", perSecond = 1000, burst = 1000, maps = null, legacy = false } = {}) {
    this.token = token;
    this.maps = maps;
    /** Whether `sync` is answered (a test holds the answers back). */
    this.answerSyncs = true;
    /** The bus's time minus this machine's clock, and how long a `hello` takes to arrive after it is stamped. */
    this.offsetMs = 0;
    this.helloDelayMs = 0;
    /** The map's limits and the rates, as `hello` tells them (the gateway's defaults). */
    this.limits = {
      max_key_bytes: 256,
      max_value_bytes: 32 * 1024,
      max_drift_ms: 500,
      max_message_bytes: 65536,
      messages_per_s: perSecond,
      burst,
      writes_per_s: 5000,
      write_burst: 20000,
      max_presence_bytes: 4096 - 128,
    };
    /** Pages given an id so far. */
    this.pages = 0;
    /** What the page's token writes, as `hello` tells it (null: not told). */
    this.rights = { read_only: false, prefixes: null };
    if (legacy) {
      for (const rate of ["max_message_bytes", "messages_per_s", "burst", "writes_per_s", "write_burst", "max_presence_bytes"]) delete this.limits[rate];
    }
    this.legacy = legacy;
    this.perSecond = perSecond;
    this.burst = burst;
    this.isUp = true;
    /** key -> the reason the gateway refuses a write of it with (as a full map or a cap would). */
    this.refusing = new Map();
    /** key -> { value, stamp, deleted } */
    this.entries = new Map();
    this.sockets = new Set();
    this.attempts = 0;
    /** Every message a client sent, with when it came. */
    this.received = [];
    const bridge = this;
    this.WebSocket = class FakeSocket {
      constructor(url) {
        this.url = url;
        this.readyState = 0;
        this.tokens = bridge.burst;
        this.refilled = Date.now();
        bridge.attempts += 1;
        setTimeout(() => {
          if (this.readyState === 3) return; // closed while connecting: never opens
          if (!bridge.isUp) {
            this.readyState = 3;
            this.onclose?.({ code: 1006, reason: "" });
            return;
          }
          this.readyState = 1;
          bridge.sockets.add(this);
          this.onopen?.();
          const map = new URL(url).pathname.replace(/^\/bridge\//, "");
          if (bridge.maps && !bridge.maps.includes(map)) this.close(1008, "unknown_map");
        }, 1);
      }
      send(text) {
        if (this.readyState !== 1) throw new Error("not open");
        const message = JSON.parse(text);
        setTimeout(() => bridge.handle(this, message), 0);
      }
      close(code = 1000, reason = "") {
        if (this.readyState === 3) return;
        this.readyState = 3;
        bridge.sockets.delete(this);
        if (this.shown) bridge.others(this, { type: "presence-leave", id: this.id });
        setTimeout(() => this.onclose?.({ code, reason }), 0);
      }
      deliver(message) {
        if (this.readyState === 1) this.onmessage?.({ data: JSON.stringify(message) });
      }
    };
  }

  /** The bus's time as a stamp's text. */
  now() {
    return stamp(BigInt(Math.round((Date.now() + this.offsetMs) * 1000)) * 1000n, 0, "0000000000000001");
  }

  /** Delivers `message` to every page but `from`. */
  others(from, message) {
    for (const socket of this.sockets) if (socket !== from && socket.authed) socket.deliver(message);
  }

  down() {
    this.isUp = false;
    for (const socket of [...this.sockets]) socket.close(1006, "");
  }

  up() {
    this.isUp = true;
  }

  /** A write made elsewhere (a service's: its `prev` is not known). */
  write(key, value, stampText) {
    this.merge(key, { value, stamp: stampText, deleted: false }, null);
  }

  static change(key, e) {
    const message = e.deleted
      ? { type: "delete", key, stamp: e.stamp }
      : { type: "set", key, value: e.value, stamp: e.stamp };
    if (e.prev !== undefined) message.prev = e.prev;
    return message;
  }

  merge(key, entry, from, group = null) {
    const held = this.entries.get(key);
    if (held && held.stamp >= entry.stamp) {
      from?.deliver(Bridge.change(key, held));
      return;
    }
    this.entries.set(key, entry);
    if (group !== null) {
      group.push(Bridge.change(key, entry));
      return;
    }
    for (const socket of this.sockets) {
      if (socket !== from && socket.authed) socket.deliver(Bridge.change(key, entry));
    }
  }

  handle(socket, message) {
    if (socket.readyState !== 1) return;
    this.received.push({ at: Date.now(), message });
    const now = Date.now();
    socket.tokens = Math.min(this.burst, socket.tokens + ((now - socket.refilled) / 1000) * this.perSecond);
    socket.refilled = now;
    if (socket.tokens < 1) {
      socket.close(1008, "rate_limited");
      return;
    }
    socket.tokens -= 1;
    if (!socket.authed) {
      if (message.type !== "auth" || message.token !== this.token) {
        socket.close(1008, "unauthorized");
        return;
      }
      socket.authed = true;
      this.pages += 1;
      socket.id = `p${this.pages}`;
      const hello = { type: "hello", id: socket.id, color: "#123456", now: this.now(), limits: this.limits };
      if (this.rights !== null && !this.legacy) hello.rights = this.rights;
      const entries = {};
      for (const [key, e] of this.entries) {
        entries[key] = e.deleted ? { deleted: true, stamp: e.stamp } : { value: e.value, stamp: e.stamp };
      }
      const greet = () => {
        socket.deliver(hello);
        socket.deliver({ type: "snapshot", entries });
        for (const other of this.sockets) {
          if (other !== socket && other.shown) socket.deliver({ type: "presence", id: other.id, color: "#123456", ...other.shown });
        }
      };
      if (this.helloDelayMs > 0) setTimeout(greet, this.helloDelayMs);
      else greet();
      return;
    }
    if (message.type === "presence") {
      // What the page shows: a field left out stays, a value null clears.
      const shown = (socket.shown ??= {});
      for (const axis of ["x", "y"]) if (message[axis] !== undefined) shown[axis] = message[axis];
      if (message.value === null) delete shown.value;
      else if (message.value !== undefined) shown.value = message.value;
      this.others(socket, { type: "presence", id: socket.id, color: "#123456", ...shown });
      return;
    }
    if (message.type === "sync") {
      if (this.answerSyncs) socket.deliver({ type: "synced", id: message.id, now: this.now() });
      return;
    }
    let writes;
    if (message.type === "set" || message.type === "delete") {
      writes = [{ ...message, deleted: message.type === "delete" }];
    } else if (message.type === "writes" && !this.legacy) {
      writes = message.writes;
    } else {
      if (message.type !== "presence") socket.close(1008, "malformed");
      return;
    }
    const { writes_per_s: rate, write_burst: most } = this.limits;
    if (rate !== undefined && most !== undefined) {
      const since = (now - (socket.writesRefilled ?? now)) / 1000;
      socket.writeTokens = Math.min(most, (socket.writeTokens ?? most) + since * rate);
      socket.writesRefilled = now;
      if (socket.writeTokens < writes.length) {
        socket.close(1008, "rate_limited: write rate limit");
        return;
      }
      socket.writeTokens -= writes.length;
    }
    // Changes of a group go on to the others together.
    const group = message.type === "writes" ? [] : null;
    for (const w of writes) {
      if (w.key.startsWith("node/")) {
        // As the gateway: a page writes shared keys only.
        socket.deliver({ type: "refused", key: w.key, reason: "not_owner" });
      } else if (this.refusing.has(w.key)) {
        socket.deliver({ type: "refused", key: w.key, reason: this.refusing.get(w.key) });
      } else {
        const entry = { value: w.deleted ? null : w.value, stamp: w.stamp, deleted: !!w.deleted, prev: w.prev };
        this.merge(w.key, entry, socket, group);
      }
    }
    if (group !== null && group.length > 0) {
      const changes = group.map(({ type, ...change }) => (type === "delete" ? { ...change, deleted: true } : change));
      for (const other of this.sockets) {
        if (other !== socket && other.authed) other.deliver({ type: "changes", changes });
      }
    }
  }
}

/** localStorage as the tabs of one browser share it; `quota` bytes of text at most (a full one throws as browsers do). */
export class MemoryStorage {
  constructor({ quota = Infinity } = {}) {
    this.items = new Map();
    this.quota = quota;
  }
  get length() {
    return this.items.size;
  }
  key(i) {
    return [...this.items.keys()][i] ?? null;
  }
  used() {
    let n = 0;
    for (const [k, v] of this.items) n += k.length + v.length;
    return n;
  }
  getItem(key) {
    return this.items.has(key) ? this.items.get(key) : null;
  }
  setItem(key, value) {
    const text = String(value);
    const grows = key.length + text.length - (this.items.has(key) ? key.length + this.items.get(key).length : 0);
    if (this.quota !== Infinity && this.used() + grows > this.quota) {
      const error = new Error("the quota has been exceeded");
      error.name = "QuotaExceededError";
      error.code = 22;
      throw error;
    }
    this.items.set(key, text);
  }
  removeItem(key) {
    this.items.delete(key);
  }
}

/** Waits until `check()` is true, or fails after `ms`. */
export async function until(check, ms = 3000, what = "the condition") {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
