// The error the client throws and its promises reject with.

/**
 * What the client throws, and what its promises reject with: `reason` says
 * which (`unauthorized`, `unknown_map`, `closed`, `storage_full`, and
 * `not_owner` for a `node/...` key, which a page may not write, and
 * `forbidden` for a key this page's token does not write).
 */
export class AetherError extends Error {
  constructor(reason, message) {
    super(message);
    this.name = "AetherError";
    this.reason = reason;
  }
}
