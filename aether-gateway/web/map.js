// Any map the gateway bridges, read live: a row per key, its value as
// JSON. Settings come from the address's fragment (page.js):
//   map#token=<bridge token>&map=<map>&gateway=ws://host:port
import { connect, drawOnChange } from "./page.js";

const client = connect("home", "map");
globalThis.mapPage = { client };

const body = document.getElementById("entries");

function render() {
  const entries = client.items().sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
  body.dataset.count = String(entries.length);
  if (entries.length === 0) {
    body.innerHTML = '<tr><td colspan="2" class="empty">no key yet</td></tr>';
    return;
  }
  body.replaceChildren(...entries.map(([key, value]) => {
    const row = document.createElement("tr");
    const name = document.createElement("td");
    name.textContent = key;
    const shown = document.createElement("td");
    shown.className = "value";
    shown.textContent = JSON.stringify(value);
    row.dataset.key = key;
    row.append(name, shown);
    return row;
  }));
}

drawOnChange(client, render);
