// Stamps, as every replica writes them (`aether-core/src/state/stamps.json`
// holds the shared examples), this page's hybrid logical clock, and the rule
// that decides which of two entries of a key wins.

export const ZERO_NODE = "0000000000000000";

/** A random replica id: 64 bits, 16 lower case hex digits, not all zero. */
export function randomReplica() {
  const words = new Uint32Array(2);
  let id = ZERO_NODE;
  while (id === ZERO_NODE) {
    crypto.getRandomValues(words);
    id = words[0].toString(16).padStart(8, "0") + words[1].toString(16).padStart(8, "0");
  }
  return id;
}

/** A stamp's text, as every replica writes it (`stamps.json`): texts sort as stamps do. */
export function stampText(physical, logical, replica) {
  return physical.toString(16).padStart(16, "0") + "-" +
    logical.toString(16).padStart(8, "0") + "-" + replica;
}

export function isStamp(text) {
  return typeof text === "string" && /^[0-9a-f]{16}-[0-9a-f]{8}-[0-9a-f]{16}$/.test(text) &&
    !text.endsWith(ZERO_NODE);
}

export function parseStamp(text) {
  return { physical: BigInt("0x" + text.slice(0, 16)), logical: parseInt(text.slice(17, 25), 16) };
}

/**
 * Whether `offsetMs` (the bus's time minus this page's clock, as a cache
 * kept it) gives a time a stamp can hold: finite, after 1970, within 64
 * bits of nanoseconds.
 */
export function isOffset(offsetMs) {
  if (!Number.isFinite(offsetMs)) return false;
  const ms = performance.timeOrigin + performance.now() + offsetMs;
  return ms > 0 && ms < 18e12;
}

/** A hybrid logical clock: never goes back, moves past every stamp seen. */
export class Clock {
  constructor(replica) {
    this.replica = replica;
    this.physical = 0n;
    this.logical = 0;
    this.offsetMs = 0; // the gateway's clock minus this page's
    /** How far ahead of its time a stamp seen may move this clock (the gateway's max_drift). */
    this.maxDriftMs = 500;
  }

  wallNs() {
    const ms = performance.timeOrigin + performance.now() + this.offsetMs;
    return BigInt(Math.floor(ms * 1000)) * 1000n;
  }

  now() {
    const wall = this.wallNs();
    if (wall > this.physical) {
      this.physical = wall;
      this.logical = 0;
    } else if (this.logical < 0xffffffff) {
      this.logical += 1;
    } else {
      this.physical += 1n;
      this.logical = 0;
    }
    return stampText(this.physical, this.logical, this.replica);
  }

  observe(text) {
    const { physical, logical } = parseStamp(text);
    // A stamp further ahead of the bus's time than max_drift (a writer whose
    // clock was off) does not carry this clock with it: its writes would be
    // refused as stamped ahead.
    if (physical > this.wallNs() + BigInt(Math.floor(this.maxDriftMs * 1000)) * 1000n) return;
    if (physical > this.physical || (physical === this.physical && logical > this.logical)) {
      this.physical = physical;
      this.logical = logical;
    }
  }
}

const utf8 = new TextEncoder();

/**
 * Whether entry `a` wins over `b` for one key, by the rule every replica
 * follows: the higher stamp; on equal stamps (only a forged replica id
 * makes them) the value whose JSON text is greater as UTF-8 bytes, a delete
 * below any value.
 */
export function beats(a, b) {
  if (a.s !== b.s) return a.s > b.s;
  if (a.d || b.d) return !a.d && b.d;
  const x = utf8.encode(JSON.stringify(a.v));
  const y = utf8.encode(JSON.stringify(b.v));
  for (let i = 0; i < x.length && i < y.length; i++) {
    if (x[i] !== y[i]) return x[i] > y[i];
  }
  return x.length > y.length;
}
