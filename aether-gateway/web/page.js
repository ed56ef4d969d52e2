// What the collaborative pages (board, kanban, notebook) share: the
// client from the address's fragment, the status badge, redraws coalesced
// per animation frame with the focused field kept, and new ids.
//
// The fragment: #token=<bridge token>&gateway=ws://host:port&map=<map>
// (the gateway defaults to the one that served the page, under the path it
// was served from: behind a proxy at /aether/, /aether/bridge/<map>).
import { Aether } from "./aether.js";

/** The client of the page's map (`map` unless the fragment names one). */
export function connect(map, page) {
  const params = new URLSearchParams(location.hash.slice(1));
  const name = params.get("map") || map;
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const here = new URL(".", location.href);
  const gateway = params.get("gateway") || `${scheme}://${here.host}${here.pathname.replace(/\/$/, "")}`;
  // Without one, the gateway refuses the page, and the badge says how to
  // get it.
  const token = params.get("token") || "none";
  const client = new Aether(`${gateway}/bridge/${name}`, { token, cacheKey: `aether-${page}:${name}` });
  const shown = document.getElementById("map-name");
  if (shown) shown.textContent = name;
  const status = document.getElementById("status");
  const show = (s, reason) => {
    status.textContent = s === "unauthorized"
      ? `unauthorized: open the address the gateway logged (…/${page}#token=…)`
      : s === "unknown_map"
        ? `the gateway bridges no map named ${name}`
        : s === "offline" && reason ? `offline (${reason.replace(/_/g, " ")})` : s;
    status.dataset.status = s;
  };
  client.onStatus(show);
  show(client.status, client.statusReason);
  return client;
}

/** A random id for a new key. */
export function newId() {
  const bytes = new Uint8Array(6);
  crypto.getRandomValues(bytes);
  return [...bytes].map((b) => b.toString(16).padStart(2, "0")).join("");
}

/**
 * Runs `redraw` with the focused field kept: a field marked `data-focus`
 * that has the focus is found again after the redraw (by that mark),
 * keeps what is typed in it and its selection, and the focus. So remote
 * changes are drawn at once, even under someone typing.
 */
export function keepFocus(redraw) {
  const active = document.activeElement;
  const mark = active?.dataset?.focus;
  const typed = mark ? { value: active.value, start: active.selectionStart, end: active.selectionEnd } : null;
  redraw();
  if (!mark) return;
  const again = [...document.querySelectorAll("[data-focus]")].find((e) => e.dataset.focus === mark);
  if (!again) return;
  if (again !== active) again.value = typed.value;
  again.focus();
  try {
    again.setSelectionRange(typed.start, typed.end);
  } catch {
    // a field without a text selection
  }
}

/** Calls `render` once per animation frame while the map changes, and now. */
export function drawOnChange(client, render) {
  let pending = false;
  client.on("*", () => {
    if (pending) return;
    pending = true;
    requestAnimationFrame(() => {
      pending = false;
      keepFocus(render);
    });
  });
  keepFocus(render);
}
