// The pure parts of flashwire.js: the cursor rule and comparison (protocol.md 8.1, 8.2), the
// backoff's numbers and Retry-After (11), and option checks.
import assert from "node:assert/strict";
import { test } from "node:test";

import {
  FlashwireClient,
  backoffCeilingMs,
  backoffDelayMs,
  compareCursors,
  isCursor,
  retryAfterMs,
} from "../flashwire.js";

test("cursors follow the one rule and compare as numbers", () => {
  for (const good of ["0", "0-0", "1795625033442-0", "18446744073709551615-18446744073709551615", "007-1"]) {
    assert.ok(isCursor(good), good);
  }
  for (const bad of ["", "abc", "1-", "-1", "1-0\n", " 1-0", "1-0 ", "18446744073709551616", "1_0", "١٢", "+1", "1-2-3"]) {
    assert.ok(!isCursor(bad), JSON.stringify(bad));
  }
  assert.equal(compareCursors("1795625033442-10", "1795625033442-9"), 1); // as strings: before
  assert.equal(compareCursors("99-99", "100-0"), -1);
  assert.equal(compareCursors("5", "5-0"), 0);
  // Beyond 2^53, where Number would round both to the same value.
  assert.equal(compareCursors("18446744073709551615-0", "18446744073709551614-0"), 1);
  assert.equal(compareCursors("9007199254740993-0", "9007199254740992-0"), 1);
  assert.throws(() => compareCursors("1-0", "x"), TypeError);
});

test("the backoff's ceilings and waits are protocol.md 11's", () => {
  assert.deepEqual([1, 2, 3, 5, 7, 8, 40].map((n) => backoffCeilingMs(n, false)), [250, 500, 1000, 4000, 15000, 15000, 15000]);
  assert.deepEqual([1, 5, 6, 7].map((n) => backoffCeilingMs(n, true)), [5000, 5000, 8000, 15000]);
  assert.equal(backoffDelayMs(1, { random: () => 0 }), 125);
  assert.equal(backoffDelayMs(1, { random: () => 1 }), 250);
  assert.equal(backoffDelayMs(1, { tryLater: true, random: () => 0 }), 2500);
  // At least the Retry-After, plus up to a fifth.
  assert.equal(backoffDelayMs(1, { tryLater: true, retryAfter: 6000, random: () => 0 }), 6000);
  assert.equal(backoffDelayMs(1, { tryLater: true, retryAfter: 6000, random: () => 1 }), 7200);
});

test("Retry-After is seconds or an HTTP-date, at most 5 minutes", () => {
  assert.equal(retryAfterMs("5"), 5000);
  assert.equal(retryAfterMs(" 7 "), 7000);
  assert.equal(retryAfterMs("99999"), 300000);
  assert.equal(retryAfterMs(null), 0);
  assert.equal(retryAfterMs("soon"), 0);
  assert.equal(retryAfterMs("-3"), 0);
  const now = Date.parse("2026-12-01T00:00:00Z");
  assert.equal(retryAfterMs("Tue, 01 Dec 2026 00:00:30 GMT", now), 30000);
  assert.equal(retryAfterMs("Mon, 30 Nov 2026 00:00:30 GMT", now), 0);
});

test("options are checked when the client is made", () => {
  assert.throws(() => new FlashwireClient({}), /server/);
  assert.throws(() => new FlashwireClient({ server: "ftp://x" }), /server/);
  assert.throws(() => new FlashwireClient({ server: "http://x", minUrgency: "breaking" }), /minUrgency/);
  assert.throws(() => new FlashwireClient({ server: "http://x", editions: "en" }), /editions/);
  assert.throws(() => new FlashwireClient({ server: "http://x", since: { en: "1-0\n" } }), /malformed cursor/);
  assert.throws(() => new FlashwireClient({ server: "http://x", transport: "ws", WebSocket: null }), /WebSocket/);
  assert.throws(() => new FlashwireClient({ server: "http://x", transports: ["ws", "long-polling"] }), /transports/);
  assert.throws(() => new FlashwireClient({ server: "http://x", transports: [] }), /transports/);
  assert.throws(() => new FlashwireClient({ server: "http://x", transport: "sse", transports: ["sse"] }), /not both/);
  assert.throws(() => new FlashwireClient({ server: "http://x", pollIntervalMs: 0 }), /pollIntervalMs/);
  assert.deepEqual(new FlashwireClient({ server: "http://x", WebSocket: null }).transports, ["sse"]);
  assert.deepEqual(new FlashwireClient({ server: "http://x", WebSocket: class {}, transports: ["ws", "sse", "poll"] }).transports, ["ws", "sse", "poll"]);
  const client = new FlashwireClient({ server: "https://news.example/ws", editions: ["en", "en", "ar"], since: { en: "5-1" } });
  assert.equal(client.state, "idle");
  assert.deepEqual(client.filter, { editions: ["en", "ar"], topics: [], minUrgency: null });
  assert.deepEqual(client.cursors, { en: "5-1" });
  client.close();
  assert.equal(client.state, "closed");
  client.close(); // idempotent
});
