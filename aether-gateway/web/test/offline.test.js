// The client's offline layer, in Node against an in-memory bridge: what a
// page writes offline is kept and sent once live, tabs share the cache by
// stamps, a stale offline write loses, a wrong token stops reconnecting,
// and the client paces itself under the gateway's rate limit.

import { test } from "node:test";
import assert from "node:assert/strict";
import { Aether } from "../aether.js";
import { Bridge, MemoryStorage, client, sleep, stamp, until } from "./bridge.js";

const URL = "ws://gateway.test/bridge/board";


test("writes made offline are kept and sent once live", async () => {
  const bridge = new Bridge();
  bridge.down();
  const page = client(bridge, new MemoryStorage());
  await until(() => page.status === "offline", 1000, "offline");
  const written = page.set("todo/1", { text: "milk" });
  page.set("todo/2", { text: "eggs" });
  page.delete("todo/2");
  assert.deepEqual(page.get("todo/1"), { text: "milk" });
  await sleep(50);
  assert.equal(bridge.entries.size, 0, "nothing reached a stopped gateway");
  bridge.up();
  await page.whenLive();
  await until(() => bridge.entries.size === 2, 2000, "the offline writes");
  assert.deepEqual(bridge.entries.get("todo/1"), { value: { text: "milk" }, stamp: written, deleted: false, prev: null });
  assert.equal(bridge.entries.get("todo/2").deleted, true, "the delete went as a tombstone");
  page.close();
});

test("a reload renders from the cache and sends what the last load wrote offline", async () => {
  const bridge = new Bridge();
  const storage = new MemoryStorage();
  const first = client(bridge, storage);
  await first.whenLive();
  first.set("title", "shopping");
  await until(() => bridge.entries.has("title"), 1000, "the live write");
  bridge.down();
  await until(() => first.status === "offline", 1000, "offline");
  first.set("note", "written offline");
  first.close(); // the tab closes with the write unsent; the cache keeps it

  const reload = client(bridge, storage);
  assert.equal(reload.get("title"), "shopping", "rendered from the cache, gateway down");
  assert.equal(reload.get("note"), "written offline");
  bridge.up();
  await reload.whenLive();
  await until(() => bridge.entries.has("note"), 2000, "the earlier load's offline write");
  assert.equal(bridge.entries.get("note").value, "written offline");
  reload.close();
});

test("tabs share the cache by stamps: an older write never overwrites a newer one", async () => {
  const bridge = new Bridge();
  bridge.down();
  const storage = new MemoryStorage();
  const older = client(bridge, storage);
  const newer = client(bridge, storage);
  older.set("color", "red");
  await sleep(2);
  newer.set("color", "blue");
  newer.saveNow();
  older.saveNow(); // saved last, with the lower stamp
  older.set("only-older", 1);
  older.saveNow();
  const third = client(bridge, storage);
  assert.equal(third.get("color"), "blue", "the higher stamp is what the cache keeps");
  assert.equal(third.get("only-older"), 1, "each tab's own keys are kept");
  for (const page of [older, newer, third]) page.close();
});

test("a stale offline write loses to a newer stamp, and its page is told", async () => {
  const bridge = new Bridge();
  bridge.down();
  const page = client(bridge, new MemoryStorage());
  const mine = page.set("card/7", { column: "doing" });
  const lost = [];
  page.onSupersede((s) => lost.push(s));
  // Meanwhile a service moved the card, later than the page's write.
  const later = stamp((BigInt(Date.now()) + 5000n) * 1000000n, 0, "00000000000000aa");
  bridge.write("card/7", { column: "done" }, later);
  bridge.up();
  await page.whenLive();
  await until(() => page.get("card/7")?.column === "done", 1000, "the newer write");
  await sleep(30);
  assert.equal(bridge.entries.get("card/7").stamp, later, "the gateway kept the newer write");
  assert.equal(lost.length, 1);
  assert.equal(lost[0].mine, mine);
  assert.deepEqual(lost[0].by, { value: { column: "done" }, stamp: later });
  assert.equal(lost[0].concurrent, null, "a service's write: whether it saw the page's is not known");
  page.close();
});

test("a wrong token is unauthorized and stops reconnecting", async () => {
  const bridge = new Bridge({ token: "right" });
  const page = new Aether(URL, {
    token: "wrong",
    WebSocket: bridge.WebSocket,
    storage: new MemoryStorage(),
    backoffMs: 5,
    maxBackoffMs: 10,
  });
  const statuses = [];
  page.onStatus((s) => statuses.push(s));
  await until(() => page.status === "unauthorized", 1000, "unauthorized");
  const attempts = bridge.attempts;
  await sleep(150); // many backoffs' worth
  assert.equal(bridge.attempts, attempts, "no attempt after unauthorized");
  assert.equal(page.status, "unauthorized");
  assert.deepEqual(statuses, ["unauthorized"]);
  page.close();
});

test("a burst of writes is paced under the gateway's rate limit and all arrive", async () => {
  // The gateway allows 60 a second after a burst of 10; the client sends 40
  // a second after a burst of 5.
  const bridge = new Bridge({ perSecond: 60, burst: 10, legacy: true });
  const page = client(bridge, new MemoryStorage(), { sendPerSecond: 40, sendBurst: 5 });
  await page.whenLive();
  const start = Date.now();
  for (let i = 0; i < 30; i++) page.set(`k/${i}`, i);
  await until(() => bridge.entries.size === 30, 5000, "every write");
  const took = Date.now() - start;
  assert.equal(page.status, "live", "never disconnected for its rate");
  // 5 at once, then 25 at 40 a second: at least about 600 ms.
  assert.ok(took >= 500, `paced: ${took} ms`);
  const writes = bridge.received.filter((r) => r.message.type === "set");
  const firstSecond = writes.filter((r) => r.at - start < 250).length;
  assert.ok(firstSecond <= 5 + 40 * 0.25 + 1, `at most the burst and the rate: ${firstSecond} in 250 ms`);
  page.close();
});

test("writes to one key while paced leave as the latest only", async () => {
  const bridge = new Bridge();
  const page = client(bridge, new MemoryStorage(), { sendPerSecond: 20, sendBurst: 1 });
  await page.whenLive();
  for (let i = 0; i <= 100; i++) page.set("counter", i);
  await until(() => bridge.entries.get("counter")?.value === 100, 2000, "the last write");
  const sent = bridge.received.filter((r) => r.message.key === "counter").length;
  assert.ok(sent <= 3, `${sent} messages for 101 writes to one key`);
  page.close();
});

test("a page stamps in the bus's time, from the fastest of its readings", async () => {
  // The bus two hours ahead of this machine; the hello arrives 400 ms after
  // it was stamped (a slow link, a token's check), the syncs at once.
  const bridge = new Bridge();
  bridge.offsetMs = 2 * 3600 * 1000;
  bridge.helloDelayMs = 400;
  const page = client(bridge, new MemoryStorage());
  await page.whenLive();
  // Its first write, before a second reading, is not ahead of the bus (a
  // stamp ahead by more than max_drift is refused; one behind is not).
  const first = page.set("todo/0", { text: "bread" });
  const firstMs = Number(BigInt("0x" + first.slice(0, 16)) / 1000000n);
  assert.ok(firstMs <= Date.now() + bridge.offsetMs + 5, `stamped ${firstMs - Date.now() - bridge.offsetMs} ms ahead`);
  // The page's own sync once live is a second reading, its round trip short.
  await until(() => page.readings.length >= 2, 2000, "a second reading");
  const written = page.set("todo/1", { text: "milk" });
  const stampedMs = Number(BigInt("0x" + written.slice(0, 16)) / 1000000n);
  const busMs = Date.now() + bridge.offsetMs;
  assert.ok(Math.abs(stampedMs - busMs) < 100, `stamped ${stampedMs - busMs} ms off the bus's time`);
  page.close();
});

test("a page refuses at set what the gateway's limits refuse, the stricter of the app's kept", async () => {
  const bridge = new Bridge();
  bridge.limits = { max_key_bytes: 16, max_value_bytes: 64 };
  const page = client(bridge, new MemoryStorage());
  await page.whenLive();
  assert.throws(() => page.set("a-key-longer-than-16", 1), RangeError);
  assert.throws(() => page.set("k", "x".repeat(100)), RangeError);
  page.set("k", "x".repeat(40));
  page.close();
  // An app that asked for less keeps its own limit; a looser one gets the gateway's.
  const strict = client(bridge, new MemoryStorage(), { maxValueBytes: 32 });
  await strict.whenLive();
  assert.throws(() => strict.set("k", "x".repeat(40)), RangeError);
  strict.close();
  const loose = client(bridge, new MemoryStorage(), { maxValueBytes: 1000 });
  await loose.whenLive();
  assert.throws(() => loose.set("k", "x".repeat(100)), RangeError);
  loose.close();
  // The limits are cached: a reload refuses by them before it is live.
  const storage = new MemoryStorage();
  const first = client(bridge, storage);
  await first.whenLive();
  first.close();
  bridge.down();
  const reload = client(bridge, storage);
  assert.throws(() => reload.set("k", "x".repeat(100)), RangeError);
  reload.close();
});

test("stamps far ahead of the bus's time in the map do not carry the page's clock", async () => {
  // A writer two hours ahead left an entry; the page still stamps in the
  // bus's time (its writes would otherwise be refused as stamped ahead).
  const bridge = new Bridge();
  const aheadNs = BigInt(Date.now() + 2 * 3600 * 1000) * 1000000n;
  bridge.write("left", "by a clock ahead", stamp(aheadNs, 0, "00000000000000aa"));
  const page = client(bridge, new MemoryStorage());
  await page.whenLive();
  assert.equal(page.get("left"), "by a clock ahead", "the entry is shown");
  const written = page.set("mine", 1);
  const stampedMs = Number(BigInt("0x" + written.slice(0, 16)) / 1000000n);
  assert.ok(Math.abs(stampedMs - Date.now()) < 1000, `stamped ${stampedMs - Date.now()} ms off the bus's time`);
  page.close();
});

test("a write made before the page first heard the bus's time is stamped again in it", async () => {
  // The page's machine two hours fast, no cache: it writes before hello.
  const bridge = new Bridge();
  bridge.offsetMs = -2 * 3600 * 1000;
  const storage = new MemoryStorage();
  const page = client(bridge, storage);
  const early = page.set("early", 1);
  await page.whenLive();
  const later = page.set("later", 2);
  await until(() => bridge.entries.has("early") && bridge.entries.has("later"), 2000, "both writes at the gateway");
  const busMs = Date.now() + bridge.offsetMs;
  for (const key of ["early", "later"]) {
    const stampedMs = Number(BigInt("0x" + bridge.entries.get(key).stamp.slice(0, 16)) / 1000000n);
    assert.ok(Math.abs(stampedMs - busMs) < 1000, `${key} stamped ${stampedMs - busMs} ms off the bus's time`);
  }
  assert.notEqual(bridge.entries.get("early").stamp, early, "stamped again");
  assert.ok(later > bridge.entries.get("early").stamp, "the later write is later");
  assert.equal(page.pendingWrites, 0);
  page.close();
  // The cache holds the new stamp: a reload sends nothing stamped ahead.
  const cached = JSON.parse(storage.getItem([...storage.items.keys()].find((k) => k.endsWith("\nearly"))));
  assert.equal(cached[1], bridge.entries.get("early").stamp);
});

/** The storage name of `key`'s item, as a live client of `bridge` names it. */
async function itemName(bridge, storage, key) {
  const first = client(bridge, storage);
  await first.whenLive();
  first.set("\u0001probe", 0);
  await first.waitForPendingWrites();
  first.close();
  const probe = [...storage.items.keys()].find((k) => k.endsWith("\n\u0001probe"));
  return probe.slice(0, probe.length - "\u0001probe".length) + key;
}

/** A bridge, a page's storage, and the storage name of `key`'s item. */
async function cached(key) {
  const bridge = new Bridge();
  const storage = new MemoryStorage();
  return { bridge, storage, name: await itemName(bridge, storage, key) };
}

/**
 * Two tabs load offline; the second writes `k` and closes; the first goes
 * live (`whenLive` then sees what it was told, its refusals). The second
 * tab's write is still in the cache after that, and the next load sends it.
 */
async function anotherTabsWriteSurvives({ bridge, storage, name }, whenLive = async () => {}) {
  bridge.down();
  const a = client(bridge, storage);
  const b = client(bridge, storage);
  b.set("k", "b offline");
  b.close();
  const refused = [];
  a.onRefused((r) => refused.push(r));
  bridge.up();
  await a.whenLive();
  await whenLive(refused);
  assert.notEqual(storage.getItem(name), null, "b's write kept");
  a.close();
  const c = client(bridge, storage);
  await c.whenLive();
  await until(() => bridge.entries.get("k")?.value === "b offline", 2000, "b's write sent by the next load");
  c.close();
}

test("writes offline to keys named as an object's own fields are sent", async () => {
  const bridge = new Bridge();
  bridge.down();
  const page = client(bridge, new MemoryStorage());
  await until(() => page.status === "offline", 1000, "offline");
  for (const key of ["constructor", "toString", "__proto__", "hasOwnProperty"]) page.set(key, key);
  bridge.up();
  await page.whenLive();
  await page.waitForPendingWrites();
  for (const key of ["constructor", "toString", "__proto__", "hasOwnProperty"]) {
    assert.equal(bridge.entries.get(key)?.value, key, key);
  }
  assert.equal(page.pendingWrites, 0);
  page.close();
});

test("a hostile cache is read item by item: its name item, a value too deep, a value set refuses", async () => {
  const { bridge, storage, name: good } = await cached("good");
  const cacheName = good.slice(0, good.length - "\ngood".length);
  const writer = client(bridge, storage);
  await writer.whenLive();
  writer.set("good", 1);
  writer.set("big", "the gateway's");
  await writer.waitForPendingWrites();
  writer.close();
  storage.setItem(cacheName, "not json");
  let deep = "1";
  for (let i = 0; i < 100000; i++) deep = `[${deep}]`;
  storage.setItem(cacheName + "\ndeep", `[${deep},"7000000000000000-00000000-00000000000000aa",0,null,1]`);
  // Above the gateway's stamp, and larger than any write may be.
  storage.setItem(cacheName + "\nbig", JSON.stringify(["x".repeat(100000), "7fffffffffffffff-00000000-00000000000000aa", 0, null, 1]));
  bridge.down();
  const page = client(bridge, storage);
  assert.equal(page.get("good"), 1, "the entries render without the name item");
  assert.equal(page.get("deep"), undefined);
  const refused = [];
  page.onRefused((r) => refused.push(r));
  bridge.up();
  await page.whenLive();
  await until(() => refused.length === 2, 1000, "both told");
  assert.deepEqual(refused.map((r) => r.key).sort(), ["big", "deep"]);
  assert.equal(page.get("big"), "the gateway's", "the gateway's entry taken in its place");
  await page.waitForPendingWrites();
  assert.equal(bridge.entries.get("big").value, "the gateway's", "nothing of it sent");
  page.close();
  bridge.down();
  const offline = client(bridge, storage);
  assert.equal(offline.get("big"), "the gateway's", "cached");
  offline.close();
});

test("an unreadable item another tab has written since is not dropped", async () => {
  const page = await cached("k");
  page.storage.setItem(page.name, "garbage");
  await anotherTabsWriteSurvives(page);
});

test("a cached clock offset no stamp can hold is passed over, and the items render", async () => {
  const { bridge, storage, name: item } = await cached("item");
  const cacheName = item.slice(0, item.length - "\nitem".length);
  bridge.down();
  const writer = client(bridge, storage);
  writer.set("item", "offline");
  writer.close();
  for (const [i, offset] of ["1e400", "-1e400", "1e15", "-1e15"].entries()) {
    storage.setItem(cacheName, `{"offsetMs":${offset}}`);
    const page = client(bridge, storage);
    assert.equal(page.get("item"), "offline", offset);
    assert.equal(page.pendingWrites, 1 + i, `${offset}: the offline writes, pending`);
    assert.match(page.set(`other/${i}`, 1), /^[0-9a-f]{16}-[0-9a-f]{8}-[0-9a-f]{16}$/, offset);
    page.close();
  }
  bridge.up();
  const live = client(bridge, storage);
  await live.whenLive();
  await until(() => bridge.entries.get("item")?.value === "offline", 2000, "the offline write sent");
  live.close();
});

test("a cached write dropped as too large does not take another tab's write made since", async () => {
  const page = await cached("k");
  const old = stamp(BigInt(Date.now() - 60000) * 1000000n, 0, "00000000000000aa");
  page.storage.setItem(page.name, JSON.stringify(["x".repeat(40000), old, 0, null, 1]));
  await anotherTabsWriteSurvives(page, (refused) => until(() => refused.length === 1, 1000, "a's copy told as malformed"));
});
