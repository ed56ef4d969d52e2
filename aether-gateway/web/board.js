// The collaborative board: a shared list on the bridge's `board` map, using
// only aether.js. Items are keys `item/<id>` holding { text, done, at }.
//
// Settings come from the address's fragment:
//   board#token=<bridge token>&gateway=ws://host:port&map=board
// The gateway defaults to the one that served the page.
import { Aether } from "./aether.js";

const params = new URLSearchParams(location.hash.slice(1));
const map = params.get("map") || "board";
const scheme = location.protocol === "https:" ? "wss" : "ws";
const gateway = params.get("gateway") || `${scheme}://${location.host}`;
const token = params.get("token") || "";

const client = new Aether(`${gateway}/bridge/${map}`, { token, cacheKey: `aether-board:${map}` });
globalThis.board = { client, add, toggle, rename, remove };

const list = document.getElementById("items");
const status = document.getElementById("status");
const peers = document.getElementById("peers");
document.getElementById("map-name").textContent = map;

function newId() {
  const bytes = new Uint8Array(6);
  crypto.getRandomValues(bytes);
  return [...bytes].map((b) => b.toString(16).padStart(2, "0")).join("");
}

function add(text) {
  const id = newId();
  client.set(`item/${id}`, { text, done: false, at: Date.now() });
  return id;
}

function toggle(id) {
  const item = client.get(`item/${id}`);
  if (item) client.set(`item/${id}`, { ...item, done: !item.done });
}

function rename(id, text) {
  const item = client.get(`item/${id}`);
  if (item) client.set(`item/${id}`, { ...item, text });
}

function remove(id) {
  client.delete(`item/${id}`);
}

function render() {
  const items = client.items()
    .filter(([key, item]) => key.startsWith("item/") && item && typeof item === "object")
    .sort((a, b) => (a[1].at ?? 0) - (b[1].at ?? 0) || (a[0] < b[0] ? -1 : 1));
  const rows = items.map(([key, item]) => {
    const id = key.slice(5);
    const row = document.createElement("li");
    row.dataset.key = key;
    row.dataset.done = String(!!item.done);
    const done = document.createElement("input");
    done.type = "checkbox";
    done.checked = !!item.done;
    done.addEventListener("change", () => toggle(id));
    const text = document.createElement("input");
    text.className = "text";
    text.value = String(item.text ?? "");
    text.addEventListener("change", () => rename(id, text.value));
    const del = document.createElement("button");
    del.textContent = "×";
    del.title = "Delete";
    del.addEventListener("click", () => remove(id));
    row.append(done, text, del);
    return row;
  });
  const focused = document.activeElement?.closest?.("li")?.dataset.key;
  if (focused) return; // do not redraw under someone typing; the next change will
  list.replaceChildren(...rows);
  list.dataset.count = String(rows.length);
}

let pending = false;
client.on("*", () => {
  if (pending) return;
  pending = true;
  requestAnimationFrame(() => {
    pending = false;
    render();
  });
});
client.onStatus((s) => {
  status.textContent = s === "unauthorized" ? "unauthorized: open the address the gateway logged (…/board#token=…)" : s;
  status.dataset.status = s;
});
status.textContent = client.status;
status.dataset.status = client.status;

const cursors = new Map();
client.onPresence((others) => {
  peers.textContent = `${others.size} other${others.size === 1 ? "" : "s"} here`;
  peers.dataset.peers = String(others.size);
  for (const [id, dot] of cursors) {
    if (!others.has(id)) {
      dot.remove();
      cursors.delete(id);
    }
  }
  for (const [id, c] of others) {
    let dot = cursors.get(id);
    if (!dot) {
      dot = document.createElement("div");
      dot.className = "cursor";
      document.body.append(dot);
      cursors.set(id, dot);
    }
    dot.style.background = c.color;
    dot.style.left = `${c.x}px`;
    dot.style.top = `${c.y}px`;
  }
});

let lastMove = 0;
document.addEventListener("mousemove", (event) => {
  const now = performance.now();
  if (now - lastMove < 50) return;
  lastMove = now;
  client.setPresence(event.clientX, event.clientY);
});

document.getElementById("add").addEventListener("submit", (event) => {
  event.preventDefault();
  const input = document.getElementById("new-text");
  if (input.value.trim()) add(input.value.trim());
  input.value = "";
});

render();
