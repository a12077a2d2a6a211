// Shared reader-side rendering: how a line looks in a ticker, and a live list fed by /ws.
// Used by the plain ticker page (/) and by the desk's preview and reader view, so the
// preview is exactly what readers see. Line text is only ever inserted as text.

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
  const label = document.createElement("span");
  label.className = "fw-label";
  label.textContent = line.urgency === "flash" ? "FLASH" : line.urgency === "urgent" ? "URGENT" : "BREAKING";
  const text = document.createElement(line.url ? "a" : "bdi");
  text.className = "fw-text";
  text.textContent = line.text;
  if (line.url) { text.href = line.url; text.rel = "noopener"; text.target = "_blank"; }
  item.append(label, " ", text);
  if (line.source) {
    const source = document.createElement("span");
    source.className = "fw-source";
    source.textContent = line.source;
    item.append(" ", source);
  }
  if ((line.version || 1) > 1) {
    const note = document.createElement("span");
    note.className = "fw-corrected";
    note.textContent = line.direction === "rtl" ? "تصحيح" : line.edition === "es" ? "corregido" : "corrected";
    item.append(" ", note);
  }
}

// A live list of lines for one or more editions, resuming from its cursors after a drop.
export class LiveTicker {
  constructor(list, { editions = [], status = null, onEvent = null } = {}) {
    this.list = list;
    this.editions = editions;
    this.status = status;
    this.onEvent = onEvent;
    this.cursors = {};
    this.attempt = 0;
    this.stopped = false;
    this.ws = null;
  }

  start() {
    // Nothing (not even a heartbeat) for 2.5 heartbeat periods: the connection is dead.
    this.heartbeatMs = 15000;
    this.lastMessage = Date.now();
    this.watchdog = setInterval(() => {
      if (this.ws && this.ws.readyState === WebSocket.OPEN && Date.now() - this.lastMessage > this.heartbeatMs * 2.5) {
        this.ws.close(4000, "no heartbeat");
      }
    }, 5000);
    this.connect();
    return this;
  }

  stop() { this.stopped = true; clearInterval(this.watchdog); if (this.ws) this.ws.close(1000); }

  setStatus(text) { if (this.status) this.status.textContent = text; }

  connect() {
    const params = new URLSearchParams();
    params.set("editions", this.editions.join(","));
    const since = Object.entries(this.cursors).map(([e, c]) => `${e}:${c}`).join(",");
    if (since) params.set("since", since);
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const ws = new WebSocket(`${scheme}//${location.host}/ws?${params}`);
    this.ws = ws;
    ws.onmessage = (frame) => this.handle(JSON.parse(frame.data));
    ws.onclose = (event) => {
      if (this.stopped) return;
      if (event.code === 4400 || event.code === 4403) { this.setStatus("refused: " + event.reason); return; }
      this.attempt += 1;
      const delay = Math.min(15000, 250 * 2 ** Math.min(this.attempt, 6));
      this.setStatus("reconnecting…");
      setTimeout(() => this.connect(), delay / 2 + Math.random() * delay / 2);
    };
  }

  handle(msg) {
    this.lastMessage = Date.now();
    if (msg.type === "hello" && msg.heartbeat_s) this.heartbeatMs = msg.heartbeat_s * 1000;
    if (msg.cursor && msg.edition) this.cursors[msg.edition] = msg.cursor;
    if (msg.type === "subscribed") { this.setStatus("live"); this.attempt = 0; }
    else if (msg.type === "snapshot") {
      for (const item of [...this.list.children]) {
        if (item.dataset.edition === msg.edition) item.remove();
      }
      for (const line of [...msg.lines].reverse()) this.list.prepend(renderLine(line));
      this.order();
    } else if (msg.type === "line" || msg.type === "update") {
      const existing = this.find(msg.line.id);
      if (existing) fillLine(existing, msg.line);
      else this.list.prepend(renderLine(msg.line));
      this.order();
    } else if (msg.type === "retract") {
      const existing = this.find(msg.id);
      if (existing) existing.remove();
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
