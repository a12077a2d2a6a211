// Shared by the tests of web/client/test/: a scripted WebSocket server, a relay that can refuse
// upgrades, waiting for conditions, and the real server's URL and tokens from the environment
// (tests/test_js_client.py sets FLASHWIRE_URL, FLASHWIRE_TOKEN and FLASHWIRE_CHIEF_TOKEN).
import http from "node:http";
import net from "node:net";
import { WebSocketServer, WebSocket } from "ws";

export { WebSocket };

export const SERVER = process.env.FLASHWIRE_URL ?? "";
export const TOKEN = process.env.FLASHWIRE_TOKEN ?? "";
export const CHIEF_TOKEN = process.env.FLASHWIRE_CHIEF_TOKEN ?? "";
/** Skip reason for tests that need the real stack, when it is not given. */
export const NEEDS_SERVER = SERVER ? false : "FLASHWIRE_URL not set (run through tests/test_js_client.py)";

export const HELLO = { type: "hello", protocol: 1, node: "scripted", heartbeat_s: 15, editions: ["en"], topics: [] };
export const SUBSCRIBED = { type: "subscribed", editions: ["en"], topics: [], min_urgency: "routine", resuming: [] };
export const SNAPSHOT = { type: "snapshot", edition: "en", cursor: "0-0", reset: false, lines: [] };

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Resolve with `probe()`'s first truthy value, polling; reject after `timeoutMs`. */
export async function until(probe, timeoutMs = 10000, what = "condition") {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`${what} not met within ${timeoutMs} ms`);
    await sleep(10);
  }
}

/** The next event of `type` from `client` (that satisfies `test`), within `timeoutMs`. */
export function next(client, type, test = () => true, timeoutMs = 10000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      off();
      reject(new Error(`no ${type} within ${timeoutMs} ms (state ${client.state})`));
    }, timeoutMs);
    const off = client.on(type, (event) => {
      if (!test(event)) return;
      clearTimeout(timer);
      off();
      resolve(event);
    });
  });
}

/** A WebSocket server that answers every connection with `messages` and then `close`; `attempts`
 * holds the time (ms) of each connection and `urls` its request URL. `respond(request)`, if given,
 * may refuse an upgrade with [status, headers, body] instead. */
export async function scripted(messages, closeCode, closeReason = "", respond = null) {
  const attempts = [];
  const urls = [];
  const server = http.createServer((request, response) => {
    // /sse (which the client asks when a WebSocket does not open) is refused as the upgrade is.
    const refusal = respond?.(request);
    if (refusal) {
      const [status, headers, body] = refusal;
      response.writeHead(status, headers).end(body);
    } else {
      response.writeHead(404, { "Content-Type": "application/json" }).end('{"error":{"status":404,"code":"not_found","message":"scripted"}}');
    }
  });
  const wss = new WebSocketServer({ noServer: true });
  server.on("upgrade", (request, socket, head) => {
    attempts.push(Date.now());
    urls.push(request.url);
    const refusal = respond?.(request);
    if (refusal) {
      const [status, headers, body] = refusal;
      const lines = Object.entries({ ...headers, "Content-Length": Buffer.byteLength(body), Connection: "close" });
      socket.end(`HTTP/1.1 ${status} Refused\r\n${lines.map(([k, v]) => `${k}: ${v}`).join("\r\n")}\r\n\r\n${body}`);
      return;
    }
    wss.handleUpgrade(request, socket, head, (ws) => {
      for (const message of messages) ws.send(JSON.stringify(message));
      if (closeCode !== null) ws.close(closeCode, closeReason); // null: stay open, silent
    });
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    attempts,
    urls,
    url: `http://127.0.0.1:${server.address().port}`,
    close: () =>
      new Promise((resolve) => {
        for (const client of wss.clients) client.terminate();
        server.closeAllConnections?.();
        server.close(resolve);
      }),
  };
}

/** A TCP relay to `port` recording each request line in `requests`; `cut()` drops every
 * connection open now (a network loss); with `blockUpgrades` it drops every WebSocket upgrade (a
 * proxy that does not pass WebSocket), with `blockSse` every request for /sse (nor streams). */
export async function relay(port, { blockUpgrades = false, blockSse = false } = {}) {
  const requests = [];
  const sockets = new Set();
  const blocked = { upgrades: blockUpgrades, sse: blockSse }; // may be changed while it runs
  const server = net.createServer((client) => {
    sockets.add(client);
    client.on("close", () => sockets.delete(client));
    let upstream = null;
    let head = Buffer.alloc(0);
    client.on("error", () => upstream?.destroy());
    client.on("data", (chunk) => {
      if (upstream) {
        // A later request on a kept-alive connection (fetch reuses them): blocked too, if it asks for /sse.
        if (blocked.sse && /^GET \/sse[? ]/.test(chunk.toString("latin1", 0, 9))) {
          requests.push(chunk.toString("latin1").split("\r\n", 1)[0]);
          client.destroy();
          return;
        }
        return void upstream.write(chunk);
      }
      head = Buffer.concat([head, chunk]);
      const end = head.indexOf("\r\n\r\n");
      if (end < 0) return;
      const text = head.subarray(0, end).toString("latin1");
      requests.push(text.split("\r\n", 1)[0]);
      if ((blocked.upgrades && /^upgrade:\s*websocket/im.test(text)) || (blocked.sse && /^GET \/sse[? ]/.test(text))) {
        client.destroy();
        return;
      }
      upstream = net.connect(port, "127.0.0.1");
      sockets.add(upstream);
      upstream.on("close", () => {
        sockets.delete(upstream);
        client.destroy();
      });
      upstream.on("error", () => client.destroy());
      upstream.pipe(client);
      upstream.write(head);
    });
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    requests,
    blocked,
    url: `http://127.0.0.1:${server.address().port}`,
    times: (path) => requests.filter((request) => request.startsWith(`GET ${path}?`) || request.startsWith(`GET ${path} `)).length,
    cut: () => {
      for (const socket of sockets) socket.destroy();
    },
    close: () =>
      new Promise((resolve) => {
        for (const socket of sockets) socket.destroy();
        server.close(resolve);
      }),
  };
}

/** POST a line through the newsroom API; returns the answer (id, desk_id, ...). */
export async function postLine(text, fields = {}, token = TOKEN) {
  const response = await fetch(`${SERVER}/api/v1/lines`, {
    method: "POST",
    headers: { Authorization: `Bearer ${token}`, "Content-Type": "application/json" },
    body: JSON.stringify({ edition: "en", text, ...fields }),
  });
  if (response.status !== 201) throw new Error(`post answered ${response.status}: ${await response.text()}`);
  return response.json();
}

/** Retract (kill) a line; needs a chief token. */
export async function retractLine(id) {
  const response = await fetch(`${SERVER}/api/v1/lines/${id}/retraction`, {
    method: "POST",
    headers: { Authorization: `Bearer ${CHIEF_TOKEN}`, "Content-Type": "application/json" },
    body: JSON.stringify({ reason: "test" }),
  });
  if (response.status !== 201) throw new Error(`retraction answered ${response.status}: ${await response.text()}`);
  return response.json();
}

export function gaps(times) {
  return times.slice(1).map((at, index) => (at - times[index]) / 1000);
}
