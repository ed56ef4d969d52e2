// What a TypeScript application writes against the client and its hooks:
// `tsc --strict --noEmit` must take every line, and refuse each line
// marked `@ts-expect-error` (it fails if one of them type-checks).

import { Aether, AetherError, type Json, type MyPresence, type Other, type Peer, type Stamp, type Status, type StatusReason, type Superseded } from "../aether.js";
import { sharedClient, useAether, useAetherPrefix, useAetherStatus, useOthers, usePendingWrites, usePresence } from "../react.js";

const url = "ws://127.0.0.1:9464/bridge/board";
const board = new Aether(url, { token: "t", sendPerSecond: 20 });

const stamp: Stamp = board.set("item/1", { text: "milk", done: false });
const gone: Stamp = board.delete("item/1");
const item = board.get<{ text: string; done: boolean }>("item/1");
const text: string | undefined = item?.text;
const keys: string[] = board.keys();
const stop: () => void = board.on("*", (value: Json | undefined, old, key: string) => {});
board.onSupersede(({ key, mine, by, concurrent }: Superseded) => {
  const raced: true | null = concurrent;
});
board.onStatus((status: Status, reason: StatusReason) => {});
board.onPendingWrites((count: number) => {});
board.onError((error: AetherError) => {
  const why: "unauthorized" | "unknown_map" | "closed" | "storage_full" | "not_owner" | "forbidden" = error.reason;
});
board.on<{ text: string; done: boolean }>("todo/*", (todo, old, key) => todo?.done);
const live: Promise<void> = board.whenLive().catch((e: unknown) => {
  if (e instanceof AetherError && e.reason === "unauthorized") return;
});
const flushed: Promise<void> = board.waitForPendingWrites();
const pending: number = board.pendingWrites;
const reason: StatusReason = board.statusReason;
type Todo2 = { text: string; done: boolean; tags: string[]; due: string | null };
board.set<Todo2>("todo/2", { text: "eggs", done: false, tags: ["shop"], due: null });
board.set("nested", { a: [{ b: { c: [1, 2, { d: null }] } }] });
const shared: Aether = sharedClient(url, { token: "t" });
const many: Stamp[] = board.setMany({ "card/1": { title: "a" }, "card/2": undefined });
board.setMany([["card/3", 3], ["card/4", null]] as const);
board.setMany(new Map<string, Json>([["card/5", "five"]]));
const moved: number = board.transact(() => {
  board.set("col/a", 1);
  board.delete("col/b");
  return 2;
});
// @ts-expect-error a Date is not JSON, in a group either
board.setMany({ when: new Date() });
// @ts-expect-error transact takes a function
board.transact(1);

// @ts-expect-error a client needs its options (the token)
new Aether(url);
// @ts-expect-error the token is required
new Aether(url, { cache: false });

type Todo = { text: string; done: boolean };

export function Counter() {
  const [count, setCount] = useAether("count", 0, { url, token: "t" });
  const n: number = count;
  setCount((c) => c + 1);
  setCount(5);
  setCount(undefined);
  // @ts-expect-error a number key is not set to a string
  setCount("five");
  // @ts-expect-error the value is a number, not a string
  const s: string = count;

  const [todos, setTodos] = useAether<Todo[]>("todos", [], {
    client: board,
    onSupersede: (lost) => {
      const mine: Stamp = lost.mine;
      const winner: Todo[] | undefined = lost.by.value;
    },
    onRefused: ({ key, reason }) => {
      const why: "forbidden" | "invalid_name" | "invalid_key" | "too_large" | "not_owner" | "payload" | "config" | "closed" | "stamp" | "full" | "not_held" | "unauthorized" | "unknown_map" | "malformed" = reason;
    },
  });
  setTodos((all) => [...all, { text: "milk", done: false }]);
  // @ts-expect-error a todo has a text
  setTodos([{ done: true }]);

  const [title] = useAether("title", "untitled", { client: board });
  const t: string = title;

  const status: Status = useAetherStatus({ client: board });
  const unsaved: number = usePendingWrites({ client: board });
  const items: [string, Todo][] = useAetherPrefix<Todo>("todo/", { client: board });
  const changes: number = board.changes;

  type Who = { name: string; editing?: string };
  const [me, setMe] = usePresence<Who>({ name: "guest" }, { client: board });
  const myName: string = me.name;
  setMe((prev) => ({ ...prev, editing: "card-7" }));
  setMe(null);
  const others: Other<Who>[] = useOthers<Who>({ client: board });
  const names: (string | undefined)[] = others.map((o) => o.value?.name);
  const ids: string[] = others.map((o) => o.id);
  board.updatePresence<Who>({ x: 1, value: { name: "Ada" } });
  board.updatePresence({ value: null });
  const mine: MyPresence<Who> = board.myPresence<Who>();
  const peers: Map<string, Peer> = board.presence();
  // @ts-expect-error a presence value is JSON
  board.updatePresence({ value: new Date() });
  // @ts-expect-error x is a number
  board.updatePresence({ x: "1" });
  // @ts-expect-error only x, y and value
  board.updatePresence({ name: "Ada" });
  // @ts-expect-error the value is a Who
  setMe({ nick: "Ada" });
  void [myName, names, ids, mine, peers];

  // @ts-expect-error a url needs its token
  useAether("k", 0, { url });
  // @ts-expect-error the hook needs a url and token, or a client
  useAether("k", 0, {});
  // @ts-expect-error a Date is not JSON
  useAether("when", new Date(), { client: board });
  // @ts-expect-error a function is not JSON
  useAether("f", () => 1, { client: board });
  return [n, s, t, status, unsaved, todos, items, changes, stamp, gone, text, keys, stop, live, shared, flushed, pending, reason];
}
