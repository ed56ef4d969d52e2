// Types of react.js, the React hooks over aether.js.

import type { Aether, AetherOptions, Json, Other, Refused, Status, Superseded } from "./aether.js";

/** Connect by address: the hooks of one page share a client per url and token. */
export interface ConnectOptions extends AetherOptions {
  /** `ws://host:port/bridge/<map>` (`wss://` over TLS). */
  url: string;
  client?: undefined;
}

/** Use a client made elsewhere. */
export interface ClientOptions {
  client: Aether;
  url?: undefined;
}

export type UseAetherOptions<T extends Json = Json> = (ConnectOptions | ClientOptions) & {
  /** A write of this page to the key lost a race to a higher stamp. */
  onSupersede?: (superseded: Superseded<T>) => void;
  /** A write of this page to the key was not taken (it is taken back). */
  onRefused?: (refused: Refused) => void;
};

/** Writes the key: a value, a function of the current one, or `undefined` to delete it. */
export type SetAether<T extends Json> = (next: T | undefined | ((prev: T) => T | undefined)) => void;

/** Widens a literal fallback (`0`, `"a"`, `true`) to its type, as `useState` does. */
export type Widen<T> = T extends string ? string : T extends number ? number : T extends boolean ? boolean : T;

/**
 * `[value, set]` for `key`, as `useState` gives: the key's value, or
 * `fallback` while it is not set.
 */
export declare function useAether<T extends Json>(
  key: string,
  fallback: T,
  options: UseAetherOptions<Widen<T>>,
): [Widen<T>, SetAether<Widen<T>>];

/**
 * Every key under `prefix` and its value, sorted by key, re-rendered when
 * one of them changes.
 */
export declare function useAetherPrefix<T extends Json = Json>(
  prefix: string,
  options: ConnectOptions | ClientOptions,
): [string, T][];

/** Writes of this page the gateway has not confirmed yet, re-rendered as it changes. */
export declare function usePendingWrites(options: ConnectOptions | ClientOptions): number;

/** Sets this page's presence value: a value, a function of the current one, or `null` to clear it. */
export type SetPresence<P extends Json> = (next: P | null | ((prev: P) => P | null)) => void;

/**
 * `[value, set]` for this page's presence value (what every other page and
 * replica sees of it while it is open, never kept): `fallback` until set.
 */
export declare function usePresence<P extends Json>(
  fallback: P,
  options: ConnectOptions | ClientOptions,
): [Widen<P>, SetPresence<Widen<P>>];

/** The other pages and replicas of the map, sorted by id, re-rendered at most once a frame. */
export declare function useOthers<P extends Json = Json>(options: ConnectOptions | ClientOptions): Other<P>[];

/** The connection's status, re-rendered as it changes. */
export declare function useAetherStatus(options: ConnectOptions | ClientOptions): Status;

/** The client this page's hooks share for `url` and `options.token`. */
export declare function sharedClient(url: string, options: AetherOptions): Aether;
