// React hooks over the bridge's client: a key of a replicated map as state.
// React is a peer dependency; this module adds nothing else. Types:
// react.d.ts beside it.
//
//   import { useAether } from "aether-bridge/react";
//   const [count, setCount] = useAether("count", 0, { url, token });
//   setCount((n) => n + 1);
//   const todos = useAetherPrefix("todo/", { url, token });  // [[key, value], ...]
//
// Every hook of one page on one map (same url and token) shares one
// client, so a page is one replica however many components read it. The
// value renders from the offline cache at once, re-renders on every change
// of the key (this page's, another page's, a service's), and a write is
// local first, as the client's are.
//
// On a server (renderToString, Next.js, Remix) the hooks make no client,
// open no connection and touch no storage: they render the fallback (an
// empty list, no pending writes, `connecting`). A page that hydrates that
// HTML renders the same first, then its cache and the bridge take over.

import { useCallback, useEffect, useRef, useSyncExternalStore } from "react";
import { Aether } from "./aether.js";

const clients = new Map();

/**
 * The client this page's hooks share for `url` and `options.token`, made
 * on first use. `close()` on it closes it for every hook; the next hook to
 * ask makes another.
 */
export function sharedClient(url, options) {
  if (typeof url !== "string" || url.length === 0) {
    throw new TypeError("useAether needs options.url, the bridge's ws:// or wss:// address, or options.client");
  }
  const slot = url + "\u0000" + (options?.token ?? "");
  let client = clients.get(slot);
  if (!client || client.status === "closed") {
    client = new Aether(url, options);
    clients.set(slot, client);
  }
  return client;
}

/**
 * The client of `options`, made when first asked for (never during a
 * server render: React asks for snapshots there through the hooks' server
 * snapshot alone), and the key that names it, for React's dependencies.
 */
function clientOf(options) {
  if (options == null || typeof options !== "object") {
    throw new TypeError("useAether needs options: { url, token } or { client }");
  }
  if (options.client) {
    const client = options.client;
    return [() => client, client];
  }
  const { url, onSupersede: _superseded, onRefused: _refused, client: _none, ...rest } = options;
  if (typeof url !== "string" || url.length === 0) {
    throw new TypeError("useAether needs options.url, the bridge's ws:// or wss:// address, or options.client");
  }
  return [() => sharedClient(url, rest), url + "\u0000" + (rest.token ?? "")];
}

/** What a server renders, and a page's hydrating render with it. */
const NOTHING = () => undefined;
const NO_ITEMS = Object.freeze([]);
const noItems = () => NO_ITEMS;
const noWrites = () => 0;
const connecting = () => "connecting";
/** The most often useOthers re-renders (once a frame). */
const FRAME_MS = 16;

/**
 * `[value, set]` for `key`, as `useState` gives: `value` is the key's
 * value, or `fallback` while the key is not set (or deleted); `set(v)` or
 * `set(prev => next)` writes it here at once and sends it; `set(undefined)`
 * deletes it. `options.onSupersede(superseded)` is told when a write of
 * this page to `key` lost to a higher stamp, `options.onRefused(refused)`
 * when the gateway refused one (it is taken back: the value returns to
 * what the gateway holds, or the fallback).
 */
export function useAether(key, fallback, options) {
  const [clientNow, slot] = clientOf(options);
  // One snapshot per stamp of the key: the same object between changes,
  // as useSyncExternalStore needs.
  const seen = useRef(null);
  const subscribe = useCallback((changed) => clientNow().on(key, () => changed()), [slot, key]);
  const snapshot = () => {
    const client = clientNow();
    const stamp = client.stampOf(key);
    const last = seen.current;
    if (!last || last.client !== client || last.key !== key || last.stamp !== stamp) {
      seen.current = { client, key, stamp, value: client.get(key) };
    }
    return seen.current.value;
  };
  const value = useSyncExternalStore(subscribe, snapshot, NOTHING);
  const fallbackNow = useRef(fallback);
  fallbackNow.current = fallback;
  const set = useCallback(
    (next) => {
      const client = clientNow();
      const prev = client.has(key) ? client.get(key) : fallbackNow.current;
      const written = typeof next === "function" ? next(prev) : next;
      if (written === undefined) {
        client.delete(key);
      } else {
        client.set(key, written);
      }
    },
    [slot, key],
  );
  const told = useRef(options);
  told.current = options;
  useEffect(() => {
    const client = clientNow();
    const stops = [
      client.onSupersede((superseded) => {
        if (superseded.key === key) told.current.onSupersede?.(superseded);
      }),
      client.onRefused((refused) => {
        if (refused.key === key) told.current.onRefused?.(refused);
      }),
    ];
    return () => stops.forEach((stop) => stop());
  }, [slot, key]);
  return [value === undefined ? fallback : value, set];
}

/**
 * Every key under `prefix` and its value, sorted by key (`[key, value][]`),
 * re-rendered when one of them changes: a list kept as a key per item
 * (`todo/<id>`), which concurrent writers never overwrite whole.
 */
export function useAetherPrefix(prefix, options) {
  const [clientNow, slot] = clientOf(options);
  const seen = useRef(null);
  // Told once per task however many keys changed (a paste of thousands):
  // the list is made again once, not once a key.
  const subscribe = useCallback(
    (changed) => {
      let queued = false;
      let active = true;
      const stop = clientNow().on(prefix + "*", () => {
        if (queued) return;
        queued = true;
        queueMicrotask(() => {
          queued = false;
          if (active) changed();
        });
      });
      return () => {
        active = false;
        stop();
      };
    },
    [slot, prefix],
  );
  const snapshot = () => {
    const client = clientNow();
    const last = seen.current;
    if (last && last.client === client && last.prefix === prefix && last.changes === client.changes) {
      return last.items;
    }
    const keys = client.keys().filter((key) => key.startsWith(prefix));
    const stamps = keys.map((key) => client.stampOf(key));
    if (
      last && last.client === client && last.prefix === prefix &&
      last.stamps.length === stamps.length && last.stamps.every((s, i) => s === stamps[i])
    ) {
      last.changes = client.changes;
      return last.items;
    }
    const items = keys.map((key) => [key, client.get(key)]);
    seen.current = { client, prefix, changes: client.changes, stamps, items };
    return items;
  };
  return useSyncExternalStore(subscribe, snapshot, noItems);
}

/**
 * How many writes of this page the gateway has not confirmed yet,
 * re-rendered as it changes: an "unsaved changes" mark.
 */
export function usePendingWrites(options) {
  const [clientNow, slot] = clientOf(options);
  const subscribe = useCallback((changed) => clientNow().onPendingWrites(() => changed()), [slot]);
  const count = () => clientNow().pendingWrites;
  return useSyncExternalStore(subscribe, count, noWrites);
}

/**
 * `[value, set]` for this page's presence value, as `useState` gives: what
 * every other page and replica of the map sees of this page while it is
 * open (a name, an avatar, what it is editing), never kept. `fallback` is
 * its first value (shown to the others once the page mounts, unless a
 * value is set already); `set(v)` or `set(prev => next)`; `set(null)`
 * clears it (the page then shows `fallback` itself, the others no value).
 * (The cursor is the client's: `updatePresence({ x, y })`.)
 */
export function usePresence(fallback, options) {
  const [clientNow, slot] = clientOf(options);
  const subscribe = useCallback((changed) => clientNow().onMyPresence(() => changed()), [slot]);
  // The same object until it changes, as useSyncExternalStore needs.
  const value = useSyncExternalStore(subscribe, () => clientNow().mine.value, NOTHING);
  const fallbackNow = useRef(fallback);
  fallbackNow.current = fallback;
  // The fallback is what others see until it is set (an initial presence),
  // once the page is in the browser.
  useEffect(() => {
    const client = clientNow();
    if (client.mine.value === undefined && fallbackNow.current !== undefined && fallbackNow.current !== null) {
      client.updatePresence({ value: fallbackNow.current });
    }
  }, [slot]);
  const set = useCallback(
    (next) => {
      const client = clientNow();
      const mine = client.mine.value;
      const written = typeof next === "function" ? next(mine === undefined ? fallbackNow.current : mine) : next;
      client.updatePresence({ value: written === undefined ? null : written });
    },
    [slot],
  );
  return [value === undefined ? fallback : value, set];
}

/**
 * The other pages and replicas of the map, each `{ id, color, x?, y?,
 * value? }`, sorted by id: re-rendered when one comes, goes or changes, at
 * most once a frame (16 ms) however many move. A server renders none.
 */
export function useOthers(options) {
  const [clientNow, slot] = clientOf(options);
  const seen = useRef(null);
  const subscribe = useCallback(
    (changed) => {
      let timer = null;
      const stop = clientNow().onPresence(() => {
        if (timer !== null) return;
        timer = setTimeout(() => {
          timer = null;
          changed();
        }, FRAME_MS);
      });
      return () => {
        if (timer !== null) clearTimeout(timer);
        stop();
      };
    },
    [slot],
  );
  const snapshot = () => {
    const client = clientNow();
    const last = seen.current;
    if (last && last.client === client && last.version === client.presenceVersion) return last.others;
    const others = [...client.presence()]
      .map(([id, peer]) => ({ id, ...peer }))
      .sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
    seen.current = { client, version: client.presenceVersion, others };
    return others;
  };
  return useSyncExternalStore(subscribe, snapshot, noItems);
}

/** The connection's status (`connecting`, `live`, `offline`, `unauthorized`, `unknown_map`, `closed`), re-rendered as it changes. */
export function useAetherStatus(options) {
  const [clientNow, slot] = clientOf(options);
  const subscribe = useCallback((changed) => clientNow().onStatus(() => changed()), [slot]);
  const status = () => clientNow().status;
  return useSyncExternalStore(subscribe, status, connecting);
}
