// The rules the client shares with every replica: stamps, held to the
// examples every replica is tested against (aether-core/src/state/stamps.json,
// read by the Rust core's tests too): a stamp's text, which texts are no
// stamps, and which entry wins a merge; the limits before any hello; and
// the node-owned keys a page may not write.

import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { Aether, AetherError } from "../aether.js";
import { Bridge, client, until } from "./bridge.js";

const vectors = JSON.parse(
  readFileSync(new URL("../../../aether-core/src/state/stamps.json", import.meta.url), "utf8"),
);

/** A live page, and a way to send it a change as the gateway would. */
async function page() {
  const bridge = new Bridge();
  const p = client(bridge, undefined, { cache: false });
  await p.whenLive();
  const send = (message) => {
    for (const socket of bridge.sockets) socket.deliver(message);
  };
  return { p, send };
}

function change(key, side) {
  return side.value === null
    ? { type: "delete", key, stamp: side.stamp }
    : { type: "set", key, value: JSON.parse(side.value), stamp: side.stamp };
}

test("stamps are taken as the shared examples write them, and nothing else", async () => {
  const { p, send } = await page();
  vectors.texts.forEach(({ text }, i) => send({ type: "set", key: `good/${i}`, value: i, stamp: text }));
  vectors.not_stamps.forEach((text, i) => send({ type: "set", key: `bad/${i}`, value: i, stamp: text }));
  await until(() => vectors.texts.every((_, i) => p.get(`good/${i}`) === i), 1000, "the stamps");
  vectors.texts.forEach(({ text }, i) => assert.equal(p.stampOf(`good/${i}`), text));
  vectors.not_stamps.forEach((text, i) => assert.equal(p.get(`bad/${i}`), undefined, `${JSON.stringify(text)} taken`));
  // The page's own stamps are of the same form, and sort as they were made.
  const mine = [p.set("a", 1), p.set("a", 2), p.set("b", 3)];
  const form = new RegExp(`^${vectors.texts[0].text.replace(/[0-9a-f]/g, "[0-9a-f]")}$`);
  mine.forEach((s) => assert.match(s, form));
  assert.deepEqual([...mine].sort(), mine);
  p.close();
});

test("merges settle as the shared examples say, equal stamps included", async () => {
  const { p, send } = await page();
  for (const [i, { held, incoming, incoming_wins }] of vectors.merges.entries()) {
    const key = `k/${i}`;
    send(change(key, held));
    await until(() => p.stampOf(key) === held.stamp, 1000, `the held entry of case ${i}`);
    send(change(key, incoming));
    // A winner replaces the entry at once; a change after it shows the loser was passed over.
    send({ type: "set", key: `after/${i}`, value: i, stamp: held.stamp });
    await until(() => p.get(`after/${i}`) === i, 1000, `case ${i} handled`);
    const kept = incoming_wins ? incoming : held;
    const expected = kept.value === null ? undefined : JSON.parse(kept.value);
    assert.deepEqual(p.get(key), expected, `case ${i}: ${JSON.stringify({ held, incoming })}`);
    assert.equal(p.stampOf(key), kept.stamp, `case ${i}`);
  }
  p.close();
});

test("before any hello, the limits are the gateway's defaults as shipped", async () => {
  const shipped = readFileSync(new URL("../../../config/default.toml", import.meta.url), "utf8");
  const state = shipped.slice(shipped.indexOf("[aether.state]"));
  const setting = (name) => Number(state.match(new RegExp(`^${name} = (\\d+)$`, "m"))[1]);
  const bridge = new Bridge();
  bridge.down();
  const p = client(bridge, undefined, { cache: false });
  const key = "k".repeat(setting("max_key_bytes"));
  p.set(key, "at the key limit");
  assert.throws(() => p.set(key + "k", 1), RangeError);
  // A JSON string of n bytes is n - 2 characters between its quotes.
  p.set("v", "x".repeat(setting("max_value_bytes") - 2));
  assert.throws(() => p.set("v", "x".repeat(setting("max_value_bytes") - 1)), RangeError);
  p.close();
});

test("a node's own keys are refused at set, before the page shows them", async () => {
  const bridge = new Bridge();
  const p = client(bridge, undefined, { cache: false });
  await p.whenLive();
  for (const write of [() => p.set("node/sensor/t", 1), () => p.delete("node/sensor/t")]) {
    assert.throws(write, (error) => error instanceof AetherError && error.reason === "not_owner");
  }
  assert.equal(p.get("node/sensor/t"), undefined);
  assert.equal(p.pendingWrites, 0);
  // Shared keys that merely contain the word are taken.
  p.set("nodes/count", 2);
  p.set("x/node/y", 3);
  await until(() => bridge.entries.has("x/node/y"), 1000, "the shared keys");
  assert.ok(!bridge.received.some(({ message }) => message.key?.startsWith("node/")), "nothing sent");
  p.close();
});

test("a client made without a token is unauthorized from the start and says why", async () => {
  const bridge = new Bridge();
  for (const token of [undefined, null, ""]) {
    const p = new Aether("ws://gateway.test/bridge/board", { token, WebSocket: bridge.WebSocket, storage: null });
    assert.equal(p.status, "unauthorized");
    assert.equal(p.statusReason, "no_token");
    await assert.rejects(p.whenLive(), (e) => e instanceof AetherError && e.reason === "unauthorized" && /options\.token/.test(e.message));
    assert.throws(() => p.set("k", 1), (e) => e instanceof AetherError && e.reason === "unauthorized");
    assert.equal(p.get("k"), undefined);
    p.close();
  }
  assert.equal(bridge.attempts, 0, "no connection tried");
  assert.throws(() => new Aether("ws://gateway.test/bridge/board", { token: 5, WebSocket: bridge.WebSocket }), TypeError);
});
