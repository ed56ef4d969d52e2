// A kanban board on the bridge's `kanban` map, on aether.js (page.js).
// Columns are keys `column/<id>` holding { title, at }; cards are keys
// `card/<id>` holding { title, column, priority, at }. A move is a write of
// the card with another column, a delete a tombstone: a card moved in one
// tab while another deletes it ends as the later write (by stamp) left it.
// Deleting a column deletes its cards; a card moved into a column deleted
// meanwhile stays, under "No column", rather than vanish.
//
// Settings come from the address's fragment (page.js):
//   kanban#token=<bridge token>&gateway=ws://host:port&map=kanban
import { connect, drawOnChange, newId } from "./page.js";

const client = connect("kanban", "kanban");
const PRIORITIES = ["low", "med", "high"];

function addColumn(title) {
  const id = newId();
  client.set(`column/${id}`, { title, at: Date.now() });
  return id;
}

function renameColumn(id, title) {
  const column = client.get(`column/${id}`);
  if (column) client.set(`column/${id}`, { ...column, title });
}

function removeColumn(id) {
  for (const [key, card] of client.items()) {
    if (key.startsWith("card/") && card?.column === id) client.delete(key);
  }
  client.delete(`column/${id}`);
}

function addCard(column, title) {
  const id = newId();
  client.set(`card/${id}`, { title, column, priority: "low", at: Date.now() });
  return id;
}

function move(id, column) {
  const card = client.get(`card/${id}`);
  if (card && card.column !== column) client.set(`card/${id}`, { ...card, column, at: Date.now() });
}

function retitle(id, title) {
  const card = client.get(`card/${id}`);
  if (card) client.set(`card/${id}`, { ...card, title });
}

function cycle(id) {
  const card = client.get(`card/${id}`);
  if (!card) return;
  const next = PRIORITIES[(PRIORITIES.indexOf(card.priority) + 1) % PRIORITIES.length];
  client.set(`card/${id}`, { ...card, priority: next });
}

function remove(id) {
  client.delete(`card/${id}`);
}

/** What the board shows: columns in order, each with its cards in order. */
function layout() {
  const columns = [];
  const cards = [];
  for (const [key, value] of client.items()) {
    if (!value || typeof value !== "object") continue;
    if (key.startsWith("column/")) columns.push({ id: key.slice(7), ...value });
    if (key.startsWith("card/")) cards.push({ id: key.slice(5), ...value });
  }
  const byOrder = (a, b) => (a.at ?? 0) - (b.at ?? 0) || (a.id < b.id ? -1 : 1);
  columns.sort(byOrder);
  cards.sort(byOrder);
  const known = new Set(columns.map((c) => c.id));
  const lanes = columns.map((c) => ({ ...c, cards: cards.filter((card) => card.column === c.id) }));
  const orphans = cards.filter((card) => !known.has(card.column));
  if (orphans.length) lanes.push({ id: null, title: "No column", cards: orphans });
  return lanes;
}

globalThis.kanban = { client, addColumn, renameColumn, removeColumn, addCard, move, retitle, cycle, remove, layout };

const board = document.getElementById("board");
const newColumn = document.getElementById("new-column");

function cardElement(card) {
  const row = document.createElement("div");
  row.className = "card";
  row.draggable = true;
  row.dataset.key = `card/${card.id}`;
  row.dataset.priority = PRIORITIES.includes(card.priority) ? card.priority : "low";
  row.addEventListener("dragstart", (event) => event.dataTransfer.setData("text/plain", card.id));
  const title = document.createElement("input");
  title.dataset.focus = `card-title/${card.id}`;
  title.value = String(card.title ?? "");
  title.addEventListener("change", () => retitle(card.id, title.value));
  const priority = document.createElement("button");
  priority.className = "priority";
  priority.textContent = row.dataset.priority;
  priority.title = "Cycle the priority";
  priority.addEventListener("click", () => cycle(card.id));
  const del = document.createElement("button");
  del.textContent = "×";
  del.title = "Delete the card";
  del.addEventListener("click", () => remove(card.id));
  row.append(title, priority, del);
  return row;
}

function laneElement(lane) {
  const column = document.createElement("section");
  column.className = "column";
  const heading = document.createElement("h2");
  if (lane.id === null) {
    column.dataset.orphans = "";
    heading.textContent = lane.title;
  } else {
    column.dataset.key = `column/${lane.id}`;
    const title = document.createElement("input");
    title.dataset.focus = `column-title/${lane.id}`;
    title.value = String(lane.title ?? "");
    title.addEventListener("change", () => renameColumn(lane.id, title.value));
    const del = document.createElement("button");
    del.textContent = "×";
    del.title = "Delete the column and its cards";
    del.addEventListener("click", () => removeColumn(lane.id));
    heading.append(title, del);
    column.addEventListener("dragover", (event) => event.preventDefault());
    column.addEventListener("drop", (event) => {
      event.preventDefault();
      move(event.dataTransfer.getData("text/plain"), lane.id);
    });
  }
  column.append(heading, ...lane.cards.map(cardElement));
  if (lane.id !== null) {
    const form = document.createElement("form");
    const input = document.createElement("input");
    input.dataset.focus = `new-card/${lane.id}`;
    input.placeholder = "New card";
    input.maxLength = 200;
    const add = document.createElement("button");
    add.textContent = "Add";
    form.append(input, add);
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      if (input.value.trim()) addCard(lane.id, input.value.trim());
      input.value = "";
    });
    column.append(form);
  }
  return column;
}

function render() {
  const lanes = layout();
  board.replaceChildren(...lanes.map(laneElement), newColumn);
  board.dataset.columns = String(lanes.filter((l) => l.id !== null).length);
  board.dataset.cards = String(lanes.reduce((n, l) => n + l.cards.length, 0));
}

newColumn.addEventListener("submit", (event) => {
  event.preventDefault();
  const input = document.getElementById("column-title");
  if (input.value.trim()) addColumn(input.value.trim());
  input.value = "";
});

drawOnChange(client, render);
