// Presence: what a page shows of itself (its cursor and a JSON value)
// reaches the other pages, a field left out stays, null clears, it is
// shown again after a reconnect, bad values throw having changed nothing;
// the hooks usePresence and useOthers over it.

import { test } from "node:test";
import assert from "node:assert/strict";
import { createElement } from "react";
import TestRenderer from "react-test-renderer";
import { useOthers, usePresence } from "../react.js";
import { Bridge, client, until } from "./bridge.js";

globalThis.IS_REACT_ACT_ENVIRONMENT = false;
const consoleError = console.error;
console.error = (...args) => {
  if (String(args[0]).includes("react-test-renderer is deprecated")) return;
  consoleError(...args);
};

const live = (page) => until(() => page.status === "live", 2000, "live");

test("a page's presence reaches the others; a field left out stays, null clears", async () => {
  const bridge = new Bridge();
  const a = client(bridge);
  const b = client(bridge);
  await Promise.all([live(a), live(b)]);
  const told = [];
  a.onMyPresence((mine) => told.push(mine));
  a.updatePresence({ x: 3.6, y: -2, value: { name: "Ada", editing: "card-7" } });
  assert.deepEqual(a.myPresence(), { id: a.id, color: a.color, x: 4, y: -2, value: { name: "Ada", editing: "card-7" } });
  assert.equal(told.length, 1);
  await until(() => b.presence().get(a.id)?.value?.name === "Ada", 2000, "b sees Ada");
  assert.deepEqual(b.presence().get(a.id), { color: "#123456", x: 4, y: -2, value: { name: "Ada", editing: "card-7" } });
  a.updatePresence({ x: 10 });
  await until(() => b.presence().get(a.id)?.x === 10, 2000, "the move");
  assert.equal(b.presence().get(a.id).value.editing, "card-7", "the value stays");
  a.updatePresence({ value: null });
  await until(() => b.presence().get(a.id)?.value === undefined, 2000, "the clear");
  assert.equal(b.presence().get(a.id).x, 10);
  a.close();
  await until(() => !b.presence().has(a.id), 2000, "a's leave");
  b.close();
});

test("a live page is among the others before it shows anything", async () => {
  const bridge = new Bridge();
  const a = client(bridge);
  const b = client(bridge);
  await Promise.all([live(a), live(b)]);
  await until(() => b.presence().has(a.id) && a.presence().has(b.id), 2000, "each sees the other");
  assert.deepEqual(b.presence().get(a.id), { color: "#123456" });
  a.close();
  b.close();
});

test("the count of pending writes is told once per confirmation, not once per write", async () => {
  const bridge = new Bridge();
  const a = client(bridge);
  await live(a);
  const counts = [];
  a.onPendingWrites((n) => counts.push(n));
  const entries = {};
  for (let i = 0; i < 2000; i++) entries[`card/${i}`] = { title: `card ${i}` };
  a.setMany(entries);
  await a.waitForPendingWrites();
  assert.equal(a.pendingWrites, 0);
  assert.equal(counts.at(-1), 0);
  // One for the step, then about one per sync (every 64 writes sent).
  assert.ok(counts.length <= 2000 / 64 + 10, `${counts.length} calls: ${counts.slice(0, 20)}`);
  a.close();
});

test("bad presence throws, having changed nothing", async () => {
  const bridge = new Bridge();
  const a = client(bridge);
  await live(a);
  a.updatePresence({ value: { name: "Ada" } });
  const before = a.myPresence();
  const sent = bridge.received.length;
  assert.throws(() => a.updatePresence({ value: { at: new Date() } }), TypeError);
  assert.throws(() => a.updatePresence({ value: () => 1 }), TypeError);
  assert.throws(() => a.updatePresence({ x: "1" }), TypeError);
  assert.throws(() => a.updatePresence({ x: NaN }), TypeError);
  assert.throws(() => a.updatePresence({ name: "Ada" }), TypeError);
  assert.throws(() => a.updatePresence(null), TypeError);
  assert.throws(() => a.updatePresence({ value: "x".repeat(4096) }), RangeError);
  // The gateway's own bound, as its hello tells it.
  bridge.limits.max_presence_bytes = 100;
  bridge.down();
  bridge.up();
  await until(() => a.status === "live" && a.options.maxPresenceBytes === 100, 2000, "the new bound");
  assert.throws(() => a.updatePresence({ value: "x".repeat(99) }), RangeError);
  a.updatePresence({ value: "x".repeat(98) });
  assert.deepEqual(a.myPresence().value, "x".repeat(98));
  assert.notDeepEqual(before, a.myPresence());
  assert.ok(bridge.received.length > sent);
  a.close();
});

test("after a reconnect the page shows itself again", async () => {
  const bridge = new Bridge();
  const a = client(bridge);
  await live(a);
  a.updatePresence({ x: 1, y: 2, value: { name: "Ada" } });
  bridge.down();
  await until(() => a.status !== "live", 2000, "offline");
  bridge.up();
  const b = client(bridge);
  await Promise.all([live(a), live(b)]);
  await until(() => b.presence().get(a.id)?.value?.name === "Ada", 2000, "shown again");
  assert.deepEqual(b.presence().get(a.id), { color: "#123456", x: 1, y: 2, value: { name: "Ada" } });
  a.close();
  b.close();
});

test("usePresence and useOthers: names in a who-is-here list, renders thinned", async () => {
  const bridge = new Bridge();
  const options = (n) => ({ client: client(bridge), n });
  const mine = options(1);
  const theirs = options(2);
  let seenMine;
  let seenOthers;
  let renders = 0;
  function Me() {
    seenMine = usePresence({ name: "guest" }, mine);
    return null;
  }
  function List() {
    seenOthers = useOthers(theirs);
    renders += 1;
    return null;
  }
  const r1 = TestRenderer.create(createElement(Me));
  const r2 = TestRenderer.create(createElement(List));
  await Promise.all([live(mine.client), live(theirs.client)]);
  assert.deepEqual(seenMine[0], { name: "guest" }, "the fallback until set");
  await until(() => seenOthers?.[0]?.value?.name === "guest", 2000, "the fallback shown to the others");
  seenMine[1]((prev) => ({ ...prev, name: "Ada" }));
  await until(() => seenMine[0].name === "Ada", 2000, "set here at once");
  await until(() => seenOthers.length === 1 && seenOthers[0].value?.name === "Ada", 2000, "the list");
  assert.equal(seenOthers[0].id, mine.client.id);
  // A hundred moves at once: a few renders, not a hundred.
  const before = renders;
  for (let x = 0; x < 100; x++) mine.client.updatePresence({ x });
  await until(() => seenOthers[0].x === 99, 2000, "the last move");
  assert.ok(renders - before <= 10, `${renders - before} renders for 100 moves`);
  seenMine[1](null);
  await until(() => seenOthers[0].value === undefined, 2000, "cleared");
  assert.deepEqual(seenMine[0], { name: "guest" }, "the fallback again");
  r1.unmount();
  mine.client.close();
  await until(() => seenOthers.length === 0, 2000, "gone");
  r2.unmount();
  theirs.client.close();
});
