// The client against a real Flashwire stack (redis, worker, service; started by
// tests/test_js_client.py, which gives FLASHWIRE_URL and the tokens): live lines and kills, resume
// from a cursor without gap or duplicate (after a cut connection, over WebSocket and SSE, and from
// saved cursors), a reset snapshot, filters and changing them, a real node's 4400 and 414, SSE,
// chosen or as the fallback when a proxy refuses WebSocket, the feeds as the last fallback and the
// way back, and offline().
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { afterEach, describe, test } from "node:test";

import { FlashwireClient as Client } from "../flashwire.js";
import { NEEDS_SERVER, SERVER, WebSocket, next, postLine, relay as openRelay, retractLine, sleep, until } from "./helpers.mjs";

// Whatever a test opens is closed after it, failed or not (an open client keeps Node running).
const opened = [];
class FlashwireClient extends Client {
  constructor(options) {
    super(options);
    opened.push(this);
  }
}
async function relay(port, options) {
  const made = await openRelay(port, options);
  opened.push(made);
  return made;
}
afterEach(async () => {
  for (const thing of opened.splice(0)) await thing.close();
});

const PORT = SERVER ? Number(SERVER.split(":").at(-1)) : 0;
const unique = (text) => `${text} ${randomUUID().slice(0, 8)}`;

function open(options) {
  const client = new FlashwireClient({ server: SERVER, editions: ["en"], WebSocket, ...options });
  const events = [];
  client.on("event", (event) => events.push(event));
  const ready = next(client, "snapshot", () => true, 15000);
  client.start();
  return { client, events, ready };
}

const texts = (events, type = "line") => events.filter((event) => event.type === type).map((event) => event.line.text);

describe("against a real server", { skip: NEEDS_SERVER }, () => {
  for (const transport of ["ws", "sse"]) {
    test(`live lines and a kill over ${transport}`, async () => {
      const { client, events, ready } = open({ transport });
      await ready;
      const text = unique(`live over ${transport}`);
      const arrived = next(client, "line", (event) => event.line.text === text);
      const posted = await postLine(text, { urgency: "flash" });
      const got = await arrived; // (registered first: the event may come before the API's answer)
      assert.equal(got.line.id, posted.id);
      assert.equal(client.transport, transport);
      assert.equal(client.state, "live");
      assert.equal(client.cursors.en, got.cursor);
      assert.equal(client.lines("en")[0].text, text); // newest first
      const retracted = next(client, "retract", (event) => event.id === posted.id);
      await retractLine(posted.id);
      const retract = await retracted;
      assert.equal(retract.reason, "killed");
      assert.ok(!client.lines("en").some((line) => line.id === posted.id));
      assert.equal(texts(events).filter((seen) => seen === text).length, 1);
      client.close();
    });

    test(`a cut connection resumes from its cursor without gap or duplicate over ${transport}`, async () => {
      const cutting = await relay(PORT);
      const client = new FlashwireClient({ server: cutting.url, editions: ["en"], transport, WebSocket });
      const events = [];
      const connections = [];
      const subscribed = [];
      client.on("event", (event) => events.push(event));
      client.on("connection", (info) => connections.push(info));
      client.on("subscribed", (message) => subscribed.push(message));
      const ready = next(client, "snapshot");
      client.start();
      await ready;
      const before = unique("before the cut");
      const seen = next(client, "line", (event) => event.line.text === before);
      await postLine(before);
      await seen;
      const cursor = client.cursors.en;
      cutting.cut();
      const during = [unique("during the cut 1"), unique("during the cut 2"), unique("during the cut 3")];
      for (const text of during) await postLine(text);
      const after = unique("after the cut");
      await next(client, "connection", (info) => info.id === 2);
      const last = next(client, "line", (event) => event.line.text === after, 15000);
      await postLine(after);
      await last;
      assert.deepEqual(connections[1].since, { en: cursor });
      assert.deepEqual(subscribed[1].resuming, ["en"]);
      assert.equal(events.filter((event) => event.type === "snapshot").length, 1); // resumed, no new snapshot
      assert.deepEqual(texts(events), [before, ...during, after]);
      client.close();
      await cutting.close();
    });
  }

  test("saved cursors resume a new client exactly where the old one stopped", async () => {
    const first = open({});
    await first.ready;
    const last = unique("seen by the first client");
    const seen = next(first.client, "line", (event) => event.line.text === last);
    await postLine(last);
    await seen;
    const saved = first.client.cursors;
    first.client.close();
    const missed = [unique("missed 1"), unique("missed 2")];
    for (const text of missed) await postLine(text);
    const client = new FlashwireClient({ server: SERVER, editions: ["en"], since: saved, WebSocket });
    const events = [];
    client.on("event", (event) => events.push(event));
    const resuming = next(client, "subscribed");
    client.start();
    assert.deepEqual((await resuming).resuming, ["en"]);
    await until(() => events.length >= 2, 10000, "the missed lines");
    await sleep(300); // anything more (a duplicate, a snapshot) would come now
    assert.deepEqual(events.map((event) => [event.type, event.line?.text]), missed.map((text) => ["line", text]));
    client.close();
  });

  test("a cursor the ticker cannot resume gets a reset snapshot that replaces the cursor", async () => {
    const client = new FlashwireClient({ server: SERVER, editions: ["en"], since: { en: "99999999999999-0" }, WebSocket });
    const snapshot = next(client, "snapshot");
    client.start();
    const reset = await snapshot;
    assert.equal(reset.reset, true);
    assert.equal(reset.reason, "cursor is ahead of the ticker log");
    assert.equal(client.cursors.en, reset.cursor); // lower than the one given: taken all the same
    assert.deepEqual(client.lines("en").map((line) => line.id), reset.lines.map((line) => line.id));
    client.close();
  });

  test("filters: topics and urgency, and a change of filter takes a fresh snapshot", async () => {
    const { client, events, ready } = open({ topics: ["sports"], minUrgency: "urgent" });
    await ready;
    const routineSports = unique("routine sports");
    const urgentEconomy = unique("urgent economy");
    const flashSports = unique("flash sports");
    await postLine(routineSports, { topics: ["sports"], urgency: "routine" });
    await postLine(urgentEconomy, { topics: ["economy"], urgency: "urgent" });
    const seen = next(client, "line", (event) => event.line.text === flashSports);
    await postLine(flashSports, { topics: ["sports", "europe"], urgency: "flash" });
    await seen;
    assert.deepEqual(texts(events), [flashSports]);
    const connections = [];
    client.on("connection", (info) => connections.push(info));
    const fresh = next(client, "snapshot");
    client.subscribe({ topics: ["economy"] });
    const snapshot = await fresh;
    assert.deepEqual(connections[0].since, {}); // the old lines were chosen by the old filter
    assert.ok(connections[0].url.includes("topics=economy&min_urgency=urgent"), connections[0].url);
    const shown = client.lines("en").map((line) => line.text);
    assert.ok(shown.includes(urgentEconomy) && !shown.includes(flashSports), JSON.stringify(shown));
    assert.equal(snapshot.reset, false);
    client.close();
  });

  test("a real node's 4400 stops the client after one attempt", async () => {
    const counting = await relay(PORT);
    const client = new FlashwireClient({ server: counting.url, editions: ["en"], topics: ["weather"], WebSocket });
    const refused = next(client, "refused");
    client.start();
    const refusal = await refused;
    assert.deepEqual([refusal.code, refusal.reason, refusal.kind], [4400, "topics: unknown topic 'weather'", "close"]);
    await sleep(1000);
    assert.equal(counting.times("/ws"), 1);
    client.close();
    await counting.close();
  });

  test("an upgrade answered 414 stops the client with the body's reason (read from /sse)", async () => {
    const counting = await relay(PORT);
    const client = new FlashwireClient({ server: counting.url, editions: ["en"], topics: ["x".repeat(9000)], WebSocket });
    const refused = next(client, "refused");
    client.start();
    const refusal = await refused;
    assert.equal(refusal.code, 414);
    assert.equal(refusal.kind, "http");
    assert.match(refusal.reason, /^request-target: the request target is longer than/);
    await sleep(1000);
    assert.deepEqual([counting.times("/ws"), counting.times("/sse")], [1, 1]);
    client.close();
    await counting.close();
  });

  test("the feeds, read together, are the last fallback; the client goes back to WebSocket when it can", async () => {
    const blocking = await relay(PORT, { blockUpgrades: true, blockSse: true });
    const client = new FlashwireClient({ server: blocking.url, editions: ["en"], WebSocket, transports: ["ws", "sse", "poll"], pollIntervalMs: 300 });
    const events = [];
    client.on("event", (event) => events.push(event));
    const retries = [];
    client.on("retry", (retry) => retries.push(retry));
    const polled = next(client, "snapshot", (event) => event.feed === true, 20000);
    client.start();
    await polled;
    assert.equal(client.transport, "poll");
    assert.equal(client.state, "live");
    // Two of each blocked (each probed through the node's health and feeds), then the feeds.
    assert.deepEqual(retries.map((retry) => retry.transport), ["ws", "sse", "sse", "poll"]);
    assert.match(retries[1].reason, /WebSocket blocked/);
    assert.match(retries[3].reason, /SSE blocked/);
    const text = unique("from the feed");
    const read = next(client, "snapshot", (event) => event.feed === true && event.lines.some((line) => line.text === text), 5000);
    await postLine(text);
    const snapshot = await read;
    assert.equal(client.lines("en").filter((line) => line.text === text).length, 1);
    assert.equal(client.cursors.en, snapshot.cursor); // the cursor the feed stands at
    // The way is open again: the next try of WebSocket (4 to 8 s after the fallback) holds.
    blocking.blocked.upgrades = false;
    blocking.blocked.sse = false;
    await next(client, "state", (change) => change.state === "live" && client.transport === "ws", 15000);
    const after = unique("back on WebSocket");
    const arrived = next(client, "line", (event) => event.line.text === after);
    await postLine(after);
    await arrived;
    // Resumed from the feed's cursor: what the feed gave is not delivered again as a line.
    assert.deepEqual(texts(events).filter((seen) => seen === text), []);
    client.close();
  });

  test("offline() closes the connection and waits for reconnect(), which resumes", async () => {
    const { client, ready } = open({});
    await ready;
    assert.equal(client.offline(), true);
    assert.equal(client.state, "offline");
    const text = unique("while offline");
    await postLine(text);
    await sleep(500);
    assert.equal(client.state, "offline");
    assert.equal(client.connections, 1);
    const arrived = next(client, "line", (event) => event.line.text === text);
    assert.equal(client.reconnect(), true);
    await arrived;
    assert.equal(client.connections, 2);
    client.close();
    assert.equal(client.offline(), false);
  });

  test("SSE is the fallback when a proxy refuses WebSocket", async () => {
    const blocking = await relay(PORT, { blockUpgrades: true });
    const client = new FlashwireClient({ server: blocking.url, editions: ["en"], WebSocket });
    const events = [];
    client.on("event", (event) => events.push(event));
    const retries = [];
    client.on("retry", (retry) => retries.push(retry));
    const ready = next(client, "snapshot", () => true, 15000);
    client.start();
    await ready;
    assert.equal(client.transport, "sse");
    assert.equal(client.state, "live");
    // Two WebSocket attempts that did not open while /sse answered (each probed once), then SSE.
    assert.equal(blocking.times("/ws"), 2);
    assert.equal(blocking.times("/sse"), 3);
    assert.match(retries[0].reason, /WebSocket blocked/);
    assert.deepEqual(retries.map((retry) => retry.transport), ["ws", "sse"]);
    const text = unique("over the fallback");
    const seen = next(client, "line", (event) => event.line.text === text);
    await postLine(text);
    await seen;
    client.close();
    await blocking.close();
  });
});
