// Types of aether.js, the browser client of the gateway's bridge.

/** Any value JSON can carry. */
export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

/** Where the connection is. */
export type Status = "connecting" | "live" | "offline" | "unauthorized" | "closed";

/** A stamp: `<16 hex physical ns>-<8 hex logical>-<16 hex replica>`; texts sort as stamps. */
export type Stamp = string;

export interface AetherOptions {
  /** The bridge token (`[gateway.bridge] token`). */
  token: string;
  /** Keep the map in `storage` so a reload renders while the gateway is down. Default true. */
  cache?: boolean;
  /** The storage key of the cache. Default `"aether:" + url`. */
  cacheKey?: string;
  /** Where the cache lives. Default `localStorage`. */
  storage?: Storage;
  /** Longest key, in UTF-8 bytes, as the gateway's map allows. Default 256. */
  maxKeyBytes?: number;
  /** Largest value, as JSON text in UTF-8 bytes. Default 32768. */
  maxValueBytes?: number;
  /** Messages sent a second at most (under the gateway's rate limit). Default 50. */
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

/** Another page's cursor. */
export interface Cursor {
  color: string;
  x: number;
  y: number;
}

/** A write of this page that a higher stamp overwrote. */
export interface Superseded<T = Json> {
  key: string;
  mine: Stamp;
  by: { value: T | undefined; stamp: Stamp };
}

/** A write of this page the gateway did not take. */
export interface Refused {
  key: string;
  reason: "invalid_key" | "too_large" | "not_owner" | "stamp" | "full" | "closed";
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
  /** How many changes this page's copy has seen: a version for caching reads. */
  readonly changes: number;
  /** This page's presence id and color, once live. */
  readonly id: string | null;
  readonly color: string | null;

  get<T = Json>(key: string): T | undefined;
  has(key: string): boolean;
  keys(): string[];
  items<T = Json>(): [string, T][];
  stampOf(key: string): Stamp | undefined;

  /** Sets `key` here at once and sends it; throws on a key or value over the caps. */
  set<T = Json>(key: string, value: T): Stamp;
  /** Deletes `key` here at once (a tombstone) and sends it. */
  delete(key: string): Stamp;

  /** Every change of `key` (`"*"`: any key); returns a function that stops it. */
  on<T = Json>(key: string, callback: (value: T | undefined, old: T | undefined, key: string) => void): () => void;
  onSupersede<T = Json>(callback: (superseded: Superseded<T>) => void): () => void;
  onRefused(callback: (refused: Refused) => void): () => void;
  onStatus(callback: (status: Status) => void): () => void;
  /** Resolves once the map came from the gateway. */
  whenLive(): Promise<void>;

  /** Shows this page's cursor to the map's other pages (ephemeral). */
  setPresence(x: number, y: number): void;
  presence(): Map<string, Cursor>;
  onPresence(callback: (peers: Map<string, Cursor>) => void): () => void;

  /** Closes the connection for good; the cache is kept. */
  close(): void;
}

export default Aether;
