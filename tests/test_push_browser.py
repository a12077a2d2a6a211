"""The site as a web app (issue 12, must-show 3), in a real headless chromium against a real stack
(a worker and `flashwire serve` with Web Push configured): the "Get breaking alerts" control
(web/alerts.js) registers a subscription with the server, the service worker (web/flashwire-sw.js)
shows a pushed alert with the line's tag, direction, language and click target, a correction
replaces it, and "Stop alerts" deletes the registration.

Which subscription the control registers. Chromium's own push service (FCM) is not reachable
from these machines: PushManager.subscribe() never answers here. The test page therefore falls
back as the issue allows ("otherwise the registration call with a browser-generated key pair"):
its init script (FALLBACK) tries the browser's subscribe() for 3 s and, when it gets nothing,
returns a subscription made in the page with WebCrypto (a P-256 ECDH key pair and a 16-byte
auth secret, RFC 8291 section 3) on an endpoint of the test's own push host. Everything else
(the permission, the worker's registration, the VAPID key from GET /api/v1/push, the POST, the
id and secret kept in IndexedDB, the DELETE) is the control's own code. Each test records the
path that ran (`push_path`) in its report, and the first asserts it is one of the two.

Pushes are handed to the registered worker by the DevTools protocol
(`ServiceWorker.deliverPushMessage`), as a push service would deliver them. Chromium shows
notifications on the desktop's notification server: tests/notification_bus.py is one, on a
private D-Bus bus, so the test sees each notification chromium shows and clicks it, which makes
chromium dispatch a real `notificationclick` (the only kind allowed to open a window). Clicks
need a profile that is not off the record, so each test has a persistent context of its own.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from playwright.async_api import (
    Browser,
    BrowserContext,
    Page,
    Playwright,
    async_playwright,
    expect,
)

from flashwire.core.vapid import ensure_key_file
from flashwire.dev.ports import free_port
from flashwire.dev.redis_server import RedisProcess
from tests.browser import ARTIFACTS, CHROMIUM_ARGS, chromium_path
from tests.conftest import ROOT, ServiceNode, Stack
from tests.notification_bus import NotificationBus
from tests.partner import PartnerSite
from tests.test_accessibility import blocking_violations

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]

VAPID_SUBJECT = "mailto:alerts@newsroom.example"
GET_ALERTS = {"en": "Get breaking alerts", "ar": "تلقَّ تنبيهات الأخبار العاجلة"}
STOP_ALERTS = {"en": "Stop alerts", "ar": "إيقاف التنبيهات"}
SUBSCRIBE_WAIT_MS = 3000
WITHDRAWN, WITHDRAWN_TEXT = "سُحب", "سُحب هذا التنبيه."

# The test page's fallback (see the module docstring): PushManager.subscribe() and
# getSubscription() as the browser gives them when its push service answers, else a subscription
# made here with WebCrypto and kept in localStorage (so getSubscription() and unsubscribe() work on).
FALLBACK = """
(() => {
  if (typeof PushManager === "undefined") return;
  const PUSH_ORIGIN = %(push_origin)s;
  const WAIT_MS = %(wait_ms)d;
  const KEPT = "flashwire-test-subscription";
  const subscribe = PushManager.prototype.subscribe;
  const getSubscription = PushManager.prototype.getSubscription;
  const b64url = (buffer) => btoa(String.fromCharCode(...new Uint8Array(buffer)))
    .replace(/\\+/g, "-").replace(/\\//g, "_").replace(/=+$/, "");
  const made = (kept) => ({
    endpoint: kept.endpoint,
    expirationTime: null,
    options: { userVisibleOnly: true,
               applicationServerKey: Uint8Array.from(atob(kept.serverKey), (c) => c.charCodeAt(0)).buffer },
    toJSON: () => ({ endpoint: kept.endpoint, expirationTime: null, keys: kept.keys }),
    unsubscribe: async () => { localStorage.removeItem(KEPT); return true; },
  });
  PushManager.prototype.subscribe = async function (options) {
    try {
      const timeout = new Promise((_, reject) => setTimeout(
        () => reject(new Error(`no answer from the browser's push service in ${WAIT_MS} ms`)), WAIT_MS));
      const real = await Promise.race([subscribe.call(this, options), timeout]);
      window.flashwirePushPath = { path: "browser", reason: "PushManager.subscribe() answered" };
      return real;
    } catch (error) {
      window.flashwirePushPath = { path: "webcrypto",
                                   reason: `PushManager.subscribe(): ${error.name}: ${error.message}` };
    }
    const pair = await crypto.subtle.generateKey({ name: "ECDH", namedCurve: "P-256" }, true, ["deriveBits"]);
    const kept = {
      endpoint: `${PUSH_ORIGIN}/push/${crypto.randomUUID()}`,
      keys: { p256dh: b64url(await crypto.subtle.exportKey("raw", pair.publicKey)),
              auth: b64url(crypto.getRandomValues(new Uint8Array(16))) },
      serverKey: btoa(String.fromCharCode(...new Uint8Array(options.applicationServerKey))),
    };
    localStorage.setItem(KEPT, JSON.stringify(kept));
    return made(kept);
  };
  PushManager.prototype.getSubscription = async function () {
    const real = await getSubscription.call(this);
    if (real) return real;
    const kept = localStorage.getItem(KEPT);
    return kept ? made(JSON.parse(kept)) : null;
  };
})();
"""

# What the control keeps for the service worker (web/alerts.js `stored`).
READ_STORED = """async () => {
  const db = await new Promise((resolve, reject) => {
    const request = indexedDB.open("flashwire-alerts", 1);
    request.onupgradeneeded = () => request.result.createObjectStore("registration");
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => reject(request.error);
  });
  const value = await new Promise((resolve) => {
    const request = db.transaction("registration").objectStore("registration").get("current");
    request.onsuccess = () => resolve(request.result || null);
  });
  db.close();
  return value;
}"""

NOTIFICATIONS = """async () => {
  const registration = await navigator.serviceWorker.getRegistration("/");
  const shown = await registration.getNotifications();
  return shown.map((n) => ({ title: n.title, body: n.body, tag: n.tag, dir: n.dir, lang: n.lang,
                             renotify: n.renotify, data: n.data }));
}"""


class PushSite:
    """The module's stack: a service and a worker with Web Push on, the allowed push host."""

    def __init__(self, stack: Stack, node: ServiceNode, push_origin: str) -> None:
        self.stack = stack
        self.node = node
        self.push_origin = push_origin


@pytest.fixture(scope="module")
def push_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PushSite]:
    """Redis, a worker and a service with Web Push configured (a VAPID key made for the module),
    accepting subscriptions on the test's push host and on Chromium's own (FCM)."""
    path = tmp_path_factory.mktemp("push-browser")
    server = RedisProcess(path / "redis").start()
    stack = Stack(server, path)
    push_origin = f"http://127.0.0.1:{free_port()}"
    env = {
        "FLASHWIRE_VAPID_PRIVATE_KEY_FILE": str(ensure_key_file(path / "vapid.pem")),
        "FLASHWIRE_VAPID_SUBJECT": VAPID_SUBJECT,
        "FLASHWIRE_WEBPUSH_HOSTS": f"{push_origin.removeprefix('http://')},fcm.googleapis.com",
    }
    try:
        stack.worker(**env)
        yield PushSite(stack, stack.service(**env), push_origin)
    finally:
        stack.close()
        server.kill()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def notification_bus(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[NotificationBus]:
    """The desktop notification server chromium shows its notifications on."""
    bus = await NotificationBus(tmp_path_factory.mktemp("dbus")).start()
    try:
        yield bus
    finally:
        await bus.stop()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def playwright() -> AsyncIterator[Playwright]:
    async with async_playwright() as started:
        yield started


@pytest_asyncio.fixture(loop_scope="module")
async def browser_context(
    playwright: Playwright, notification_bus: NotificationBus, push_site: PushSite, tmp_path: Path
) -> AsyncIterator[BrowserContext]:
    """A chromium of this test's own, with a profile on disk (not off the record: chromium takes
    no notification click for an off-the-record profile), the notifications permission granted
    to the site, the push fallback in its pages, and the test's notification server."""
    context = await playwright.chromium.launch_persistent_context(
        str(tmp_path / "profile"),
        executable_path=chromium_path(),
        args=CHROMIUM_ARGS,
        env={**os.environ, **notification_bus.env},
        viewport={"width": 1000, "height": 700},
    )
    try:
        await context.grant_permissions(["notifications"], origin=push_site.node.url)
        script = FALLBACK % {"push_origin": json.dumps(push_site.push_origin), "wait_ms": SUBSCRIBE_WAIT_MS}
        await context.add_init_script(script)
        context.set_default_timeout(15_000)
        yield context
    finally:
        await context.close()
        shutil.rmtree(tmp_path / "profile", ignore_errors=True)


async def turn_alerts_on(
    context: BrowserContext, site: PushSite, edition: str
) -> tuple[Page, dict[str, Any]]:
    """Open the demo page in `edition`, press "Get breaking alerts" and wait until alerts are on:
    the page and the registration the control kept."""
    page = context.pages[0] if context.pages else await context.new_page()
    await page.goto(f"{site.node.url}/?edition={edition}")
    alerts = page.locator("#alerts")
    await expect(alerts).to_have_attribute("data-state", "off")
    await page.get_by_role("button", name=GET_ALERTS[edition]).click()
    await expect(alerts).to_have_attribute("data-state", "on")
    stored: dict[str, Any] = await page.evaluate(READ_STORED)
    return page, stored


async def push_path(page: Page, request: pytest.FixtureRequest) -> dict[str, str]:
    """Which subscription the control registered, and why (see the module docstring): kept in
    the test's report (`user_properties`, and its captured output: `pytest -rA`)."""
    path: dict[str, str] = await page.evaluate("window.flashwirePushPath || null") or {
        "path": "browser",
        "reason": "an earlier subscription of this profile",
    }
    request.node.user_properties.append(("push_path", f"{path['path']}: {path['reason']}"))
    print(f"push path: {path['path']} ({path['reason']})")
    return path


async def test_the_control_registers_the_subscription_with_the_server(
    browser_context: BrowserContext, push_site: PushSite, request: pytest.FixtureRequest
) -> None:
    """A click on "Get breaking alerts" registers the page's subscription (the browser's, or the
    WebCrypto fallback's: see the module docstring) for the page's edition and language; the
    registration reads back from the server with the secret the control kept, and the control
    says alerts are on, on this page and on the next one (docs/alerts-en.png is a copy of the
    screenshot before the click)."""
    page = await browser_context.new_page()
    await page.goto(f"{push_site.node.url}/?edition=en")
    await expect(page.locator("#alerts")).to_have_attribute("data-state", "off")
    ARTIFACTS.mkdir(exist_ok=True)
    await page.locator(".breaking").screenshot(path=str(ARTIFACTS / "alerts-en.png"))
    await page.close()

    page, stored = await turn_alerts_on(browser_context, push_site, "en")
    path = await push_path(page, request)
    assert path["path"] in ("browser", "webcrypto"), path
    subscription = await page.evaluate(
        "(async () => (await (await navigator.serviceWorker.getRegistration('/')).pushManager"
        ".getSubscription()).toJSON())()"
    )
    assert stored["endpoint"] == subscription["endpoint"]
    if path["path"] == "webcrypto":
        assert subscription["endpoint"].startswith(push_site.push_origin + "/push/"), subscription
    assert stored["server"] == push_site.node.url
    async with httpx.AsyncClient(base_url=push_site.node.url) as client:
        answer = await client.get(
            f"/api/v1/push/registrations/{stored['id']}",
            headers={"Authorization": f"Bearer {stored['secret']}"},
        )
    assert answer.status_code == 200, answer.text
    registration = answer.json()
    assert registration["platform"] == "webpush"
    assert registration["editions"] == ["en"]
    assert registration["language"] == "en"
    assert registration["urgency"] == "flash"
    await expect(page.locator("#alerts [role=status]")).to_contain_text("Alerts are on")
    await expect(page.get_by_role("button", name=STOP_ALERTS["en"])).to_be_visible()
    # A page loaded later finds the registration: alerts are on.
    await page.reload()
    await expect(page.locator("#alerts")).to_have_attribute("data-state", "on")
    assert await page.evaluate(READ_STORED) == stored


async def test_the_worker_shows_a_pushed_alert_replaces_it_and_opens_the_line_on_a_click(
    browser_context: BrowserContext,
    push_site: PushSite,
    notification_bus: NotificationBus,
    partner: PartnerSite,
    request: pytest.FixtureRequest,
) -> None:
    """An Arabic alert and then its correction (the same line id) pushed to the registered worker
    leave one notification, the correction's: tag the line id, dir rtl, lang ar, the line's url
    and cursor in its data, shown on the desktop as a replacement of the first. Clicking it on the
    desktop opens a window on the line's url (a page of the test's other site) and closes it. A
    withdrawal then replaces the alert again with its notice. The control, once on, has no serious
    accessibility violation (axe-core); docs/alerts-ar.png is a copy of its screenshot."""
    (partner.root / "story.html").write_text("<!doctype html><title>The story</title><h1>The story</h1>")
    line_url = f"{partner.origin}/story.html"
    page, stored = await turn_alerts_on(browser_context, push_site, "ar")
    await push_path(page, request)
    await page.locator(".breaking").screenshot(path=str(ARTIFACTS / "alerts-ar.png"))
    assert await blocking_violations(page) == []

    cdp = await browser_context.new_cdp_session(page)
    registrations: list[dict[str, Any]] = []
    cdp.on(
        "ServiceWorker.workerRegistrationUpdated", lambda event: registrations.extend(event["registrations"])
    )
    await cdp.send("ServiceWorker.enable")
    scope = f"{push_site.node.url}/"
    for _ in range(200):
        found = [r for r in registrations if r["scopeURL"] == scope and not r.get("isDeleted")]
        if found:
            break
        await page.wait_for_timeout(25)
    registration_id = found[0]["registrationId"]

    alert = {
        "type": "flashwire.alert",
        "kind": "line",
        "id": "ar-3f2a9c0b1d4e5f60",
        "version": 1,
        "edition": "ar",
        "lang": "ar",
        "dir": "rtl",
        "title": "عاجل",
        "text": "زلزال بقوة 7.1 درجة يضرب قبالة سواحل بيرو",
        "url": line_url,
        "cursor": "1765151234567-0",
        "urgency": "flash",
    }
    correction = {
        **alert,
        "kind": "correction",
        "version": 2,
        "title": "تصحيح",
        "text": "زلزال بقوة 6.8 درجة يضرب قبالة سواحل بيرو",
        "cursor": "1765151299999-0",
        "urgency": "urgent",
    }

    async def deliver(payload: dict[str, Any]) -> None:
        await cdp.send(
            "ServiceWorker.deliverPushMessage",
            {"origin": push_site.node.url, "registrationId": registration_id, "data": json.dumps(payload)},
        )

    before = len(notification_bus.server.history)
    await deliver(alert)
    await notification_bus.wait_for(before + 1)
    # Chromium learns the desktop's id for the alert from the answer to its Notify call, and
    # names that id in the replacement; a correction given to it before it has read that answer
    # goes out as a second notification (CI, under load, did that once). A correction comes
    # minutes after its line, not milliseconds: wait until the alert is in the service worker's
    # list, and a second more for the answer.
    for _ in range(200):
        if len(await page.evaluate(NOTIFICATIONS)) == 1:
            break
        await page.wait_for_timeout(25)
    await page.wait_for_timeout(1000)
    await deliver(correction)
    history = await notification_bus.wait_for(before + 2)

    shown = await page.evaluate(NOTIFICATIONS)
    assert shown == [
        {
            "title": "تصحيح",
            "body": correction["text"],
            "tag": alert["id"],
            "dir": "rtl",
            "lang": "ar",
            "renotify": False,
            "data": {
                "url": line_url,
                "id": alert["id"],
                "cursor": correction["cursor"],
                "edition": "ar",
                "kind": "correction",
            },
        }
    ]
    first, replacement = history[before], history[before + 1]
    assert first.summary == "عاجل" and alert["text"] in first.body
    assert replacement.replaced == first.id, "the correction did not replace the alert on the desktop"
    assert correction["text"] in replacement.body

    async with browser_context.expect_page() as opened:
        notification_bus.server.click(replacement.id)
    story = await opened.value
    await story.wait_for_load_state()
    assert story.url == line_url
    assert await page.evaluate(NOTIFICATIONS) == []

    withdrawal = {
        **correction,
        "kind": "withdrawal",
        "version": 3,
        "title": WITHDRAWN,
        "text": WITHDRAWN_TEXT,
    }
    await deliver(withdrawal)
    await notification_bus.wait_for(before + 3)
    [withdrawn] = await page.evaluate(NOTIFICATIONS)
    assert (withdrawn["title"], withdrawn["body"], withdrawn["tag"]) == (
        WITHDRAWN,
        WITHDRAWN_TEXT,
        alert["id"],
    )
    assert stored["editions"] == ["ar"] and stored["language"] == "ar"


async def test_stop_alerts_deletes_the_registration_on_the_server(
    browser_context: BrowserContext, push_site: PushSite, request: pytest.FixtureRequest
) -> None:
    """The "Stop alerts" button (pressed from the keyboard) unsubscribes, deletes the registration
    (its secret no longer reads it: 404) and forgets it; the control offers alerts again."""
    page, stored = await turn_alerts_on(browser_context, push_site, "en")
    await push_path(page, request)
    headers = {"Authorization": f"Bearer {stored['secret']}"}
    async with httpx.AsyncClient(base_url=push_site.node.url) as client:
        url = f"/api/v1/push/registrations/{stored['id']}"
        assert (await client.get(url, headers=headers)).status_code == 200
        # From the keyboard: the control is a real button.
        await page.get_by_role("button", name=STOP_ALERTS["en"]).focus()
        await page.keyboard.press("Enter")
        await expect(page.locator("#alerts")).to_have_attribute("data-state", "off")
        assert (await client.get(url, headers=headers)).status_code == 404
    assert await page.evaluate(READ_STORED) is None
    assert await page.evaluate(
        "(async () => (await (await navigator.serviceWorker.getRegistration('/')).pushManager"
        ".getSubscription()) === null)()"
    )
    await expect(page.get_by_role("button", name=GET_ALERTS["en"])).to_be_visible()


IPHONE_SAFARI = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko)"
    " Version/18.1 Mobile/15E148 Safari/604.1"
)
# A browser without the Push API (iOS Safari in a tab has service workers but no PushManager).
NO_PUSH_API = "delete window.PushManager;"


async def test_the_control_says_why_alerts_cannot_be_turned_on(
    chromium: Browser, push_site: PushSite
) -> None:
    """Notifications blocked for the site: the control says how to allow them (and still offers
    the button, to try again after). No Push API: it says the browser cannot receive alerts, with
    no button. On iOS outside a Home-Screen web app: "Add to Home Screen to get alerts" (PITFALLS
    1.5), with no button. The site's worker and manifest are served as a browser needs them."""
    origin = push_site.node.url
    blocked = await chromium.new_context()
    page = await blocked.new_page()
    target = await (await blocked.new_cdp_session(page)).send("Target.getTargetInfo")
    await (await chromium.new_browser_cdp_session()).send(
        "Browser.setPermission",
        {
            "permission": {"name": "notifications"},
            "setting": "denied",
            "origin": origin,
            "browserContextId": target["targetInfo"]["browserContextId"],
        },
    )
    await page.goto(f"{origin}/?edition=es")
    await expect(page.locator("#alerts")).to_have_attribute("data-state", "denied")
    await expect(page.locator("#alerts [role=status]")).to_contain_text("Las notificaciones están bloqueadas")
    await expect(page.get_by_role("button", name="Recibir alertas de última hora")).to_be_visible()

    without_push = await chromium.new_context()
    await without_push.add_init_script(NO_PUSH_API)
    page = await without_push.new_page()
    await page.goto(f"{origin}/?edition=en")
    await expect(page.locator("#alerts")).to_have_attribute("data-state", "unsupported")
    await expect(page.locator("#alerts [role=status]")).to_have_text(
        "This browser cannot receive alerts (it has no Push API)."
    )
    await expect(page.locator("#alerts button")).to_be_hidden()

    iphone = await chromium.new_context(user_agent=IPHONE_SAFARI, viewport={"width": 390, "height": 844})
    await iphone.add_init_script(NO_PUSH_API)
    page = await iphone.new_page()
    await page.goto(f"{origin}/?edition=ar")
    await expect(page.locator("#alerts")).to_have_attribute("data-state", "install")
    await expect(page.locator("#alerts [role=status]")).to_contain_text("أضف الموقع إلى الشاشة الرئيسية")
    await expect(page.locator("#alerts button")).to_be_hidden()

    async with httpx.AsyncClient(base_url=origin) as client:
        worker = await client.get("/flashwire-sw.js")
        manifest = await client.get("/web/manifest.webmanifest")
    assert worker.status_code == 200
    assert worker.headers["content-type"] == "text/javascript; charset=utf-8"
    assert worker.headers["cache-control"] == "no-cache"
    assert worker.headers["service-worker-allowed"] == "/"
    assert manifest.headers["content-type"].startswith("application/manifest+json")
    assert (manifest.json()["start_url"], manifest.json()["display"]) == ("/", "standalone")


async def test_a_partners_widget_offers_alerts_with_the_service_worker_the_partner_hosts(
    browser_context: BrowserContext, push_site: PushSite, partner: PartnerSite, request: pytest.FixtureRequest
) -> None:
    """`<flash-ticker alerts>` on a partner's own origin loads the control (web/alerts.js, from the
    Flashwire server) under its bar; the partner hosts the one file web/flashwire-sw.js at its
    root; a click registers the subscription with the Flashwire server for the widget's edition
    and language (across origins: the push API's CORS), with the id and secret kept on the
    partner's origin for its worker."""
    shutil.copy(ROOT / "web" / "flashwire-sw.js", partner.root / "flashwire-sw.js")
    url = partner.page(
        "alerts.html", '<flash-ticker edition="es" alerts></flash-ticker>', push_site.node, lang="es"
    )
    await browser_context.grant_permissions(["notifications"], origin=partner.origin)
    page = await browser_context.new_page()
    await page.goto(url)
    alerts = page.locator("flash-ticker flash-alerts")
    await expect(alerts).to_have_attribute("data-state", "off")
    await page.get_by_role("button", name="Recibir alertas de última hora").click()
    await expect(alerts).to_have_attribute("data-state", "on")
    await push_path(page, request)
    stored = await page.evaluate(READ_STORED)
    assert stored["server"] == push_site.node.url
    scope = await page.evaluate("(async () => (await navigator.serviceWorker.getRegistration('/')).scope)()")
    assert scope == f"{partner.origin}/"
    async with httpx.AsyncClient(base_url=push_site.node.url) as client:
        answer = await client.get(
            f"/api/v1/push/registrations/{stored['id']}",
            headers={"Authorization": f"Bearer {stored['secret']}"},
        )
    assert answer.status_code == 200, answer.text
    assert (answer.json()["editions"], answer.json()["language"]) == (["es"], "es")


# A new subscription, as a push service would hand it to the worker with `pushsubscriptionchange`
# (Chromium never fires that event, so the test calls the worker's handler with it).
RESUBSCRIBE = """async (endpoint) => {
  const b64url = (buffer) => btoa(String.fromCharCode(...new Uint8Array(buffer)))
    .replace(/\\+/g, "-").replace(/\\//g, "_").replace(/=+$/, "");
  const pair = await crypto.subtle.generateKey({ name: "ECDH", namedCurve: "P-256" }, true, ["deriveBits"]);
  const keys = { p256dh: b64url(await crypto.subtle.exportKey("raw", pair.publicKey)),
                 auth: b64url(crypto.getRandomValues(new Uint8Array(16))) };
  await resubscribe({ newSubscription: { endpoint, toJSON: () => ({ endpoint, keys }) } });
}"""


async def test_a_changed_subscription_is_registered_again_by_the_worker(
    browser_context: BrowserContext, push_site: PushSite, request: pytest.FixtureRequest
) -> None:
    """The worker's `pushsubscriptionchange` handler registers the new subscription with the
    choices kept in IndexedDB, keeps its new id and secret for the page, and deletes the old
    registration (its secret reads nothing any more)."""
    page, old = await turn_alerts_on(browser_context, push_site, "ar")
    await push_path(page, request)
    [worker] = [
        w for w in browser_context.service_workers if w.url == f"{push_site.node.url}/flashwire-sw.js"
    ]
    endpoint = f"{push_site.push_origin}/push/renewed"
    await worker.evaluate(RESUBSCRIBE, endpoint)
    new = await page.evaluate(READ_STORED)
    assert new["id"] != old["id"] and new["endpoint"] == endpoint
    assert (new["editions"], new["language"], new["server"]) == (["ar"], "ar", push_site.node.url)
    async with httpx.AsyncClient(base_url=push_site.node.url) as client:
        path = "/api/v1/push/registrations/{}"
        renewed = await client.get(
            path.format(new["id"]), headers={"Authorization": f"Bearer {new['secret']}"}
        )
        gone = await client.get(path.format(old["id"]), headers={"Authorization": f"Bearer {old['secret']}"})
    assert renewed.status_code == 200, renewed.text
    assert renewed.json()["editions"] == ["ar"]
    assert gone.status_code == 404
