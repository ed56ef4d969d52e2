// Types of aether.js, the browser client of the gateway's bridge.

/** Any value JSON can carry. (NaN and the infinities are numbers to TypeScript: `set` refuses them when run.) */
export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

/** Where the connection is; the last three are ends. */
export type Status = "connecting" | "live" | "offline" | "unauthorized" | "unknown_map" | "closed";

/**
 * Why the status changed: for `offline`, `unreachable`, `connection_lost`,
 * `rate_limited`, `stopping`, `capacity`, `evicted`, `slow`, `too_large`,
 * `deadline`, `malformed` (or another the gateway gives); for the ends,
 * `unauthorized` and `unknown_map`; else null.
 */
export type StatusReason = string | null;

/** A stamp: `<16 hex physical ns>-<8 hex logical>-<16 hex replica>`; texts sort as stamps. */
export type Stamp = string;

/** What the client throws, and its promises reject with. */
export declare class AetherError extends Error {
  readonly name: "AetherError";
  readonly reason: "unauthorized" | "unknown_map" | "closed" | "storage_full" | "not_owner" | "forbidden";
}

/** Throws the TypeError (or RangeError) `set` would for `value` under `key`. */
export declare function checkJson(key: string, value: unknown): void;

export interface AetherOptions {
  /** The bridge token (`[gateway.bridge] token`). Required. */
  token: string;
  /** Keep the map in `storage` so a reload renders while the gateway is down. Default true. */
  cache?: boolean;
  /** The storage key of the cache, before the token's fingerprint. Default `"aether:" + url`. */
  cacheKey?: string;
  /** Where the cache lives. Default `localStorage`. */
  storage?: Storage;
  /** Longest key, in UTF-8 bytes. The gateway's `hello` tells the map's own (kept in the cache for the next load), which this may lower, not raise. Before any `hello`: 256. */
  maxKeyBytes?: number;
  /** Largest value, as JSON text in UTF-8 bytes. As `maxKeyBytes`, from the gateway's `hello`; before any: 32768. */
  maxValueBytes?: number;
  /** Largest presence value, as JSON text in UTF-8 bytes, from the gateway's `hello`; before any: 3968. */
  maxPresenceBytes?: number;
  /** Messages sent a second at most (under the gateway's rate limit; halved at each `rate_limited`). Default 50. */
  sendPerSecond?: number;
  /** Messages sent at once above that rate. Default 100. */
  sendBurst?: number;
  /** First reconnect delay, doubled each attempt (with jitter). Default 250. */
  backoffMs?: number;
  /** Longest reconnect delay. Default 10000. */
  maxBackoffMs?: number;
  /** The WebSocket class (for tests or other runtimes). Default `globalThis.WebSocket`. */
  WebSocket?: typeof WebSocket;
}

/**
 * What another page (or another replica's presence slot) shows of itself:
 * the color the gateway gave it, its cursor once it moved, its presence
 * value once it set one.
 */
export interface Peer<P extends Json = Json> {
  color: string;
  x?: number;
  y?: number;
  value?: P;
}

/** A page's presence as `useOthers` lists it: with its id (`<node>/<slot>` for another replica's). */
export interface Other<P extends Json = Json> extends Peer<P> {
  id: string;
}

/** This page's own presence, as `myPresence()` gives it. */
export interface MyPresence<P extends Json = Json> {
  id: string | null;
  color: string | null;
  x?: number;
  y?: number;
  value?: P;
}

/** A change of this page's presence: fields left out stay; `value: null` clears it. */
export interface UpdatePresence<P extends Json = Json> {
  x?: number;
  y?: number;
  value?: P | null;
}

/** A write of this page that lost a race to a higher stamp. */
export interface Superseded<T extends Json = Json> {
  key: string;
  mine: Stamp;
  by: { value: T | undefined; stamp: Stamp };
  /** true: its writer had not seen this page's write; null: not known (a service's write, or another gateway's page). */
  concurrent: true | null;
}

/** A write of this page that was not taken. */
export interface Refused {
  key: string;
  reason: "forbidden" | "invalid_name" | "invalid_key" | "too_large" | "not_owner" | "payload" | "config" | "closed" | "stamp" | "full" | "not_held" | "unauthorized" | "unknown_map" | "malformed";
}

/** One replica of a replicated map, through the gateway's bridge. */
export declare class Aether {
  /** @param url `ws://host:port/bridge/<map>` (`wss://` over TLS). */
  constructor(url: string, options: AetherOptions);
  readonly url: string;
  /** This page's replica id: random per page load, and a new one if another open page holds it. */
  readonly replica: string;
  /** Where the connection is. */
  readonly status: Status;
  /** Why it is there. */
  readonly statusReason: StatusReason;
  /** How many changes this page's copy has seen: a version for caching reads. */
  readonly changes: number;
  /** Keys this page wrote that the gateway has not confirmed yet. */
  readonly pendingWrites: number;
  /** This page's presence id and color, once live. */
  readonly id: string | null;
  readonly color: string | null;

  get<T extends Json = Json>(key: string): T | undefined;
  has(key: string): boolean;
  keys(): string[];
  items<T extends Json = Json>(): [string, T][];
  stampOf(key: string): Stamp | undefined;

  /**
   * Sets `key` here at once, keeps it in the cache and sends it. Throws,
   * having written nothing: TypeError (not JSON), RangeError (over a cap),
   * AetherError (ended, `storage_full`, or `not_owner` for a `node/...`
   * key: a page writes shared keys only).
   */
  set<T extends Json>(key: string, value: T): Stamp;
  /** Deletes `key` here at once (a tombstone), keeps it and sends it. */
  delete(key: string): Stamp;
  /**
   * Writes many keys as one step (a value `undefined` deletes its key):
   * every key and value is checked first, and one `set` would refuse
   * throws, having written nothing (a cache that fills midway throws
   * `storage_full` with the writes before it made). They leave together,
   * and other pages apply them together. Returns their stamps, in order.
   */
  setMany(entries: Record<string, Json | undefined> | Iterable<readonly [string, Json | undefined]>): Stamp[];
  /**
   * Runs `fn` (synchronously: writes after an `await` are not of the
   * step); its writes are one step: this page's listeners are told once
   * it returns, and the writes leave together. Returns what `fn` returns.
   * Nothing is rolled back: writes made before a throw stay.
   */
  transact<R>(fn: () => R): R;

  /** Every change of `key` (`"*"`: any key; `"todo/*"`: every key under `todo/`); returns a function that stops it. */
  on<T extends Json = Json>(key: string, callback: (value: T | undefined, old: T | undefined, key: string) => void): () => void;
  onSupersede<T extends Json = Json>(callback: (superseded: Superseded<T>) => void): () => void;
  onRefused(callback: (refused: Refused) => void): () => void;
  onStatus(callback: (status: Status, reason: StatusReason) => void): () => void;
  onPendingWrites(callback: (count: number) => void): () => void;
  /** A change this page could not keep in its cache (`storage_full`). */
  onError(callback: (error: AetherError) => void): () => void;
  /** Resolves once the map came from the gateway; rejects (AetherError) on an end. */
  whenLive(): Promise<void>;
  /** Resolves once every write made so far reached the gateway; rejects (AetherError) on an end. */
  waitForPendingWrites(): Promise<void>;

  /** Shows this page's cursor to the map's other pages (ephemeral): `updatePresence({ x, y })`. */
  setPresence(x: number, y: number): void;
  /**
   * Changes what this page shows every other page and replica of the map
   * while it is open (never kept). Throws, having changed nothing:
   * TypeError (not JSON), RangeError (a value over `maxPresenceBytes`).
   */
  updatePresence<P extends Json = Json>(patch: UpdatePresence<P>): void;
  myPresence<P extends Json = Json>(): MyPresence<P>;
  onMyPresence<P extends Json = Json>(callback: (mine: MyPresence<P>) => void): () => void;
  /** The other pages and replicas, by id. */
  presence<P extends Json = Json>(): Map<string, Peer<P>>;
  onPresence<P extends Json = Json>(callback: (peers: Map<string, Peer<P>>) => void): () => void;

  /** Closes the connection for good; the cache is kept, with writes not sent yet. */
  close(): void;
}

export default Aether;
