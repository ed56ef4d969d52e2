// A Markdown notebook on the bridge's `notebook` map, on aether.js (page.js).
// Each line is a key `line/<id>` holding { text, pos }: `pos` orders the
// lines (a new line takes a position between its neighbours), so edits of
// different lines never touch the same key, and concurrent edits of one
// line settle on the later stamp. The preview escapes every line's text
// before the little Markdown it knows is applied.
//
// Settings come from the address's fragment (page.js):
//   notebook#token=<bridge token>&gateway=ws://host:port&map=notebook
import { connect, drawOnChange, newId } from "./page.js";

const client = connect("notebook", "notebook");

/** The lines in order: [{ id, text, pos }]. */
function lines() {
  return client.items()
    .filter(([key, line]) => key.startsWith("line/") && line && typeof line === "object" && typeof line.pos === "number")
    .map(([key, line]) => ({ id: key.slice(5), text: String(line.text ?? ""), pos: line.pos }))
    .sort((a, b) => a.pos - b.pos || (a.id < b.id ? -1 : 1));
}

/** Adds a line after the line `after` (`null`: at the top); returns its id. */
function insertAfter(after, text = "") {
  const all = lines();
  const at = after === null ? -1 : all.findIndex((l) => l.id === after);
  const before = at >= 0 ? all[at].pos : (all[0]?.pos ?? 1) - 1;
  const next = all[at + 1]?.pos ?? before + 2;
  const id = newId();
  client.set(`line/${id}`, { text, pos: (before + next) / 2 });
  return id;
}

function edit(id, text) {
  const line = client.get(`line/${id}`);
  if (line) client.set(`line/${id}`, { ...line, text });
}

function remove(id) {
  client.delete(`line/${id}`);
}

/** The notebook's text, a line per key. */
function text() {
  return lines().map((l) => l.text).join("\n");
}

function escape(text) {
  return text.replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
}

/** Markdown of one line, its text escaped first. */
function inline(text) {
  return escape(text)
    .replace(/`([^`]+)`/g, "<code>$1</code>")
    .replace(/\*\*([^*]+)\*\*/g, "<strong>$1</strong>")
    .replace(/\*([^*]+)\*/g, "<em>$1</em>");
}

/** The preview's HTML: headings, bullet lists, paragraphs. */
function preview(all) {
  const out = [];
  let list = false;
  for (const { text } of all) {
    const heading = /^(#{1,3}) (.*)$/.exec(text);
    const item = /^[-*] (.*)$/.exec(text);
    if (item && !list) out.push("<ul>");
    if (!item && list) out.push("</ul>");
    list = !!item;
    if (heading) out.push(`<h${heading[1].length}>${inline(heading[2])}</h${heading[1].length}>`);
    else if (item) out.push(`<li>${inline(item[1])}</li>`);
    else if (text.trim()) out.push(`<p>${inline(text)}</p>`);
  }
  if (list) out.push("</ul>");
  return out.join("");
}

globalThis.notebook = { client, lines, insertAfter, edit, remove, text, preview };

const list = document.getElementById("lines");
const view = document.getElementById("preview");

function lineElement(line) {
  const row = document.createElement("div");
  row.className = "line";
  row.dataset.key = `line/${line.id}`;
  const input = document.createElement("input");
  input.value = line.text;
  input.addEventListener("input", () => edit(line.id, input.value));
  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter") {
      event.preventDefault();
      const id = insertAfter(line.id);
      // Drawn now, so that what is typed next goes to the new line.
      render();
      list.querySelector(`[data-key="line/${id}"] input`)?.focus();
    } else if (event.key === "Backspace" && input.value === "") {
      event.preventDefault();
      remove(line.id);
    }
  });
  row.append(input);
  return row;
}

function render() {
  const all = lines();
  view.innerHTML = preview(all);
  // Lines already shown keep their inputs (and whoever types in one).
  const shown = new Map([...list.children].map((row) => [row.dataset.key, row]));
  const rows = all.map((line) => {
    const row = shown.get(`line/${line.id}`);
    if (!row) return lineElement(line);
    const input = row.querySelector("input");
    if (document.activeElement !== input && input.value !== line.text) input.value = line.text;
    return row;
  });
  const same = rows.length === list.children.length && rows.every((row, i) => list.children[i] === row);
  if (!same) {
    const focused = document.activeElement;
    list.replaceChildren(...rows);
    if (focused && list.contains(focused)) focused.focus();
  }
  list.dataset.count = String(rows.length);
}

document.getElementById("append").addEventListener("click", () => {
  const all = lines();
  insertAfter(all.length ? all[all.length - 1].id : null);
});

drawOnChange(client, render);
