/*! Flashwire "Get breaking alerts" control — one <flash-alerts> element (docs/push.md, "The site
 * as a web app"; docs/widget.md, "Breaking alerts").
 *
 *   <script src="https://news.example/web/alerts.js" defer></script>
 *   <flash-alerts editions="ar" topics="mena" lang="ar"></flash-alerts>
 *
 * On a click (the permission prompt needs the reader's gesture: PITFALLS 1.5) it asks for the
 * Notifications permission, registers the site's service worker (/flashwire-sw.js, scope /),
 * subscribes with the server's VAPID key (GET /api/v1/push), registers the subscription
 * (POST /api/v1/push/registrations) and keeps the registration's id and secret in IndexedDB,
 * where the service worker finds them when the subscription changes. "Stop alerts" unsubscribes
 * and deletes the registration. It says why when it cannot: notifications blocked, a browser
 * without the Push API, or iOS outside a Home-Screen web app (web push exists only there).
 *
 * The element sets `data-state`: off, working, on, denied, unsupported, install (iOS: add to
 * Home Screen first) or error.
 */
(() => {
  "use strict";
  if (typeof customElements === "undefined" || customElements.get("flash-alerts")) return;

  const SCRIPT = document.currentScript;
  const DEFAULT_SERVER = SCRIPT && SCRIPT.src ? new URL(SCRIPT.src, location.href).origin : location.origin;
  const RTL = ["ar", "he", "fa", "ur"];
  const WORDS = {
    en: {
      group: "Breaking news alerts",
      get: "Get breaking alerts",
      stop: "Stop alerts",
      working: "Turning alerts on…",
      stopping: "Turning alerts off…",
      on: "Alerts are on: breaking news reaches this device even when the site is closed.",
      off: "",
      dismissed: "Alerts are off: notifications were not allowed.",
      denied: "Notifications are blocked for this site. Allow them in your browser's site settings, then try again.",
      unsupported: "This browser cannot receive alerts (it has no Push API).",
      install: "Add to Home Screen to get alerts: tap Share, then “Add to Home Screen”, and open the site from there.",
      error: (reason) => `Alerts could not be turned on (${reason}). Please try again later.`,
    },
    ar: {
      group: "تنبيهات الأخبار العاجلة",
      get: "تلقَّ تنبيهات الأخبار العاجلة",
      stop: "إيقاف التنبيهات",
      working: "جارٍ تفعيل التنبيهات…",
      stopping: "جارٍ إيقاف التنبيهات…",
      on: "التنبيهات مفعّلة: تصلك الأخبار العاجلة على هذا الجهاز حتى والموقع مغلق.",
      off: "",
      dismissed: "التنبيهات متوقفة: لم يُسمح بالإشعارات.",
      denied: "الإشعارات محظورة لهذا الموقع. اسمح بها من إعدادات الموقع في متصفحك، ثم حاول مجددًا.",
      unsupported: "هذا المتصفح لا يستقبل التنبيهات (لا يدعم Push API).",
      install: "أضف الموقع إلى الشاشة الرئيسية لتلقي التنبيهات: اضغط «مشاركة» ثم «إضافة إلى الشاشة الرئيسية»، وافتح الموقع من هناك.",
      error: (reason) => `تعذّر تفعيل التنبيهات (${reason}). حاول مجددًا لاحقًا.`,
    },
    es: {
      group: "Alertas de última hora",
      get: "Recibir alertas de última hora",
      stop: "Desactivar alertas",
      working: "Activando alertas…",
      stopping: "Desactivando alertas…",
      on: "Alertas activadas: las noticias de última hora llegarán a este dispositivo aunque el sitio esté cerrado.",
      off: "",
      dismissed: "Alertas desactivadas: no se permitieron las notificaciones.",
      denied: "Las notificaciones están bloqueadas para este sitio. Permítelas en la configuración del sitio de tu navegador y vuelve a intentarlo.",
      unsupported: "Este navegador no puede recibir alertas (no admite la Push API).",
      install: "Añade el sitio a la pantalla de inicio para recibir alertas: toca Compartir, luego «Añadir a pantalla de inicio», y ábrelo desde allí.",
      error: (reason) => `No se pudieron activar las alertas (${reason}). Inténtalo de nuevo más tarde.`,
    },
  };

  const STYLE = `
    :host { display: block; }
    :host([hidden]) { display: none; }
    .alerts { all: initial; display: flex; flex-wrap: wrap; align-items: center; gap: .4em .8em;
      font: 400 var(--flash-alerts-font-size, 15px)/1.4
        var(--flash-alerts-font, system-ui, -apple-system, "Segoe UI", "Noto Sans", "Noto Sans Arabic", sans-serif);
      color: var(--flash-alerts-color, inherit); padding: var(--flash-alerts-padding, .4em 0); }
    button { all: initial; cursor: pointer; font: inherit; font-weight: 700; padding: .35em .9em;
      border-radius: var(--flash-alerts-radius, 4px); background: var(--flash-alerts-background, #b00020);
      color: var(--flash-alerts-button-color, #fff); }
    button[hidden] { display: none; }
    button.stop { background: var(--flash-alerts-stop-background, #333); }
    button[aria-disabled="true"] { opacity: .6; cursor: progress; }
    button:focus-visible { outline: 3px solid var(--flash-alerts-focus, #ffbf47); outline-offset: 2px; }
    .message { margin: 0; }
  `;

  // The registration kept for the service worker (web/flashwire-sw.js reads it; keep in step).
  const DB_NAME = "flashwire-alerts";
  const STORE = "registration";
  const KEY = "current";

  function database() {
    return new Promise((resolve, reject) => {
      const request = indexedDB.open(DB_NAME, 1);
      request.onupgradeneeded = () => request.result.createObjectStore(STORE);
      request.onsuccess = () => resolve(request.result);
      request.onerror = () => reject(request.error);
    });
  }

  // No argument: read; null: delete; anything else: write.
  async function stored(value) {
    const db = await database();
    try {
      return await new Promise((resolve, reject) => {
        const transaction = db.transaction(STORE, value === undefined ? "readonly" : "readwrite");
        const store = transaction.objectStore(STORE);
        const request = value === undefined ? store.get(KEY) : value === null ? store.delete(KEY) : store.put(value, KEY);
        transaction.oncomplete = () => resolve(request.result);
        transaction.onerror = () => reject(transaction.error);
      });
    } finally {
      db.close();
    }
  }

  // The VAPID public key as PushManager.subscribe() takes it (RFC 8292 section 3.2: base64url).
  function keyBytes(base64url) {
    const base64 = base64url.replace(/-/g, "+").replace(/_/g, "/") + "=".repeat((4 - (base64url.length % 4)) % 4);
    return Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
  }

  function sameKey(buffer, bytes) {
    if (!buffer) return false;
    const a = new Uint8Array(buffer);
    return a.length === bytes.length && a.every((value, index) => value === bytes[index]);
  }

  // iOS and iPadOS deliver web push only to a web app added to the Home Screen (iOS 16.4+;
  // PITFALLS 1.5). iPadOS says it is a Mac, but one with a touch screen.
  function onIOS() {
    return /iP(hone|ad|od)/.test(navigator.userAgent) || (navigator.platform === "MacIntel" && navigator.maxTouchPoints > 1);
  }
  function installed() {
    return navigator.standalone === true || (window.matchMedia && window.matchMedia("(display-mode: standalone)").matches);
  }
  function pushSupported() {
    return "serviceWorker" in navigator && typeof PushManager !== "undefined" && typeof Notification !== "undefined";
  }

  // The worker registration becomes usable for subscribe() once it has an active worker.
  function activated(registration) {
    if (registration.active) return Promise.resolve(registration);
    const worker = registration.installing || registration.waiting;
    return new Promise((resolve, reject) => {
      worker.addEventListener("statechange", () => {
        if (worker.state === "activated") resolve(registration);
        if (worker.state === "redundant") reject(new Error("the service worker failed to install"));
      });
    });
  }

  class FlashAlerts extends HTMLElement {
    static get observedAttributes() {
      return ["lang", "editions"];
    }

    constructor() {
      super();
      const root = this.attachShadow({ mode: "open" });
      let style = null;
      try {
        const sheet = new CSSStyleSheet();
        sheet.replaceSync(STYLE);
        root.adoptedStyleSheets = [sheet];
      } catch (error) {
        style = document.createElement("style");
        style.textContent = STYLE;
      }
      this.box = document.createElement("div");
      this.box.className = "alerts";
      this.box.setAttribute("role", "group");
      this.box.setAttribute("part", "alerts");
      this.button = document.createElement("button");
      this.button.type = "button";
      this.button.setAttribute("part", "button");
      this.button.addEventListener("click", () => this.toggle());
      this.message = document.createElement("p");
      this.message.className = "message";
      this.message.setAttribute("part", "message");
      this.message.setAttribute("role", "status");
      this.message.id = "message";
      this.button.setAttribute("aria-describedby", "message");
      this.box.append(this.button, this.message);
      if (style) root.append(style);
      root.append(this.box);
      this.state = "off";
      this.note = "";
    }

    get editions() {
      const list = (this.getAttribute("editions") || "en").split(",").map((e) => e.trim()).filter(Boolean);
      return list.length ? list : ["en"];
    }
    get topics() {
      return (this.getAttribute("topics") || "").split(",").map((t) => t.trim()).filter(Boolean);
    }
    get urgency() { return (this.getAttribute("urgency") || "flash").trim(); }
    get language() { return (this.getAttribute("lang") || this.editions[0]).trim(); }
    get words() { return WORDS[this.language.split("-")[0]] || WORDS.en; }
    get server() { return (this.getAttribute("server") || DEFAULT_SERVER).replace(/\/+$/, ""); }
    // The service worker, on the page's own origin (a worker is always of the page's origin).
    get workerUrl() { return this.getAttribute("service-worker") || "/flashwire-sw.js"; }

    connectedCallback() {
      this.render();
      this.check();
    }

    attributeChangedCallback() {
      this.render();
    }

    // What this browser can do, and whether this page registered already (then it says so, and
    // re-registers a subscription its push service replaced while no page was open: PITFALLS 1.6).
    async check() {
      if (!pushSupported()) return this.show(onIOS() && !installed() ? "install" : "unsupported");
      if (Notification.permission === "denied") return this.show("denied");
      try {
        const record = await stored();
        if (!record) return this.show("off");
        const registration = await navigator.serviceWorker.getRegistration(this.workerUrl);
        const subscription = registration ? await registration.pushManager.getSubscription() : null;
        if (!subscription || Notification.permission !== "granted") {
          await this.forget(record);
          return this.show("off");
        }
        if (subscription.endpoint !== record.endpoint) await this.register(subscription, record);
        this.show("on");
      } catch (error) {
        this.show("off");
      }
    }

    toggle() {
      if (this.state === "working") return;
      if (this.state === "on") this.disable();
      else this.enable();
    }

    async enable() {
      // The permission prompt first, in the click's own task: browsers (Safari, iOS) refuse a
      // prompt that does not come from the reader's gesture.
      const asked = Notification.requestPermission();
      this.show("working");
      try {
        const permission = await asked;
        if (permission === "denied") return this.show("denied");
        if (permission !== "granted") return this.show("off", this.words.dismissed);
        const registration = await activated(await navigator.serviceWorker.register(this.workerUrl, { scope: "/" }));
        const config = await this.api("/api/v1/push");
        if (!config.vapid_public_key) throw new Error("web push is off on this server");
        const key = keyBytes(config.vapid_public_key);
        let subscription = await registration.pushManager.getSubscription();
        // A subscription made for another key (the server's key changed) cannot be pushed to.
        if (subscription && !sameKey(subscription.options && subscription.options.applicationServerKey, key)) {
          await subscription.unsubscribe();
          subscription = null;
        }
        if (!subscription) {
          subscription = await registration.pushManager.subscribe({ userVisibleOnly: true, applicationServerKey: key });
        }
        await this.register(subscription, await stored());
        this.show("on");
      } catch (error) {
        this.show("error", this.words.error(error && error.message ? error.message : String(error)));
      }
    }

    // Registers `subscription` with this element's choices, keeps the id and secret, and deletes
    // the `previous` registration if it was another one (docs/push.md, "Registering").
    async register(subscription, previous) {
      const body = {
        platform: "webpush",
        subscription: subscription.toJSON(),
        editions: this.editions,
        topics: this.topics,
        urgency: this.urgency,
        language: this.language,
      };
      const created = await this.api("/api/v1/push/registrations", { method: "POST", body });
      await stored({
        id: created.id,
        secret: created.secret,
        server: this.server,
        endpoint: body.subscription.endpoint,
        editions: body.editions,
        topics: body.topics,
        urgency: body.urgency,
        language: body.language,
      });
      if (previous && previous.id !== created.id) await this.forget(previous, false);
      return created;
    }

    async disable() {
      this.show("working", this.words.stopping);
      try {
        const record = await stored();
        const registration = await navigator.serviceWorker.getRegistration(this.workerUrl);
        const subscription = registration ? await registration.pushManager.getSubscription() : null;
        if (subscription) await subscription.unsubscribe();
        if (record) await this.forget(record);
        this.show("off");
      } catch (error) {
        this.show("on", this.words.error(error && error.message ? error.message : String(error)));
      }
    }

    // Deletes a registration on its server (a 404: it is gone already) and, unless `local` is
    // false, the copy kept here.
    async forget(record, local = true) {
      const answer = await fetch(`${record.server}/api/v1/push/registrations/${encodeURIComponent(record.id)}`, {
        method: "DELETE",
        headers: { Authorization: `Bearer ${record.secret}` },
      });
      if (!answer.ok && answer.status !== 404) throw new Error(`the server answered ${answer.status}`);
      if (local) await stored(null);
    }

    async api(path, { method = "GET", body } = {}) {
      const answer = await fetch(`${this.server}${path}`, {
        method,
        headers: body ? { "Content-Type": "application/json" } : {},
        body: body ? JSON.stringify(body) : undefined,
      });
      const json = await answer.json().catch(() => ({}));
      if (!answer.ok) {
        const problem = json && json.error ? json.error.message : "";
        throw new Error(`the server answered ${answer.status}${problem ? `: ${problem}` : ""}`);
      }
      return json;
    }

    show(state, note) {
      this.state = state;
      this.note = note === undefined ? "" : note;
      this.setAttribute("data-state", state);
      this.render();
    }

    render() {
      const words = this.words;
      const language = this.language;
      this.box.lang = language;
      this.box.dir = RTL.includes(language.split("-")[0]) ? "rtl" : "ltr";
      this.box.setAttribute("aria-label", words.group);
      const state = this.state;
      // Nothing to press where alerts cannot work here; "Get" again after a refusal or an error.
      this.button.hidden = state === "unsupported" || state === "install";
      // aria-disabled, not disabled: the button keeps the keyboard focus while it works.
      this.button.setAttribute("aria-disabled", state === "working" ? "true" : "false");
      this.button.textContent = state === "on" ? words.stop : state === "working" ? this.note || words.working : words.get;
      this.button.classList.toggle("stop", state === "on");
      const text = state === "working" ? "" : this.note || words[state] || "";
      this.message.textContent = typeof text === "string" ? text : "";
      this.message.hidden = !this.message.textContent;
    }
  }

  customElements.define("flash-alerts", FlashAlerts);
})();
