// Close codes (protocol.md 10, 11) and the cursor check (8.2) against scripted WebSocket servers:
// a client stops after one attempt on 4400, 4403, 4408 and 1009 and reports the reason; it drops an
// event whose cursor it has passed (compared as numbers) and lets any snapshot replace what it holds.
import assert from "node:assert/strict";
import { describe, test } from "node:test";

import { FlashwireClient, SubscriptionRefused } from "../flashwire.js";
import { HELLO, SNAPSHOT, SUBSCRIBED, WebSocket, next, scripted, sleep } from "./helpers.mjs";

// How long a stopped client is watched for another attempt: one that took the refusal for a drop
// would retry after its first backoff step (0.125 to 0.25 s).
const NO_RETRY_MS = 1000;

describe("stop codes", { concurrency: true }, () => {
  for (const code of [4400, 4403, 4408, 1009]) {
    test(`a close with ${code} stops the client after one attempt`, async (t) => {
      const reason = `refused for the test (${code})`;
      const server = await scripted([HELLO], code, reason);
      const client = new FlashwireClient({ server: server.url, editions: ["en"], WebSocket });
      t.after(() => Promise.all([client.close(), server.close()])); // even after a failure
      const states = [];
      client.on("state", ({ state }) => states.push(state));
      const refused = next(client, "refused");
      client.start();
      const refusal = await refused;
      assert.ok(refusal instanceof SubscriptionRefused);
      assert.deepEqual([refusal.code, refusal.reason, refusal.kind], [code, reason, "close"]);
      await sleep(NO_RETRY_MS);
      assert.equal(server.attempts.length, 1);
      assert.equal(client.state, "stopped");
      assert.equal(client.refusal, refusal);
      assert.deepEqual(states, ["connecting", "open", "stopped"]);
      client.close();
      await server.close();
    });
  }

  for (const code of [1000, 1001, 1008, 1011, 1012, 4001, 4999]) {
    test(`a close with ${code} is retried`, async (t) => {
      const server = await scripted([HELLO, SUBSCRIBED, SNAPSHOT], code, "again");
      const client = new FlashwireClient({ server: server.url, editions: ["en"], WebSocket });
      t.after(() => Promise.all([client.close(), server.close()])); // even after a failure
      client.start();
      const retry = await next(client, "retry");
      assert.equal(retry.reason, `closed ${code}: again`);
      assert.equal(retry.tryLater, false);
      await next(client, "connection", (info) => info.id === 2);
      client.close();
      await server.close();
    });
  }
});

function line(id, text, second, version = 1) {
  const at = `2026-11-25T16:43:${String(second).padStart(2, "0")}.000Z`;
  return {
    id, version, edition: "en", language: "en", direction: "ltr", text, urgency: "routine", iptc_urgency: 5,
    topics: [], url: null, source: null, status: "usable", pinned: false, published_at: at, updated_at: at,
    expires_at: "2026-11-26T04:43:53.440Z", embargoed: null, author: "desk",
  };
}
const event = (type, cursor, held) =>
  type === "retract"
    ? { type, edition: "en", cursor, id: held.id, reason: "killed", note: "", line: held }
    : { type, edition: "en", cursor, line: held };

const PASSED = [
  [
    { ...SNAPSHOT, cursor: "100-5", lines: [line("en-a", "in the snapshot", 1)] },
    event("line", "100-4", line("en-b", "older: dropped", 2)),
    event("line", "100-5", line("en-c", "same cursor: dropped", 3)),
    event("line", "100-10", line("en-d", "newer: kept", 4)),
    event("update", "99-99", line("en-a", "older correction: dropped", 1, 2)),
    event("line", "100-9", line("en-g", "before the last one: dropped", 5)),
    event("retract", "100-3", line("en-d", "", 4)),
    event("line", "100-11\n", line("en-h", "malformed cursor: dropped", 6)),
  ],
  [["snapshot", "100-5"], ["line", "100-10"]],
  ["newer: kept", "in the snapshot"],
];
const RESET = [
  [
    { ...SNAPSHOT, cursor: "100-5", lines: [line("en-a", "in the first snapshot", 1)] },
    event("line", "100-6", line("en-d", "before the reset", 2)),
    { ...SNAPSHOT, cursor: "50-0", reset: true, reason: "the ticker's history changed", lines: [line("en-f", "in the reset snapshot", 3)] },
    event("line", "50-0", line("en-x", "same cursor after the reset: dropped", 4)),
    event("line", "50-1", line("en-e", "after the reset", 5)),
  ],
  [["snapshot", "100-5"], ["line", "100-6"], ["snapshot", "50-0"], ["line", "50-1"]],
  ["after the reset", "in the reset snapshot"],
];

describe("the cursor check", () => {
  for (const [name, [events, yielded, shown]] of Object.entries({ passed: PASSED, reset: RESET })) {
    test(`drops events already passed and follows any snapshot (${name})`, async (t) => {
      const server = await scripted([HELLO, SUBSCRIBED, ...events], 4400, "done");
      const client = new FlashwireClient({ server: server.url, editions: ["en"], WebSocket });
      t.after(() => Promise.all([client.close(), server.close()])); // even after a failure
      const got = [];
      client.on("event", (message) => got.push([message.type, message.cursor]));
      const refused = next(client, "refused");
      client.start();
      assert.equal((await refused).reason, "done");
      assert.deepEqual(got, yielded);
      assert.deepEqual(client.lines("en").map((held) => held.text), shown);
      assert.deepEqual(client.cursors, { en: yielded.at(-1)[1] });
      client.close();
      await server.close();
    });
  }
});
