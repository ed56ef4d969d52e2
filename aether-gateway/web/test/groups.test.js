// Many writes at once, against the in-memory bridge: a paste of 10,000
// keys leaves in a few `writes` messages under the gateway's rates and
// reaches another page within seconds; `setMany` checks every write before
// writing one; `transact` is one step for this page's listeners and for
// the other pages; a gateway that tells no write rate gets one write a
// message.

import { test } from "node:test";
import assert from "node:assert/strict";
import { Bridge, MemoryStorage, client, until } from "./bridge.js";

const sent = (bridge, type) => bridge.received.filter((r) => r.message.type === type);

test("10,000 writes of one page reach another page within seconds, in few messages", async () => {
  const bridge = new Bridge({ perSecond: 100, burst: 200 });
  const writer = client(bridge, new MemoryStorage());
  const reader = client(bridge, new MemoryStorage());
  await Promise.all([writer.whenLive(), reader.whenLive()]);
  const statuses = [];
  writer.onStatus((status, reason) => statuses.push(`${status}:${reason}`));
  const start = Date.now();
  for (let i = 0; i < 10000; i++) writer.set(`card/${i}`, { title: `card ${i}`, column: "todo" });
  await until(() => reader.keys().length === 10000, 5000, "every card on the other page");
  await writer.waitForPendingWrites();
  const took = Date.now() - start;
  assert.deepEqual(statuses, [], "never closed for its rate");
  const groups = sent(bridge, "writes");
  assert.ok(groups.length >= 2 && groups.length <= 40, `${groups.length} writes messages`);
  for (const { message } of groups) {
    assert.ok(JSON.stringify(message).length <= bridge.limits.max_message_bytes, "each within the message limit");
  }
  assert.equal(sent(bridge, "set").length, 0, "no write alone");
  assert.equal(reader.get("card/9999").title, "card 9999");
  assert.equal(writer.pendingWrites, 0);
  assert.ok(took < 5000, `${took} ms`);
  writer.close();
  reader.close();
});

test("a lone write still leaves alone, at once", async () => {
  const bridge = new Bridge();
  const page = client(bridge, new MemoryStorage());
  await page.whenLive();
  page.set("title", "one");
  await until(() => bridge.entries.has("title"), 1000, "the write");
  assert.equal(sent(bridge, "set").length, 1);
  assert.equal(sent(bridge, "writes").length, 0);
  page.close();
});

test("writes leave under the gateway's write rate, never past it", async () => {
  // 2,000 writes a second after 200 at once: the page takes half of each.
  const bridge = new Bridge();
  bridge.limits.writes_per_s = 2000;
  bridge.limits.write_burst = 200;
  const page = client(bridge, new MemoryStorage());
  const statuses = [];
  page.onStatus((status, reason) => statuses.push(`${status}:${reason}`));
  await page.whenLive();
  const start = Date.now();
  for (let i = 0; i < 1000; i++) page.set(`k/${i}`, i);
  await until(() => bridge.entries.size === 1000, 5000, "every write");
  const took = Date.now() - start;
  assert.deepEqual(statuses, ["live:null"], "never closed for its rate");
  // 100 at once, then 900 at 1,000 a second.
  assert.ok(took >= 700, `paced: ${took} ms`);
  for (const { message } of sent(bridge, "writes")) {
    assert.ok(message.writes.length <= 100, `${message.writes.length} writes in one message`);
  }
  page.close();
});

test("setMany checks every write first: one refused, none written", async () => {
  const bridge = new Bridge();
  const page = client(bridge, new MemoryStorage());
  await page.whenLive();
  assert.throws(() => page.setMany({ a: 1, b: () => 2, c: 3 }), TypeError);
  assert.throws(() => page.setMany([["a", 1], ["node/x/y", 2]]), (e) => e.reason === "not_owner");
  assert.throws(() => page.setMany([["a", 1], ["b", "x".repeat(40000)]]), RangeError);
  assert.throws(() => page.setMany([["a"]]), TypeError);
  assert.deepEqual(page.keys(), [], "nothing written");
  const stamps = page.setMany([["a", 1], ["b", { n: 2 }]]);
  assert.equal(stamps.length, 2);
  assert.ok(stamps[0] < stamps[1], "stamped in order");
  page.setMany({ a: undefined, c: "three" });
  assert.deepEqual(page.items(), [["b", { n: 2 }], ["c", "three"]]);
  await page.waitForPendingWrites();
  assert.equal(bridge.entries.get("a").deleted, true, "undefined deletes");
  page.close();
});

test("transact is one step: this page's listeners after it, another page's all at once", async () => {
  const bridge = new Bridge();
  const writer = client(bridge, new MemoryStorage());
  const reader = client(bridge, new MemoryStorage());
  await Promise.all([writer.whenLive(), reader.whenLive()]);
  const keys = ["col/a", "col/b", "col/c", "col/d"];
  // Each listener call sees the whole group in place.
  const whole = (page) => keys.every((k) => page.get(k) !== undefined);
  const mine = [];
  writer.on("col/*", () => mine.push(whole(writer)));
  const theirs = [];
  reader.on("col/*", () => theirs.push(whole(reader)));
  const returned = writer.transact(() => {
    for (const key of keys) writer.set(key, key);
    assert.deepEqual(mine, [], "no listener inside the transaction");
    return "done";
  });
  assert.equal(returned, "done");
  assert.deepEqual(mine, [true, true, true, true]);
  await until(() => theirs.length === 4, 2000, "the group on the other page");
  assert.deepEqual(theirs, [true, true, true, true], "applied together");
  assert.equal(sent(bridge, "writes").length, 1, "one message");
  // A throw inside: the writes before it stay, and are told.
  assert.throws(() => writer.transact(() => {
    writer.set("col/e", 5);
    throw new Error("the app's");
  }), /the app's/);
  assert.equal(writer.get("col/e"), 5);
  assert.equal(mine.length, 5);
  await until(() => reader.get("col/e") === 5, 2000, "the write before the throw");
  writer.close();
  reader.close();
});

test("a gateway that tells no write rate gets one write a message", async () => {
  const bridge = new Bridge({ legacy: true });
  const page = client(bridge, new MemoryStorage());
  await page.whenLive();
  page.setMany({ a: 1, b: 2, c: 3 });
  await page.waitForPendingWrites();
  assert.equal(sent(bridge, "writes").length, 0);
  assert.equal(sent(bridge, "set").length, 3);
  assert.equal(page.status, "live");
  page.close();
});

test("onPendingWrites is told once for a group, with the whole group pending", async () => {
  const bridge = new Bridge();
  bridge.answerSyncs = false;
  const page = client(bridge, new MemoryStorage());
  await page.whenLive();
  const counts = [];
  page.onPendingWrites((n) => counts.push(n));
  page.setMany({ a: 1, b: 2, c: 3 });
  assert.deepEqual(counts, [3]);
  page.transact(() => {
    page.set("d", 4);
    page.delete("a");
  });
  assert.deepEqual(counts, [3, 4]);
  page.close();
});

test("a page refuses at set what its token does not write, as hello tells it", async () => {
  const bridge = new Bridge();
  bridge.rights = { read_only: false, prefixes: ["cards/"] };
  const page = client(bridge, new MemoryStorage());
  await page.whenLive();
  page.set("cards/1", "one");
  for (const write of [() => page.set("title", "x"), () => page.delete("title"), () => page.setMany({ "cards/2": 2, title: "y" })]) {
    assert.throws(write, (e) => e.reason === "forbidden" && /cards\//.test(e.message));
  }
  assert.deepEqual(page.keys(), ["cards/1"], "nothing else written");
  page.close();
  const viewer = new Bridge();
  viewer.rights = { read_only: true, prefixes: null };
  const reader = client(viewer, new MemoryStorage());
  await reader.whenLive();
  assert.throws(() => reader.set("cards/1", 1), (e) => e.reason === "forbidden" && /read-only/.test(e.message));
  reader.close();
  // A gateway that tells no rights: anything is sent, and it decides.
  const old = new Bridge();
  old.rights = null;
  const any = client(old, new MemoryStorage());
  await any.whenLive();
  any.set("title", "sent");
  await any.waitForPendingWrites();
  assert.equal(old.entries.get("title").value, "sent");
  any.close();
});
