// Type-checked by test/types.test.mjs (tsc --noEmit): the declarations of flashwire.d.ts cover
// every public name as an app uses it; each `@ts-expect-error` is a misuse the types must refuse.
import { WebSocket } from "ws";
import {
  CloseCode,
  FlashwireClient,
  SubscriptionRefused,
  backoffCeilingMs,
  backoffDelayMs,
  compareCursors,
  isCursor,
  retryAfterMs,
  type ClientState,
  type Line,
  type TickerEvent,
  type Transport,
} from "../flashwire.js";

const client = new FlashwireClient({
  server: ["http://127.0.0.1:8000", "ws://127.0.0.1:8001/ws"],
  editions: ["en", "ar"],
  topics: ["politics"],
  minUrgency: "urgent",
  since: { en: "1795625033442-0" },
  transport: "auto",
  WebSocket,
  keepLines: true,
  maxLinesPerEdition: 100,
});

const shown = new Map<string, Line>();
client.on("snapshot", (event) => {
  const reset: boolean = event.reset;
  for (const line of event.lines) shown.set(line.id, line);
  console.log(reset, event.reason ?? "", event.cursor);
});
client.on("line", (event) => shown.set(event.line.id, event.line));
client.on("update", (event) => console.log(event.change, event.previous?.urgency));
client.on("retract", (event) => shown.delete(event.id));
const off = client.on("event", (event: TickerEvent) => {
  if (event.type === "retract") console.log(event.reason, event.note);
  else if (event.type === "snapshot") console.log(event.lines.length);
  else console.log(event.line.text, event.line.direction);
});
off();
client.on("hello", (hello) => console.log(hello.heartbeat_s, hello.topics));
client.on("subscribed", (subscribed) => console.log(subscribed.resuming, subscribed.min_urgency));
client.on("heartbeat", () => undefined);
client.on("pong", () => undefined);
client.on("message", ({ raw, sseId, connection }) => console.log(raw?.length, sseId, connection.transport, connection.since));
client.on("connection", (connection) => console.log(connection.id, connection.url));
client.on("disconnect", ({ code, status, reason, wasLive }) => console.log(code, status, reason, wasLive));
client.on("retry", ({ attempt, delayMs, tryLater, retryAfterMs: after }) => console.log(attempt, delayMs, tryLater, after));
client.on("state", ({ state, previous }) => {
  const now: ClientState = state;
  console.log(now, previous);
});
client.once("refused", (refused: SubscriptionRefused) => console.log(refused.code, refused.reason, refused.kind));

client.start().subscribe({ topics: [], minUrgency: null });
const saved: Record<string, string> = client.cursors;
const lines: Line[] = client.lines("en");
const sent: boolean = client.ping() || client.reconnect();
console.log(saved, lines, sent, client.state, client.transport, client.attempt, client.connections, client.refusal, client.filter);
client.close();

const order: -1 | 0 | 1 = compareCursors("1-10", "1-9");
console.log(order, isCursor("1-0"), backoffCeilingMs(3, false), backoffDelayMs(2, { tryLater: true }), retryAfterMs("5"));
console.log(CloseCode.TRY_AGAIN_LATER === 1013);

// @ts-expect-error: server is required
new FlashwireClient({ editions: ["en"] });
// @ts-expect-error: not an urgency
new FlashwireClient({ server: "http://x", minUrgency: "breaking" });
// @ts-expect-error: not an event of the client
client.on("lines", () => undefined);
// @ts-expect-error: a line event has no `lines`
client.on("line", (event) => event.lines);
// @ts-expect-error: cursors are read-only
client.cursors = {};

// The widget's options: every transport, the feeds read as often as its tickers ask.
const widgetLike = new FlashwireClient({
  server: "https://flashwire.example",
  editions: ["en", "ar"],
  transports: ["ws", "sse", "poll"],
  pollIntervalMs: () => 15000,
  keepLines: false,
});
widgetLike.on("snapshot", (snapshot) => console.log(snapshot.feed === true, snapshot.cursor));
widgetLike.on("retry", ({ silent, transport }) => console.log(silent, transport satisfies Transport));
console.log(widgetLike.transports, widgetLike.offline(), widgetLike.reconnect());
// @ts-expect-error: not a transport
new FlashwireClient({ server: "http://x", transports: ["long-polling"] });
