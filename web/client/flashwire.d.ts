// Type declarations of web/client/flashwire.js: the Flashwire reader client and the messages of
// the reader protocol (docs/protocol.md, version 1; the same shapes as flashwire/core/protocol.py
// and /api/v1/asyncapi.json). Messages are open: later versions of protocol 1 may add fields.

export declare const PROTOCOL_VERSION: 1;
export declare const DEFAULT_HEARTBEAT_S: 15;
export declare const DEAD_AFTER_HEARTBEATS: 2.5;
export declare const BACKOFF_BASE_MS: 250;
export declare const BACKOFF_MAX_MS: 15000;
export declare const TRY_LATER_MIN_MS: 5000;
export declare const RETRY_AFTER_MAX_MS: 300000;
export declare const MAX_MESSAGE_BYTES: number;
export declare const MAX_LINES_PER_EDITION: 500;
export declare const POLL_INTERVAL_MS: 15000;
export type Transport = "ws" | "sse" | "poll";
/** The transports, best first. */
export declare const TRANSPORTS: readonly Transport[];

/** Close codes of protocol.md section 10. */
export declare const CloseCode: Readonly<{
  NORMAL: 1000;
  GOING_AWAY: 1001;
  ABNORMAL: 1006;
  POLICY_VIOLATION: 1008;
  MESSAGE_TOO_BIG: 1009;
  INTERNAL_ERROR: 1011;
  SERVICE_RESTART: 1012;
  TRY_AGAIN_LATER: 1013;
  SLOW_CONSUMER: 4001;
  BAD_REQUEST: 4400;
  FORBIDDEN_ORIGIN: 4403;
  SUBSCRIBE_TIMEOUT: 4408;
}>;
export declare const STOP_CLOSE_CODES: readonly number[];
export declare const STOP_STATUSES: readonly number[];
export declare const TRY_LATER_STATUSES: readonly number[];

// -- the protocol's messages (protocol.md sections 4 and 5) ------------------------------------

/** `<ms>-<seq>` (a Redis stream id); compare with compareCursors, never as strings. */
export type Cursor = string;
export type Urgency = "flash" | "urgent" | "routine";

/** The line object (protocol.md 5). */
export interface Line {
  id: string;
  version: number;
  revision?: number;
  edition: string;
  language: string;
  direction: "ltr" | "rtl";
  /** Plain text: never render it as HTML. */
  text: string;
  urgency: Urgency;
  iptc_urgency: number;
  topics: string[];
  url: string | null;
  source: string | null;
  status: "usable" | "canceled";
  pinned: boolean;
  published_at: string;
  updated_at: string;
  expires_at: string;
  embargoed: string | null;
  author: string;
  expired?: true;
  [field: string]: unknown;
}

export interface HelloMessage {
  type: "hello";
  protocol: 1;
  node: string;
  heartbeat_s: number;
  editions: string[];
  topics: string[];
}
export interface SubscribedMessage {
  type: "subscribed";
  editions: string[];
  topics: string[];
  min_urgency: Urgency;
  resuming: string[];
  role?: "desk";
}
export interface SnapshotMessage {
  type: "snapshot";
  edition: string;
  cursor: Cursor;
  reset: boolean;
  lines: Line[];
  /** Present only when `reset` is true. */
  reason?: string;
  /** Made from the edition's JSON feed (transport "poll"): then `cursor` is null if the feed names none. */
  feed?: true;
}
export interface LineMessage {
  type: "line";
  edition: string;
  cursor: Cursor;
  line: Line;
}
export interface UpdateMessage {
  type: "update";
  edition: string;
  cursor: Cursor;
  /** "correction", "pin", "unpin", "expiry"; treat others as a generic change. */
  change: string;
  line: Line;
  previous?: { topics: string[]; urgency: Urgency };
}
export interface RetractMessage {
  type: "retract";
  edition: string;
  cursor: Cursor;
  id: string;
  /** "killed", "expired", "filtered"; treat others like "filtered". */
  reason: string;
  note: string;
  line: Line;
}
export interface HeartbeatMessage {
  type: "heartbeat";
}
export interface PongMessage {
  type: "pong";
}
export type TickerEvent = SnapshotMessage | LineMessage | UpdateMessage | RetractMessage;
export type ServerMessage = HelloMessage | SubscribedMessage | TickerEvent | HeartbeatMessage | PongMessage;

// -- helpers -----------------------------------------------------------------------------------

export declare function isCursor(value: unknown): value is Cursor;
/** -1, 0 or 1 as `a` is before, at or after `b`; TypeError for a malformed cursor. */
export declare function compareCursors(a: Cursor, b: Cursor): -1 | 0 | 1;
export declare function backoffCeilingMs(attempt: number, tryLater: boolean, baseMs?: number, maxMs?: number): number;
export declare function retryAfterMs(value: string | null | undefined, now?: number): number;
export declare function backoffDelayMs(
  attempt: number,
  options?: { tryLater?: boolean; retryAfter?: number; baseMs?: number; maxMs?: number; random?: () => number },
): number;

/** Why a client stopped: the request itself must change (protocol.md 11). */
export declare class SubscriptionRefused extends Error {
  constructor(code: number, reason: string, kind?: "close" | "http" | "client");
  /** The close code (4400, 4403, 4408, 1009), the HTTP status (400, 403, 404, 414, 431), or 0. */
  readonly code: number;
  readonly reason: string;
  /** "close": a close code; "http": an answer's status; "client": this client's own limit. */
  readonly kind: "close" | "http" | "client";
}

// -- the client --------------------------------------------------------------------------------

/** A WebSocket constructor of the standard API (browsers, React Native, Node 22+, or `ws`). */
export interface WebSocketLike {
  readonly readyState: number;
  // The client sets these to its own handlers, which read `data` (message) and `code` and
  // `reason` (close); `any` so that every implementation's event classes fit.
  onopen: ((event: any) => void) | null;
  onmessage: ((event: any) => void) | null;
  onerror: ((event: any) => void) | null;
  onclose: ((event: any) => void) | null;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  /** `ws`'s: drop without a closing handshake. */
  terminate?(): void;
}
export type WebSocketConstructor = new (url: string) => WebSocketLike;
export type FetchLike = (
  url: string,
  init: { headers?: Record<string, string>; cache: "no-store" | "no-cache"; mode?: "no-cors"; signal?: AbortSignal },
) => Promise<Response>;

export interface Filter {
  /** Edition codes; empty or missing: every edition. */
  editions?: string[];
  /** Topic slugs; a line matches with any of them. */
  topics?: string[];
  /** Lowest urgency delivered; null or missing: routine (everything). */
  minUrgency?: Urgency | null;
}

export interface ClientOptions extends Filter {
  /** The node's base URL (http(s):// or ws(s)://, `/ws` or `/sse` allowed at the end), or several
   * nodes of one deployment, taken in turn after each failed connection. */
  server: string | string[];
  /** Resume cursors per edition, e.g. saved from `client.cursors`. */
  since?: Record<string, Cursor>;
  /** "auto" (WebSocket, SSE when WebSocket is missing or blocked), "ws", "sse" or "poll" (the feeds). */
  transport?: "auto" | Transport;
  /** Instead of `transport`: the transports to use, best first, e.g. ["ws", "sse", "poll"]; each is
   * given up for the next after two attempts in a row that the way to the node blocks. */
  transports?: Transport[];
  /** Between two reads of the feeds (transport "poll"), in ms (default 15000); a function is asked before each wait. */
  pollIntervalMs?: number | (() => number);
  /** A WebSocket constructor; default globalThis.WebSocket (Node < 22: `import { WebSocket } from "ws"`). */
  WebSocket?: WebSocketConstructor;
  /** A fetch that can stream a response body; default globalThis.fetch. */
  fetch?: FetchLike;
  /** Hold the live lines (`client.lines()`); default true. */
  keepLines?: boolean;
  /** Lines held per edition at most (default 500); the oldest unpinned go first. */
  maxLinesPerEdition?: number;
  /** The largest message accepted (default 4 MiB); larger: stop with 1009. */
  maxMessageBytes?: number;
  /** For tests only: the backoff's first ceiling (250 ms) and largest ceiling (15 s). */
  backoffBaseMs?: number;
  backoffMaxMs?: number;
  /** "desk" only for the newsroom's own desk page (protocol.md 2.4). */
  role?: "reader" | "desk";
}

export type ClientState = "idle" | "connecting" | "open" | "live" | "waiting" | "offline" | "stopped" | "closed";

export interface ConnectionInfo {
  /** 1 for the first connection of this client, then 2, ... */
  id: number;
  transport: Transport;
  /** The node's http(s) base URL. */
  server: string;
  url: string;
  /** The cursors sent as `since`. */
  since: Record<string, Cursor>;
}
export interface RetryInfo {
  /** Consecutive failed connections, 1 for the first retry. */
  attempt: number;
  /** The wait chosen before the next attempt. */
  delayMs: number;
  reason: string;
  /** The connection that ended had delivered its catch-up. */
  wasLive: boolean;
  /** It ended with a 1013, 429 or 503. */
  tryLater: boolean;
  retryAfterMs: number;
  /** The transport of the next attempt (before a fallback's try of the best one). */
  transport: Transport;
  /** The connection was dropped because nothing arrived for 2.5 x heartbeat_s. */
  silent: boolean;
}
export interface StateChange extends Partial<RetryInfo> {
  state: ClientState;
  previous: ClientState;
  transport: Transport;
  attempt: number;
  connection?: ConnectionInfo;
  /** On "live": the connection came after a retry. */
  resumed?: boolean;
  /** On "stopped". */
  refusal?: SubscriptionRefused;
}
export interface RawMessage {
  message: ServerMessage | { type?: unknown; [field: string]: unknown };
  /** The frame, or the SSE event's data, exactly as received; null for a snapshot made from a feed. */
  raw: string | null;
  /** The SSE event's own `id` field (null if it had none, and over WebSocket). */
  sseId: string | null;
  connection: ConnectionInfo;
}
export interface Disconnect {
  connection: ConnectionInfo;
  /** The close code, if the WebSocket closed with one. */
  code: number | null;
  /** The HTTP status that refused the connection, if any. */
  status: number | null;
  reason: string;
  wasLive: boolean;
}

export interface ClientEvents {
  /** Events that passed the cursor check, in order; a snapshot replaces what is held for its edition. */
  snapshot: SnapshotMessage;
  line: LineMessage;
  update: UpdateMessage;
  retract: RetractMessage;
  /** Any of the four above. */
  event: TickerEvent;
  hello: HelloMessage;
  subscribed: SubscribedMessage;
  heartbeat: HeartbeatMessage;
  pong: PongMessage;
  /** Every JSON object received, before the cursor check (for diagnostics and recordings). */
  message: RawMessage;
  state: StateChange;
  connection: ConnectionInfo;
  disconnect: Disconnect;
  retry: RetryInfo;
  refused: SubscriptionRefused;
}

export declare class FlashwireClient {
  constructor(options: ClientOptions);
  readonly state: ClientState;
  readonly transport: Transport;
  /** The transports it may use, best first. */
  readonly transports: Transport[];
  readonly attempt: number;
  readonly connections: number;
  readonly refusal: SubscriptionRefused | null;
  readonly filter: { editions: string[]; topics: string[]; minUrgency: Urgency | null };
  /** The cursor of the last snapshot or event processed, per edition (a copy). */
  readonly cursors: Record<string, Cursor>;
  /** The live lines held, pinned first, then newest first. */
  lines(edition?: string): Line[];
  on<K extends keyof ClientEvents>(type: K, listener: (event: ClientEvents[K]) => void): () => void;
  off<K extends keyof ClientEvents>(type: K, listener: (event: ClientEvents[K]) => void): void;
  once<K extends keyof ClientEvents>(type: K, listener: (event: ClientEvents[K]) => void): () => void;
  start(): this;
  close(): void;
  ping(): boolean;
  /** Try at once if waiting between attempts (the network is back; not after a 1013, 429 or 503),
   * or if offline (with the backoff count reset). */
  reconnect(): boolean;
  /** The network is gone: close the connection, no attempt until reconnect() (state "offline"). */
  offline(): boolean;
  subscribe(filter?: Filter): void;
}
