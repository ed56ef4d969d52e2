// The page: the app in the browser. Open it as
//   index.html#token=<bridge token>&gateway=ws://host:port
// Build: npm install && npm run build (esbuild bundles React and the client).
// Over HTML a server rendered (src/server.jsx) it hydrates; else it renders.
import { createRoot, hydrateRoot } from "react-dom/client";
import { sharedClient } from "aether-bridge/react";
import { App } from "./app.jsx";

const params = new URLSearchParams(location.hash.slice(1));
const scheme = location.protocol === "https:" ? "wss" : "ws";
const bridge = {
  url: `${params.get("gateway") || `${scheme}://${location.host}`}/bridge/${params.get("map") || "react-demo"}`,
  token: params.get("token") || "",
};
// For the tests and the console: the client, and what hydration found.
globalThis.demo = { client: sharedClient(bridge.url, bridge), recoverableErrors: [] };

const root = document.getElementById("root");
globalThis.demo.hydrated = root.hasChildNodes();
if (globalThis.demo.hydrated) {
  hydrateRoot(root, <App bridge={bridge} />, {
    onRecoverableError: (error) => {
      globalThis.demo.recoverableErrors.push(String(error?.message ?? error));
      console.error(error);
    },
  });
} else {
  createRoot(root).render(<App bridge={bridge} />);
}
