// The React hook, rendered by React itself (react-test-renderer) against
// the in-memory bridge: the value as state, re-rendered on remote changes,
// set(v) and set(prev => next), a delete back to the fallback, a reload
// from the cache with the gateway down, one client shared by the hooks of
// a page, and onSupersede for the component.

import { test } from "node:test";
import assert from "node:assert/strict";
import { createElement } from "react";
import TestRenderer from "react-test-renderer";
import { Aether } from "../aether.js";
import { sharedClient, useAether, useAetherPrefix, useAetherStatus } from "../react.js";
import { Bridge, MemoryStorage, stamp, until } from "./bridge.js";

// Renders happen as in a page (the scheduler's own turns), not inside
// act(): the tests wait for what is rendered.
globalThis.IS_REACT_ACT_ENVIRONMENT = false;
// React 19 marks the test renderer deprecated (for DOM testing libraries);
// it still renders hooks as React does, without a DOM. Its one warning is
// not a finding of these tests.
const consoleError = console.error;
console.error = (...args) => {
  if (String(args[0]).includes("react-test-renderer is deprecated")) return;
  consoleError(...args);
};

const URL = "ws://gateway.test/bridge/notes";
// Each test's pages on a map of their own: a render of one test's
// component still due when it ends makes no client of the next one's.
let maps = 0;

/** The hook's checks of its options come before any React call. */
const useAetherOutsideReact = (key, fallback, options) => useAether(key, fallback, options);

function options(bridge, storage) {
  maps += 1;
  return { url: `${URL}${maps}`, token: "secret", WebSocket: bridge.WebSocket, storage, backoffMs: 5, maxBackoffMs: 20 };
}

/** Renders `hook` in a component; `seen()` is what it returned last. */
function mount(hook) {
  let last;
  let renders = 0;
  function Probe() {
    last = hook();
    renders += 1;
    return null;
  }
  const renderer = TestRenderer.create(createElement(Probe));
  return { seen: () => last, renders: () => renders, unmount: () => renderer.unmount() };
}

async function settle(check, what) {
  await until(() => {
    try {
      return check();
    } catch {
      return false; // not rendered yet
    }
  }, 3000, what);
}

test("a key as state: fallback, set, set(prev => next), remote changes, delete", async () => {
  const bridge = new Bridge();
  const opts = options(bridge, new MemoryStorage());
  const counter = mount(() => useAether("count", 0, opts));
  await settle(() => counter.seen()[0] === 0, "the fallback while the key is not set");
  const client = sharedClient(opts.url, opts);
  await client.whenLive();

  counter.seen()[1](5);
  await settle(() => counter.seen()[0] === 5, "5 rendered");
  const set = counter.seen()[1];
  set((n) => n + 1);
  set((n) => n + 1); // before any render: the updater sees the first one's value
  await settle(() => counter.seen()[0] === 7, "updaters see the value before them");
  await until(() => bridge.entries.get("count")?.value === 7, 1000, "the writes at the gateway");

  // Another page (or a service) writes: the component re-renders.
  const later = stamp((BigInt(Date.now()) + 200n) * 1000000n, 0, "00000000000000bb");
  bridge.write("count", 42, later);
  await settle(() => counter.seen()[0] === 42, "the remote change rendered");

  counter.seen()[1](undefined);
  await settle(() => counter.seen()[0] === 0, "deleted: the fallback again");
  await until(() => bridge.entries.get("count")?.deleted === true, 1000, "the delete at the gateway");
  counter.unmount();
  client.close();
});

test("a reload renders from the cache while the gateway is down", async () => {
  const bridge = new Bridge();
  const storage = new MemoryStorage();
  const opts = options(bridge, storage);
  const first = mount(() => useAether("title", "untitled", opts));
  const client = sharedClient(opts.url, opts);
  await client.whenLive();
  await settle(() => first.seen()[0] === "untitled", "the first render");
  first.seen()[1]("groceries");
  await until(() => bridge.entries.has("title"), 1000, "the write");
  first.unmount();
  client.close(); // the page goes away; its cache stays
  bridge.down();

  const reload = mount(() => [useAether("title", "untitled", opts), useAetherStatus(opts)]);
  await settle(() => reload.seen() !== undefined, "the first render");
  assert.equal(reload.seen()[0][0], "groceries", "the first render is the cache's");
  await settle(() => reload.seen()[1] === "offline", "the status rendered as offline");
  // Written while down, sent when the gateway is back.
  reload.seen()[0][1]("groceries and more");
  bridge.up();
  await settle(() => reload.seen()[1] === "live", "live again");
  await until(() => bridge.entries.get("title")?.value === "groceries and more", 2000, "the offline write");
  reload.unmount();
  sharedClient(opts.url, opts).close();
});

test("the hooks of a page share one client, and onSupersede reaches the component", async () => {
  const bridge = new Bridge();
  const opts = options(bridge, new MemoryStorage());
  const lost = [];
  const page = mount(() => [
    useAether("card", "todo", { ...opts, onSupersede: (s) => lost.push(s) }),
    useAether("other", null, opts),
  ]);
  const client = sharedClient(opts.url, opts);
  assert.equal(bridge.attempts, 1, "one connection for every hook of the page");
  await client.whenLive();
  bridge.down();
  await until(() => client.status === "offline", 1000, "offline");
  await settle(() => page.seen()[0][0] === "todo", "the first render");
  page.seen()[0][1]("doing");
  const later = stamp((BigInt(Date.now()) + 200n) * 1000000n, 0, "00000000000000cc");
  bridge.write("card", "done", later);
  bridge.up();
  await settle(() => page.seen()[0][0] === "done", "the newer write rendered");
  assert.equal(lost.length, 1, "the component heard its write lost");
  assert.equal(lost[0].key, "card");
  assert.equal(lost[0].by.value, "done");
  page.unmount();
  client.close();
});

test("the hook with a client of the application's own, and no options at all", async () => {
  const bridge = new Bridge();
  const client = new Aether(URL, { token: "secret", WebSocket: bridge.WebSocket, storage: new MemoryStorage() });
  client.set("k", 1);
  const page = mount(() => useAether("k", 0, { client }));
  await settle(() => page.seen()[0] === 1, "the client's value");
  page.unmount();
  client.close();
  assert.throws(() => useAetherOutsideReact("k", 0), TypeError);
  assert.throws(() => useAetherOutsideReact("k", 0, { token: "t" }), /url/);
});

test("a prefix as a list: a key per item, re-rendered when one changes, the same list otherwise", async () => {
  const bridge = new Bridge();
  const opts = options(bridge, new MemoryStorage());
  const client = sharedClient(opts.url, opts);
  await client.whenLive();
  const todos = mount(() => useAetherPrefix("todo/", opts));
  await settle(() => Array.isArray(todos.seen()) && todos.seen().length === 0, "an empty list");
  client.set("todo/b", { text: "eggs" });
  client.set("todo/a", { text: "milk" });
  client.set("other", 1);
  await settle(() => todos.seen().length === 2, "two items");
  assert.deepEqual(todos.seen(), [["todo/a", { text: "milk" }], ["todo/b", { text: "eggs" }]], "sorted by key");
  const before = todos.seen();
  const renders = todos.renders();
  client.set("other", 2); // outside the prefix
  await new Promise((resolve) => setTimeout(resolve, 30));
  assert.equal(todos.seen(), before, "the same list for a change elsewhere");
  assert.equal(todos.renders(), renders, "no render for a change elsewhere");
  // Another page adds an item; this one deletes one.
  const later = stamp((BigInt(Date.now()) + 200n) * 1000000n, 0, "00000000000000dd");
  bridge.write("todo/c", { text: "bread" }, later);
  client.delete("todo/a");
  await settle(() => todos.seen().map(([k]) => k).join() === "todo/b,todo/c", "the list after both");
  todos.unmount();
  client.close();
});

test("a refused write reaches the component, and the value goes back", async () => {
  const bridge = new Bridge();
  const opts = options(bridge, new MemoryStorage());
  const refused = [];
  bridge.refusing.set("board/x", "full");
  const page = mount(() => useAether("board/x", "fallback", { ...opts, onRefused: (r) => refused.push(r) }));
  const client = sharedClient(opts.url, opts);
  await client.whenLive();
  await settle(() => page.seen()[0] === "fallback", "the first render");
  // The hook listens from its effect, which runs after the render.
  await settle(() => client.refusedListeners.size > 0, "the hook's listener");
  page.seen()[1]("mine");
  await settle(() => refused.length === 1, "the refusal told");
  assert.deepEqual(refused[0], { key: "board/x", reason: "full" });
  await settle(() => page.seen()[0] === "fallback", "the write taken back");
  page.unmount();
  client.close();
});

test("a list under a prefix is made once per paste of thousands, not once a key", async () => {
  const bridge = new Bridge();
  const opts = options(bridge, new MemoryStorage());
  const list = mount(() => useAetherPrefix("card/", opts));
  const client = sharedClient(opts.url, opts);
  await client.whenLive();
  await settle(() => list.seen().length === 0, "the empty list");
  // Each list the hook makes reads the client's keys once.
  let made = 0;
  const keys = client.keys.bind(client);
  client.keys = () => {
    made += 1;
    return keys();
  };
  const other = new Aether(opts.url, { ...opts, storage: new MemoryStorage() });
  await other.whenLive();
  const cards = {};
  for (let i = 0; i < 3000; i++) cards[`card/${i}`] = { title: `card ${i}` };
  other.setMany(cards);
  await settle(() => list.seen().length === 3000, "the paste rendered");
  assert.ok(made <= 20, `the list made ${made} times for one paste`);
  // A paste of this page's own: the same.
  made = 0;
  client.transact(() => {
    for (let i = 0; i < 3000; i++) client.set(`card/${i}`, { title: `moved ${i}` });
  });
  await settle(() => list.seen().every(([, card]) => card.title.startsWith("moved")), "the page's own paste rendered");
  assert.ok(made <= 20, `the list made ${made} times for the page's own paste`);
  list.unmount();
  other.close();
  client.close();
});
