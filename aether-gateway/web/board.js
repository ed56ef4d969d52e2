// The collaborative board: a shared list on the bridge's `board` map, on
// aether.js (page.js). Items are keys `item/<id>` holding { text, done, at }.
//
// Settings come from the address's fragment (page.js):
//   board#token=<bridge token>&gateway=ws://host:port&map=board
import { connect, drawOnChange, newId } from "./page.js";

const client = connect("board", "board");
globalThis.board = { client, add, toggle, rename, remove };

const list = document.getElementById("items");
const peers = document.getElementById("peers");

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
    text.dataset.focus = `text/${key}`;
    text.value = String(item.text ?? "");
    text.addEventListener("change", () => rename(id, text.value));
    const del = document.createElement("button");
    del.textContent = "×";
    del.title = "Delete";
    del.addEventListener("click", () => remove(id));
    row.append(done, text, del);
    return row;
  });
  list.replaceChildren(...rows);
  list.dataset.count = String(rows.length);
}

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
    // A page whose pointer has not moved yet (or a service, which has
    // none) is counted, not drawn.
    dot.hidden = !(c.x >= 0 && c.y >= 0);
  }
});

let lastMove = 0;
let pointer = [-1, -1];
document.addEventListener("mousemove", (event) => {
  pointer = [event.clientX, event.clientY];
  const now = performance.now();
  if (now - lastMove < 50) return;
  lastMove = now;
  client.setPresence(...pointer);
});
// Each time the page is live, it says it is here (the others count it
// before its pointer moves).
client.onStatus((status) => {
  if (status === "live") client.setPresence(...pointer);
});

document.getElementById("add").addEventListener("submit", (event) => {
  event.preventDefault();
  const input = document.getElementById("new-text");
  if (input.value.trim()) add(input.value.trim());
  input.value = "";
});

drawOnChange(client, render);
