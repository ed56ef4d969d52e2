// The app: a shared counter and todo list, every tab a replica of the map
// through the gateway's bridge (`bridge`: { url, token }). It renders on a
// server too (src/server.jsx): the hooks there render their fallbacks and
// open nothing, and a page hydrating that HTML renders the same first.
//
// Both use the patterns that keep concurrent writes: the counter is a key
// per tab (`clicks/<replica>`), its total their sum, so increments in two
// tabs at once both count; the list is a key per todo (`todo/<id>`), so two
// tabs adding at once both add, and ticking one todo while another tab
// renames a second touches two keys.
import { useState } from "react";
import { sharedClient, useAether, useAetherPrefix, useAetherStatus } from "aether-bridge/react";

function Counter({ bridge }) {
  const clicks = useAetherPrefix("clicks/", bridge);
  const total = clicks.reduce((sum, [, n]) => sum + (typeof n === "number" ? n : 0), 0);
  // This tab's own key, named by its replica id: the client is asked for
  // in the click, never while rendering (a server has none).
  const click = () => {
    const client = sharedClient(bridge.url, bridge);
    const mine = `clicks/${client.replica}`;
    const n = client.get(mine);
    client.set(mine, (typeof n === "number" ? n : 0) + 1);
  };
  return (
    <p>
      <button id="increment" data-total={total} onClick={click}>
        clicked {total} times
      </button>
    </p>
  );
}

function Todo({ id, bridge }) {
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

function Todos({ bridge }) {
  const todos = useAetherPrefix("todo/", bridge);
  const [text, setText] = useState("");
  const add = (event) => {
    event.preventDefault();
    if (!text.trim()) return;
    const id = `${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 8)}`;
    sharedClient(bridge.url, bridge).set(`todo/${id}`, { text: text.trim(), done: false });
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
          <Todo key={key} id={key.slice(5)} bridge={bridge} />
        ))}
      </ul>
    </>
  );
}

export function App({ bridge }) {
  const status = useAetherStatus(bridge);
  return (
    <main>
      <h1>
        Aether in React <span className="status" id="status" data-status={status}>{status}</span>
      </h1>
      <Counter bridge={bridge} />
      <Todos bridge={bridge} />
    </main>
  );
}
