// Shared reader-side rendering: how a line looks in a ticker, and a live list fed by /ws.
// Used by the plain ticker page (/) and by the desk's preview and reader view, so the
// preview is exactly what readers see. Line text is only ever inserted as text.

// The urgency badge and the correction note in the line's language, the same words as the
// widget's (twin: WORDS in web/ticker.js; keep the two in step). A routine line has no badge, as
// in the widget, so that each badge means one urgency. A language not here is worded in English.
export const LINE_WORDS = {
  en: { flash: "FLASH", urgent: "URGENT", corrected: "corrected" },
  ar: { flash: "عاجل جدًا", urgent: "عاجل", corrected: "تصحيح" },
  es: { flash: "FLASH", urgent: "URGENTE", corrected: "corregido" },
};

// The words for a line's language ("ar", or a tag such as "es-419": its first subtag decides).
export function lineWords(language) {
  return LINE_WORDS[String(language || "en").split("-")[0].toLowerCase()] || LINE_WORDS.en;
}

export function renderLine(line) {
  const item = document.createElement("li");
  item.className = "fw-line";
  item.dataset.lineId = line.id;
  fillLine(item, line);
  return item;
}

export function fillLine(item, line) {
  item.replaceChildren();
  item.dataset.urgency = line.urgency;
  item.dataset.edition = line.edition;
  item.dataset.version = String(line.version || 1);
  item.lang = line.language || line.edition;
  item.dir = line.direction || "auto";
  if (line.pinned) item.dataset.pinned = "true"; else delete item.dataset.pinned;
  const words = lineWords(line.language || line.edition);
  if (line.urgency === "flash" || line.urgency === "urgent") {
    const label = document.createElement("span");
    label.className = "fw-label";
    label.textContent = words[line.urgency];
    item.append(label, " ");
  }
  const text = document.createElement(line.url ? "a" : "bdi");
  text.className = "fw-text";
  text.textContent = line.text;
  if (line.url) { text.href = line.url; text.rel = "noopener"; text.target = "_blank"; }
  item.append(text);
  if (line.source) {
    const source = document.createElement("span");
    source.className = "fw-source";
    source.textContent = line.source;
    item.append(" ", source);
  }
  if ((line.version || 1) > 1) {
    const note = document.createElement("span");
    note.className = "fw-corrected";
    note.textContent = words.corrected;
    item.append(" ", note);
  }
}

// The client rules of docs/protocol.md (sections 8 to 11), the same as web/ticker.js and
// service/client.py: nothing for 2.5 heartbeat periods is a dead connection; the n-th retry
// waits a random time in [d/2, d], d = min(15 s, 0.25 s × 2^(n−1)), raised to 5 s after a 1013;
// only a message past the greeting resets n; these close codes mean "stop".
const DEAD_AFTER_HEARTBEATS = 2.5;
const STOP_CODES = [1009, 4400, 4403, 4408];
const GREETINGS = ["hello", "subscribed"];

export function backoffCeilingMs(attempt, tryLater) {
  const ceiling = Math.min(15000, 250 * 2 ** Math.min(attempt - 1, 30));
  return tryLater ? Math.max(ceiling, 5000) : ceiling;
}

// Is cursor a after cursor b? Milliseconds then sequence, as numbers.
export function cursorAfter(a, b) {
  const [x, y] = [a, b].map((cursor) => String(cursor).split("-").map((part) => Number(part) || 0));
  return x[0] > y[0] || (x[0] === y[0] && (x[1] || 0) > (y[1] || 0));
}

// A live list of lines for one or more editions, resuming from its cursors after a drop.
// What the status element says, in English; a page in another language passes its own `words`.
export const STATUS_WORDS = {
  live: () => "live",
  reconnecting: ({ why, seconds }) => `${why}; reconnecting in ${seconds} s`,
  refused: ({ reason }) => `refused: ${reason}`,
  silent: () => "no message for 2.5 heartbeat periods",
  lost: () => "connection lost",
};

export class LiveTicker {
  // `role: "desk"` marks the newsroom's own view, left out of reach and readers online
  // (docs/protocol.md section 2.4). `words`: the status element's words (STATUS_WORDS).
  constructor(list, { editions = [], status = null, onEvent = null, role = null, words = {} } = {}) {
    this.list = list;
    this.words = { ...STATUS_WORDS, ...words };
    this.editions = editions;
    this.role = role;
    this.status = status;
    this.onEvent = onEvent;
    this.cursors = {};
    this.attempt = 0;
    this.stopped = false;
    this.ws = null;
    this.timer = null;
  }

  start() {
    // Nothing (not even a heartbeat) for 2.5 heartbeat periods: the connection is dead.
    this.heartbeatMs = 15000;
    this.lastMessage = Date.now();
    this.watch();
    this.connect();
    return this;
  }

  // Check a few times per heartbeat period (at least once a second), so a dead connection is
  // noticed soon after 2.5 periods of silence.
  watch() {
    this.watchdog = setTimeout(() => { this.checkAlive(); if (!this.stopped) this.watch(); },
      Math.min(1000, this.heartbeatMs / 4));
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.watchdog);
    clearTimeout(this.timer);
    if (this.ws) this.ws.close(1000);
  }

  setStatus(text) { if (this.status) this.status.textContent = text; }

  // Also covers a connection still opening: nothing has arrived on it either.
  checkAlive() {
    if (this.stopped || !this.ws || Date.now() - this.lastMessage <= this.heartbeatMs * DEAD_AFTER_HEARTBEATS) return;
    const dead = this.ws;
    this.ws = null;
    dead.close();
    this.retry(false, this.words.silent());
  }

  retry(tryLater, why) {
    if (this.stopped) return;
    this.attempt += 1;
    const ceiling = backoffCeilingMs(this.attempt, tryLater);
    const delay = ceiling / 2 + Math.random() * ceiling / 2;
    this.setStatus(this.words.reconnecting({ why, seconds: (delay / 1000).toFixed(1) }));
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.connect(), delay);
  }

  connect() {
    if (this.stopped) return;
    const params = new URLSearchParams();
    params.set("editions", this.editions.join(","));
    if (this.role) params.set("role", this.role);
    const since = Object.entries(this.cursors).map(([e, c]) => `${e}:${c}`).join(",");
    if (since) params.set("since", since);
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const ws = new WebSocket(`${scheme}//${location.host}/ws?${params}`);
    this.ws = ws;
    this.live = false;
    // Until this connection's hello says otherwise, the period is 15 s.
    this.heartbeatMs = 15000;
    this.lastMessage = Date.now();
    ws.onmessage = (frame) => { if (this.ws === ws) this.handle(JSON.parse(frame.data)); };
    ws.onclose = (event) => {
      if (this.stopped || this.ws !== ws) return;
      this.ws = null;
      if (STOP_CODES.includes(event.code)) {
        this.stopped = true;
        clearTimeout(this.watchdog);
        this.setStatus(this.words.refused({ reason: event.reason || `closed ${event.code}` }));
        return;
      }
      this.retry(event.code === 1013, event.reason ? `closed ${event.code}: ${event.reason}` : this.words.lost());
    };
  }

  handle(msg) {
    this.lastMessage = Date.now();
    if (msg.type === "hello" && msg.heartbeat_s > 0) this.heartbeatMs = msg.heartbeat_s * 1000;
    // Only a connection that delivers past its greeting resets the backoff: a node that greets
    // and then refuses (1013, its store is down) must not be retried at once.
    if (!this.live && !GREETINGS.includes(msg.type)) {
      this.live = true;
      this.attempt = 0;
      this.setStatus(this.words.live());
    }
    if (msg.type === "snapshot") {
      this.cursors[msg.edition] = msg.cursor;
      for (const item of [...this.list.children]) {
        if (item.dataset.edition === msg.edition) item.remove();
      }
      for (const line of [...msg.lines].reverse()) this.list.prepend(renderLine(line));
      this.order();
    } else if (msg.type === "line" || msg.type === "update" || msg.type === "retract") {
      // Drop an event already passed (a snapshot or an earlier event covered it).
      const known = this.cursors[msg.edition];
      if (known && !cursorAfter(msg.cursor, known)) return;
      this.cursors[msg.edition] = msg.cursor;
      if (msg.type === "retract") {
        const existing = this.find(msg.id);
        if (existing) existing.remove();
      } else {
        const existing = this.find(msg.line.id);
        if (existing) fillLine(existing, msg.line);
        else this.list.prepend(renderLine(msg.line));
        this.order();
      }
    }
    if (this.onEvent) this.onEvent(msg);
  }

  find(id) {
    return [...this.list.children].find((item) => item.dataset.lineId === id) || null;
  }

  // Pinned lines lead; the rest keep their (newest first) order.
  order() {
    const pinned = [...this.list.children].filter((item) => item.dataset.pinned === "true");
    for (const item of pinned.reverse()) this.list.prepend(item);
  }
}
