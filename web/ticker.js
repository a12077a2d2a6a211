/*! Flashwire ticker widget — one <script>, one <flash-ticker> element, no dependency.
 *
 *   <script src="https://news.example/web/ticker.js" defer></script>
 *   <flash-ticker edition="ar" topics="mena,politics" min-urgency="urgent"></flash-ticker>
 *
 * Renders a BREAKING bar in Shadow DOM (the host page's CSS cannot reach in, and ours cannot
 * leak out), themeable with CSS custom properties (--flash-ticker-*). Lines are inserted as
 * text, never as HTML. The connection is the Flashwire client library's (web/client/flashwire.js,
 * loaded from beside this script): WebSocket, falling back to server-sent events and then to
 * polling the JSON feeds, reconnecting with jittered exponential backoff and resuming from its
 * last cursors. A visible Pause button stops the motion (WCAG 2.2.2), reduced-motion users get
 * a still bar, and new lines are announced in a polite live region.
 */
(() => {
  "use strict";
  if (typeof customElements === "undefined" || customElements.get("flash-ticker")) return;

  const SCRIPT = document.currentScript;
  const DEFAULT_SERVER = SCRIPT && SCRIPT.src ? new URL(SCRIPT.src, location.href).origin : location.origin;
  const RTL = ["ar", "he", "fa", "ur"];
  const WORDS = {
    en: { breaking: "BREAKING", flash: "FLASH", urgent: "URGENT", pause: "Pause", play: "Play",
      pauseLabel: "Pause the news ticker", playLabel: "Play the news ticker", corrected: "corrected",
      region: "Breaking news", offline: "Offline", reconnecting: "Reconnecting…",
      newLines: (n) => `${n} new lines`, empty: "No breaking news" },
    ar: { breaking: "عاجل", flash: "عاجل جدًا", urgent: "عاجل", pause: "إيقاف", play: "تشغيل",
      pauseLabel: "إيقاف شريط الأخبار", playLabel: "تشغيل شريط الأخبار", corrected: "تصحيح",
      region: "أخبار عاجلة", offline: "غير متصل", reconnecting: "جارٍ إعادة الاتصال…",
      newLines: (n) => `أخبار جديدة: ${n}`, empty: "لا أخبار عاجلة" },
    es: { breaking: "ÚLTIMA HORA", flash: "FLASH", urgent: "URGENTE", pause: "Pausa", play: "Reanudar",
      pauseLabel: "Pausar el teletipo", playLabel: "Reanudar el teletipo", corrected: "corregido",
      region: "Última hora", offline: "Sin conexión", reconnecting: "Reconectando…",
      newLines: (n) => `${n} noticias nuevas`, empty: "Sin noticias de última hora" },
  };

  const STYLE = `
    :host { display: block; contain: content; }
    :host([hidden]) { display: none; }
    .bar { all: initial; display: flex; align-items: stretch; box-sizing: border-box; width: 100%;
      min-height: var(--flash-ticker-height, 2.6em); overflow: hidden;
      font: var(--flash-ticker-font-weight, 500) var(--flash-ticker-font-size, 16px)/1.3
        var(--flash-ticker-font, system-ui, -apple-system, "Segoe UI", "Noto Sans", "Noto Sans Arabic", sans-serif);
      background: var(--flash-ticker-background, #b00020); color: var(--flash-ticker-color, #fff);
      border-radius: var(--flash-ticker-radius, 0); }
    .label { display: flex; align-items: center; padding: 0 .8em; font-weight: 800; letter-spacing: .06em;
      white-space: nowrap; background: var(--flash-ticker-label-background, #000);
      color: var(--flash-ticker-label-color, #fff); }
    .viewport { position: relative; flex: 1; overflow: hidden; min-width: 0; }
    .track { position: absolute; top: 0; bottom: 0; left: 0; display: flex; align-items: center; margin: 0;
      padding: 0; list-style: none; white-space: nowrap; will-change: transform; }
    .line { display: inline-flex; align-items: baseline; gap: .45em; padding: 0 1.6em; }
    .line + .line { border-inline-start: 1px solid var(--flash-ticker-separator-color, rgba(255,255,255,.45)); }
    .urgency { font-size: .72em; font-weight: 800; letter-spacing: .05em; opacity: .85; }
    .line a { color: inherit; text-decoration: underline; text-underline-offset: .15em; }
    .corrected { font-size: .7em; border: 1px solid currentColor; border-radius: .25em; padding: 0 .3em; opacity: .85; }
    .empty { opacity: .7; padding: 0 1.6em; }
    .ago { font-size: .72em; opacity: .8; }
    .fresh { animation: flash-ticker-fresh 1s ease-out 3; }
    @keyframes flash-ticker-fresh { from { background: var(--flash-ticker-fresh-background, rgba(255,255,255,.35)); } }
    @media (prefers-reduced-motion: reduce) { .fresh { animation: none; outline: 2px solid currentColor; outline-offset: -2px; } }
    .status { display: flex; align-items: center; padding: 0 .8em; font-size: .8em; font-weight: 700;
      white-space: nowrap; background: var(--flash-ticker-status-background, #333); color: #fff; }
    .status[hidden] { display: none; }
    .pause { all: initial; cursor: pointer; display: flex; align-items: center; gap: .35em; padding: 0 .9em;
      font: inherit; font-size: .85em; color: inherit; background: var(--flash-ticker-control-background, rgba(0,0,0,.25));
      border-inline-start: 1px solid rgba(255,255,255,.35); }
    .pause:focus-visible, .line a:focus-visible { outline: 3px solid var(--flash-ticker-focus, #ffd54f); outline-offset: -3px; }
    .sr { position: absolute; width: 1px; height: 1px; overflow: hidden; clip: rect(0 0 0 0); clip-path: inset(50%);
      white-space: nowrap; }
    /* A narrow bar (a phone) keeps room for the news: the pause button shows its symbol only (its
       name stays in aria-label), and a notice (offline, reconnecting) takes the label's place. */
    .bar { container-type: inline-size; }
    @container (max-width: 36em) {
      .pause .word { display: none; }
      .troubled .label { display: none; }
    }
    .still .viewport { overflow-x: auto; }
    .still .track { position: static; }
    .still .pause { display: none; }
  `;

  // A ticker shows at most `max-lines` lines (docs/widget.md): 20 by default (a busy hour's lines,
  // or a burst; a loop of about two and a half minutes at 70 px/s with headlines of 500 px), 50 at most.
  const MAX_LINES_DEFAULT = 20;
  const MAX_LINES_LIMIT = 50;
  const CLOCK_MS = 30000;

  // -- filters ------------------------------------------------------------------
  //
  // Each widget has its own filter (an edition, topics, a minimum urgency); the page's widgets of
  // one server share one subscription, the union of their filters, and each widget applies its own
  // filter to what the subscription gives, with the rule of docs/protocol.md section 7.

  const URGENCIES = ["flash", "urgent", "routine"];
  const URGENCY_RANK = { flash: 0, urgent: 1, routine: 2 };
  const EDITION_CODE = /^[A-Za-z0-9_-]+$/;

  // { edition, topics, minUrgency, problem }: `problem` is the refusal a server would give
  // (docs/protocol.md 2.3), found here so that one widget's mistake does not stop the others.
  function filterOf(ticker) {
    const edition = ticker.edition;
    const topics = [...new Set((ticker.getAttribute("topics") || "").split(",").map((t) => t.trim()).filter(Boolean))];
    const minUrgency = (ticker.getAttribute("min-urgency") || "routine").trim();
    let problem = null;
    if (!EDITION_CODE.test(edition)) problem = `editions: '${edition}' is not one edition code`;
    else if (!URGENCIES.includes(minUrgency)) problem = "min_urgency: must be one of flash, urgent, routine";
    return { edition, topics, minUrgency, problem };
  }

  function matches(filter, line) {
    if ((URGENCY_RANK[line.urgency] ?? 2) > URGENCY_RANK[filter.minUrgency]) return false;
    return !filter.topics.length || (line.topics || []).some((topic) => filter.topics.includes(topic));
  }

  // The one subscription covering every filter: each edition named, the topics of all (none if any
  // widget takes every topic), the lowest minimum urgency.
  function unionOf(filters) {
    const editions = [...new Set(filters.map((f) => f.edition))].sort();
    const topics = filters.every((f) => f.topics.length) ? [...new Set(filters.flatMap((f) => f.topics))].sort() : [];
    const minUrgency = URGENCIES[Math.max(...filters.map((f) => URGENCY_RANK[f.minUrgency]))];
    const filterKey = `${topics.join(",")}|${minUrgency}`;
    return { editions, topics, minUrgency, filterKey, key: `${editions.join(",")}|${filterKey}` };
  }

  // -- the page's connection to a server ------------------------------------------
  //
  // The reader protocol (its transports and their fallbacks, cursors, the dead-connection rule,
  // backoff and close codes) is the JavaScript client library's (web/client/flashwire.js,
  // docs/client.md), the one implementation of it in JavaScript: loaded once a page, with
  // `import()`, from beside this script (a module served with CORS headers, so a page of any
  // origin may load it). What stays here is the page's side of it.
  //
  // One Channel per server origin holds the page's one client (so one connection: WebSocket, else
  // SSE, else the feeds) for all its widgets, and the lines of each edition they show. Widgets join
  // and leave it; any change of the set of filters (a widget added, removed, or an attribute
  // changed, also while detached) is gathered into one change of the client's subscription (in the
  // next task, so that a page's widgets, or an element moved in the DOM, make one change), which
  // resumes each edition whose filter did not change and takes a snapshot of the others. With no
  // widget left the client is closed; its cursors are kept for a widget that comes back.
  //
  // States (data-state on every widget): "connecting" (until the server confirms the
  // subscription), "live", "waiting" (the backoff before the next attempt), "polling" (the JSON
  // feeds), "offline" (the browser says so; `online` brings an attempt at once), "stopped"
  // (refused, or no widget left).

  const LIBRARY = new URL("client/flashwire.js", SCRIPT && SCRIPT.src ? SCRIPT.src : `${DEFAULT_SERVER}/web/`).href;
  let library = null; // the import's promise
  let FlashwireClient = null; // the library's client class, once loaded
  function loadLibrary() {
    if (!library) library = import(LIBRARY).then((module) => { FlashwireClient = module.FlashwireClient; });
    return library;
  }

  // The transports this browser offers, best first. The library reads SSE with fetch; a browser
  // without EventSource is taken for one whose fetch cannot stream either.
  function transports() {
    const offered = [];
    if (typeof WebSocket === "function") offered.push("ws");
    if (typeof EventSource === "function") offered.push("sse");
    offered.push("poll");
    return offered;
  }

  const CHANNELS = new Map();
  function channelFor(server) {
    let channel = CHANNELS.get(server);
    if (!channel) { channel = new Channel(server); CHANNELS.set(server, channel); }
    return channel;
  }

  class Channel {
    constructor(server) {
      this.server = server;
      this.members = new Set();
      this.editions = new Map(); // edition -> { lines: Map(id -> line), polled }
      // Each line's place in the order the lines went live (a snapshot's order, then the order of
      // the `line` events): the protocol's order, which published_at may not follow.
      this.ranks = new Map();
      this.lastRank = 0;
      this.subscription = null;
      this.client = null;
      this.saved = null; // { cursors, filterKey } of the last client closed
      this.known = null; // the server's editions and topics, from its last hello
      this.refusedKey = "";
      this.refusal = "";
      this.state = "stopped";
      this.transport = "";
      this.trouble = "";
      this.announced = "";
      this.pending = null;
      this.listening = false;
      // `online`: try at once (the backoff count reset); `offline`: say so at once, no attempts.
      this.onOnline = () => {
        if (!this.client) return;
        if (this.trouble === "offline") this.trouble = "reconnecting";
        this.client.reconnect();
      };
      this.onOffline = () => { if (this.client) this.client.offline(); };
      // Back from a frozen tab (the Page Lifecycle `resume` event): probe the connection at once.
      this.onResume = () => { if (this.client) this.client.ping(); };
      this.onChange = () => loadLibrary().then(() => this.reconcile(), (error) => this.unloadable(error));
    }

    // -- members ----------------------------------------------------------------

    join(member) {
      this.members.add(member);
      member.showConnection();
      this.changed();
    }

    leave(member) {
      if (this.members.delete(member)) this.changed();
    }

    changed() {
      if (!this.pending) this.pending = setTimeout(this.onChange, 0);
    }

    lines(edition) {
      const store = this.editions.get(edition);
      return store ? store.lines.values() : [];
    }

    membersOf(edition) {
      return [...this.members].filter((member) => member.filter.edition === edition);
    }

    // The first widget (in the page's order of joining) speaks for the channel in a screen
    // reader's live region, so a status or a line shown by several widgets is announced once.
    get speaker() {
      return this.members.values().next().value || null;
    }

    listen(on) {
      if (on === this.listening) return;
      this.listening = on;
      const method = on ? "addEventListener" : "removeEventListener";
      window[method]("online", this.onOnline);
      window[method]("offline", this.onOffline);
      document[method]("resume", this.onResume);
    }

    // The library could not be loaded (the page's Content-Security-Policy, the network): every
    // widget says so, and a change of attributes tries again.
    unloadable(error) {
      this.pending = null;
      library = null;
      this.state = "stopped";
      for (const member of this.members) member.refuse(`cannot load ${LIBRARY}: ${error && error.message ? error.message : error}`, true);
    }

    // Brings the client to the subscription the widgets need now (see above).
    reconcile() {
      clearTimeout(this.pending);
      this.pending = null;
      this.screen();
      if (!this.members.size) { this.stop(); this.listen(false); return; }
      this.listen(true);
      const wanted = unionOf([...this.members].map((member) => member.filter));
      const current = this.subscription;
      const running = this.client && this.client.state !== "stopped";
      if (current && current.key === wanted.key && running) {
        for (const member of this.members) member.refresh(false);
        return;
      }
      if (current && current.key === wanted.key && this.refusedKey === wanted.key) {
        for (const member of this.members) member.refuse(this.refusal, true);
        return;
      }
      this.refusedKey = "";
      // The lines held for an edition no widget shows any more go; those chosen by another filter
      // stay on screen until the snapshot that replaces them comes, so the bar does not flicker.
      for (const [edition, store] of this.editions) {
        if (!wanted.editions.includes(edition)) {
          for (const id of store.lines.keys()) this.ranks.delete(id);
          this.editions.delete(edition);
        }
      }
      for (const edition of wanted.editions) {
        if (!this.editions.has(edition)) this.editions.set(edition, { lines: new Map(), polled: false });
      }
      this.subscription = wanted;
      // Each element keeps its place in its loop: only its own change (join) starts it again.
      for (const member of this.members) { member.removeAttribute("data-error"); member.refresh(false); }
      const filter = { editions: wanted.editions, topics: wanted.topics, minUrgency: wanted.minUrgency === "routine" ? null : wanted.minUrgency };
      if (this.client) { this.client.subscribe(filter); return; }
      this.open(filter, wanted);
    }

    // A client for `filter`, resuming from the cursors of the last one where the filter is the same.
    open(filter, wanted) {
      const since = {};
      if (this.saved && this.saved.filterKey === wanted.filterKey) {
        for (const edition of wanted.editions) if (this.saved.cursors[edition]) since[edition] = this.saved.cursors[edition];
      }
      this.saved = null;
      this.trouble = "";
      this.announced = "";
      const client = new FlashwireClient({
        server: this.server, ...filter, since, keepLines: false, transports: transports(),
        // The feeds are read every `poll-interval` seconds, the shortest any widget asks for.
        pollIntervalMs: () => {
          const asked = [...this.members].map((m) => Number(m.getAttribute("poll-interval")) || 15);
          return Math.max(1, asked.length ? Math.min(...asked) : 15) * 1000;
        },
      });
      this.client = client;
      const mine = (handler) => (event) => { if (this.client === client) handler(event); };
      client.on("connection", mine((info) => { this.transport = info.transport; this.show(); }));
      client.on("state", mine((change) => this.stateChanged(change)));
      client.on("hello", mine((hello) => this.checkFilters(hello)));
      client.on("subscribed", mine(() => this.confirmed()));
      client.on("event", mine((message) => this.handle(message)));
      client.on("retry", mine((retry) => this.retrying(retry)));
      client.on("refused", mine((refusal) => this.refused(refusal.reason || `closed ${refusal.code}`)));
      if (navigator.onLine === false) client.offline(); else client.start();
    }

    stop() {
      const client = this.client;
      this.client = null;
      if (client) {
        this.saved = { cursors: client.cursors, filterKey: this.subscription ? this.subscription.filterKey : "" };
        client.close();
      }
      this.trouble = "";
      this.state = "stopped";
      this.show();
    }

    show() {
      for (const member of this.members) member.showConnection();
    }

    // The client's state on the widgets: "open" is still connecting until the server confirms
    // the subscription; "live" on the feeds is polling.
    stateChanged({ state }) {
      if (state === "offline") {
        this.trouble = "offline";
        this.state = "offline";
        this.announceStatus();
        return;
      }
      if (state === "live") { this.recovered(); this.state = this.transport === "poll" ? "polling" : "live"; }
      else if (state === "open") { if (this.state !== "live") this.state = "connecting"; }
      else this.state = state === "closed" || state === "idle" ? "stopped" : state;
      this.show();
    }

    // The subscription confirmed: the page is live on this transport.
    confirmed() {
      this.recovered();
      this.state = "live";
      this.show();
    }

    // The bar says it is reconnecting once the dead-connection rule trips, or a second attempt
    // in a row is needed.
    retrying(retry) {
      if ((retry.silent || retry.attempt >= 2) && !this.trouble) this.trouble = "reconnecting";
      if (this.trouble) this.announceStatus();
    }

    // A refusal names the field at fault and its value (docs/protocol.md 2.3): the widgets whose
    // own filter holds that value are refused, and the others go on without them. A refusal that
    // names no widget's value (or every widget's) stops them all until one's attributes change.
    refused(reason) {
      this.trouble = "";
      const named = /^(editions|topics): [^']*'([^']*)'/.exec(reason || "");
      const culprits = named ? [...this.members].filter((member) =>
        named[1] === "editions" ? member.filter.edition === named[2] : member.filter.topics.includes(named[2])) : [];
      if (culprits.length && culprits.length < this.members.size) {
        for (const member of culprits) { this.members.delete(member); member.refuse(reason); }
        this.reconcile();
        return;
      }
      this.refusedKey = this.subscription ? this.subscription.key : "";
      this.refusal = reason;
      this.state = "stopped";
      for (const member of this.members) member.refuse(reason, true);
    }

    // `hello` names the server's editions and topics (docs/protocol.md 4.1): remembered, and every
    // widget (those that join later too, before any connection) is checked against them; a widget
    // that asks for another is refused alone, in the server's own words (2.3), even when the
    // shared subscription does not carry its filter (another widget takes every topic).
    checkFilters(hello) {
      if (!Array.isArray(hello.editions)) return;
      this.known = { editions: hello.editions, topics: Array.isArray(hello.topics) ? hello.topics : null };
      if (this.screen()) this.reconcile();
    }

    // Refuses the members whose filter the server does not offer; true if there were any.
    screen() {
      const known = this.known;
      if (!known) return false;
      let any = false;
      for (const member of [...this.members]) {
        const { edition, topics } = member.filter;
        const unknown = known.topics ? topics.find((topic) => !known.topics.includes(topic)) : undefined;
        let reason = "";
        if (!known.editions.includes(edition)) reason = `editions: unknown edition '${edition}'`;
        else if (unknown !== undefined) reason = `topics: unknown topic '${unknown}'`;
        if (reason) { this.members.delete(member); member.refuse(reason); any = true; }
      }
      return any;
    }

    // The bar shows (and the speaker announces once) that it is offline or reconnecting; a
    // connection that delivers clears it.
    recovered() {
      if (!this.trouble) return;
      this.trouble = "";
      this.announced = "";
      this.show();
    }

    announceStatus() {
      this.show();
      if (this.announced === this.trouble || !this.speaker) return;
      this.announced = this.trouble;
      this.speaker.say(this.speaker.words[this.trouble]);
    }

    // -- what the subscription delivers (cursor-checked by the library) -------------------

    handle(message) {
      const type = message.type;
      const store = this.editions.get(message.edition);
      if (!store) return;
      if (type === "snapshot") {
        // A read of the feed after the first: its new lines are news (announced); the first
        // read's, like a stream's snapshot, are not.
        const fresh = message.feed && store.polled ? message.lines.filter((line) => !store.lines.has(line.id)) : [];
        if (message.feed) store.polled = true;
        for (const id of store.lines.keys()) this.ranks.delete(id);
        store.lines = new Map(message.lines.map((line) => [line.id, line]));
        this.rankAll(message.lines);
        const members = this.membersOf(message.edition);
        this.announce(fresh, members);
        for (const member of members) member.refresh(false);
        return;
      }
      const members = this.membersOf(message.edition);
      if (type === "retract") {
        store.lines.delete(message.id);
        this.ranks.delete(message.id);
        for (const member of members) member.changed(message.id, null);
        return;
      }
      const line = message.line;
      store.lines.set(line.id, line);
      const moved = type === "line" || !this.ranks.has(line.id);
      if (moved) this.ranks.set(line.id, ++this.lastRank);
      if (type === "line") this.announce([line], members);
      for (const member of members) member.changed(line.id, line, moved, type === "line" && line.urgency === "flash");
    }

    // Ranks `lines`, given newest first (a snapshot, the feed), after every line ranked so far.
    rankAll(lines) {
      for (let i = lines.length - 1; i >= 0; i -= 1) this.ranks.set(lines[i].id, ++this.lastRank);
    }

    // Each new line is announced by the first widget that shows it, so a line shown by several
    // widgets is heard once.
    announce(lines, members) {
      for (const line of lines) {
        const member = members.find((m) => matches(m.filter, line));
        if (member) member.announce(line);
      }
    }
  }

  class FlashTicker extends HTMLElement {
    static get observedAttributes() {
      return ["edition", "topics", "min-urgency", "server", "label", "speed", "max-lines", "poll-interval", "alerts"];
    }

    constructor() {
      super();
      const root = this.attachShadow({ mode: "open" });
      // A constructed stylesheet also works under a host page's strict style-src CSP.
      let style = null;
      try {
        const sheet = new CSSStyleSheet();
        sheet.replaceSync(STYLE);
        root.adoptedStyleSheets = [sheet];
      } catch (error) {
        style = document.createElement("style");
        style.textContent = STYLE;
      }
      this.bar = document.createElement("div");
      this.bar.className = "bar";
      this.bar.setAttribute("part", "bar");
      this.bar.setAttribute("role", "region");
      this.labelEl = document.createElement("span");
      this.labelEl.className = "label";
      this.labelEl.setAttribute("part", "label");
      this.viewport = document.createElement("div");
      this.viewport.className = "viewport";
      this.track = document.createElement("ul");
      this.track.className = "track";
      this.track.setAttribute("part", "track");
      this.viewport.append(this.track);
      this.pauseButton = document.createElement("button");
      this.pauseButton.type = "button";
      this.pauseButton.className = "pause";
      this.pauseButton.setAttribute("part", "pause");
      this.pauseButton.addEventListener("click", () => this.setPaused(!this.userPaused));
      this.live = document.createElement("div");
      this.live.className = "sr";
      this.live.setAttribute("aria-live", "polite");
      this.live.setAttribute("role", "status");
      this.statusEl = document.createElement("span");
      this.statusEl.className = "status";
      this.statusEl.setAttribute("part", "status");
      this.statusEl.hidden = true;
      this.bar.append(this.labelEl, this.statusEl, this.viewport, this.pauseButton, this.live);
      if (style) root.append(style);
      root.append(this.bar);
      // Keyboard users reaching a link inside the moving text get it held still.
      this.viewport.addEventListener("focusin", () => this.hold(true));
      this.viewport.addEventListener("focusout", () => this.hold(false));
      this.channel = null;
      this.filter = null;
      this.shown = [];
      this.items = new Map();
      this.emptyEl = document.createElement("li");
      this.emptyEl.className = "empty";
      this.cycle = null;
      this.clock = null;
      this.onClock = () => this.tickClock();
      this.userPaused = false;
      this.held = false;
      this.animation = null;
      this.pendingNews = [];
      this.onNewsTimer = () => this.flushNews();
      this.motion = window.matchMedia ? window.matchMedia("(prefers-reduced-motion: reduce)") : null;
      this.onMotionChange = () => this.layout();
      this.onResize = () => this.layout();
    }

    get edition() { return (this.getAttribute("edition") || "en").trim(); }
    get language() { return this.edition.split("-")[0]; }
    get words() { return WORDS[this.language] || WORDS.en; }
    get direction() { return RTL.includes(this.language) ? "rtl" : "ltr"; }
    // The server as one spelling (scheme and host lower-case, no trailing slash), so that tickers
    // naming it differently still share one connection.
    get server() {
      const named = this.getAttribute("server") || DEFAULT_SERVER;
      try {
        const url = new URL(named, location.href);
        return `${url.origin}${url.pathname.replace(/\/+$/, "")}`;
      } catch (error) {
        return named.replace(/\/+$/, "");
      }
    }

    connectedCallback() {
      if (this.motion && this.motion.addEventListener) this.motion.addEventListener("change", this.onMotionChange);
      window.addEventListener("resize", this.onResize);
      this.attached = true;
      clearInterval(this.clock);
      this.clock = setInterval(this.onClock, CLOCK_MS);
      this.connectedLabels();
      this.join();
    }

    disconnectedCallback() {
      this.attached = false;
      clearInterval(this.clock);
      this.clock = null;
      this.leave();
      this.setAttribute("data-state", "stopped");
      if (this.motion && this.motion.removeEventListener) this.motion.removeEventListener("change", this.onMotionChange);
      window.removeEventListener("resize", this.onResize);
    }

    // Any change of the subscription, attached or not, clears a refusal; an attached element
    // joins its server's channel again with its new filter (the channel reconnects once for all
    // the changes of a task, with the cursors that still hold).
    attributeChangedCallback(name, previous, value) {
      if (previous === value) return;
      if (name === "label" || name === "speed") { if (this.attached) this.connectedLabels(); return; }
      if (name === "max-lines") { this.select(); if (this.attached) this.paint(); return; }
      if (name === "poll-interval") return;
      if (name === "alerts") { this.showAlerts(); return; }
      this.removeAttribute("data-error");
      // What the live region last said was about the old subscription's lines.
      clearTimeout(this.newsTimer);
      this.pendingNews = [];
      this.say("");
      if (this.attached) { this.leave(); this.connectedLabels(); this.join(); }
    }

    connectedLabels() {
      this.bar.dir = this.direction;
      this.bar.lang = this.edition;
      this.bar.setAttribute("aria-label", this.words.region);
      this.labelEl.textContent = this.getAttribute("label") || this.words.breaking;
      this.updatePauseButton();
      this.showConnection();
      this.layout();
      this.showAlerts();
    }

    // The "Get breaking alerts" control under the bar, when the embedder asks for it with the
    // `alerts` attribute (its value: the service worker's URL on the page's origin, by default
    // /flashwire-sw.js). Its code (web/alerts.js) is loaded then, once a page, not before.
    showAlerts() {
      if (!this.hasAttribute("alerts")) { if (this.alertsEl) this.alertsEl.remove(); this.alertsEl = null; return; }
      if (!customElements.get("flash-alerts") && !document.querySelector("script[data-flash-alerts]")) {
        const script = document.createElement("script");
        script.src = `${this.server}/web/alerts.js`;
        script.dataset.flashAlerts = "";
        document.head.append(script);
      }
      const alerts = this.alertsEl || document.createElement("flash-alerts");
      const set = (name, value) => { if (value) alerts.setAttribute(name, value); else alerts.removeAttribute(name); };
      set("editions", this.edition);
      set("topics", this.getAttribute("topics"));
      set("lang", this.language);
      set("server", this.server);
      set("service-worker", this.getAttribute("alerts"));
      alerts.setAttribute("part", "alerts");
      if (!this.alertsEl) this.shadowRoot.append(alerts);
      this.alertsEl = alerts;
    }

    // -- membership of the page's channel (see Channel) ---------------------------

    join() {
      this.filter = filterOf(this);
      if (this.filter.problem) { this.refresh(); this.refuse(this.filter.problem); return; }
      this.channel = channelFor(this.server);
      this.channel.join(this);
      this.refresh();
    }

    leave() {
      if (this.channel) this.channel.leave(this);
      this.channel = null;
    }

    // Refused: this widget alone (`together`: with every widget of its channel, which keeps it as
    // a member so that a change of anyone's attributes tries again).
    refuse(reason, together = false) {
      if (!together) { this.channel = null; this.refresh(); }
      this.setAttribute("data-error", reason || "refused");
      this.setAttribute("data-state", "stopped");
      this.showConnection();
    }

    // The channel's state on this element: data-state, data-transport and the status notice.
    showConnection() {
      const channel = this.channel;
      if (channel) {
        this.setAttribute("data-state", channel.state);
        if (channel.transport) this.setAttribute("data-transport", channel.transport);
      }
      const trouble = channel ? channel.trouble : "";
      const text = trouble ? this.words[trouble] : "";
      this.statusEl.textContent = text;
      this.statusEl.hidden = !text;
      this.bar.classList.toggle("troubled", Boolean(text));
    }

    say(text) {
      this.live.textContent = text;
    }

    // The channel's lines for this element changed wholesale (a snapshot, a feed, a new filter).
    refresh(restart = true) {
      this.select();
      this.paint(restart);
    }

    // Line `id` became `line` (null: gone) on the channel; `moved`: ranked anew; `flash`: a new
    // flash line, shown at once at the reading start, highlighted. Any other change keeps the loop
    // going from where the reader is (docs/widget.md, "Motion"). A line that no longer matches
    // this element's filter is gone for it.
    changed(id, line, moved = false, flash = false) {
      const shown = line && matches(this.filter, line) ? line : null;
      if (this.reshow(id, shown, moved)) this.paint(flash && Boolean(shown), flash && shown ? id : null);
    }

    // New lines are announced together: one line as "BREAKING: <text>", a burst (or a catch-up)
    // as one summary ("BREAKING: 5 new lines"), once no line has come for 0.5 s (at most 2 s
    // after the first), so a screen reader hears one message, not one per line.
    announce(line) {
      this.pendingNews.push(line);
      if (!this.newsSince) this.newsSince = Date.now();
      clearTimeout(this.newsTimer);
      this.newsTimer = setTimeout(this.onNewsTimer, Date.now() - this.newsSince >= 2000 ? 0 : 500);
    }

    flushNews() {
      const news = this.pendingNews;
      this.pendingNews = [];
      this.newsSince = 0;
      if (!news.length) return;
      const words = this.words;
      this.say(`${words.breaking}: ${news.length === 1 ? news[0].text : words.newLines(news.length)}`);
    }

    // -- rendering ------------------------------------------------------------
    //
    // The channel holds every live line the subscription gives (so a correction or a retraction
    // of a line not shown is still right); `this.shown` is the bounded set on screen, at most
    // `max-lines`, in the order of docs/widget.md; the DOM holds only the shown lines' items
    // (`this.items`). An event that changes no shown line touches no DOM; one that does touches
    // only its item; either costs O(max-lines), whatever the number of live lines. Only a shown
    // line leaving the set (a retraction, an unpin) needs one pass over the live lines to find
    // the line that takes its place.

    get maxLines() {
      const n = Math.floor(Number(this.getAttribute("max-lines")));
      return n >= 1 ? Math.min(n, MAX_LINES_LIMIT) : MAX_LINES_DEFAULT;
    }

    // Whether line a comes before line b: pinned lines first, then the newest.
    before(a, b) {
      if (Boolean(a.pinned) !== Boolean(b.pinned)) return Boolean(a.pinned);
      const ranks = this.channel.ranks;
      return (ranks.get(a.id) || 0) > (ranks.get(b.id) || 0);
    }

    select() {
      this.shown = [];
      if (!this.channel) return;
      for (const line of this.channel.lines(this.edition)) if (matches(this.filter, line)) this.insert(line);
    }

    // Puts `line` (not shown) at its place in `shown` if it ranks among the first max-lines.
    insert(line) {
      const shown = this.shown, max = this.maxLines;
      if (shown.length >= max && !this.before(line, shown[max - 1])) return false;
      let at = shown.length;
      while (at > 0 && this.before(line, shown[at - 1])) at -= 1;
      shown.splice(at, 0, line);
      if (shown.length > max) shown.length = max;
      return true;
    }

    // Line `id` changed to `line` (null: gone; `moved`: ranked anew). True when the shown set changed.
    reshow(id, line, moved = false) {
      const at = this.shown.findIndex((shown) => shown.id === id);
      if (at < 0) return line ? this.insert(line) : false;
      const old = this.shown[at];
      if (line && !moved && Boolean(old.pinned) === Boolean(line.pinned)) {
        this.shown[at] = line;
      } else {
        this.select();
      }
      return true;
    }

    fill(item, line) {
      item.replaceChildren();
      item.dataset.urgency = line.urgency;
      item.dataset.version = String(line.version || 1);
      item.lang = line.language || this.edition;
      item.dir = line.direction || "auto";
      if (line.urgency === "flash" || line.urgency === "urgent") {
        const urgency = document.createElement("span");
        urgency.className = "urgency";
        urgency.textContent = this.words[line.urgency];
        item.append(urgency);
      }
      const text = document.createElement(line.url && /^https?:/i.test(line.url) ? "a" : "bdi");
      text.className = "text";
      text.textContent = line.text;
      if (text.tagName === "A") { text.href = line.url; text.target = "_blank"; text.rel = "noopener"; }
      item.append(text);
      const published = new Date(line.published_at);
      if (line.published_at && !Number.isNaN(published.getTime())) {
        const time = document.createElement("time");
        time.className = "ago";
        time.dateTime = line.published_at;
        time.title = this.formats().absolute.format(published);
        time.textContent = this.ago(published.getTime());
        item.append(time);
      }
      if ((line.version || 1) > 1) {
        const corrected = document.createElement("span");
        corrected.className = "corrected";
        corrected.textContent = this.words.corrected;
        item.append(corrected);
      }
    }

    // The edition's formats (Intl), made once per language.
    formats() {
      if (!this.formatted || this.formatted.language !== this.edition) {
        let language = this.edition;
        try { new Intl.RelativeTimeFormat(language); } catch (error) { language = "en"; }
        this.formatted = {
          language: this.edition,
          relative: new Intl.RelativeTimeFormat(language, { numeric: "auto" }),
          absolute: new Intl.DateTimeFormat(language, { dateStyle: "medium", timeStyle: "short" }),
        };
      }
      return this.formatted;
    }

    // "now", "2 minutes ago", "3 hours ago", "yesterday" in the edition's language.
    ago(ms) {
      const minutes = Math.max(0, Math.floor((Date.now() - ms) / 60000));
      const relative = this.formats().relative;
      if (minutes < 1) return relative.format(0, "second");
      if (minutes < 60) return relative.format(-minutes, "minute");
      if (minutes < 1440) return relative.format(-Math.floor(minutes / 60), "hour");
      return relative.format(-Math.floor(minutes / 1440), "day");
    }

    // The one clock of the element: every 30 s it rewrites the relative times of the shown lines.
    tickClock() {
      for (const time of this.track.querySelectorAll("time.ago")) {
        const text = this.ago(Date.parse(time.dateTime));
        if (time.textContent !== text) time.textContent = text;
      }
    }

    // Brings the DOM to `this.shown`, touching only items that changed, and keeps the motion
    // going from where the reader is (`restart`: from the newest line, for a fresh set or a flash).
    paint(restart = false, fresh = null) {
      const anchor = restart ? null : this.anchor();
      const keep = new Set(this.shown.map((line) => line.id));
      for (const [id, item] of this.items) {
        if (!keep.has(id)) { item.remove(); this.items.delete(id); }
      }
      if (this.shown.length) {
        this.emptyEl.remove();
      } else {
        this.emptyEl.textContent = this.words.empty;
        if (!this.emptyEl.isConnected) this.track.append(this.emptyEl);
      }
      this.shown.forEach((line, index) => {
        let item = this.items.get(line.id);
        if (!item) {
          item = document.createElement("li");
          item.className = "line";
          item.setAttribute("part", "line");
          item.dataset.lineId = line.id;
          this.items.set(line.id, item);
        }
        const signature = `${line.version}|${line.text}|${line.urgency}|${line.url}|${line.published_at}`;
        if (item.dataset.signature !== signature || item.lang !== (line.language || this.edition)) {
          // A correction replaces the text in place: same element, new content.
          this.fill(item, line);
          item.dataset.signature = signature;
        }
        if (line.id === fresh) item.classList.add("fresh");
        const at = this.track.children[index];
        if (at !== item) this.track.insertBefore(item, at || null);
      });
      this.layout(anchor);
    }

    // Where the reader is: the item at the bar's reading start (or, while the track comes back
    // in, the first one) and its distance from the track's start, with the ones after it.
    anchor() {
      if (!this.animation || !this.cycle) return null;
      const distance = ((Number(this.animation.currentTime) || 0) * this.cycle.speed / 1000) % this.cycle.length;
      const starts = [...this.items.values()].map((item) => [item, this.startOf(item)]);
      starts.sort((a, b) => a[1] - b[1]);
      let from = 0;
      if (distance < this.cycle.width) {
        while (from + 1 < starts.length && starts[from + 1][1] <= distance) from += 1;
      }
      return { distance, after: starts.slice(from) };
    }

    // An item's distance from the track's reading start, in fractional CSS pixels (offsetLeft
    // rounds to whole pixels, which would move the line being read by a pixel at each change).
    startOf(item) {
      const box = item.getBoundingClientRect(), track = this.track.getBoundingClientRect();
      return this.direction === "rtl" ? track.right - box.right : box.left - track.left;
    }

    // `anchor`: where the reader was (null: start again from the newest line; none: where the
    // reader is now, for a resize or a change of speed).
    layout(anchor = undefined) {
      const still = Boolean(this.motion && this.motion.matches) || !this.track.animate;
      this.bar.classList.toggle("still", still);
      if (anchor === undefined) anchor = this.anchor();
      if (this.animation) { this.animation.cancel(); this.animation = null; }
      this.cycle = null;
      if (still || !this.shown.length) return;
      const view = this.viewport.clientWidth;
      const width = this.track.scrollWidth;
      const speed = Math.max(10, Number(this.getAttribute("speed")) || 70);
      // Start with the newest line in view at the reading start; left-to-right text then moves
      // left (and comes back in from the right), right-to-left text moves right (back in from the left).
      const rtl = this.direction === "rtl";
      const start = rtl ? view - width : 0;
      const [out, back] = rtl ? [view, -width] : [-width, view];
      const split = width / (view + width);
      const at = (x, offset) => ({ transform: `translateX(${x}px)`, offset });
      const duration = ((view + width) / speed) * 1000;
      this.animation = this.track.animate(
        [at(start, 0), at(out, split), at(back, split), at(start, 1)],
        { duration, iterations: Infinity },
      );
      this.cycle = { speed, width, length: view + width };
      if (this.userPaused || this.held) this.animation.pause();
      // Continue from the same line at the same place: shift by how far that line moved.
      if (anchor) {
        const kept = anchor.after.find(([item]) => item.isConnected);
        const shift = kept ? this.startOf(kept[0]) - kept[1] : 0;
        const distance = (((anchor.distance + shift) % this.cycle.length) + this.cycle.length) % this.cycle.length;
        const at = (distance / speed) * 1000;
        const animation = this.animation;
        animation.currentTime = at;
        // Chromium settles a pause asked of a new animation a frame later, a frame further on: a
        // paused bar is put back where the reader was once it has.
        if (animation.playState === "paused") {
          animation.ready.then(() => { if (this.animation === animation && animation.playState === "paused") animation.currentTime = at; });
        }
      }
    }

    setPaused(paused) {
      this.userPaused = paused;
      this.updatePauseButton();
      if (!this.animation) return;
      if (paused || this.held) this.animation.pause(); else this.animation.play();
    }

    hold(held) {
      this.held = held;
      if (!this.animation) return;
      if (held || this.userPaused) this.animation.pause(); else this.animation.play();
    }

    updatePauseButton() {
      const words = this.words;
      const word = document.createElement("span");
      word.className = "word";
      word.textContent = this.userPaused ? words.play : words.pause;
      this.pauseButton.replaceChildren(this.userPaused ? "▶ " : "❚❚ ", word);
      this.pauseButton.setAttribute("aria-label", this.userPaused ? words.playLabel : words.pauseLabel);
      this.pauseButton.setAttribute("aria-pressed", String(this.userPaused));
    }
  }

  customElements.define("flash-ticker", FlashTicker);
})();
