// What the client promises a page, against the in-memory bridge: a
// terminal status rejects `whenLive`, writes under a wrong token never
// reach the bus, an unknown map is its own status, `onSupersede` only for
// a lost race, values that are not JSON refused by name, a full storage
// said, status changes with their reasons, pending writes and their
// promise, prefix listeners, and the guide's counter pattern.

import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { Aether, AetherError } from "../aether.js";
import { Bridge, MemoryStorage, client, sleep, until } from "./bridge.js";

const URL = "ws://gateway.test/bridge/board";


async function rejection(promise, ms = 2000) {
  const outcome = await Promise.race([
    promise.then(() => "resolved", (error) => error),
    sleep(ms).then(() => "still waiting"),
  ]);
  assert.ok(outcome instanceof AetherError, `rejected with an AetherError, not ${outcome}`);
  return outcome;
}

test("whenLive rejects with the reason on every terminal status, at once after it", async () => {
  const bridge = new Bridge({ token: "right", maps: ["board"] });
  const wrong = client(bridge, new MemoryStorage(), { token: "wrong" });
  assert.equal((await rejection(wrong.whenLive())).reason, "unauthorized");
  assert.equal((await rejection(wrong.whenLive(), 50)).reason, "unauthorized", "again, at once");

  const typo = new Aether("ws://gateway.test/bridge/typo", { token: "right", WebSocket: bridge.WebSocket, storage: new MemoryStorage() });
  const error = await rejection(typo.whenLive());
  assert.equal(error.reason, "unknown_map");
  assert.match(error.message, /typo/);

  bridge.down();
  const closed = client(bridge);
  const waiting = closed.whenLive();
  closed.close();
  assert.equal((await rejection(waiting)).reason, "closed");
});

test("writes made under a wrong token are dropped, told, and never sent by a page with the right one", async () => {
  const bridge = new Bridge({ token: "right" });
  bridge.down();
  const storage = new MemoryStorage(); // one browser: the tabs share it
  const right = client(bridge, storage, { token: "right" });
  right.set("x/right", 1);
  right.saveNow();

  const wrong = client(bridge, storage, { token: "wrong" });
  assert.equal(wrong.get("x/right"), undefined, "a wrong token renders nothing of the right one's cache");
  const refused = [];
  wrong.onRefused((r) => refused.push(r));
  wrong.set("x/wrongtoken", 1);
  wrong.saveNow();
  assert.equal(wrong.pendingWrites, 1);
  bridge.up();
  await until(() => wrong.status === "unauthorized", 2000, "unauthorized");
  assert.equal(wrong.statusReason, "unauthorized");
  assert.deepEqual(refused, [{ key: "x/wrongtoken", reason: "unauthorized" }]);
  assert.equal(wrong.get("x/wrongtoken"), undefined, "dropped from the copy");
  assert.equal(wrong.pendingWrites, 0);
  assert.throws(() => wrong.set("x/later", 2), (e) => e instanceof AetherError && e.reason === "unauthorized");

  await right.whenLive();
  const reload = client(bridge, storage, { token: "right" });
  await reload.whenLive();
  await right.waitForPendingWrites();
  await sleep(30);
  assert.equal(bridge.entries.get("x/right")?.value, 1, "the right token's write went");
  assert.equal(bridge.entries.has("x/wrongtoken"), false, "the wrong token's write never did");
  assert.ok(
    bridge.received.every((r) => r.message.key !== "x/wrongtoken"),
    "no page sent it",
  );
  for (const page of [right, reload]) page.close();
});

test("an unknown map is its own terminal status, and is not retried", async () => {
  const bridge = new Bridge({ maps: ["board"] });
  const page = new Aether("ws://gateway.test/bridge/typo", {
    token: "secret", WebSocket: bridge.WebSocket, storage: new MemoryStorage(), backoffMs: 5, maxBackoffMs: 10,
  });
  const statuses = [];
  page.onStatus((status, reason) => statuses.push([status, reason]));
  await until(() => page.status === "unknown_map", 1000, "unknown_map");
  const attempts = bridge.attempts;
  await sleep(100);
  assert.equal(bridge.attempts, attempts, "no attempt after unknown_map");
  assert.deepEqual(statuses, [["unknown_map", "unknown_map"]]);
  assert.throws(() => page.set("k", 1), (e) => e.reason === "unknown_map");
});

test("onSupersede is told of a lost race, not of a later write by one who had seen it", async () => {
  const bridge = new Bridge();
  const a = client(bridge);
  const b = client(bridge);
  await Promise.all([a.whenLive(), b.whenLive()]);
  const told = [];
  a.onSupersede((s) => told.push(s));

  // B reads A's write, then writes the key later: no race.
  const mine = a.set("title", "from a");
  await until(() => b.get("title") === "from a", 1000, "a's write at b");
  await sleep(5);
  b.set("title", "from b, after reading a's");
  await until(() => a.get("title") === "from b, after reading a's", 1000, "b's write at a");
  await sleep(20);
  assert.deepEqual(told, [], "a write made after seeing a's did not supersede it");

  // Both write before either sees the other's: a race, and A lost it (b's
  // clock a millisecond ahead of a's, so its write in the same turn is
  // later whatever offsets their readings gave them).
  b.clock.offsetMs = a.clock.offsetMs + 1;
  const raced = a.set("card", "a's");
  b.set("card", "b's"); // same turn: b has not seen a's, and its stamp is later
  await until(() => a.get("card") === "b's", 1000, "b's write at a");
  await sleep(20);
  assert.equal(told.length, 1);
  assert.equal(told[0].key, "card");
  assert.equal(told[0].mine, raced);
  assert.equal(told[0].concurrent, true);
  assert.deepEqual(told[0].by.value, "b's");
  assert.notEqual(mine, raced);
  for (const page of [a, b]) page.close();
});

test("a value JSON cannot carry is refused with a TypeError naming the key and where, and nothing is written", async () => {
  const bridge = new Bridge();
  const page = client(bridge);
  await page.whenLive();
  class Point {
    constructor() {
      this.x = 1;
    }
  }
  const cycle = { a: 1 };
  cycle.self = cycle;
  const cases = [
    [undefined, /"k" is undefined: delete\(key\)/],
    [{ a: undefined }, /"k" at \.a is undefined/],
    [NaN, /"k" is NaN/],
    [{ n: [1, Infinity] }, /"k" at \.n\[1\] is Infinity/],
    [-Infinity, /is -Infinity/],
    [new Date(0), /"k" is a Date, not JSON \(write its toISOString/],
    [{ when: new Map([[1, 2]]) }, /"k" at \.when is a Map/],
    [new Set([1]), /is a Set/],
    [() => 1, /is a function/],
    [{ f() {} }, /at \.f is a function/],
    [Symbol("s"), /is a symbol/],
    [10n, /is a bigint/],
    [{ "odd key": [new Point()] }, /at \["odd key"\]\[0\] is a Point/],
    [cycle, /at \.self is a cycle/],
    // eslint-disable-next-line no-sparse-arrays
    [[1, , 3], /at \[1\] is a hole/],
    [Object.assign([1, 2], { extra: 3 }), /"k" is an array with properties besides its items/],
    [{ text: "\udc00" }, /at \.text is a string with a lone surrogate/],
    [{ ["\ud800x"]: 1 }, /an object with a field name that is a string with a lone surrogate/],
    [new Error("e"), /"k" is an Error, not JSON/],
    [Object.assign([1], { [Symbol("s")]: 1 }), /"k" is an object with symbol keys/],
    [new (class Row extends Array {})(), /"k" is a Row, not a plain array/],
    [Object.defineProperty({ a: 1 }, "hidden", { value: 2 }), /a field that is not enumerable/],
    [new Uint8Array(2), /"k" is a Uint8Array/],
  ];
  for (const [value, message] of cases) {
    assert.throws(() => page.set("k", value), (e) => e instanceof TypeError && message.test(e.message), String(message));
  }
  assert.throws(() => page.set("\udc00", 1), (e) => e instanceof TypeError && /lone surrogate/.test(e.message));
  let deep = 1;
  for (let i = 0; i < 150; i++) deep = [deep];
  assert.throws(() => page.set("k", deep), RangeError);
  assert.equal(page.has("k"), false);
  assert.equal(page.pendingWrites, 0);
  await sleep(20);
  assert.equal(bridge.received.filter((r) => r.message.key === "k").length, 0, "nothing sent");
  page.set("k", { ok: [1, "two", null, true, { three: 3.5 }] });
  assert.deepEqual(page.get("k"), { ok: [1, "two", null, true, { three: 3.5 }] });
  page.close();
});

test("a full storage: set throws storage_full and writes nothing; a remote change it cannot keep is told", async () => {
  const bridge = new Bridge();
  const storage = new MemoryStorage({ quota: 2000 });
  const page = client(bridge, storage);
  await page.whenLive();
  const errors = [];
  page.onError((e) => errors.push(e));
  let written = 0;
  let thrown = null;
  for (let i = 0; i < 100 && !thrown; i++) {
    try {
      page.set(`note/${i}`, "x".repeat(100));
      written += 1;
    } catch (error) {
      thrown = error;
    }
  }
  assert.ok(thrown instanceof AetherError && thrown.reason === "storage_full", `${thrown}`);
  assert.match(thrown.message, /note\/\d+/);
  assert.equal(page.keys().length, written, "the write that could not be kept was not made");
  await page.waitForPendingWrites();
  assert.equal(bridge.entries.size, written, "and not sent");

  bridge.write("from/service", "y".repeat(500), "7fffffffffffffff-00000000-00000000000000aa");
  await until(() => errors.length > 0, 1000, "the error event");
  assert.equal(errors[0].reason, "storage_full");
  assert.equal(page.get("from/service"), "y".repeat(500), "the change is in the copy all the same");
  page.close();
});

test("status changes carry their reasons", async () => {
  const bridge = new Bridge({ perSecond: 5, burst: 5, legacy: true });
  const page = client(bridge, new MemoryStorage(), { sendPerSecond: 1000, sendBurst: 1000 });
  const statuses = [];
  page.onStatus((status, reason) => statuses.push(`${status}:${reason}`));
  await page.whenLive();
  for (let i = 0; i < 20; i++) page.set(`k/${i}`, i);
  await until(() => statuses.includes("offline:rate_limited"), 2000, "rate_limited");
  // Told it sends too fast, the client slows down until the gateway takes it all.
  await until(() => bridge.entries.size === 20, 10000, "every write, at a pace the gateway takes");
  await page.waitForPendingWrites();
  assert.equal(page.status, "live");
  bridge.down();
  await until(() => statuses.includes("offline:connection_lost"), 1000, "connection_lost");
  await until(() => statuses.includes("offline:unreachable") || page.statusReason === "unreachable", 1000, "unreachable");
  assert.equal(statuses[0], "live:null");
  page.close();
  assert.equal(statuses.at(-1), "closed:null");
});

test("pending writes: counted until the gateway confirms them, and a promise for all written so far", async () => {
  const bridge = new Bridge();
  const page = client(bridge);
  await page.whenLive();
  const counts = [];
  page.onPendingWrites((n) => counts.push(n));
  bridge.answerSyncs = false;
  page.set("a", 1);
  page.set("b", 2);
  page.delete("a");
  assert.equal(page.pendingWrites, 2, "a key each");
  let settled = false;
  const all = page.waitForPendingWrites().then(() => (settled = true));
  await until(() => bridge.entries.size === 2, 1000, "the writes at the gateway");
  await sleep(30);
  assert.equal(settled, false, "not before the gateway confirmed them");
  bridge.answerSyncs = true;
  page.set("c", 3); // its sync confirms all three
  await all;
  await until(() => page.pendingWrites === 0, 1000, "none pending");
  assert.deepEqual(counts.slice(0, 3), [1, 2, 3]);
  assert.equal(counts.at(-1), 0);

  bridge.down();
  await until(() => page.status === "offline", 1000, "offline");
  page.set("offline", true);
  const waiting = page.waitForPendingWrites();
  bridge.up();
  await waiting; // sent once live, then confirmed
  assert.equal(bridge.entries.get("offline").value, true);

  bridge.down();
  await until(() => page.status === "offline", 1000, "offline");
  page.set("unsent", 1);
  const unsent = page.waitForPendingWrites();
  page.close();
  const error = await rejection(unsent);
  assert.equal(error.reason, "closed");
});

test("a prefix listener hears every key under it", async () => {
  const bridge = new Bridge();
  const page = client(bridge);
  const heard = [];
  page.on("todo/*", (value, old, key) => heard.push([key, value]));
  page.set("todo/1", "milk");
  page.set("title", "list");
  page.set("todo/2", "eggs");
  page.delete("todo/1");
  assert.deepEqual(heard, [["todo/1", "milk"], ["todo/2", "eggs"], ["todo/1", undefined]]);
  page.close();
});

/** The guide's code block that follows `marker`, run with `names` in scope. */
function guideExample(marker, names) {
  const guide = readFileSync(new globalThis.URL("../../../docs/guide/browser.md", import.meta.url), "utf8");
  const at = guide.indexOf(marker);
  assert.ok(at >= 0, `the guide has ${marker}`);
  const block = /```js\n([\s\S]*?)```/.exec(guide.slice(at))[1];
  return new Function(...names, `${block}\nreturn { addTo, total };`);
}

test("the guide's counter, a key per page summed, loses no concurrent increment; one shared key does", async () => {
  const { addTo, total } = guideExample("<!-- example: counter -->", [])();
  const bridge = new Bridge();
  const pages = Array.from({ length: 5 }, () => client(bridge));
  await Promise.all(pages.map((p) => p.whenLive()));
  // Every page adds twice, in the same turns: none has seen the others'.
  for (let round = 0; round < 2; round++) {
    for (const page of pages) {
      addTo(page, "likes", 1);
      page.set("naive", (page.get("naive") ?? 0) + 1);
    }
  }
  await until(() => pages.every((p) => total(p, "likes") === 10), 2000, "every page at 10");
  await sleep(30);
  assert.ok(pages.every((p) => p.get("naive") < 10), "one key read and written back loses increments");
  for (const page of pages) page.close();
});

test("writes not confirmed stay pending across a reload, and are told if the gateway refuses the token", async () => {
  const bridge = new Bridge();
  bridge.down();
  const storage = new MemoryStorage();
  const first = client(bridge, storage);
  first.set("t8/d", "unsent");
  first.close();
  const reload = client(bridge, storage);
  assert.equal(reload.pendingWrites, 1, "the last load's unsent write is pending here");
  let settled = false;
  const waiting = reload.waitForPendingWrites().then(() => (settled = true));
  await sleep(30);
  assert.equal(settled, false, "not resolved while nothing was sent");
  bridge.up();
  await waiting;
  assert.equal(bridge.entries.get("t8/d").value, "unsent");
  await sleep(80); // the confirmation reaches the cache
  reload.close();
  const third = client(bridge, storage);
  assert.equal(third.pendingWrites, 0, "confirmed: not pending after the next reload");
  third.close();

  const wrongStorage = new MemoryStorage();
  bridge.down();
  const offline = client(bridge, wrongStorage, { token: "wrong" });
  offline.set("x/wrongtoken", 1);
  offline.close();
  const again = client(bridge, wrongStorage, { token: "wrong" });
  const refused = [];
  again.onRefused((r) => refused.push(r));
  bridge.up();
  await until(() => again.status === "unauthorized", 1000, "unauthorized");
  assert.deepEqual(refused, [{ key: "x/wrongtoken", reason: "unauthorized" }], "the earlier load's write told as dropped");
});

test("a cached value the gateway would refuse is dropped and told, not sent at every reconnect", async () => {
  const bridge = new Bridge();
  const storage = new MemoryStorage();
  const first = client(bridge, storage);
  await first.whenLive();
  first.set("fine", 1);
  await first.waitForPendingWrites();
  first.close();
  // As an earlier client, or another program, may have left it.
  const item = [...storage.items.keys()].find((k) => k.endsWith("\nfine"));
  storage.setItem(item.replace(/fine$/, "bad"), JSON.stringify(["\udc00", "7000000000000000-00000000-00000000000000aa", 0, null, 1]));
  storage.setItem(item.replace(/fine$/, "garbled"), "not json{");
  const page = client(bridge, storage);
  const refused = [];
  page.onRefused((r) => refused.push(r));
  await page.whenLive();
  await page.waitForPendingWrites();
  assert.deepEqual(
    refused.sort((x, y) => x.key.localeCompare(y.key)),
    [{ key: "bad", reason: "malformed" }, { key: "garbled", reason: "malformed" }],
  );
  assert.equal(page.has("bad"), false);
  assert.equal([...storage.items.keys()].filter((k) => /\n(bad|garbled)$/.test(k)).length, 0, "both gone from the cache");
  assert.equal(bridge.entries.has("bad"), false);
  assert.equal(page.status, "live");
  page.close();
});

test("a key whose cached item could not be read is cached again from the gateway", async () => {
  const bridge = new Bridge();
  const storage = new MemoryStorage();
  const first = client(bridge, storage);
  await first.whenLive();
  first.set("kept", "the gateway's");
  await first.waitForPendingWrites();
  first.close();
  const item = [...storage.items.keys()].find((k) => k.endsWith("\nkept"));
  storage.setItem(item, "not json{");
  const page = client(bridge, storage);
  await page.whenLive();
  assert.equal(page.get("kept"), "the gateway's");
  page.close();
  bridge.down();
  const offline = client(bridge, storage);
  assert.equal(offline.get("kept"), "the gateway's", "an offline reload renders it from the cache");
  offline.close();
});

test("the package README's example runs as written", async () => {
  const readme = readFileSync(new globalThis.URL("../README.md", import.meta.url), "utf8");
  const block = /```js\n([\s\S]*?)```/.exec(readme)[1].replace(/^import .*$/m, "");
  const bridge = new Bridge();
  const before = globalThis.WebSocket;
  globalThis.WebSocket = bridge.WebSocket;
  try {
    let rendered = 0;
    const AsyncFunction = Object.getPrototypeOf(async () => {}).constructor;
    await new AsyncFunction("Aether", "token", "render", `${block}\nboard.close();`)(Aether, "secret", () => (rendered += 1));
    assert.deepEqual(bridge.entries.get("todo/1").value, { text: "milk", done: false });
    assert.ok(rendered >= 1, "its listener ran");
  } finally {
    globalThis.WebSocket = before;
  }
});

test("pendingWrites counts down as the gateway confirms, while writes still wait to be sent", async () => {
  // A gateway that takes one write a message: they leave slowly.
  const bridge = new Bridge({ legacy: true });
  const page = client(bridge, new MemoryStorage(), { sendPerSecond: 500, sendBurst: 10 });
  await page.whenLive();
  for (let i = 0; i < 300; i++) page.set(`card/${i}`, i);
  // While they leave at the client's pace: what is pending is what the
  // gateway has not taken yet, give or take the writes between two syncs.
  const behind = [];
  while (page.pendingWrites > 0) {
    behind.push(page.pendingWrites - (300 - bridge.entries.size));
    await sleep(40);
  }
  assert.ok(behind.length >= 5, "sampled while sending");
  assert.ok(Math.max(...behind) <= 64 + 20, `pending beyond what the gateway lacks: ${behind.join(",")}`);
  assert.equal(bridge.entries.size, 300);
  page.close();
});
