// Flashwire reader client: one ES module, no dependencies, for browsers, Node 18+ and React Native.
//
//   import { FlashwireClient } from "./flashwire.js";
//   const client = new FlashwireClient({ server: "https://news.example", editions: ["en"] });
//   client.on("line", (event) => console.log(event.line.text));
//   client.start();
//
// It implements the reader protocol of docs/protocol.md (version 1) as flashwire/client.py and
// web/ticker.js do, with the same numbers: the cursor check of 8.2 (per edition, compared as
// numbers; any snapshot replaces and sets the cursor), the dead-connection rule of 9 (nothing for
// 2.5 x heartbeat_s, 15 s until `hello`, counted from the start of each attempt), the close codes
// of 10 and the backoff of 11 (d = min(15 s, 0.25 s x 2^(n-1)), at least 5 s after a 1013, 429 or
// 503, a uniform wait in [d/2, d], never sooner than a Retry-After (capped at 5 minutes) plus up to
// a fifth; n reset by the first message that is not `hello` or `subscribed`), resuming with
// `since=` its cursors. Transports: WebSocket (`/ws`), SSE (`/sse`, section 15) read with
// `fetch` streaming, so that it works where EventSource is missing and can read error answers, and
// on request the JSON feeds (`/feeds/{edition}.json`, section 16) read every `pollIntervalMs`. A
// transport that the way to the node blocks is given up for the next one of `transports` after
// two failures in a row, and the best one is tried again later (docs/client.md, "Transports").
//
// What it keeps in memory (docs/client.md, "Memory"): one cursor per subscribed edition; unless
// `keepLines` is false, the live lines of each edition, at most `maxLinesPerEdition` (500, a
// snapshot's cap) per edition, the oldest unpinned dropped first; one connection at a time; for
// SSE, one partial event of at most `maxMessageBytes` (4 MiB, protocol.md 12).

export const PROTOCOL_VERSION = 1;
export const DEFAULT_HEARTBEAT_S = 15;
export const DEAD_AFTER_HEARTBEATS = 2.5;
export const BACKOFF_BASE_MS = 250;
export const BACKOFF_MAX_MS = 15000;
export const TRY_LATER_MIN_MS = 5000;
export const RETRY_AFTER_MAX_MS = 300000;
export const MAX_MESSAGE_BYTES = 4 * 1024 * 1024;
export const MAX_LINES_PER_EDITION = 500;
export const POLL_INTERVAL_MS = 15000;
/** The transports, best first. */
export const TRANSPORTS = Object.freeze(["ws", "sse", "poll"]);

/** Close codes of protocol.md section 10. */
export const CloseCode = Object.freeze({
  NORMAL: 1000,
  GOING_AWAY: 1001,
  ABNORMAL: 1006,
  POLICY_VIOLATION: 1008,
  MESSAGE_TOO_BIG: 1009,
  INTERNAL_ERROR: 1011,
  SERVICE_RESTART: 1012,
  TRY_AGAIN_LATER: 1013,
  SLOW_CONSUMER: 4001,
  BAD_REQUEST: 4400,
  FORBIDDEN_ORIGIN: 4403,
  SUBSCRIBE_TIMEOUT: 4408,
});
/** Closes and HTTP answers after which asking again cannot help (protocol.md 11): stop. */
export const STOP_CLOSE_CODES = Object.freeze([1009, 4400, 4403, 4408]);
export const STOP_STATUSES = Object.freeze([400, 403, 404, 414, 431]);
/** Answers after which the wait is at least TRY_LATER_MIN_MS's ceiling (protocol.md 11). */
export const TRY_LATER_STATUSES = Object.freeze([429, 503]);

const EVENT_TYPES = new Set(["snapshot", "line", "update", "retract"]);
const LIVE_TYPES = new Set(["line", "update", "retract"]);
const GREETINGS = new Set(["hello", "subscribed"]);
const URGENCIES = ["flash", "urgent", "routine"];
const URGENCY_RANK = { flash: 0, urgent: 1, routine: 2 };
const CURSOR = /^([0-9]{1,20})(?:-([0-9]{1,20}))?$/;
const U64_MAX = "18446744073709551615";
// After two attempts in a row whose transport fails to open while the node serves (/sse answers
// 200, or its health and feeds do), the client uses the next transport of its list; it tries the
// best one again 4-8 s later, then twice as long after each try that fails, up to 5 minutes
// (protocol.md 13). A try from the feeds that fails goes on to SSE at once.
const BLOCKED_BEFORE_FALLBACK = 2;
const FALLBACK_FIRST_MS = 4000;
const FALLBACK_MAX_MS = 300000;
const PROBE_TIMEOUT_MS = 10000;

// -- cursors (protocol.md 8.1) ---------------------------------------------------------------

function u64(digits) {
  const plain = digits.replace(/^0+(?=.)/, "");
  return plain.length < 20 || (plain.length === 20 && plain <= U64_MAX) ? plain : null;
}

/** Does `value` follow the cursor rule: `<digits>` or `<digits>-<digits>`, each part < 2^64? */
export function isCursor(value) {
  if (typeof value !== "string") return false;
  const match = CURSOR.exec(value);
  return match !== null && u64(match[1]) !== null && u64(match[2] ?? "0") !== null;
}

function numberCompare(a, b) {
  return a.length - b.length || (a < b ? -1 : a > b ? 1 : 0);
}

/** -1, 0 or 1 as cursor `a` is before, at or after `b`, comparing the milliseconds and then the
 * sequence as integers (exactly, beyond 2^53 too). Throws TypeError for a malformed cursor. */
export function compareCursors(a, b) {
  if (!isCursor(a) || !isCursor(b)) throw new TypeError(`malformed cursor ${JSON.stringify(isCursor(a) ? b : a)}`);
  const [ams, aseq] = CURSOR.exec(a).slice(1);
  const [bms, bseq] = CURSOR.exec(b).slice(1);
  return Math.sign(numberCompare(u64(ams), u64(bms)) || numberCompare(u64(aseq ?? "0"), u64(bseq ?? "0")));
}

// -- backoff (protocol.md 11) ----------------------------------------------------------------

/** The ceiling d of the n-th wait in a row, in ms; raised to 5 s after a 1013, 429 or 503. */
export function backoffCeilingMs(attempt, tryLater, baseMs = BACKOFF_BASE_MS, maxMs = BACKOFF_MAX_MS) {
  const ceiling = Math.min(maxMs, baseMs * 2 ** Math.min(Math.max(attempt, 1) - 1, 30));
  return tryLater ? Math.max(ceiling, TRY_LATER_MIN_MS) : ceiling;
}

/** Milliseconds a Retry-After value asks for (RFC 9110 10.2.3: delay-seconds or an HTTP-date),
 * at most 5 minutes; 0 for none or a value that is neither. */
export function retryAfterMs(value, now = Date.now()) {
  if (value == null) return 0;
  const text = String(value).trim();
  if (text === "") return 0;
  const ms = /^[0-9]+$/.test(text) ? Number(text) * 1000 : Date.parse(text) - now;
  return Number.isFinite(ms) ? Math.min(Math.max(ms, 0), RETRY_AFTER_MAX_MS) : 0;
}

/** The wait before the n-th attempt in a row: uniform in [d/2, d], and at least the Retry-After
 * times 1 to 1.2 (so that the clients a node refused do not all come back at once). */
export function backoffDelayMs(attempt, { tryLater = false, retryAfter = 0, baseMs, maxMs, random = Math.random } = {}) {
  const ceiling = backoffCeilingMs(attempt, tryLater, baseMs, maxMs);
  let delay = ceiling / 2 + random() * (ceiling / 2);
  if (retryAfter > 0) delay = Math.max(delay, retryAfter * (1 + 0.2 * random()));
  return delay;
}

// -- the error a client stops with -----------------------------------------------------------

/** The server refused the subscription in a way that asking again cannot help (protocol.md 11):
 * `code` is the close code (4400, 4403, 4408, 1009) or the HTTP status (400, 403, 404, 414, 431),
 * `kind` says which ("close" or "http"), `reason` the close reason or the error body's
 * `field: message`. */
export class SubscriptionRefused extends Error {
  constructor(code, reason, kind = "close") {
    super(`server refused the subscription (${code}): ${reason}`);
    this.name = "SubscriptionRefused";
    this.code = code;
    this.reason = reason;
    this.kind = kind;
  }
}

async function refusalReason(response) {
  let text = "";
  try {
    text = await response.text();
    const error = JSON.parse(text).error;
    if (error && typeof error.message === "string") {
      return typeof error.field === "string" && error.field ? `${error.field}: ${error.message}` : error.message;
    }
  } catch {
    // not the API's JSON error: the status line says it
  }
  return response.statusText || `HTTP ${response.status}`;
}

// -- URLs ------------------------------------------------------------------------------------

// No URL class: React Native's is incomplete.
function baseOf(server) {
  const match = /^(https?|wss?):\/\/([^?#]*?)\/*(?:\/(?:ws|sse))?$/i.exec(String(server).trim());
  if (!match) throw new TypeError(`server must be an http(s) or ws(s) URL, got ${JSON.stringify(server)}`);
  const scheme = match[1].toLowerCase();
  const secure = scheme === "https" || scheme === "wss";
  return { http: `${secure ? "https" : "http"}://${match[2]}`, ws: `${secure ? "wss" : "ws"}://${match[2]}` };
}

function encode(value) {
  return encodeURIComponent(value).replace(/%2C/gi, ",").replace(/%3A/gi, ":");
}

// -- SSE parsing (the HTML standard's event stream, as EventSource parses it) ----------------

class EventStreamParser {
  constructor(maxBytes) {
    this.maxBytes = maxBytes;
    this.buffer = "";
    this.data = null;
    this.id = null;
  }

  /** Complete events in `text`: [data, the event's own id field or null]; throws RangeError when
   * an event grows over maxBytes. */
  feed(text) {
    this.buffer += text;
    const out = [];
    for (;;) {
      const match = /\r\n|\r|\n/.exec(this.buffer);
      if (match === null || (match[0] === "\r" && match.index === this.buffer.length - 1)) break;
      const line = this.buffer.slice(0, match.index);
      this.buffer = this.buffer.slice(match.index + match[0].length);
      if (line === "") {
        if (this.data !== null || this.id !== null) out.push([this.data ?? "", this.id]);
        this.data = null;
        this.id = null;
        continue;
      }
      if (line.startsWith(":")) continue;
      const colon = line.indexOf(":");
      const name = colon < 0 ? line : line.slice(0, colon);
      let value = colon < 0 ? "" : line.slice(colon + 1);
      if (value.startsWith(" ")) value = value.slice(1);
      if (name === "data") this.data = this.data === null ? value : `${this.data}\n${value}`;
      else if (name === "id" && !value.includes("\0")) this.id = value;
    }
    if (this.buffer.length + (this.data?.length ?? 0) > this.maxBytes) {
      throw new RangeError(`an event is larger than ${this.maxBytes} bytes`);
    }
    return out;
  }
}

// -- the feeds (protocol.md 16, docs/feeds.md) ------------------------------------------------

// Does `line` pass the filter (protocol.md 7): its urgency at least minUrgency, and any of the topics?
function matches(filter, line) {
  if ((URGENCY_RANK[line.urgency] ?? 2) > URGENCY_RANK[filter.minUrgency ?? "routine"]) return false;
  return !filter.topics.length || (line.topics ?? []).some((topic) => filter.topics.includes(topic));
}

// An edition's JSON feed as the snapshot a stream would give for `filter`: its live lines, newest
// first, without the items withdrawn in the last 24 hours, marked `feed: true`, with the cursor the
// feed stands at (null if it names none).
function feedSnapshot(edition, feed, filter) {
  const lines = [];
  for (const item of Array.isArray(feed?.items) ? feed.items : []) {
    const extra = item._flashwire ?? {};
    if (extra.retracted) continue;
    const line = {
      id: extra.line_id ?? item.id,
      version: extra.version ?? 1,
      edition,
      language: item.language ?? edition,
      direction: extra.direction,
      text: item.content_text ?? item.title ?? "",
      urgency: extra.urgency ?? "routine",
      topics: Array.isArray(item.tags) ? item.tags : [],
      url: item.url ?? null,
      pinned: extra.pinned === true,
      published_at: item.date_published,
      updated_at: item.date_modified ?? item.date_published,
    };
    if (typeof line.id === "string" && matches(filter, line)) lines.push(line);
  }
  const cursor = feed?._flashwire?.cursor;
  return { type: "snapshot", edition, cursor: isCursor(cursor) ? cursor : null, reset: false, lines, feed: true };
}

// -- the client ------------------------------------------------------------------------------

function listOf(value, name) {
  if (value == null) return [];
  if (!Array.isArray(value) || value.some((item) => typeof item !== "string" || item === "")) {
    throw new TypeError(`${name} must be an array of non-empty strings`);
  }
  return [...new Set(value)];
}

function checkFilter({ editions, topics, minUrgency }) {
  const filter = { editions: listOf(editions, "editions"), topics: listOf(topics, "topics"), minUrgency: minUrgency ?? null };
  if (filter.minUrgency !== null && !URGENCIES.includes(filter.minUrgency)) {
    throw new TypeError(`minUrgency must be one of ${URGENCIES.join(", ")}`);
  }
  return filter;
}

function checkSince(since) {
  const cursors = new Map();
  for (const [edition, cursor] of Object.entries(since ?? {})) {
    if (!isCursor(cursor)) throw new TypeError(`since: malformed cursor ${JSON.stringify(cursor)} for ${JSON.stringify(edition)}`);
    cursors.set(edition, cursor);
  }
  return cursors;
}

function rethrowLater(error) {
  setTimeout(() => {
    throw error;
  }, 0);
}

/**
 * A Flashwire reader: one subscription, resumed across drops, on one connection at a time.
 * See docs/client.md for the options, events and states; web/client/flashwire.d.ts for types.
 */
export class FlashwireClient {
  #options;
  #servers;
  #serverIndex;
  #filter;
  #cursors;
  #lines = new Map(); // edition -> Map(line id -> { line, rank })
  #rank = 0;
  #listeners = new Map();
  #state = "idle";
  #conn = null;
  #connections = 0;
  #attempt = 0;
  #waitTimer = null;
  #waitTryLater = false;
  #transports; // the transports to use, best first
  #level = 0; // the index in #transports of the one in use
  #nextLevel = null; // a transport to try at once (from the feeds: SSE after a failed WebSocket)
  #blocked = 0;
  #fallbackMs = FALLBACK_FIRST_MS;
  #fallbackUntil = 0;
  #refusal = null;
  #WebSocket;
  #fetch;

  constructor(options = {}) {
    const servers = Array.isArray(options.server) ? options.server : [options.server];
    if (servers.length === 0 || servers.some((server) => typeof server !== "string")) {
      throw new TypeError("server must be a URL or a non-empty array of URLs");
    }
    this.#servers = servers.map(baseOf);
    this.#serverIndex = Math.floor(Math.random() * servers.length);
    this.#filter = checkFilter(options);
    this.#cursors = checkSince(options.since);
    this.#WebSocket = options.WebSocket ?? globalThis.WebSocket;
    this.#fetch = options.fetch ?? globalThis.fetch?.bind(globalThis);
    const transport = options.transport ?? "auto";
    if (!["auto", ...TRANSPORTS].includes(transport)) throw new TypeError("transport must be auto, ws, sse or poll");
    if (transport === "ws" && typeof this.#WebSocket !== "function") {
      throw new TypeError("transport ws needs a WebSocket: globalThis.WebSocket or the WebSocket option (Node < 22: the ws package)");
    }
    if ((transport === "sse" || transport === "poll") && typeof this.#fetch !== "function") throw new TypeError(`transport ${transport} needs fetch`);
    let transports = transport === "auto" ? ["ws", "sse"] : [transport];
    if (options.transports !== undefined) {
      const list = options.transports;
      if (transport !== "auto") throw new TypeError("give transport or transports, not both");
      if (!Array.isArray(list) || list.length === 0 || list.some((t) => !TRANSPORTS.includes(t)) || new Set(list).size !== list.length) {
        throw new TypeError("transports must be a non-empty list of ws, sse and poll, best first");
      }
      transports = [...list];
    }
    if (transport === "auto") {
      // What this environment cannot do is left out: no WebSocket, or no fetch for SSE and the feeds.
      transports = transports.filter((t) => (t === "ws" ? typeof this.#WebSocket === "function" : typeof this.#fetch === "function"));
      if (transports.length === 0) throw new TypeError("no transport: needs a WebSocket or fetch");
    }
    this.#transports = transports;
    const pollIntervalMs = options.pollIntervalMs ?? POLL_INTERVAL_MS;
    if (typeof pollIntervalMs !== "function" && !(pollIntervalMs > 0)) throw new TypeError("pollIntervalMs must be a positive number or a function");
    this.#options = {
      transport,
      pollIntervalMs,
      keepLines: options.keepLines ?? true,
      maxLinesPerEdition: options.maxLinesPerEdition ?? MAX_LINES_PER_EDITION,
      maxMessageBytes: options.maxMessageBytes ?? MAX_MESSAGE_BYTES,
      backoffBaseMs: options.backoffBaseMs ?? BACKOFF_BASE_MS,
      backoffMaxMs: options.backoffMaxMs ?? BACKOFF_MAX_MS,
      role: options.role ?? null,
    };
  }

  // -- public state ------------------------------------------------------------------------

  /** "idle", "connecting", "open" (greeted), "live" (catch-up delivered), "waiting", "offline", "stopped", "closed". */
  get state() {
    return this.#state;
  }

  /** The transport in use or about to be used: "ws", "sse" or "poll". */
  get transport() {
    return this.#conn?.transport ?? this.#transports[this.#level];
  }

  /** The transports this client may use, best first. */
  get transports() {
    return [...this.#transports];
  }

  /** Consecutive failed connections (protocol.md 11's n). */
  get attempt() {
    return this.#attempt;
  }

  /** Connections opened so far. */
  get connections() {
    return this.#connections;
  }

  /** Why the client stopped (a SubscriptionRefused), or null. */
  get refusal() {
    return this.#refusal;
  }

  /** The subscription's filter: { editions, topics, minUrgency } (copies). */
  get filter() {
    return { editions: [...this.#filter.editions], topics: [...this.#filter.topics], minUrgency: this.#filter.minUrgency };
  }

  /** The cursor of the last snapshot or event processed, per edition (persist it to resume later). */
  get cursors() {
    return Object.fromEntries(this.#cursors);
  }

  /** The live lines held for `edition` (or every edition), pinned first, then newest first. */
  lines(edition) {
    const held = edition === undefined ? [...this.#lines.values()].flatMap((m) => [...m.values()]) : [...(this.#lines.get(edition)?.values() ?? [])];
    return held.sort((a, b) => Number(b.line.pinned === true) - Number(a.line.pinned === true) || b.rank - a.rank).map((held) => held.line);
  }

  // -- events ------------------------------------------------------------------------------

  /** Call `listener` for each event of `type`; returns a function that removes it. */
  on(type, listener) {
    if (typeof listener !== "function") throw new TypeError("listener must be a function");
    if (!this.#listeners.has(type)) this.#listeners.set(type, new Set());
    this.#listeners.get(type).add(listener);
    return () => this.off(type, listener);
  }

  off(type, listener) {
    this.#listeners.get(type)?.delete(listener);
  }

  /** Call `listener` for the next event of `type` only. */
  once(type, listener) {
    const off = this.on(type, (event) => {
      off();
      listener(event);
    });
    return off;
  }

  #emit(type, event) {
    const listeners = this.#listeners.get(type);
    if (!listeners) return;
    for (const listener of [...listeners]) {
      try {
        listener(event);
      } catch (error) {
        rethrowLater(error); // a listener's bug must not break the connection's state machine
      }
    }
  }

  #setState(state, detail = {}) {
    const previous = this.#state;
    this.#state = state;
    if (previous !== state) this.#emit("state", { state, previous, transport: this.transport, attempt: this.#attempt, ...detail });
  }

  // -- control -----------------------------------------------------------------------------

  /** Connect (once; later calls do nothing until close()). Returns the client. */
  start() {
    if (this.#state === "idle") this.#connect();
    return this;
  }

  /** Close the connection and stop for good (idempotent). */
  close() {
    if (this.#state === "closed") return;
    clearTimeout(this.#waitTimer);
    this.#waitTimer = null;
    const conn = this.#conn;
    this.#conn = null;
    if (conn) this.#drop(conn, true);
    this.#setState("closed");
  }

  /** Send `{"type":"ping"}` (WebSocket only; the `pong` counts as something arriving, protocol.md 9):
   * true if sent. Use it when a device wakes or changes network, not in a loop (1 a second at most). */
  ping() {
    const conn = this.#conn;
    if (!conn || conn.transport !== "ws" || !conn.live || conn.socket.readyState !== 1) return false;
    conn.socket.send('{"type":"ping"}');
    return true;
  }

  /** Try at once if the client is waiting between attempts, because the network may be back (a
   * browser's `online` event, an app coming to the foreground, React Native's NetInfo): true if it
   * did. Not after a 1013, 429 or 503, whose wait the server asked for; on a connection, use ping(). */
  reconnect() {
    if (this.#state === "offline") {
      this.#attempt = 0; // a new network: the backoff starts again
      this.#connect();
      return true;
    }
    if (this.#state !== "waiting" || this.#waitTryLater) return false;
    clearTimeout(this.#waitTimer);
    this.#connect();
    return true;
  }

  /** The network is gone (a browser's `offline` event, React Native's NetInfo): close the
   * connection and make no attempt until reconnect() (state "offline"). True if it did; false for a
   * stopped or closed client. Also before start(): then reconnect() starts it. */
  offline() {
    if (this.#state === "closed" || this.#state === "stopped") return false;
    clearTimeout(this.#waitTimer);
    this.#waitTimer = null;
    const conn = this.#conn;
    this.#conn = null;
    if (conn) this.#drop(conn, true);
    this.#setState("offline");
    return true;
  }

  /** Change the filter: a new connection (protocol.md 7), at once. Editions, topics and minUrgency
   * not given keep their values. A new topic or urgency filter takes fresh snapshots (what is held
   * was chosen by the old one); a change of editions alone keeps the cursors and lines of the
   * editions still subscribed. Restarts a stopped client; an offline one connects at reconnect(). */
  subscribe(filter = {}) {
    if (this.#state === "closed") throw new Error("the client is closed");
    const next = checkFilter({
      editions: filter.editions ?? this.#filter.editions,
      topics: filter.topics ?? this.#filter.topics,
      minUrgency: filter.minUrgency === undefined ? this.#filter.minUrgency : filter.minUrgency,
    });
    const sameFilter =
      next.minUrgency === this.#filter.minUrgency && next.topics.length === this.#filter.topics.length && next.topics.every((t) => this.#filter.topics.includes(t));
    for (const edition of [...this.#cursors.keys(), ...this.#lines.keys()]) {
      if (!sameFilter || (next.editions.length > 0 && !next.editions.includes(edition))) {
        this.#cursors.delete(edition);
        this.#lines.delete(edition);
      }
    }
    this.#filter = next;
    this.#refusal = null;
    this.#attempt = 0;
    clearTimeout(this.#waitTimer);
    this.#waitTimer = null;
    const conn = this.#conn;
    this.#conn = null;
    if (conn) this.#drop(conn, true);
    if (this.#state !== "idle" && this.#state !== "offline") this.#connect(); // offline: at reconnect()
  }

  // -- connections -------------------------------------------------------------------------

  #query() {
    const parts = [];
    const { editions, topics, minUrgency } = this.#filter;
    if (editions.length) parts.push(`editions=${encode(editions.join(","))}`);
    if (topics.length) parts.push(`topics=${encode(topics.join(","))}`);
    if (minUrgency) parts.push(`min_urgency=${minUrgency}`);
    const since = [...this.#cursors].filter(([edition]) => !editions.length || editions.includes(edition)).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    if (since.length) parts.push(`since=${encode(since.map(([e, c]) => `${e}:${c}`).join(","))}`);
    if (this.#options.role) parts.push(`role=${encode(this.#options.role)}`);
    return parts.length ? parts.join("&") : "editions=";
  }

  #connect() {
    this.#waitTimer = null;
    let level = this.#level;
    if (this.#nextLevel !== null) {
      level = this.#nextLevel;
      this.#nextLevel = null;
    } else if (level > 0 && Date.now() >= this.#fallbackUntil) {
      level = 0; // the fallback's time is up: try the best transport again
    }
    const transport = this.#transports[level];
    const server = this.#servers[this.#serverIndex % this.#servers.length];
    const query = this.#query();
    const editions = this.#filter.editions;
    const conn = {
      id: ++this.#connections,
      transport,
      level,
      upgrade: level < this.#level, // a try of a better transport than the fallback in use
      server: server.http,
      url:
        transport === "ws"
          ? `${server.ws}/ws?${query}`
          : transport === "sse"
            ? `${server.http}/sse?${query}`
            : editions.map((edition) => `${server.http}/feeds/${encodeURIComponent(edition)}.json`).join(" "),
      probeUrl: `${server.http}/sse?${query}`,
      since: this.cursors,
      started: Date.now(),
      lastArrival: Date.now(),
      heartbeatMs: DEFAULT_HEARTBEAT_S * 1000,
      opened: false, // the transport opened (WebSocket `open`, SSE 200, the feeds read)
      greeted: false, // something arrived
      live: false, // the catch-up was delivered (a message other than hello and subscribed)
      probing: false,
      deadTimer: null,
      timer: null, // the next read of the feeds, or the end of a fallback on a live SSE stream
      socket: null,
      abort: null,
    };
    this.#conn = conn;
    this.#setState("connecting", { connection: this.#info(conn) });
    this.#emit("connection", this.#info(conn));
    if (conn !== this.#conn) return; // a listener closed the client or changed its filter
    if (transport === "poll") {
      this.#poll(conn);
      return;
    }
    this.#armDeadTimer(conn);
    if (transport === "ws") this.#openWebSocket(conn);
    else this.#openEventStream(conn);
  }

  #info(conn) {
    return { id: conn.id, transport: conn.transport, server: conn.server, url: conn.url, since: conn.since };
  }

  #armDeadTimer(conn) {
    clearTimeout(conn.deadTimer);
    const deadMs = DEAD_AFTER_HEARTBEATS * conn.heartbeatMs;
    const dueIn = conn.lastArrival + deadMs - Date.now();
    conn.deadTimer = setTimeout(() => {
      if (conn !== this.#conn) return;
      if (Date.now() - conn.lastArrival >= deadMs) {
        this.#ended(conn, { reason: `nothing received for ${deadMs / 1000} s (2.5 x heartbeat_s)`, silent: true });
      } else {
        this.#armDeadTimer(conn);
      }
    }, Math.max(dueIn, 0));
  }

  #openWebSocket(conn) {
    let socket;
    try {
      socket = new this.#WebSocket(conn.url);
    } catch (error) {
      queueMicrotask(() => this.#ended(conn, { reason: `cannot connect: ${error?.message ?? error}` }));
      return;
    }
    conn.socket = socket;
    socket.onopen = () => {
      conn.opened = true;
    };
    socket.onmessage = (frame) => {
      if (typeof frame.data !== "string") return; // the server never sends binary frames
      if (frame.data.length > this.#options.maxMessageBytes) {
        this.#ended(conn, { stop: new SubscriptionRefused(1009, `a message is larger than ${this.#options.maxMessageBytes} bytes`) });
        return;
      }
      this.#received(conn, frame.data, null);
    };
    // A WebSocket that did not open: why? (a browser does not say). One refused by the page's
    // Content-Security-Policy fires only `error` in Chromium, never `close`; otherwise the close
    // event follows and says more.
    socket.onerror = () => {
      if (conn === this.#conn && !conn.opened && !conn.greeted) this.#probe(conn, true);
    };
    socket.onclose = (close) => {
      if (conn !== this.#conn) return;
      if (!conn.opened && !conn.greeted) {
        this.#probe(conn, true);
        return;
      }
      const code = close.code;
      const reason = close.reason ?? "";
      if (STOP_CLOSE_CODES.includes(code)) {
        this.#ended(conn, { code, stop: new SubscriptionRefused(code, reason) });
      } else {
        this.#ended(conn, { code, reason: `closed ${code}${reason ? `: ${reason}` : ""}`, tryLater: code === CloseCode.TRY_AGAIN_LATER });
      }
    };
  }

  // One GET for a probe: its Response, its body left unread and cancelled after PROBE_TIMEOUT_MS.
  async #get(conn, url, init = {}) {
    const abort = typeof AbortController === "function" ? new AbortController() : null;
    const timer = setTimeout(() => abort?.abort(), PROBE_TIMEOUT_MS);
    conn.aborts.push(abort);
    try {
      return await this.#fetch(url, { cache: "no-store", signal: abort?.signal, ...init });
    } finally {
      clearTimeout(timer);
    }
  }

  // A transport that did not open (a WebSocket, or a /sse fetch without an answer it could read):
  // why? `askSse`: ask /sse with the same query first, with fetch, which can read the answer
  // (protocol.md 13, docs/client.md): a stop status stops; 429 and 503 are waited out; a 200 means
  // the transport is blocked on the way. No answer it can read (none, or another origin's without
  // CORS headers: a proxy's): is the node up and serving? /healthz not answering means it is down
  // (a restart: plain retry); answering 503, or its feeds not answering 200, that it cannot serve
  // now (the longer wait); its feeds answering 200, that the transport is blocked on the way; a
  // feed answering 404 names an edition the node does not offer: refused.
  async #probe(conn, askSse) {
    if (conn.probing) return;
    conn.probing = true;
    conn.aborts = [];
    const outcome = await this.#why(conn, askSse);
    for (const abort of conn.aborts) abort?.abort(); // an answered /sse would stream on
    if (conn !== this.#conn) return;
    this.#ended(conn, outcome);
  }

  async #why(conn, askSse) {
    const what = conn.transport === "ws" ? "the WebSocket" : "/sse";
    if (typeof this.#fetch !== "function") return { reason: `${what} did not open` };
    if (askSse) {
      try {
        const response = await this.#get(conn, conn.probeUrl, { headers: { Accept: "text/event-stream" } });
        const status = response.status;
        if (STOP_STATUSES.includes(status)) return { status, stop: new SubscriptionRefused(status, await refusalReason(response), "http") };
        if (TRY_LATER_STATUSES.includes(status)) {
          return { status, reason: `${what} did not open; /sse answered ${status}`, tryLater: true, retryAfter: retryAfterMs(response.headers.get("Retry-After")) };
        }
        if (status === 200) return { status, reason: `${what} did not open but /sse answers: WebSocket blocked`, blocked: true };
        return { status, reason: `${what} did not open; /sse answered ${status}` };
      } catch {
        // no answer it can read: ask the node's health and feeds
      }
    }
    try {
      const health = await this.#get(conn, `${conn.server}/healthz`, { mode: "no-cors" });
      if (health.type !== "opaque" && health.status === 503) return { status: 503, reason: `${what} did not open; /healthz answered 503`, tryLater: true };
    } catch (error) {
      return { reason: `cannot connect: ${error?.message ?? error}` };
    }
    const editions = this.#filter.editions;
    if (editions.length === 0) return { reason: `${what} did not open; no answer it can read` };
    try {
      const feeds = await Promise.all(editions.map((edition) => this.#get(conn, `${conn.server}/feeds/${encodeURIComponent(edition)}.json`)));
      const missing = feeds.findIndex((feed) => feed.status === 404);
      if (missing >= 0) return { status: 404, stop: new SubscriptionRefused(404, `editions: unknown edition '${editions[missing]}'`, "http") };
      if (feeds.every((feed) => feed.status === 200)) {
        return { reason: `${what} did not open but the node serves its feeds: ${conn.transport === "ws" ? "WebSocket" : "SSE"} blocked`, blocked: true };
      }
      return { reason: `${what} did not open; the feeds answered ${feeds.map((feed) => feed.status).join(", ")}`, tryLater: true };
    } catch (error) {
      return { reason: `${what} did not open; the feeds did not answer: ${error?.message ?? error}`, tryLater: true };
    }
  }

  async #openEventStream(conn) {
    const abort = typeof AbortController === "function" ? new AbortController() : null;
    conn.abort = abort;
    let ended;
    try {
      let response;
      try {
        response = await this.#fetch(conn.url, { headers: { Accept: "text/event-stream" }, cache: "no-store", signal: abort?.signal });
      } catch {
        if (conn !== this.#conn) return;
        this.#probe(conn, false); // no answer it can read: why?
        return;
      }
      if (conn !== this.#conn) return;
      const status = response.status;
      if (status !== 200) {
        if (STOP_STATUSES.includes(status)) {
          ended = { status, stop: new SubscriptionRefused(status, await refusalReason(response), "http") };
        } else {
          const retryAfter = retryAfterMs(response.headers.get("Retry-After"));
          await response.body?.cancel?.().catch(() => {});
          ended = { status, reason: `/sse answered ${status}`, tryLater: TRY_LATER_STATUSES.includes(status), retryAfter };
        }
      } else if (!response.body || typeof response.body.getReader !== "function") {
        ended = { stop: new SubscriptionRefused(0, "this fetch cannot stream a response body (React Native: pass a streaming fetch, docs/client.md)", "client") };
      } else {
        conn.opened = true;
        const reader = response.body.getReader();
        const decoder = new TextDecoder();
        const parser = new EventStreamParser(this.#options.maxMessageBytes);
        for (;;) {
          const { value, done } = await reader.read();
          if (conn !== this.#conn) return;
          if (done) break;
          for (const [data, id] of parser.feed(decoder.decode(value, { stream: true }))) {
            this.#received(conn, data, id);
            if (conn !== this.#conn) return;
          }
        }
        ended = { reason: "the stream ended" };
      }
    } catch (error) {
      if (conn !== this.#conn) return;
      ended = error instanceof RangeError ? { stop: new SubscriptionRefused(1009, error.message, "client") } : { reason: `cannot connect: ${error?.message ?? error}` };
    }
    this.#ended(conn, ended);
  }

  // The feeds of the subscribed editions, read together every pollIntervalMs: each read gives one
  // snapshot per edition (`feed: true`), filtered by topics and minUrgency as a stream would be.
  // A fallback's time up ends the connection after a read, to try the best transport again.
  async #poll(conn) {
    const editions = this.#filter.editions;
    if (editions.length === 0) {
      this.#ended(conn, { stop: new SubscriptionRefused(0, "reading the feeds needs the editions named", "client") });
      return;
    }
    conn.aborts = [];
    let outcome = null;
    try {
      const responses = await Promise.all(
        editions.map((edition) => this.#get(conn, `${conn.server}/feeds/${encodeURIComponent(edition)}.json`, { cache: "no-cache" })),
      );
      if (conn !== this.#conn) return;
      for (const [index, response] of responses.entries()) {
        const status = response.status;
        if (status === 404) outcome = { status, stop: new SubscriptionRefused(404, `editions: unknown edition '${editions[index]}'`, "http") };
        else if (STOP_STATUSES.includes(status)) outcome = { status, stop: new SubscriptionRefused(status, await refusalReason(response), "http") };
        else if (TRY_LATER_STATUSES.includes(status)) {
          outcome = { status, reason: `/feeds answered ${status}`, tryLater: true, retryAfter: retryAfterMs(response.headers.get("Retry-After")) };
        } else if (status !== 200) outcome = { status, reason: `/feeds answered ${status}` };
        if (outcome) break;
      }
      if (!outcome) {
        const feeds = await Promise.all(responses.map((response) => response.json()));
        if (conn !== this.#conn) return;
        conn.opened = true;
        for (const [index, edition] of editions.entries()) {
          conn.lastArrival = Date.now();
          conn.greeted = true;
          this.#handle(conn, feedSnapshot(edition, feeds[index], this.#filter), null, null);
          if (conn !== this.#conn) return;
        }
      }
    } catch (error) {
      if (conn !== this.#conn) return;
      outcome = { reason: `cannot read the feeds: ${error?.message ?? error}` };
    }
    if (outcome) {
      this.#ended(conn, outcome);
      return;
    }
    const intervalMs = typeof this.#options.pollIntervalMs === "function" ? this.#options.pollIntervalMs() : this.#options.pollIntervalMs;
    const upgradeInMs = conn.level > 0 ? this.#fallbackUntil - Date.now() : Infinity;
    conn.timer = setTimeout(() => {
      if (conn !== this.#conn) return;
      if (conn.level > 0 && Date.now() >= this.#fallbackUntil) this.#ended(conn, { upgrade: true, reason: "the fallback's time is up" });
      else this.#poll(conn);
    }, Math.max(0, Math.min(Number(intervalMs) || POLL_INTERVAL_MS, upgradeInMs)));
  }

  #received(conn, raw, sseId) {
    if (conn !== this.#conn) return;
    conn.lastArrival = Date.now();
    conn.greeted = true;
    let message;
    try {
      message = JSON.parse(raw);
    } catch {
      return;
    }
    if (message === null || typeof message !== "object" || Array.isArray(message)) return;
    this.#handle(conn, message, raw, sseId);
  }

  // A message of `conn` (from a stream, or a snapshot made from a feed: raw null).
  #handle(conn, message, raw, sseId) {
    this.#emit("message", { message, raw, sseId, connection: this.#info(conn) });
    if (conn !== this.#conn) return; // a listener closed the client or changed its filter
    const type = message.type;
    if (type === "hello") {
      const heartbeatS = message.heartbeat_s;
      if (typeof heartbeatS === "number" && heartbeatS > 0) {
        conn.heartbeatMs = heartbeatS * 1000;
        this.#armDeadTimer(conn);
      }
      this.#setState("open", { connection: this.#info(conn) });
    } else if (!conn.live && type !== "subscribed") {
      // The catch-up was delivered: the node can serve us (protocol.md 11, when the count resets).
      conn.live = true;
      const retried = this.#attempt > 0;
      this.#attempt = 0;
      this.#blocked = 0;
      if (conn.level === 0) {
        this.#level = 0;
        this.#fallbackMs = FALLBACK_FIRST_MS;
        this.#fallbackUntil = 0;
      } else if (conn.upgrade) {
        // Up from the feeds to SSE: the best transport is tried again later.
        this.#level = conn.level;
        this.#fallbackUntil = Date.now() + this.#fallbackMs * (1 + Math.random());
      }
      if (conn.level > 0 && conn.transport === "sse") {
        // A live stream on a fallback is ended when its time is up, to try the best transport again.
        conn.timer = setTimeout(() => {
          if (conn === this.#conn) this.#ended(conn, { upgrade: true, reason: "the fallback's time is up" });
        }, Math.max(0, this.#fallbackUntil - Date.now()));
      }
      this.#setState("live", { connection: this.#info(conn), resumed: retried });
      if (conn !== this.#conn) return;
    }
    if (EVENT_TYPES.has(type)) {
      if (!this.#accept(message)) return;
      this.#apply(message);
      this.#emit(type, message);
      this.#emit("event", message);
    } else if (typeof type === "string") {
      this.#emit(type, message); // hello, subscribed, heartbeat, pong, or a type added later
    }
  }

  // The cursor check (protocol.md 8.2): false for an event already passed, or whose cursor breaks
  // the cursor rule (it can be neither placed in order nor resumed from).
  #accept(message) {
    const { edition, cursor } = message;
    if (typeof edition !== "string") return false;
    if (message.feed === true && cursor === null) return true; // a feed that names no cursor: keep ours
    if (!isCursor(cursor)) return false;
    if (LIVE_TYPES.has(message.type)) {
      const known = this.#cursors.get(edition);
      if (known !== undefined && compareCursors(cursor, known) <= 0) return false;
    }
    this.#cursors.set(edition, cursor);
    return true;
  }

  #apply(message) {
    if (!this.#options.keepLines) return;
    const edition = message.edition;
    if (message.type === "snapshot") {
      const held = new Map();
      const lines = Array.isArray(message.lines) ? message.lines : [];
      for (let index = lines.length - 1; index >= 0; index -= 1) {
        const line = lines[index];
        if (line && typeof line.id === "string") held.set(line.id, { line, rank: ++this.#rank });
      }
      this.#lines.set(edition, held);
    } else if (message.type === "retract") {
      this.#lines.get(edition)?.delete(message.id);
    } else if (message.line && typeof message.line.id === "string") {
      if (!this.#lines.has(edition)) this.#lines.set(edition, new Map());
      const held = this.#lines.get(edition);
      const known = held.get(message.line.id);
      held.set(message.line.id, { line: message.line, rank: known && message.type === "update" ? known.rank : ++this.#rank });
    }
    this.#bound(edition);
  }

  #bound(edition) {
    const held = this.#lines.get(edition);
    if (!held || held.size <= this.#options.maxLinesPerEdition) return;
    const byAge = [...held.entries()].sort(([, a], [, b]) => Number(a.line.pinned === true) - Number(b.line.pinned === true) || a.rank - b.rank);
    for (const [id] of byAge.slice(0, held.size - this.#options.maxLinesPerEdition)) held.delete(id);
  }

  #drop(conn, polite) {
    clearTimeout(conn.deadTimer);
    clearTimeout(conn.timer);
    conn.abort?.abort();
    for (const abort of conn.aborts ?? []) abort?.abort();
    const socket = conn.socket;
    if (socket) {
      socket.onopen = socket.onmessage = socket.onclose = null;
      socket.onerror = () => {};
      try {
        if (!polite && typeof socket.terminate === "function") socket.terminate(); // ws: no closing handshake
        else if (socket.readyState === 0 || socket.readyState === 1) socket.close(1000);
      } catch {
        // closing a socket that is already going away
      }
    }
  }

  #ended(conn, { reason = "", code, status, stop, tryLater = false, retryAfter = 0, blocked = false, silent = false, upgrade = false } = {}) {
    if (conn !== this.#conn) return;
    this.#conn = null;
    const wasLive = conn.live;
    // A silent connection is dropped without a handshake (a dead peer never completes one).
    this.#drop(conn, stop !== undefined || code !== undefined || upgrade);
    this.#emit("disconnect", { connection: this.#info(conn), code: code ?? null, status: status ?? null, reason: stop ? stop.reason : reason, wasLive });
    if (stop) {
      this.#refusal = stop;
      this.#setState("stopped", { refusal: stop });
      this.#emit("refused", stop);
      return;
    }
    if (upgrade) {
      this.#connect(); // a fallback's time is up: the best transport, at once
      return;
    }
    if (conn.upgrade && !conn.live) {
      if (conn.level + 1 < this.#level) {
        this.#nextLevel = conn.level + 1; // from the feeds, WebSocket failed: SSE, at once
        this.#connect();
        return;
      }
      // A failed try of a better transport: back to the fallback, and twice as long before the next.
      this.#fallbackMs = Math.min(this.#fallbackMs * 2, FALLBACK_MAX_MS);
      this.#fallbackUntil = Date.now() + this.#fallbackMs * (1 + Math.random());
    } else {
      this.#updateTransport(conn, blocked);
    }
    this.#attempt += 1;
    this.#serverIndex += 1; // preferably another node (protocol.md 10, 1013)
    const delayMs = backoffDelayMs(this.#attempt, { tryLater, retryAfter, baseMs: this.#options.backoffBaseMs, maxMs: this.#options.backoffMaxMs });
    const retry = { attempt: this.#attempt, delayMs, reason, wasLive, tryLater, retryAfterMs: retryAfter, transport: this.#transports[this.#level], silent };
    this.#waitTryLater = tryLater || retryAfter > 0;
    this.#waitTimer = setTimeout(() => this.#connect(), delayMs);
    this.#emit("retry", retry);
    if (this.#conn === null && this.#state !== "closed") this.#setState("waiting", retry);
  }

  // Two attempts in a row whose transport the way to the node blocks: the next transport.
  #updateTransport(conn, blocked) {
    if (conn.level !== this.#level) return;
    if (!blocked) {
      this.#blocked = 0; // "in a row"
      return;
    }
    this.#blocked += 1;
    if (this.#blocked >= BLOCKED_BEFORE_FALLBACK && this.#level + 1 < this.#transports.length) {
      this.#level += 1;
      this.#blocked = 0;
      this.#attempt = 0; // a new transport: its backoff starts again
      this.#fallbackUntil = Date.now() + this.#fallbackMs * (1 + Math.random());
    }
  }
}
