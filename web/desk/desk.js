// The newsroom desk: sign in with a token, compose with a live preview, act on live and
// scheduled lines, browse the audit trail, and watch what readers see. Plain modules, no
// build step. The token lives in sessionStorage only; every refusal is shown as the
// server worded it. The desk speaks the edition's language, or the one the editor chose
// (messages.js; docs/desk.md, "Languages").
import { LiveTicker, renderLine } from "/web/reader.js";
import { DIRECTIONS, LANGUAGES, MESSAGES, translate } from "/web/desk/messages.js";
import { merge3, wordDiff } from "/web/desk/merge.js";

const TOKEN_KEY = "flashwire.token";
// The editor's choice of interface language ("en", "ar", "es"); none: the edition's language.
const LANGUAGE_KEY = "flashwire.desk.language";
const $ = (id) => document.getElementById(id);

const state = {
  token: sessionStorage.getItem(TOKEN_KEY),
  language: "en",
  liveLines: [],
  health: undefined,
  me: null,
  config: null,
  edition: null,
  ticker: null,
  rows: new Map(),
  scheduled: [],
  idempotencyKey: crypto.randomUUID(),
  refreshTimer: null,
};

// The desk's words in its current language (messages.js).
const t = (key, values) => translate(state.language, key, values);
// The catalogue's word for a value the server sends (an audit action, a role, a status), or the
// value itself when the catalogue has none (a newer server's).
const known = (key, value) => (key in MESSAGES.en ? t(key) : value);
const roleName = (role) => known(`role_${role}`, role);

class DeskError extends Error {
  constructor(status, detail) {
    const where = detail.field ? ` [${detail.field}]` : "";
    super(`${t("refused")} (${status})${where}: ${detail.message || t("requestFailed")}`);
    this.status = status;
    this.detail = detail;
  }
}

function showError(error) {
  $("errors").textContent = error instanceof Error ? error.message : String(error);
}

function clearError() {
  $("errors").textContent = "";
}

let noticeTimer = null;
function notice(text) {
  $("notice").textContent = text;
  clearTimeout(noticeTimer);
  noticeTimer = setTimeout(() => { $("notice").textContent = ""; }, 5000);
}

// A change to a line (corrections, retraction, pin, unpin, expiry, cancellation): never sent
// without If-Match, so the desk cannot undo another editor's change it has not seen.
const LINE_CHANGE = /^\/api\/v1\/lines\/[^/]+\/[a-z]+$/;

async function api(path, { method = "GET", body, idempotencyKey, ifMatch, raw = false } = {}) {
  if (method === "POST" && LINE_CHANGE.test(path) && !ifMatch) throw new Error(`no If-Match for ${path}`);
  const headers = { Authorization: `Bearer ${state.token}` };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (idempotencyKey) headers["Idempotency-Key"] = idempotencyKey;
  if (ifMatch) headers["If-Match"] = ifMatch;
  const response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  if (!response.ok) {
    // A 412's body also has `revision`, `etag` and `line`, the line as last applied (docs/api.md).
    const answer = await response.json().catch(() => ({}));
    const error = new DeskError(response.status, answer.error || {});
    error.body = answer;
    if (response.status === 401 && state.me) signOut(error.message + t("signInAgain"));
    throw error;
  }
  return raw ? response : response.json();
}

// Every change to a line is made against the revision shown (docs/api.md, "Concurrent changes"):
// a 412 means another editor changed it first; the desk then shows what they changed (below,
// "conflicts") and the editor decides again against the version now shown.
const etagOf = (line) => `"v${line.revision || 1}"`;
const can = (action) => Boolean(state.me && state.me.actions.includes(action));
const editionInfo = (code) => state.config.editions.find((e) => e.code === code);
// Button labels name their line, so a screen reader user knows which one a button acts on. Cut
// by grapheme cluster (what a reader sees as one character: an emoji, a flag, a letter with its
// marks), never by UTF-16 unit, which could leave half an emoji (a lone surrogate) in the name.
const GRAPHEMES = new Intl.Segmenter(undefined, { granularity: "grapheme" });
const CLIP_GRAPHEMES = 60;
function clip(text) {
  const parts = Array.from(GRAPHEMES.segment(text), (part) => part.segment);
  return parts.length > CLIP_GRAPHEMES ? parts.slice(0, CLIP_GRAPHEMES - 1).join("") + "…" : text;
}

// -- times and zones --------------------------------------------------------------
// Every time on the desk says its zone. The deployment has no newsroom time-zone setting, so the
// newsroom's reference is UTC (the API's own zone); the editor's local time (the browser's zone)
// is shown beside it when it differs (docs/desk.md, "Times and zones").
const NEWSROOM_ZONE = "UTC";
const LOCAL_ZONE = Intl.DateTimeFormat().resolvedOptions().timeZone || NEWSROOM_ZONE;

function dayKey(date, timeZone) {
  return new Intl.DateTimeFormat("en-CA", { timeZone, year: "numeric", month: "2-digit", day: "2-digit" }).format(date);
}

// "14:00 CET", or "Tue 8 Dec, 14:00 CET" when not today in that zone.
function clock(date, timeZone) {
  const options = { timeZone, hour: "2-digit", minute: "2-digit", hourCycle: "h23", timeZoneName: "short" };
  if (dayKey(date, timeZone) !== dayKey(new Date(), timeZone)) {
    Object.assign(options, { weekday: "short", day: "numeric", month: "short" });
  }
  return new Intl.DateTimeFormat(timeLocale(), options).format(date);
}

// Times in the desk's language (weekday and month names), with Latin digits as newsrooms in all
// three languages write them; English as in Britain (14:00, not 2:00 PM).
function timeLocale() {
  return state.language === "en" ? "en-GB" : `${state.language}-u-nu-latn`;
}

// Whether the editor's zone shows a different wall-clock time than the newsroom's at `date`.
function localDiffers(date) {
  const wall = (timeZone) => new Intl.DateTimeFormat("en-GB", {
    timeZone, year: "numeric", month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit", hourCycle: "h23",
  }).format(date);
  return wall(LOCAL_ZONE) !== wall(NEWSROOM_ZONE);
}

// A time as the desk shows it: "13:00 UTC (14:00 CET your time)", or "13:00 UTC" alone when the
// editor works in the newsroom's zone.
function zonedTime(iso) {
  const date = new Date(iso);
  const newsroom = clock(date, NEWSROOM_ZONE);
  return localDiffers(date) ? `${newsroom} (${t("yourTime", { time: clock(date, LOCAL_ZONE) })})` : newsroom;
}

// -- languages ------------------------------------------------------------------
// The interface language: the editor's remembered choice, else the edition's language when the
// desk has its words (else English); before signing in, the browser's language in their stead.
function chosenLanguage() {
  const stored = localStorage.getItem(LANGUAGE_KEY);
  if (LANGUAGES.includes(stored)) return stored;
  const base = (state.edition || navigator.language || "en").split("-")[0].toLowerCase();
  return LANGUAGES.includes(base) ? base : "en";
}

// Words every marked element of the page (index.html: data-i18n, data-i18n-placeholder,
// data-i18n-label) and everything desk.js wrote, in the chosen language; <html> gets its lang and dir.
function applyLanguage({ refresh = true } = {}) {
  state.language = chosenLanguage();
  const root = document.documentElement;
  root.lang = state.language;
  root.dir = DIRECTIONS[state.language];
  for (const node of document.querySelectorAll("[data-i18n]")) node.textContent = t(node.dataset.i18n);
  for (const node of document.querySelectorAll("[data-i18n-placeholder]")) node.placeholder = t(node.dataset.i18nPlaceholder);
  for (const node of document.querySelectorAll("[data-i18n-label]")) node.setAttribute("aria-label", t(node.dataset.i18nLabel));
  $("ui-language").value = localStorage.getItem(LANGUAGE_KEY) || "";
  if (state.health !== undefined) showHealth(healthMessage(state.health));
  if (!state.me) return;
  $("who").textContent = `${state.me.name} · ${roleName(state.me.role)}`;
  if (state.ticker && state.ticker.live) state.ticker.setStatus(t("statusLive"));
  labelTopics();
  updateAuditZone();
  if (!refresh) return;
  updateCompose();
  state.rows.clear();
  $("live-lines").replaceChildren();
  renderLive(state.liveLines);
  renderScheduled();
  refreshLists().then(refreshAudit).catch(() => {});
}

$("ui-language").addEventListener("change", (event) => {
  if (event.target.value) localStorage.setItem(LANGUAGE_KEY, event.target.value);
  else localStorage.removeItem(LANGUAGE_KEY);
  applyLanguage();
});

// -- sign in / out --------------------------------------------------------------

$("sign-in-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  state.token = $("token").value.trim();
  try {
    await start();
    $("token").value = "";
  } catch (error) {
    state.token = null;
    showError(error);
  }
});

// The form is never submitted natively (index.html): it can be used once this listener is there.
$("sign-in-button").disabled = false;
$("sign-in-wait").hidden = true;

$("sign-out").addEventListener("click", () => signOut(""));

function signOut(message) {
  sessionStorage.removeItem(TOKEN_KEY);
  state.token = null;
  state.me = null;
  if (state.ticker) state.ticker.stop();
  clearInterval(state.refreshTimer);
  $("desk").hidden = true;
  $("nav").hidden = true;
  $("sign-out").hidden = true;
  $("who").textContent = "";
  $("sign-in").hidden = false;
  if (message) showError(message);
  $("token").focus();
}

// The server's limits, from GET /api/v1/config, so the page never holds a copy of them. The
// headline has its live counter instead (updateCompose), so that a pasted text is shown over the limit.
function applyLimits(config) {
  $("source").maxLength = config.source_max_chars;
  $("url").maxLength = config.url_max_chars;
  $("confirm-reason").maxLength = config.reason_max_chars;
}

async function start() {
  state.config = await (await fetch("/api/v1/config")).json();
  applyLimits(state.config);
  state.me = await api("/api/v1/me");
  sessionStorage.setItem(TOKEN_KEY, state.token);
  clearError();
  $("sign-in").hidden = true;
  $("desk").hidden = false;
  $("nav").hidden = false;
  $("sign-out").hidden = false;
  $("who").textContent = `${state.me.name} · ${roleName(state.me.role)}`;
  for (const element of document.querySelectorAll(".chief-only")) element.hidden = !can("schedule");
  const editions = state.me.editions.includes("*") ? state.config.editions.map((e) => e.code) : state.me.editions;
  const select = $("edition");
  select.replaceChildren(...editions.map((code) => {
    const option = document.createElement("option");
    option.value = code;
    option.textContent = `${editionInfo(code)?.name || code} (${code})`;
    return option;
  }));
  buildTopics();
  await selectEdition(editions[0]);
  clearInterval(state.refreshTimer);
  state.refreshTimer = setInterval(() => refreshLists().catch(() => {}), 2000);
  setInterval(updateCountdowns, 1000);
  $("text").focus();
}

$("edition").addEventListener("change", (event) => selectEdition(event.target.value));

function updateAuditZone() {
  const zones = { newsroom: NEWSROOM_ZONE, zone: LOCAL_ZONE };
  $("audit-zone").textContent = t(localDiffers(new Date()) ? "auditZoneLocal" : "auditZone", zones);
}

// Each edition has its own draft: switching editions puts the form's draft aside and brings back
// the other edition's (or the defaults), so that a line written for one edition, with its tags,
// never goes out in another.
const drafts = new Map(); // edition -> [[field, value or checked], ...]
const isBox = (field) => field.type === "checkbox" || field.type === "radio";

function putDraftAside(edition) {
  const fields = [...$("compose-form").elements].filter((field) => field.matches("input, textarea, select"));
  drafts.set(edition, fields.map((field) => [field, isBox(field) ? field.checked : field.value]));
}

function bringDraftBack(edition) {
  $("compose-form").reset();
  for (const [field, value] of drafts.get(edition) || []) {
    if (isBox(field)) field.checked = value; else field.value = value;
  }
  drafts.delete(edition);
}

async function selectEdition(code) {
  if (state.edition && state.edition !== code) {
    putDraftAside(state.edition);
    bringDraftBack(code);
  }
  state.edition = code;
  $("edition").value = code;
  state.liveLines = [];
  state.scheduled = [];
  applyLanguage({ refresh: false }); // the edition's lists are fetched below
  const info = editionInfo(code);
  const text = $("text");
  text.dir = info.direction;
  text.lang = code;
  // The edition posted to, its name in its own language and direction, on the Post button itself.
  const named = $("post-edition");
  named.textContent = info.name || code;
  $("post-code").textContent = code;
  named.dir = info.direction;
  named.lang = code;
  updateCompose();
  state.rows.clear();
  $("live-lines").replaceChildren();
  if (state.ticker) state.ticker.stop();
  $("reader-view").replaceChildren();
  state.ticker = new LiveTicker($("reader-view"), {
    editions: [code],
    role: "desk",
    status: $("reader-status"),
    words: {
      live: () => t("statusLive"),
      reconnecting: (values) => t("statusReconnecting", values),
      refused: (values) => t("statusRefused", values),
      silent: () => t("statusSilent"),
      lost: () => t("statusLost"),
    },
    onEvent: (message) => {
      if (["line", "update", "retract", "snapshot"].includes(message.type)) scheduleRefresh();
    },
  }).start();
  await refreshLists();
  await refreshAudit();
}

// -- compose --------------------------------------------------------------------

// A topic's name in the desk's language, from /api/v1/config's topic_names (flashwire/core/topics.py);
// the slug with dashes as spaces if the server names it in no such language.
function topicName(slug) {
  return state.config.topic_names?.[slug]?.[state.language] || slug.replace(/-/g, " ");
}

function buildTopics() {
  for (const [id, names] of [["sections", state.config.sections], ["regions", state.config.regions]]) {
    const fieldset = $(id);
    fieldset.querySelectorAll("label").forEach((label) => label.remove());
    for (const name of names) {
      const label = document.createElement("label");
      const box = document.createElement("input");
      box.type = "checkbox";
      box.name = "topics";
      box.value = name;
      box.addEventListener("change", updateCompose);
      const shown = document.createElement("span");
      shown.className = "topic-name";
      label.append(box, " ", shown);
      fieldset.append(label);
    }
  }
  labelTopics();
}

function labelTopics() {
  for (const box of document.querySelectorAll("input[name=topics]")) {
    box.parentElement.querySelector(".topic-name").textContent = topicName(box.value);
  }
}

function composed() {
  const form = $("compose-form");
  const info = editionInfo(state.edition);
  return {
    id: "preview",
    edition: state.edition,
    language: state.edition,
    direction: info.direction,
    text: $("text").value.trim().replace(/\s+/g, " "),
    urgency: form.querySelector("input[name=urgency]:checked").value,
    topics: [...form.querySelectorAll("input[name=topics]:checked")].map((box) => box.value),
    url: $("url").value.trim() || null,
    source: $("source").value.trim() || null,
    version: 1,
  };
}

function updateCompose() {
  const line = composed();
  const length = [...line.text].length;
  const limit = state.config.text_max_chars;
  const short = state.config.short_text_chars;
  const counter = $("counter");
  counter.className = "counter" + (length > limit ? " over" : length > short ? " warn" : "");
  const counts = { n: length, limit, over: length - limit, short };
  counter.textContent = t(length > limit ? "countOver" : length > short ? "countLong" : "countOk", counts);
  $("post").disabled = length === 0 || length > limit;
  const release = embargoDate();
  // The button says what it will do: "Post line to …", or "Schedule for 14:00 CET to …" (the editor's time).
  $("post-action").textContent = release ? t("scheduleFor", { time: clock(release, LOCAL_ZONE) }) : t("postLine");
  const zones = { zone: LOCAL_ZONE, newsroom: NEWSROOM_ZONE };
  $("embargo-zone").textContent = release
    ? t("embargoSet", { ...zones, time: zonedTime(release.toISOString()) })
    : t(localDiffers(new Date()) ? "embargoDiffers" : "embargoSame", zones);
  $("preview").replaceChildren(...(line.text ? [renderLine(line)] : []));
}

// The embargo field's value, a local date and time (datetime-local), as a Date; null if unset.
function embargoDate() {
  const value = can("schedule") ? $("embargo").value : "";
  const date = value ? new Date(value) : null;
  return date && !Number.isNaN(date.getTime()) ? date : null;
}

// After a successful post the form returns to its defaults (text, urgency, sections, regions,
// link, source, embargo, expiry), so that no tag of one line slips onto the next. Keeping the
// sections and regions is an explicit choice, the "Keep tags" box, which is itself cleared.
function resetCompose() {
  const form = $("compose-form");
  const kept = $("keep-tags").checked
    ? [...form.querySelectorAll("input[name=topics]:checked")].map((box) => box.value)
    : [];
  form.reset();
  for (const box of form.querySelectorAll("input[name=topics]")) box.checked = kept.includes(box.value);
}

for (const id of ["text", "url", "source", "embargo"]) $(id).addEventListener("input", updateCompose);
$("compose-form").addEventListener("change", updateCompose);
$("compose-form").addEventListener("keydown", (event) => {
  if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
    event.preventDefault();
    $("compose-form").requestSubmit();
  }
});

$("compose-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const line = composed();
  const body = { edition: state.edition, text: line.text, urgency: line.urgency, topics: line.topics };
  if (line.url) body.url = line.url;
  if (line.source) body.source = line.source;
  const expiry = $("expiry").value;
  const embargo = embargoDate();
  const start = embargo || new Date();
  if (embargo) body.embargo_until = start.toISOString();
  if (expiry) body.expires_at = new Date(start.getTime() + Number(expiry) * 1000).toISOString();
  $("post").disabled = true;
  try {
    const result = await api("/api/v1/lines", { method: "POST", body, idempotencyKey: state.idempotencyKey });
    state.idempotencyKey = crypto.randomUUID();
    clearError();
    // A 202 (docs/api.md "Replicated or not"): on the primary, not yet on the replicas asked for.
    const unsafe = result.replicas && result.replicas.acknowledged < result.replicas.required;
    const done = result.scheduled ? t("scheduledFor", { time: zonedTime(result.line.embargoed) }) : t("posted");
    notice(unsafe ? `${done} ${t("notYetReplicated")}` : done);
    resetCompose();
    await refreshLists();
    await refreshAudit();
  } catch (error) {
    showError(error);
  } finally {
    updateCompose();
  }
});

// -- live and scheduled lines ---------------------------------------------------

function scheduleRefresh() {
  clearTimeout(scheduleRefresh.timer);
  scheduleRefresh.timer = setTimeout(() => refreshLists().then(refreshAudit).catch(() => {}), 100);
}

async function refreshLists() {
  if (!state.me) return;
  const edition = state.edition;
  const [live, scheduled, online] = await Promise.all([
    api(`/api/v1/editions/${edition}/lines`),
    api(`/api/v1/editions/${edition}/scheduled`),
    api(`/api/v1/editions/${edition}/readers`),
  ]);
  if (edition !== state.edition) return;
  // Readers online now across every node, the desk's own views left out.
  $("readers-online").textContent = t(online.readers === 1 ? "readersOnlineOne" : "readersOnline", { n: online.readers.toLocaleString("en") });
  state.liveLines = live.lines;
  renderLive(live.lines);
  state.scheduled = scheduled.lines;
  renderScheduled();
}

function reachText(reach, line) {
  if (!reach) {
    // Nodes report every 0.2 s: a line older than that with no report reached nobody.
    return t(Date.now() - Date.parse(line.updated_at) > 2000 ? "reachedNone" : "reachCounting");
  }
  const reached = t(reach.readers === 1 ? "reachedOne" : "reached", { n: reach.readers.toLocaleString("en") });
  return reach.ms === null ? reached : t("reachedIn", { reached, ms: reach.ms });
}

// Pushes to closed apps of the line's current version (docs/push.md), beside its live reach.
function pushText(push) {
  if (!push) return "";
  const n = (value) => value.toLocaleString("en");
  const counts = { n: n(push.targets), accepted: n(push.accepted), removed: n(push.removed), failed: n(push.failed) };
  if (push.ms === null) return t("pushSending", counts);
  return t("pushed", { ...counts, s: (push.ms / 1000).toFixed(1) });
}

function button(label, handler, { danger = false, title = "" } = {}) {
  const element = document.createElement("button");
  element.type = "button";
  element.textContent = label;
  if (danger) element.className = "danger";
  if (title) element.setAttribute("aria-label", title);
  element.addEventListener("click", handler);
  return element;
}

function renderLive(lines) {
  const list = $("live-lines");
  for (const note of list.querySelectorAll(".hint")) note.remove();
  const seen = new Set();
  // Rows are moved only when out of place: moving a node takes the focus out of it (an editor
  // typing a correction) and would announce a conflict panel in it (role=alert) once more.
  let next = list.firstChild;
  for (const line of lines) {
    seen.add(line.id);
    let row = state.rows.get(line.id);
    if (!row) {
      row = document.createElement("li");
      row.className = "desk-line";
      row.dataset.lineId = line.id;
      state.rows.set(line.id, row);
    }
    if (!row.dataset.editing) fillRow(row, line);
    else {
      row.querySelector(".reach").textContent = reachText(line.reach, line);
      const push = row.querySelector(".push");
      if (push) push.textContent = pushText(line.push);
    }
    if (row === next) next = row.nextSibling;
    else list.insertBefore(row, next);
  }
  for (const [id, row] of state.rows) {
    if (!seen.has(id)) { row.remove(); state.rows.delete(id); }
  }
  if (!lines.length) list.replaceChildren(emptyNote(t("noLive")));
}

function emptyNote(text) {
  const item = document.createElement("li");
  item.className = "hint";
  item.textContent = text;
  return item;
}

// A line exactly as readers see it, for the desk's lists.
function shownLine(line) {
  const shown = document.createElement("ol");
  shown.className = "fw-list";
  shown.append(renderLine(line));
  return shown;
}

function element(tag, className, text = "") {
  const made = document.createElement(tag);
  made.className = className;
  made.textContent = text;
  return made;
}

function fillRow(row, line) {
  const shown = shownLine(line);
  const meta = element("div", "meta");
  const reach = element("span", "reach", reachText(line.reach, line));
  const details = document.createElement("span");
  details.textContent = t("details", {
    version: line.version, author: line.author, posted: zonedTime(line.published_at), expires: zonedTime(line.expires_at),
  }) + (line.pinned ? t("pinned") : "");
  // What the line went out with, so a wrong tag is seen (and corrected) after the post too.
  const topics = line.topics.map(topicName).join(", ");
  const tags = element("span", "tags", `${t(line.urgency)}${topics ? ` · ${topics}` : ""}`);
  meta.append(reach);
  if (line.push) meta.append(element("span", "push", pushText(line.push)));
  meta.append(tags, details);
  const actions = document.createElement("div");
  actions.className = "actions";
  const short = clip(line.text);
  const named = { line: short };
  if (can("correct")) actions.append(button(t("correct"), () => openCorrection(row, line), { title: t("correctTitle", named) }));
  if (can("expiry")) {
    actions.append(button(t("plusHour"), () => moveExpiry(line, 3600), { title: t("plusHourTitle", named) }));
    if (can("retract")) {
      // Bringing the expiry forward removes the line sooner: a chief's call, like a retraction.
      actions.append(button(t("minusHour"), () => moveExpiry(line, -3600), { title: t("minusHourTitle", named) }));
    }
  }
  if (can("pin")) {
    actions.append(line.pinned
      ? button(t("unpin"), () => act(line, "unpin"), { title: t("unpinTitle", named) })
      : button(t("pin"), () => act(line, "pin"), { title: t("pinTitle", named) }));
  }
  if (can("retract")) {
    actions.append(button(t("retract"), () => retract(line), { danger: true, title: t("retractTitle", named) }));
  }
  // A conflict panel under the row stays as it is (not rebuilt, not announced again) until the
  // editor acts on the line again or closes it.
  const panel = row.querySelector(":scope > .conflict");
  for (const child of [...row.children]) if (child !== panel) child.remove();
  row.prepend(shown, meta, actions);
}

function openCorrection(row, line) {
  row.dataset.editing = "true";
  // The version the editor's text starts from: the one shown when the form opened, then the one
  // shown by each conflict. Its revision is the If-Match of "Publish".
  const editing = { base: line };
  const form = document.createElement("form");
  const label = document.createElement("label");
  label.textContent = t("correctedText");
  const area = document.createElement("textarea");
  area.value = line.text;
  area.dir = line.direction;
  area.lang = line.language;
  area.rows = 2;
  label.append(area);
  const save = document.createElement("button");
  save.type = "submit";
  save.textContent = t("publishCorrection");
  const cancel = button(t("cancel"), () => { delete row.dataset.editing; fillRow(row, editing.base); });
  form.append(label, save, " ", cancel);
  form.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) { event.preventDefault(); form.requestSubmit(); }
    if (event.key === "Escape") { event.preventDefault(); cancel.click(); }
  });
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      const base = editing.base;
      await api(`/api/v1/lines/${base.id}/corrections`, { method: "POST", body: { text: area.value }, ifMatch: etagOf(base) });
      clearError();
      notice(t("correctionPublished"));
      delete row.dataset.editing;
      await refreshLists();
    } catch (error) {
      if (!isConflict(error)) { showError(error); return; }
      clearError();
      await showCorrectionConflict({ form, area, save, cancel }, editing, error);
    }
  });
  const reach = row.querySelector(".reach");
  row.replaceChildren(form, reach || "");
  if (!reach) { const span = document.createElement("span"); span.className = "reach"; row.append(span); }
  area.focus();
}

// -- conflicts --------------------------------------------------------------------
// A change refused with 412 was made against a version another editor had already changed. The
// desk shows what they changed since the version the editor acted on, and lets the editor decide
// again against the version now shown (docs/desk.md, "When two editors change a line at once").

const isConflict = (error) => error instanceof DeskError && error.status === 412 && Boolean(error.body?.etag);

// The line as it is now, from a 412: its `line` (as last applied) when it is at the revision the
// server named; read again when a change was accepted but not yet applied (a few milliseconds).
// The editor's next try is made against the revision of the line shown, so a change not yet
// shown gets another 412, never overwritten unseen. Null if there is no line to show.
async function conflictLine(error, id) {
  const { revision, line } = error.body;
  if (line && line.revision >= revision) return line;
  const fresh = await api(`/api/v1/lines/${id}`).catch(() => null);
  return fresh?.line || line || null;
}

const sameJson = (x, y) => JSON.stringify(x ?? null) === JSON.stringify(y ?? null);

// The fields besides the text that differ between two states of a line, in the desk's words:
// [{label, before, after}].
function fieldChanges(before, after) {
  const fields = [
    ["urgency", t("urgency"), (line) => t(line.urgency)],
    ["topics", t("fieldTopics"), (line) => line.topics.map(topicName).join(", ") || t("none")],
    ["url", t("link"), (line) => line.url || t("none")],
    ["source", t("source"), (line) => line.source || t("none")],
    ["pinned", t("fieldPinned"), (line) => t(line.pinned ? "yes" : "no")],
    ["expires_at", t("expires"), (line) => zonedTime(line.expires_at)],
  ];
  return fields
    .filter(([key]) => !sameJson(before[key], after[key]))
    .map(([, label, shown]) => ({ label, before: shown(before), after: shown(after) }));
}

// "Pinned: no → yes" ("←" in Arabic); each value isolated (<bdi>), so that a time or a link keeps
// its own direction in a right-to-left desk.
function fieldChangeItem({ label, before, after }) {
  const item = element("li", "", `${label}: `);
  item.append(element("bdi", "", before), ` ${t("changeArrow")} `, element("bdi", "", after));
  return item;
}

// Their text with the words changed since `before` marked: <del> removed, <ins> added, each
// also said in words for screen readers, which do not announce the marks themselves.
function diffParagraph(before, line) {
  const paragraph = element("p", "conflict-text");
  paragraph.lang = line.language;
  paragraph.dir = line.direction;
  for (const { op, text } of wordDiff(before, line.text, line.language)) {
    if (op === "equal") { paragraph.append(text); continue; }
    const mark = document.createElement(op === "delete" ? "del" : "ins");
    const said = element("span", "sr-only", `${t(op === "delete" ? "removedWords" : "addedWords")} `);
    said.lang = state.language;
    mark.append(said, text);
    paragraph.append(mark);
  }
  return paragraph;
}

// What changed from `base` (the version the editor acted on) to `theirs`, the version now: their
// text with the changed words marked, and every other field that changed.
function conflictDetails(base, theirs) {
  const details = element("div", "conflict-details");
  if (theirs.status === "canceled") {
    details.append(element("p", "", t("conflictRetracted")));
    return details;
  }
  if (theirs.text !== base.text) {
    details.append(element("p", "conflict-by", t("conflictTheirText", { author: theirs.author })), diffParagraph(base.text, theirs));
  }
  const changes = fieldChanges(base, theirs);
  if (changes.length) {
    const list = element("ul", "conflict-fields");
    for (const change of changes) list.append(fieldChangeItem(change));
    details.append(list);
  }
  if (theirs.text === base.text && !changes.length) details.append(element("p", "", t("conflictNoVisible")));
  return details;
}

// The panel a screen reader announces as it appears (role=alert): a title, then the details.
function conflictPanel(title, base, theirs) {
  const panel = element("div", "conflict");
  panel.setAttribute("role", "alert");
  panel.append(element("p", "conflict-title", title), conflictDetails(base, theirs));
  return panel;
}

// A correction refused with 412: the form stays open with the panel above the text. When the
// editor's changes and theirs do not overlap, the text becomes both combined (word-level three-way
// merge); otherwise the editor's text stays, to be combined by hand. "Publish" then corrects the
// version now shown; "Keep their version" closes the form and sends nothing.
async function showCorrectionConflict({ form, area, save, cancel }, editing, error) {
  const base = editing.base;
  const theirs = await conflictLine(error, base.id);
  if (!theirs) { showError(error); return; }
  const panel = conflictPanel(t("conflictTitle", { revision: theirs.revision }), base, theirs);
  form.querySelector(".conflict")?.remove();
  form.prepend(panel);
  editing.base = theirs;
  if (theirs.status === "canceled") {
    save.hidden = true;
    cancel.textContent = t("conflictClose");
    cancel.focus();
    return;
  }
  const mine = area.value;
  const merged = merge3(base.text, mine, theirs.text, theirs.language);
  area.value = merged.text;
  const outcome = mine === base.text ? "conflictTheirsOnly" : merged.clean ? "conflictMerged" : "conflictOverlap";
  panel.append(element("p", "conflict-outcome", t(outcome)));
  save.textContent = t("conflictPublish");
  cancel.textContent = t("conflictKeepTheirs");
  area.focus();
}

function clearConflict(id) {
  state.rows.get(id)?.querySelector(":scope > .conflict")?.remove();
}

// A pin, unpin or change of expiry refused with 412: the panel under the row says what changed,
// and the row shows the line as it is now, so that the editor may choose again.
async function showActionConflict(line, action, body, error) {
  const row = state.rows.get(line.id);
  if (!row) { showError(error); await refreshLists().catch(() => {}); return; }
  const theirs = await conflictLine(error, line.id);
  if (!theirs) { showError(error); await refreshLists().catch(() => {}); return; }
  // A line retracted meanwhile leaves the list: nothing to show in its row.
  if (theirs.status === "canceled") { notice(t("conflictRetracted")); await refreshLists().catch(() => {}); return; }
  const title = t("conflictTitleAction", { action: t(actionName(action)), revision: theirs.revision });
  const panel = conflictPanel(title, line, theirs);
  panel.append(element("p", "", t("conflictChooseAgain")), button(t("conflictClose"), () => panel.remove()));
  clearConflict(line.id);
  row.append(panel);
  await refreshLists().catch(() => {});
}

// A retraction refused with 412: the line changed after the editor chose to retract it. Asked
// again with the text as it is now and what changed; yes retracts that version.
async function retractAgain(line, action, body, error) {
  const theirs = await conflictLine(error, line.id);
  await refreshLists().catch(() => {});
  if (!theirs) { showError(error); return; }
  if (theirs.status === "canceled") { notice(t("conflictRetracted")); return; }
  const question = t("retractAgain", { line: theirs.text });
  const answer = await confirmAction(question, true, { reason: body?.reason || "", details: conflictDetails(line, theirs) });
  if (answer.ok) await act(theirs, "retraction", retractionBody(answer.reason), retractAgain);
}

// -- actions on a line --------------------------------------------------------------

const actionName = (action) => `action${action[0].toUpperCase()}${action.slice(1)}`;

async function act(line, action, body, onConflict = showActionConflict) {
  clearConflict(line.id);
  try {
    await api(`/api/v1/lines/${line.id}/${action}`, { method: "POST", body, ifMatch: etagOf(line) });
    clearError();
    notice(t("done", { action: t(actionName(action)) }));
    await refreshLists();
    await refreshAudit();
  } catch (error) {
    if (isConflict(error)) {
      clearError();
      await onConflict(line, action, body, error);
      return;
    }
    showError(error);
  }
}

function moveExpiry(line, seconds) {
  const next = new Date(new Date(line.expires_at).getTime() + seconds * 1000);
  return act(line, "expiry", { expires_at: next.toISOString() });
}

const retractionBody = (reason) => (reason ? { reason } : undefined);

async function retract(line) {
  const answer = await confirmAction(t("retractConfirm", { line: line.text }), true);
  if (answer.ok) await act(line, "retraction", retractionBody(answer.reason), retractAgain);
}

function renderScheduled() {
  const list = $("scheduled-lines");
  if (!state.scheduled.length) { list.replaceChildren(emptyNote(t("nothingScheduled"))); return; }
  list.replaceChildren(...state.scheduled.map((line) => {
    const row = document.createElement("li");
    row.className = "desk-line";
    row.dataset.lineId = line.id;
    const shown = shownLine(line);
    const meta = element("div", "meta");
    const countdown = element("span", "countdown");
    countdown.dataset.at = line.embargoed;
    const when = document.createElement("span");
    when.textContent = t("releases", { time: zonedTime(line.embargoed), author: line.author });
    meta.append(countdown, when);
    row.append(shown, meta);
    if (can("schedule")) {
      const actions = document.createElement("div");
      actions.className = "actions";
      actions.append(button(t("cancelRelease"), async () => {
        const answer = await confirmAction(t("cancelConfirm", { line: line.text }), false);
        if (answer.ok) await act(line, "cancellation");
      }, { danger: true, title: t("cancelTitle", { line: clip(line.text) }) }));
      row.append(actions);
    }
    return row;
  }));
  updateCountdowns();
}

function updateCountdowns() {
  for (const element of document.querySelectorAll(".countdown")) {
    const left = Math.round((new Date(element.dataset.at).getTime() - Date.now()) / 1000);
    if (left <= 0) { element.textContent = t("releasing"); continue; }
    const h = Math.floor(left / 3600), m = Math.floor((left % 3600) / 60), s = left % 60;
    // "1h 59m 49s", "1 س 59 د 49 ث", "1h 59min 49s": the units in the desk's language.
    const unit = (name, value) => new Intl.NumberFormat(timeLocale(), { style: "unit", unit: name, unitDisplay: "narrow" }).format(value);
    const parts = [h ? unit("hour", h) : "", h || m ? unit("minute", m) : "", unit("second", s)];
    element.textContent = t("countdown", { left: parts.filter(Boolean).join(" ") });
  }
}

// -- confirmation dialog --------------------------------------------------------

// Asks `text` in the dialog; `details` (what changed, for a retraction asked again) is shown under
// it and `reason` fills the reason field, so an editor asked again need not type it twice.
function confirmAction(text, withReason, { reason = "", details = null } = {}) {
  const dialog = $("confirm");
  $("confirm-text").textContent = text;
  $("confirm-details").replaceChildren(...(details ? [details] : []));
  $("confirm-reason").value = reason;
  $("confirm-reason-label").hidden = !withReason;
  dialog.returnValue = "";
  dialog.showModal();
  dialog.querySelector("button[value=cancel]").focus();
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => {
      resolve({ ok: dialog.returnValue === "ok", reason: $("confirm-reason").value.trim() });
    }, { once: true });
  });
}

// -- audit ----------------------------------------------------------------------

function auditParams() {
  const params = new URLSearchParams({ edition: state.edition });
  const editor = $("audit-editor").value.trim();
  const action = $("audit-action").value;
  const from = $("audit-from").value;
  const to = $("audit-to").value;
  if (editor) params.set("editor", editor);
  if (action) params.set("action", action);
  if (from) params.set("from", new Date(from).toISOString());
  if (to) params.set("to", new Date(to).toISOString());
  return params;
}

function summary(doc) {
  if (!doc) return "—";
  const flags = [
    doc.status !== "usable" ? known(`status_${doc.status}`, doc.status) : "",
    doc.pinned ? t("flag_pinned") : "",
    doc.expired ? t("flag_expired") : "",
  ];
  return [doc.text, `v${doc.version}`, ...flags.filter(Boolean)].join(" · ");
}

async function refreshAudit() {
  if (!state.me) return;
  try {
    const page = await api(`/api/v1/audit?${auditParams()}&limit=100`);
    const headers = [...document.querySelectorAll("table.audit thead th")].map((th) => th.textContent);
    $("audit-rows").replaceChildren(...page.entries.map((entry) => {
      const row = document.createElement("tr");
      const cells = [
        zonedTime(entry.at),
        `${entry.actor.name} (${roleName(entry.actor.role)})`,
        known(`audit_${entry.action}`, entry.action) + (entry.reason ? ` — ${entry.reason}` : ""),
        entry.line_id,
        summary(entry.before),
        summary(entry.after),
      ];
      for (const [index, value] of cells.entries()) {
        // The cell follows the page's direction (on a phone its label comes first, desk.css); the
        // value keeps its own (a time, a name, an id), isolated.
        const cell = document.createElement("td");
        cell.append(element("bdi", "", value));
        cell.dataset.label = headers[index];
        row.append(cell);
      }
      return row;
    }));
  } catch (error) {
    showError(error);
  }
}

$("audit-form").addEventListener("submit", (event) => { event.preventDefault(); refreshAudit(); });

// The export comes in pages: each answer holds at most the server's export limit of entries and
// ends with where the next page starts, a JSON line {"next_after": ...} or a CSV row
// "#next_after","<audit_id>",... (null, or empty, at the end: docs/api.md, "The audit trail").
// The desk asks page after page and saves one file: the first page's CSV header, every entry,
// and the last page's closing line, which says the file is complete.
const EXPORT_CSV_END = /^"#next_after","([0-9-]*)"/;

function splitExportPage(format, text) {
  const newline = format === "csv" ? "\r\n" : "\n";
  if (!text.endsWith(newline)) throw new Error(t("exportCut"));
  const cut = text.lastIndexOf(newline, text.length - newline.length - 1) + newline.length;
  const closing = text.slice(cut);
  let next;
  if (format === "csv") {
    const match = EXPORT_CSV_END.exec(closing);
    if (!match) throw new Error(t("exportCut"));
    next = match[1] || null;
  } else {
    const end = JSON.parse(closing);
    if (!("next_after" in end)) throw new Error(t("exportCut"));
    next = end.next_after;
  }
  return { entries: text.slice(0, cut), closing, next };
}

async function exportAudit(format) {
  const buttons = [$("export-csv"), $("export-jsonl")];
  for (const button of buttons) button.disabled = true;
  try {
    const parts = [];
    let after = "";
    let pages = 0;
    let closing = "";
    for (;;) {
      const query = `${auditParams()}&format=${format}` + (after ? `&after=${encodeURIComponent(after)}` : "");
      const response = await api(`/api/v1/audit/export?${query}`, { raw: true });
      const page = splitExportPage(format, await response.text());
      // Every CSV page starts with the header row; the file keeps the first one only.
      parts.push(format === "csv" && pages > 0 ? page.entries.slice(page.entries.indexOf("\r\n") + 2) : page.entries);
      pages += 1;
      closing = page.closing;
      if (page.next === null) break;
      if (page.next === after) throw new Error(t("exportStuck"));
      after = page.next;
      notice(t("exporting", { pages }));
    }
    parts.push(closing);
    const type = format === "csv" ? "text/csv" : "application/x-ndjson";
    const url = URL.createObjectURL(new Blob(parts, { type }));
    const link = document.createElement("a");
    link.href = url;
    link.download = `flashwire-audit-${state.edition}.${format}`;
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 1000);
    notice(pages === 1 ? t("exportedOne") : t("exported", { pages }));
  } catch (error) {
    showError(error);
  } finally {
    for (const button of buttons) button.disabled = false;
  }
}

$("export-csv").addEventListener("click", () => exportAudit("csv"));
$("export-jsonl").addEventListener("click", () => exportAudit("jsonl"));

// -- publishing health ----------------------------------------------------------
// An editor must never post into a void: /healthz says when no worker is publishing, when
// lines are waiting, or when the store is unreachable. Polled every 5 s, signed in or not.

const HEALTH_POLL_MS = 5000;
const HEALTH_TIMEOUT_MS = 4000;

function healthMessage(health) {
  const QUEUED = t("queued");
  const RETRY_LATER = t("retryLater");
  if (!health) return { kind: "unavailable", state: t("serverDown"), detail: RETRY_LATER };
  if (health.status === "unavailable") {
    return { kind: "unavailable", state: t("storeDown"), detail: RETRY_LATER };
  }
  if (health.status !== "degraded") return null;
  const lag = Math.round(health.desk_lag_s || 0);
  const waited = lag >= 1 ? t("oldestWaiting", { lag }) : "";
  if (health.workers_alive === 0) {
    return { kind: "stalled", state: t("noWorker"), detail: waited + QUEUED };
  }
  if (lag >= 1) {
    return { kind: "stalled", state: t("linesWaiting"), detail: waited + QUEUED };
  }
  return { kind: "stalled", state: t("degraded"), detail: (health.problems || []).join(" ") };
}

function showHealth(message) {
  const banner = $("health");
  const state = $("health-state");
  if (!message) {
    banner.hidden = true;
    state.textContent = "";
    return;
  }
  banner.className = `health ${message.kind}`;
  banner.dataset.kind = message.kind;
  banner.hidden = false;
  // The state line is an alert: changed only when the state does, so it is announced once;
  // the detail (which counts seconds) updates quietly.
  if (state.textContent !== message.state) state.textContent = message.state;
  $("health-detail").textContent = message.detail;
}

async function readHealth() {
  try {
    const response = await fetch("/healthz", { cache: "no-store", signal: AbortSignal.timeout(HEALTH_TIMEOUT_MS) });
    if (response.status !== 200 && response.status !== 503) return null;
    return await response.json();
  } catch {
    return null;
  }
}

async function watchHealth() {
  state.health = await readHealth();
  showHealth(healthMessage(state.health));
  setTimeout(watchHealth, HEALTH_POLL_MS);
}

watchHealth();

// -- boot -----------------------------------------------------------------------

applyLanguage();
if (state.token) {
  start().catch((error) => signOut(error.message));
} else {
  $("token").focus();
}
