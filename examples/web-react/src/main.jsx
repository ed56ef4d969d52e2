// A shared counter and todo list in React: every tab is a replica of the
// map `react-demo` through the gateway's bridge. Open it as
//   index.html#token=<bridge token>&gateway=ws://host:port
// Build: npm install && npm run build (esbuild bundles React and the client).
//
// Both use the patterns that keep concurrent writes: the counter is a key
// per tab (`clicks/<replica>`), its total their sum, so increments in two
// tabs at once both count; the list is a key per todo (`todo/<id>`), so two
// tabs adding at once both add, and ticking one todo while another tab
// renames a second touches two keys.
import { useState } from "react";
import { createRoot } from "react-dom/client";
import { sharedClient, useAether, useAetherPrefix, useAetherStatus } from "aether-bridge/react";

const params = new URLSearchParams(location.hash.slice(1));
const scheme = location.protocol === "https:" ? "wss" : "ws";
const bridge = {
  url: `${params.get("gateway") || `${scheme}://${location.host}`}/bridge/${params.get("map") || "react-demo"}`,
  token: params.get("token") || "",
};
// For the tests and the console.
globalThis.demo = { client: sharedClient(bridge.url, bridge) };

function Counter() {
  const clicks = useAetherPrefix("clicks/", bridge);
  const mine = `clicks/${globalThis.demo.client.replica}`;
  const [, setMine] = useAether(mine, 0, bridge);
  const total = clicks.reduce((sum, [, n]) => sum + (typeof n === "number" ? n : 0), 0);
  return (
    <p>
      <button id="increment" data-total={total} onClick={() => setMine((n) => n + 1)}>
        clicked {total} times
      </button>
    </p>
  );
}

function Todo({ id }) {
  const [todo, setTodo] = useAether(`todo/${id}`, null, bridge);
  if (!todo) return null;
  return (
    <li data-id={id} data-done={String(!!todo.done)}>
      <label>
        <input type="checkbox" checked={!!todo.done} onChange={() => setTodo((t) => ({ ...t, done: !t.done }))} />
        <span>{String(todo.text)}</span>
      </label>
      <button onClick={() => setTodo(undefined)}>×</button>
    </li>
  );
}

function Todos() {
  const todos = useAetherPrefix("todo/", bridge);
  const [text, setText] = useState("");
  const add = (event) => {
    event.preventDefault();
    if (!text.trim()) return;
    const id = `${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 8)}`;
    globalThis.demo.client.set(`todo/${id}`, { text: text.trim(), done: false });
    setText("");
  };
  return (
    <>
      <form onSubmit={add}>
        <input id="new-todo" value={text} onChange={(e) => setText(e.target.value)} placeholder="Add a todo" />
        <button type="submit">Add</button>
      </form>
      <ul id="todos" data-count={todos.length}>
        {todos.map(([key]) => (
          <Todo key={key} id={key.slice(5)} />
        ))}
      </ul>
    </>
  );
}

function App() {
  const status = useAetherStatus(bridge);
  return (
    <main>
      <h1>
        Aether in React <span className="status" id="status" data-status={status}>{status}</span>
      </h1>
      <Counter />
      <Todos />
    </main>
  );
}

createRoot(document.getElementById("root")).render(<App />);
