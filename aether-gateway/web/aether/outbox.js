// The outbox: what a page sends the gateway, paced under the gateway's
// rate limits. A slot per key holds the latest write of it (an earlier one
// not sent yet is replaced), beside a page's presence and a `sync`; writes
// leave many a message when the gateway tells a write rate, one a message
// when it does not, and every SYNC_EVERY writes a `sync` asks the gateway
// to confirm those sent before it. A lost connection empties it: what was
// not confirmed goes again from the next snapshot's diff.

/** Slots that are not keys (a key is never empty): a presence change, a `sync`. */
const PRESENCE = "\u0000presence";
const SYNC = "\u0000sync";

/** Writes sent between two syncs at most, while more wait to be sent. */
const SYNC_EVERY = 64;
/** Bytes of a `writes` message left for what surrounds its writes. */
const WRITES_FRAME = 64;

const encoder = new TextEncoder();

export class Outbox {
  /**
   * `options`: the client's, whose `sendPerSecond` and `sendBurst` are the
   * message rate; `link`: `send(text)`, `open()` (a connection takes
   * messages), `live()` (writes are sent, not left to the snapshot's
   * diff), `holding()` (a transaction is open: writes wait).
   */
  constructor(options, link) {
    this.options = options;
    this.link = link;
    /** slot -> { text, stamp, piece }: `piece` is a write's part of a `writes`. */
    this.slots = new Map();
    this.tokens = options.sendBurst;
    /**
     * Whether the gateway takes many writes a message (its `hello` tells
     * its write rate), and the pace it allows: writes wait to leave
     * together, a message of many within `maxMessageBytes`.
     */
    this.batching = false;
    this.maxMessageBytes = 65536;
    this.writesPerSecond = 1;
    this.writeBurst = 1;
    this.writeTokens = 0;
    this.refilled = performance.now();
    this.flushQueued = false;
    this.flushTimer = null;
    /** [key, stamp] of writes sent since the last `sync`. */
    this.sentSinceSync = [];
    /** sync id -> the [key, stamp] it confirms. */
    this.syncs = new Map();
    this.nextSync = 1;
    /** Whether a sync goes before the next queued write. */
    this.syncDue = false;
    /** sync id -> when it was sent (performance.now()): a clock reading. */
    this.syncSentAt = new Map();
  }

  /** Queues the write `entry` of `key`. */
  queue(key, entry) {
    const prev = entry.p === undefined ? "" : `,"prev":${JSON.stringify(entry.p)}`;
    const name = JSON.stringify(key);
    const body = entry.d
      ? `"stamp":"${entry.s}"${prev}}`
      : `"value":${JSON.stringify(entry.v)},"stamp":"${entry.s}"${prev}}`;
    const text = `{"type":"${entry.d ? "delete" : "set"}","key":${name},${body}`;
    // As one of a `writes` message's writes.
    const piece = `{"key":${name},${entry.d ? '"deleted":true,' : ""}${body}`;
    this.queueText(key, text, entry.s, piece);
  }

  /** Queues `message` (a presence change), merged with one not sent yet. */
  presence(message) {
    const waiting = this.slots.get(PRESENCE);
    const merged = { ...(waiting ? JSON.parse(waiting.text) : {}), ...message, type: "presence" };
    this.queueText(PRESENCE, JSON.stringify(merged));
  }

  /** A sync after what is queued (one only). */
  syncSoon() {
    if (!this.slots.has(SYNC)) this.slots.set(SYNC, {});
  }

  queueText(slot, text, stamp, piece) {
    if (!this.link.live()) return; // sent by the snapshot's diff
    this.slots.delete(slot);
    this.slots.set(slot, { text, stamp, piece });
    this.flushSoon();
  }

  /**
   * A flush once the running task's writes are made (a loop of `set`s
   * leaves as few messages), or once the last transaction ends.
   */
  flushSoon() {
    if (this.flushQueued || this.link.holding()) return;
    this.flushQueued = true;
    queueMicrotask(() => {
      this.flushQueued = false;
      if (!this.link.holding()) this.flush();
    });
  }

  /**
   * The writes waiting first, as many as one `writes` message holds (and
   * the write rate allows): their slots and the message's text, or null
   * when the rate allows none now.
   */
  takeWrites() {
    const slots = [];
    const pieces = [];
    let bytes = WRITES_FRAME;
    const most = Math.min(this.writeTokens, this.writeBurst);
    for (const [slot, item] of this.slots) {
      if (item.piece === undefined) continue; // presence, sync
      if (slots.length >= most) break;
      const size = encoder.encode(item.piece).length + 1;
      if (slots.length > 0 && bytes + size > this.maxMessageBytes) break;
      bytes += size;
      slots.push(slot);
      pieces.push(item.piece);
    }
    if (slots.length === 0) return null;
    const text = slots.length === 1
      ? this.slots.get(slots[0]).text
      : `{"type":"writes","writes":[${pieces.join(",")}]}`;
    return { slots, text };
  }

  /** Sends what the rates allow now; a timer sends the rest. */
  flush() {
    const now = performance.now();
    const { sendPerSecond, sendBurst } = this.options;
    this.tokens = Math.min(sendBurst, this.tokens + ((now - this.refilled) / 1000) * sendPerSecond);
    this.writeTokens = Math.min(this.writeBurst, this.writeTokens + ((now - this.refilled) / 1000) * this.writesPerSecond);
    this.refilled = now;
    while (this.tokens >= 1 && (this.slots.size > 0 || this.syncDue) && this.link.open()) {
      if (this.syncDue) {
        // Every SYNC_EVERY writes, a sync ahead of the writes still
        // queued: pendingWrites counts down as the gateway takes them.
        this.syncDue = false;
        this.slots.delete(SYNC);
        this.sendSync();
        this.tokens -= 1;
        continue;
      }
      const [slot, { text, stamp, piece }] = this.slots.entries().next().value;
      if (this.batching && piece !== undefined) {
        // Many writes a message, in the order made.
        const taken = this.takeWrites();
        if (taken === null) break; // the write rate: the timer below
        this.link.send(taken.text);
        for (const key of taken.slots) {
          this.sentSinceSync.push([key, this.slots.get(key).stamp]);
          this.slots.delete(key);
        }
        this.writeTokens -= taken.slots.length;
        this.tokens -= 1;
        if (this.sentSinceSync.length >= SYNC_EVERY) this.syncDue = true;
        else this.syncSoon();
        continue;
      }
      this.slots.delete(slot);
      if (slot === SYNC) {
        this.sendSync();
      } else {
        this.link.send(text);
        if (slot !== PRESENCE) {
          this.sentSinceSync.push([slot, stamp]);
          // A sync after the writes sent: its answer confirms them.
          if (this.sentSinceSync.length >= SYNC_EVERY) this.syncDue = true;
          else this.syncSoon();
        }
      }
      this.tokens -= 1;
    }
    // (No connection: the outbox goes again from the next snapshot's diff.)
    if ((this.slots.size > 0 || this.syncDue) && this.flushTimer === null && this.link.open()) {
      const forWrites = this.batching ? ((1 - this.writeTokens) / this.writesPerSecond) * 1000 : 0;
      const wait = Math.max(1, ((1 - this.tokens) / sendPerSecond) * 1000, forWrites);
      this.flushTimer = setTimeout(() => {
        this.flushTimer = null;
        this.flush();
      }, wait);
    }
  }

  sendSync() {
    const id = this.nextSync++;
    this.syncs.set(id, this.sentSinceSync);
    this.syncSentAt.set(id, performance.now());
    this.sentSinceSync = [];
    this.link.send(`{"type":"sync","id":${id}}`);
  }

  /**
   * The gateway answered sync `id`: it took every message before it.
   * When that sync was sent (undefined if not known), and the [key, stamp]
   * of the writes it and any earlier sync confirm.
   */
  synced(id) {
    const sentAt = this.syncSentAt.get(id);
    for (const sent of [...this.syncSentAt.keys()]) if (sent <= id) this.syncSentAt.delete(sent);
    const confirmed = [];
    for (const [sync, writes] of [...this.syncs]) {
      if (sync > id) break;
      this.syncs.delete(sync);
      confirmed.push(...writes);
    }
    return { sentAt, confirmed };
  }

  /**
   * The gateway's rates, as its `hello` tells them: the page sends at half
   * of each (its own clock and the gateway's see the same messages a
   * little apart), many writes a message when the gateway tells a write
   * rate, one a message when it does not.
   */
  takePace(limits) {
    const told = (n) => Number.isSafeInteger(n) && n > 0;
    this.batching = false;
    if (limits == null || typeof limits !== "object") return;
    if (told(limits.messages_per_s)) this.options.sendPerSecond = Math.min(this.options.sendPerSecond, Math.max(1, limits.messages_per_s / 2));
    if (told(limits.burst)) this.options.sendBurst = Math.min(this.options.sendBurst, Math.max(1, Math.floor(limits.burst / 2)));
    if (told(limits.max_message_bytes)) this.maxMessageBytes = limits.max_message_bytes;
    if (told(limits.writes_per_s) && told(limits.write_burst)) {
      this.batching = true;
      this.writesPerSecond = Math.max(1, limits.writes_per_s / 2);
      this.writeBurst = Math.max(1, Math.floor(limits.write_burst / 2));
      this.writeTokens = this.writeBurst;
    }
  }

  /** Sent faster than the gateway takes: half the pace from now on. */
  slowDown() {
    this.options.sendPerSecond = Math.max(1, this.options.sendPerSecond / 2);
    this.options.sendBurst = Math.max(1, Math.floor(this.options.sendBurst / 2));
    this.tokens = 0;
    this.writesPerSecond = Math.max(1, this.writesPerSecond / 2);
    this.writeBurst = Math.max(1, Math.floor(this.writeBurst / 2));
  }

  /** The connection is gone: nothing queued or sent is waited for. */
  lost() {
    this.syncs.clear();
    this.sentSinceSync = [];
    this.syncDue = false;
    this.slots.clear(); // sent again from the snapshot's diff
  }

  /** The client closed: no timer left. */
  close() {
    clearTimeout(this.flushTimer);
  }
}
