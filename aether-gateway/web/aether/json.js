// What JSON can carry as it is: the check a value passes before it is
// written, with the reason and place when it does not.

/** Deepest nesting of a value (the gateway refuses past 128). */
const MAX_DEPTH = 100;

/** Whether `text` is well-formed UTF-16 (no lone surrogate, which no JSON reader of the gateway takes). */
export const wellFormed = typeof String.prototype.isWellFormed === "function"
  ? (text) => text.isWellFormed()
  : (text) => !/[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/.test(text);

export const LONE_SURROGATE = "a string with a lone surrogate (half of a UTF-16 pair: no valid text)";

function article(name) {
  return /^[AEIO]/.test(name) ? `an ${name}` : `a ${name}`;
}

/** Where in a value a part is: `.items[2].when`. */
function pathOf(path) {
  return path.length === 0 ? "" : " at " + path.map((p) =>
    typeof p === "number" ? `[${p}]` : /^[A-Za-z_$][\w$]*$/.test(p) ? `.${p}` : `[${JSON.stringify(p)}]`).join("");
}

/**
 * Throws a TypeError (a RangeError for nesting) naming `key` and where in
 * `value` the first part that JSON cannot carry as it is lies: undefined,
 * NaN and the infinities, bigints, functions, symbols, objects that are not
 * plain (a Date, a Map, a class's instance), holes in arrays, cycles.
 */
export function checkJson(key, value) {
  const open = new Set();
  const fail = (path, what) => {
    throw new TypeError(`the value of ${JSON.stringify(key)}${pathOf(path)} is ${what}`);
  };
  const walk = (v, path) => {
    switch (typeof v) {
      case "string":
        if (!wellFormed(v)) fail(path, LONE_SURROGATE);
        return;
      case "boolean":
        return;
      case "number":
        if (!Number.isFinite(v)) fail(path, `${v}, not a JSON number`);
        return;
      case "undefined":
        fail(path, path.length === 0
          ? "undefined: delete(key) removes a key"
          : "undefined, not JSON (leave the field out, or write null)");
        return;
      case "bigint":
        fail(path, "a bigint, not JSON (write it as a string or a number)");
        return;
      case "function":
        fail(path, "a function, not JSON");
        return;
      case "symbol":
        fail(path, "a symbol, not JSON");
        return;
      default:
        break;
    }
    if (v === null) return;
    if (path.length >= MAX_DEPTH) {
      throw new RangeError(`the value of ${JSON.stringify(key)} is nested more than ${MAX_DEPTH} deep`);
    }
    if (open.has(v)) fail(path, "a cycle (the value contains itself)");
    open.add(v);
    const proto = Object.getPrototypeOf(v);
    if (Object.getOwnPropertySymbols(v).length > 0) fail(path, "an object with symbol keys, not JSON");
    if (Array.isArray(v)) {
      if (proto !== Array.prototype) {
        fail(path, `${article(v.constructor?.name || "array subclass")}, not a plain array`);
      }
      for (let i = 0; i < v.length; i++) {
        if (!(i in v)) fail([...path, i], "a hole in an array, not JSON");
        walk(v[i], [...path, i]);
      }
      if (Object.getOwnPropertyNames(v).length !== v.length + 1) {
        fail(path, "an array with properties besides its items, which JSON leaves out");
      }
    } else {
      if (proto !== Object.prototype && proto !== null) {
        const name = typeof v.constructor === "function" && v.constructor.name ? article(v.constructor.name) : "an object that is not plain";
        const hint = v instanceof Date ? " (write its toISOString() or getTime())"
          : v instanceof Map ? " (write Object.fromEntries(map))"
          : v instanceof Set ? " (write an array of it)" : "";
        fail(path, `${name}, not JSON${hint}`);
      }
      if (Object.getOwnPropertyNames(v).length !== Object.keys(v).length) {
        fail(path, "an object with a field that is not enumerable, which JSON leaves out");
      }
      for (const name of Object.keys(v)) {
        if (!wellFormed(name)) fail(path, `an object with a field name that is ${LONE_SURROGATE}`);
        walk(v[name], [...path, name]);
      }
    }
    open.delete(v);
  };
  walk(value, []);
}

/** A copy of `value` as JSON carries it (`undefined`: `null`). */
export function jsonCopy(value) {
  return value === undefined ? null : JSON.parse(JSON.stringify(value));
}
