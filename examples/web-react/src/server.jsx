// The app rendered on a server (as Next.js or Remix would): HTML for the
// page to hydrate. No socket is opened and no storage touched.
//   import { render } from "./dist/server.mjs";
//   const html = render({ url: "ws://127.0.0.1:9464/bridge/react-demo", token });
import { renderToString } from "react-dom/server";
import { App } from "./app.jsx";

export function render(bridge) {
  return renderToString(<App bridge={bridge} />);
}
