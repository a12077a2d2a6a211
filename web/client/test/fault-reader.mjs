// Runs FlashwireClient readers for the fault run (tests/fault_run.py), speaking JSON lines:
//
// stdin, first line: {"servers": ["http://127.0.0.1:<port>", ...],
//                     "readers": [{"name", "editions", "topics", "min_urgency", "transport"}, ...]}
// stdout, one object a line, each with the reader's name `r`:
//   {"r", "k": "conn", "transport", "server", "since"}   a connection begins (since: its resume cursors)
//   {"r", "k": "msg", "raw", "id"}                       a message as received (id: its SSE id field or null)
//   {"r", "k": "end", "code", "status", "reason"}        the connection ended
//   {"r", "k": "refused", "code", "reason"}              the client stopped (must not happen in a run)
// stdin, then "stop": every client is closed and reports
//   {"r", "k": "final", "cursors", "lines": {edition: [[id, version], ...]}}, then {"k": "done"}.
// The process ends when its stdin does.
import { createInterface } from "node:readline";
import { WebSocket } from "ws";

import { FlashwireClient } from "../flashwire.js";

const out = (object) => process.stdout.write(`${JSON.stringify(object)}\n`);
const clients = new Map();

function startReaders({ servers, readers }) {
  for (const reader of readers) {
    const client = new FlashwireClient({
      server: servers,
      editions: reader.editions,
      topics: reader.topics,
      minUrgency: reader.min_urgency,
      transport: reader.transport,
      WebSocket: globalThis.WebSocket ?? WebSocket,
      maxLinesPerEdition: 1_000_000, // the run compares the whole store with the model
    });
    const r = reader.name;
    client.on("connection", (info) => out({ r, k: "conn", transport: info.transport, server: info.server, since: info.since }));
    client.on("message", ({ raw, sseId }) => out({ r, k: "msg", raw, id: sseId }));
    client.on("disconnect", (end) => out({ r, k: "end", code: end.code, status: end.status, reason: end.reason }));
    client.on("refused", (refusal) => out({ r, k: "refused", code: refusal.code, reason: refusal.reason }));
    clients.set(r, client);
    client.start();
  }
}

function stop() {
  for (const [r, client] of clients) {
    client.close();
    const lines = {};
    for (const edition of client.filter.editions) lines[edition] = client.lines(edition).map((line) => [line.id, line.version]);
    out({ r, k: "final", cursors: client.cursors, lines });
  }
  out({ k: "done" });
}

const input = createInterface({ input: process.stdin });
let configured = false;
input.on("line", (text) => {
  if (!configured) {
    configured = true;
    startReaders(JSON.parse(text));
  } else if (text.trim() === "stop") {
    stop();
  }
});
input.on("close", () => {
  for (const client of clients.values()) client.close();
  process.stdout.end(() => process.exit(0));
});
