// The backoff's schedule against scripted WebSocket servers (protocol.md 11), as
// tests/test_clients_contract.py checks it for the project's other clients: a greeting alone never
// resets the count, a delivered snapshot does, a 1013 makes every wait at least 2.5 s, a 429's
// Retry-After is honoured; and the dead-connection rule of section 9. The timings run side by side.
import assert from "node:assert/strict";
import { describe, test } from "node:test";

import { FlashwireClient } from "../flashwire.js";
import { HELLO, SNAPSHOT, SUBSCRIBED, WebSocket, gaps, next, scripted, sleep } from "./helpers.mjs";

function within(times, windowMs) {
  return times.filter((at) => at - times[0] <= windowMs);
}

async function attempts(messages, closeCode, runMs, respond = null) {
  const server = await scripted(messages, closeCode, "scripted", respond);
  const retries = [];
  const client = new FlashwireClient({ server: server.url, editions: ["en"], WebSocket });
  client.on("retry", (retry) => retries.push(retry));
  client.start();
  await sleep(runMs);
  client.close();
  await server.close();
  return { times: server.attempts, retries, client };
}

describe("backoff", { concurrency: true }, () => {
  test("a greeting alone never resets the backoff", async () => {
    const { times } = await attempts([HELLO, SUBSCRIBED], 1011, 6500);
    const seen = within(times, 6000);
    // Waits within [d/2, d], d = 0.25, 0.5, 1, 2, 4 s: at most 6 attempts in 6 s.
    assert.ok(seen.length >= 4 && seen.length <= 6, JSON.stringify(gaps(seen)));
    assert.ok(gaps(seen)[2] >= 0.45, JSON.stringify(gaps(seen)));
  });

  test("a delivered snapshot resets the backoff", async () => {
    const { times, retries } = await attempts([HELLO, SUBSCRIBED, SNAPSHOT], 1011, 4500);
    const seen = within(times, 4000);
    assert.ok(seen.length >= 10, JSON.stringify(gaps(seen)));
    assert.ok(Math.max(...gaps(seen)) < 2.0, JSON.stringify(gaps(seen)));
    assert.ok(retries.every((retry) => retry.attempt === 1 && retry.wasLive), JSON.stringify(retries.slice(0, 3)));
  });

  test("after 1013 every wait is at least two and a half seconds", async () => {
    const { times, retries } = await attempts([HELLO], 1013, 6500);
    const seen = within(times, 6000);
    assert.ok(seen.length >= 2 && seen.length <= 3, JSON.stringify(gaps(seen)));
    assert.ok(Math.min(...gaps(seen)) >= 2.45, JSON.stringify(gaps(seen)));
    assert.equal(retries[0].reason, "closed 1013: scripted");
    assert.ok(retries[0].tryLater);
  });

  test("an upgrade answered 429 with Retry-After: 6 is retried no sooner than 6 s", async () => {
    const refuse = () => [429, { "Retry-After": "6", "Content-Type": "text/plain" }, "slow down\n"];
    const { times, retries, client } = await attempts([], 1000, 8500, refuse);
    assert.equal(times.length, 2, JSON.stringify(gaps(times)));
    assert.ok(gaps(times)[0] >= 6.0, JSON.stringify(gaps(times)));
    assert.ok(retries[0].retryAfterMs === 6000 && retries[0].tryLater, JSON.stringify(retries[0]));
    assert.equal(client.transport, "ws"); // a refusal is not a blocked WebSocket
  });

  test("a silent connection is dropped after 2.5 x heartbeat_s", async () => {
    // hello says 0.4 s; then nothing, and the connection stays open: dead after 1 s.
    const server = await scripted([{ ...HELLO, heartbeat_s: 0.4 }, SUBSCRIBED, SNAPSHOT], null);
    const arrivals = [];
    const client = new FlashwireClient({ server: server.url, editions: ["en"], WebSocket });
    client.on("message", () => arrivals.push(Date.now()));
    const ends = [];
    client.on("disconnect", (end) => ends.push(end.reason));
    client.start();
    await sleep(1700);
    client.close();
    await server.close();
    assert.ok(server.attempts.length >= 2, `${server.attempts.length} attempts`);
    const silence = server.attempts[1] - Math.max(...arrivals.filter((at) => at < server.attempts[1]));
    // Then the first backoff step (at most 0.25 s) and some slack.
    assert.ok(silence >= 1000 && silence <= 1000 + 250 + 300, `${silence} ms`);
    assert.equal(ends[0], "nothing received for 1 s (2.5 x heartbeat_s)");
  });

  test("reconnect() tries at once while waiting, except after a 1013", async () => {
    const server = await scripted([HELLO, SUBSCRIBED], 1011, "scripted");
    const client = new FlashwireClient({ server: server.url, editions: ["en"], WebSocket });
    const third = next(client, "retry", (retry) => retry.attempt === 3); // a wait of 0.5 to 1 s
    client.start();
    const retry = await third;
    const asked = Date.now();
    await sleep(0); // the client is waiting now
    assert.equal(client.state, "waiting");
    const fourth = next(client, "connection", (info) => info.id === 4); // (emitted within reconnect())
    assert.equal(client.reconnect(), true);
    await fourth;
    const took = Date.now() - asked;
    assert.ok(took < retry.delayMs / 2, `${took} ms, the wait was ${retry.delayMs} ms`);
    client.close();
    await server.close();

    const busy = await scripted([HELLO], 1013, "busy");
    const polite = new FlashwireClient({ server: busy.url, editions: ["en"], WebSocket });
    const refused = next(polite, "retry");
    polite.start();
    await refused;
    await sleep(0);
    assert.equal(polite.reconnect(), false);
    polite.close();
    await busy.close();
  });
});
