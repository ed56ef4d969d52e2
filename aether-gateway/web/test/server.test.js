// The hooks on a server (renderToString, as Next.js and Remix render): no
// client made, no connection opened, no storage touched, on Node 20 (no
// WebSocket class) as on 22; the fallback rendered, an empty list, no
// pending writes, `connecting`, the presence fallback and nobody else.

import { test } from "node:test";
import assert from "node:assert/strict";
import { createElement } from "react";
import { renderToString } from "react-dom/server";
import { useAether, useAetherPrefix, useAetherStatus, useOthers, usePendingWrites, usePresence } from "../react.js";

/** A WebSocket class that counts what a render would open. */
function counting() {
  const opened = [];
  return {
    opened,
    WebSocket: class {
      constructor(url) {
        opened.push(url);
      }
    },
  };
}

/** Storage that fails the test when touched. */
const untouchable = new Proxy(
  {},
  {
    get(_, name) {
      throw new Error(`storage touched on the server: ${String(name)}`);
    },
  },
);

function Page({ options }) {
  const [count] = useAether("count", 7, options);
  const todos = useAetherPrefix("todo/", options);
  const pending = usePendingWrites(options);
  const status = useAetherStatus(options);
  const [me] = usePresence({ name: "guest" }, options);
  const others = useOthers(options);
  return createElement("p", null, `${count} ${todos.length} ${pending} ${status} ${me.name} ${others.length}`);
}

test("a server render makes no client, opens nothing, touches no storage", () => {
  const sockets = counting();
  const options = {
    url: "ws://gateway.test/bridge/board",
    token: "secret",
    WebSocket: sockets.WebSocket,
    storage: untouchable,
  };
  const html = renderToString(createElement(Page, { options }));
  assert.equal(html, "<p>7 0 0 connecting guest 0</p>");
  assert.deepEqual(sockets.opened, [], "no connection opened");
});

test("a server render needs no WebSocket class (Node 20)", () => {
  const saved = globalThis.WebSocket;
  globalThis.WebSocket = undefined;
  try {
    const options = { url: "ws://gateway.test/bridge/board", token: "secret", storage: untouchable };
    assert.equal(renderToString(createElement(Page, { options })), "<p>7 0 0 connecting guest 0</p>");
  } finally {
    globalThis.WebSocket = saved;
  }
});

test("a server render still refuses options that name no bridge", () => {
  assert.throws(() => renderToString(createElement(Page, { options: { token: "secret" } })), TypeError);
});
