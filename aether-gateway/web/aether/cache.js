// The offline cache: the map as this page last held it, in localStorage (or
// the storage given), an item per key, so a reload renders at once and
// writes made offline wait there. Items are named after the bridge's
// address and a fingerprint of the token, so a page with another token
// never reads this one's. Tabs of one map share the items and merge by
// stamps: a newer item is never overwritten.
//
// An entry's item: [value, stamp, 0, prev, unconfirmed] or, for a delete,
// [null, stamp, 1, prev, unconfirmed]; `prev` is the stamp the write
// replaced (null: none), `unconfirmed` 1 while no gateway confirmed it. The
// item named the cache itself holds { offsetMs, limits }: the clock's last
// offset from the bus and the map's limits as its last `hello` told them.

import { AetherError } from "./error.js";
import { checkJson } from "./json.js";
import { isStamp } from "./stamps.js";

/** A short fingerprint of a text (53 bits, not a secret's hash). */
function fingerprint(text) {
  let h1 = 0xdeadbeef;
  let h2 = 0x41c6ce57;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    h1 = Math.imul(h1 ^ c, 2654435761);
    h2 = Math.imul(h2 ^ c, 1597334677);
  }
  h1 = Math.imul(h1 ^ (h1 >>> 16), 2246822507) ^ Math.imul(h2 ^ (h2 >>> 13), 3266489909);
  h2 = Math.imul(h2 ^ (h2 >>> 16), 2246822507) ^ Math.imul(h1 ^ (h1 >>> 13), 3266489909);
  return (4294967296 * (2097151 & h2) + (h1 >>> 0)).toString(16);
}

function isQuotaError(error) {
  return error && (error.name === "QuotaExceededError" || error.name === "NS_ERROR_DOM_QUOTA_REACHED" ||
    error.code === 22 || error.code === 1014);
}

/** localStorage, if this page may use it. */
export function defaultStorage() {
  try {
    return globalThis.localStorage ?? null;
  } catch {
    return null; // storage disabled (a sandboxed frame, privacy settings)
  }
}

export class OfflineCache {
  /**
   * @param {Storage | null} storage where the items are kept (null: no cache)
   * @param {string} name the cache's own name (`cacheKey`, or the bridge's address)
   * @param {string} token the bridge's token
   */
  constructor(storage, name, token) {
    this.storage = storage;
    this.name = name + "#" + fingerprint(token);
  }

  itemOf(key) {
    return this.name + "\n" + key;
  }

  /** The names of this cache's storage items. */
  items() {
    const prefix = this.name + "\n";
    const items = [];
    for (let i = 0; i < this.storage.length; i++) {
      const name = this.storage.key(i);
      if (name !== null && (name === this.name || name.startsWith(prefix))) items.push(name);
    }
    return items;
  }

  /** An entry from its item's text; null if it is not one (a value JSON cannot carry, or nested too deep, is not). */
  static readItem(text) {
    let e;
    try {
      e = JSON.parse(text);
      if (Array.isArray(e) && e[2] !== 1) checkJson("", e[0]);
    } catch {
      return null;
    }
    if (!Array.isArray(e) || !isStamp(e[1])) return null;
    const p = e[3] === null || isStamp(e[3]) ? e[3] : undefined;
    return { v: e[2] === 1 ? null : e[0], s: e[1], d: e[2] === 1, p, u: e[4] === 1 };
  }

  /**
   * What the cache holds: its `meta` ({ offsetMs, limits }, or null) and
   * `entries`, [key, entry] each (entry null: an item that could not be
   * read). Throws if the storage cannot be read.
   */
  load() {
    if (!this.storage) return { meta: null, entries: [] };
    let meta = null;
    try {
      meta = JSON.parse(this.storage.getItem(this.name) || "null");
    } catch {
      // written again at the next save; the entries do not depend on it
    }
    const prefix = this.name + "\n";
    const entries = [];
    for (const name of this.items()) {
      if (name === this.name) continue;
      entries.push([name.slice(prefix.length), OfflineCache.readItem(this.storage.getItem(name))]);
    }
    return { meta, entries };
  }

  /**
   * Writes one entry's item, unless another tab wrote a newer one: whether
   * the item now holds it. Throws an AetherError (`storage_full`) when the
   * storage is full.
   */
  keep(key, entry) {
    const name = this.itemOf(key);
    const held = OfflineCache.readItem(this.storage.getItem(name));
    if (held && (held.s > entry.s || (held.s === entry.s && held.u === !!entry.u))) return;
    const u = entry.u ? 1 : 0;
    const text = JSON.stringify(entry.d ? [null, entry.s, 1, entry.p ?? null, u] : [entry.v, entry.s, 0, entry.p ?? null, u]);
    try {
      this.storage.setItem(name, text);
    } catch (error) {
      if (isQuotaError(error)) {
        throw new AetherError("storage_full", `the offline cache is full: ${JSON.stringify(key)} was not written (free space in localStorage, or make the client with cache: false)`);
      }
      throw error;
    }
  }

  /** Writes the cache's own item (throws what the storage throws). */
  keepMeta(meta) {
    this.storage.setItem(this.name, JSON.stringify(meta));
  }

  /**
   * Takes one key's item out; with `stamp`, only if the item holds that
   * write or an older one, or cannot be read (another tab may have written
   * a newer one since).
   */
  forget(key, stamp) {
    try {
      const name = this.itemOf(key);
      if (stamp !== undefined) {
        const held = OfflineCache.readItem(this.storage?.getItem(name) ?? "null");
        if (held && held.s > stamp) return;
      }
      this.storage?.removeItem(name);
    } catch {
      // nothing to keep
    }
  }

  /** Takes one key's item out if it still cannot be read (another tab may have written it since). */
  forgetUnreadable(key) {
    try {
      const text = this.storage?.getItem(this.itemOf(key));
      if (text != null && OfflineCache.readItem(text) === null) this.storage.removeItem(this.itemOf(key));
    } catch {
      // nothing to keep
    }
  }

  /** Takes every item of this cache out. */
  clear() {
    if (!this.storage) return;
    for (const item of this.items()) {
      try {
        this.storage.removeItem(item);
      } catch {
        // nothing to keep
      }
    }
  }
}
