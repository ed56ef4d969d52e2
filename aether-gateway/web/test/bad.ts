// What the types refuse: `tsc --strict` must find an error on the line
// after each `@ts-expect-error` (it fails if one of them type-checks).

import { Aether, type Json } from "../aether.js";

const board = new Aether("ws://127.0.0.1:9464/bridge/board", { token: "t" });

// @ts-expect-error a client needs its options (the token)
new Aether("ws://127.0.0.1:9464/bridge/board");
// @ts-expect-error the token is required
new Aether("ws://127.0.0.1:9464/bridge/board", {});
// @ts-expect-error the token is a string
new Aether("ws://127.0.0.1:9464/bridge/board", { token: 42 });
// @ts-expect-error a Date is not JSON
board.set("when", new Date());
// @ts-expect-error nor a function
board.set("f", () => 1);
// @ts-expect-error nor undefined (delete(key) removes a key)
board.set("gone", undefined);
// @ts-expect-error nor a Map
board.set("m", new Map([["a", 1]]));
// @ts-expect-error nor a Set
board.set("s", new Set([1]));
// @ts-expect-error nor a bigint
board.set("n", 10n);
// @ts-expect-error nor a symbol
board.set("y", Symbol("y"));
// @ts-expect-error nor an object with a Date inside
board.set("todo/1", { text: "milk", due: new Date() });
// @ts-expect-error nor an optional field left undefined
board.set("todo/2", { text: "milk", note: undefined });
// @ts-expect-error get reads JSON types only
board.get<Date>("when");
// @ts-expect-error a status listener's status is a Status
board.onStatus((status: number) => {});
// @ts-expect-error no such status
const wrongStatus: typeof board.status = "unknown";
// @ts-expect-error pendingWrites is read only
board.pendingWrites = 0;
// @ts-expect-error the refusal reason is one of the listed
board.onRefused(({ reason }) => { const r: "not_owner" = reason; });

const json: Json = { ok: [1, "two", null, true] };
export { json, wrongStatus };
