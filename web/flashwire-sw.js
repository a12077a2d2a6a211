/*! Flashwire service worker: shows breaking-news alerts pushed by Flashwire (docs/push.md).
 *
 * Served at the root of the site (`/flashwire-sw.js`, scope `/`) and registered by the
 * "Get breaking alerts" control (web/alerts.js). A partner whose pages show the control hosts
 * this one file at the root of its own origin (docs/widget.md, "Breaking alerts").
 *
 * - `push`: every message shows a notification (docs/push.md "Payload"; PITFALLS 1.6: a push that
 *   shows nothing gets the subscription revoked by Safari), tagged with the line id, so that a
 *   correction or a withdrawal replaces the alert about the same line.
 * - `notificationclick`: focuses a window already on the line's url, or opens it (the site's
 *   root when the line has none).
 * - `pushsubscriptionchange`: registers the new subscription with the server and deletes the
 *   old registration, with the registration's secret kept in IndexedDB by the control.
 */
"use strict";

// The registration the control keeps (web/alerts.js writes it; keep these names in step):
// database "flashwire-alerts", store "registration", key "current", value
// { id, secret, server, endpoint, editions, topics, urgency, language }.
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

// The notification of one alert (docs/push.md "Payload"): the edition's words and direction, the
// line id as the tag (a correction or a withdrawal replaces the alert, without sound for a
// withdrawal), the data a click and the app need to resume the live ticker from the cursor.
function notificationOf(alert) {
  const options = {
    body: String(alert.text || ""),
    dir: alert.dir === "rtl" ? "rtl" : alert.dir === "ltr" ? "ltr" : "auto",
    lang: String(alert.lang || ""),
    tag: String(alert.id || "flashwire"),
    renotify: alert.kind === "line",
    data: {
      url: alert.url || "",
      id: alert.id || "",
      cursor: alert.cursor || "",
      edition: alert.edition || "",
      kind: alert.kind || "",
    },
  };
  return [String(alert.title || "Flashwire"), options];
}

self.addEventListener("push", (event) => {
  let alert = {};
  try {
    alert = event.data ? event.data.json() : {};
  } catch (error) {
    // Not JSON: still show something (a push that shows nothing costs the subscription).
    alert = { text: event.data ? event.data.text() : "" };
  }
  const [title, options] = notificationOf(alert);
  event.waitUntil(self.registration.showNotification(title, options));
});

self.addEventListener("notificationclick", (event) => {
  event.notification.close();
  const url = new URL(event.notification.data && event.notification.data.url ? event.notification.data.url : "/", self.location.origin).href;
  event.waitUntil(
    (async () => {
      const windows = await self.clients.matchAll({ type: "window", includeUncontrolled: true });
      const open = windows.find((client) => client.url === url);
      if (open) return open.focus();
      return self.clients.openWindow(url);
    })(),
  );
});

// The push service replaced (or dropped) the subscription: register the new one with the same
// choices, then delete the old registration (docs/push.md "Registering": the old secret is
// what proves it was ours).
async function resubscribe(event) {
  const previous = await stored();
  if (!previous) return;
  let subscription = event.newSubscription;
  if (!subscription) {
    const config = await (await fetch(`${previous.server}/api/v1/push`)).json();
    if (!config.vapid_public_key) return;
    subscription = await self.registration.pushManager.subscribe({
      userVisibleOnly: true,
      applicationServerKey: config.vapid_public_key,
    });
  }
  const body = {
    platform: "webpush",
    subscription: subscription.toJSON(),
    editions: previous.editions,
    topics: previous.topics,
    urgency: previous.urgency,
    language: previous.language,
  };
  const answer = await fetch(`${previous.server}/api/v1/push/registrations`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
  if (!answer.ok) return;
  const created = await answer.json();
  await stored({ ...previous, id: created.id, secret: created.secret, endpoint: body.subscription.endpoint });
  if (created.id !== previous.id) {
    await fetch(`${previous.server}/api/v1/push/registrations/${encodeURIComponent(previous.id)}`, {
      method: "DELETE",
      headers: { Authorization: `Bearer ${previous.secret}` },
    });
  }
}

self.addEventListener("pushsubscriptionchange", (event) => {
  event.waitUntil(resubscribe(event));
});

// A new version takes over at once: the worker keeps no state of its own but IndexedDB.
self.addEventListener("install", () => self.skipWaiting());
self.addEventListener("activate", (event) => event.waitUntil(self.clients.claim()));
