"""Webhook signing, secrets, the address rule and the message shapes, in process; and the verification
examples of docs/webhooks.md, run against a message signed by the worker's own code.

The examples are taken from the page itself (the code block after each `<!-- verify: … -->`), so
the page cannot drift from what works: Python with the standardwebhooks library, Node with its
crypto module (/usr/bin/node), Go when a toolchain is installed.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import os
import re
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import orjson
import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from flashwire.core.webhook_models import message_of, new_secret, secret_key, withdrawn
from flashwire.core.webhook_urls import EndpointRefused, endpoint_url, refused_address
from flashwire.workers.webhooks.signing import signed_headers

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "webhooks.md"
LINE = {
    "id": "en-711d46440083a926", "version": 1, "revision": 1, "edition": "en", "language": "en",
    "direction": "ltr", "text": "Parliament dissolved; elections called for March.", "urgency": "flash",
    "iptc_urgency": 1, "topics": ["politics", "europe"], "url": None, "source": None, "status": "usable",
    "pinned": False, "published_at": "2026-12-07T10:40:03.117Z", "updated_at": "2026-12-07T10:40:03.117Z",
    "expires_at": "2026-12-07T22:40:03.117Z", "embargoed": None, "author": "Amal",
}  # fmt: skip


def _signed(secrets: list[str] | None = None) -> tuple[str, dict[str, str], bytes]:
    secret = new_secret()
    message = message_of("en", "1796640003117-0", "line", {"line": LINE})
    assert message is not None
    headers = signed_headers(message.id, message.body, secrets or [secret], datetime.now(UTC))
    return secret, headers, message.body


def test_a_secret_is_whsec_and_32_random_bytes_in_strict_base64() -> None:
    """PITFALLS 2.4: `whsec_` + base64 of 32 bytes; a damaged secret is refused, not decoded leniently."""
    secret = new_secret()
    assert secret.startswith("whsec_") and len(base64.b64decode(secret[6:], validate=True)) == 32
    assert secret != new_secret()
    for bad in ("whsec_not*base64", "whsec_" + base64.b64encode(b"short").decode(), secret[6:]):
        with pytest.raises(ValueError):
            secret_key(bad)


def test_a_signed_message_verifies_with_the_library_and_a_tampered_one_does_not() -> None:
    secret, headers, body = _signed()
    assert Webhook(secret).verify(body, headers)["type"] == "line.published"
    assert headers["content-type"] == "application/json" and headers["webhook-id"] == "msg_en_1796640003117-0"
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body.replace(b"March", b"April"), headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(new_secret()).verify(body, headers)


def test_signing_in_bangkok_time_still_verifies(monkeypatch: pytest.MonkeyPatch) -> None:
    """PITFALLS 2.2: with the process in TZ=Asia/Bangkok (UTC+7), the timestamp is the Unix time and
    the signature verifies; an aware non-UTC time signs the same instant, a naive one is refused."""
    monkeypatch.setenv("TZ", "Asia/Bangkok")
    time.tzset()
    try:
        assert time.localtime().tm_gmtoff == 7 * 3600
        secret, headers, body = _signed()
        assert abs(int(headers["webhook-timestamp"]) - time.time()) <= 1
        assert Webhook(secret).verify(body, headers)
        bangkok = datetime.now(timezone(timedelta(hours=7)))
        again = signed_headers("msg_x", body, [secret], bangkok)
        assert again["webhook-timestamp"] == str(int(bangkok.timestamp()))
        with pytest.raises(ValueError):
            signed_headers("msg_x", body, [secret], datetime.now())  # naive: the point of the test
    finally:
        monkeypatch.undo()
        time.tzset()


def test_each_attempt_is_signed_with_its_own_time() -> None:
    """PITFALLS 2.3: a retry hours later carries its own timestamp, which the library accepts; the
    first attempt's headers would be refused by then."""
    secret = new_secret()
    body = b'{"type":"line.published"}'
    first = signed_headers("msg_1", body, [secret], datetime.now(UTC) - timedelta(hours=2))
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body, first)
    retry = signed_headers("msg_1", body, [secret], datetime.now(UTC))
    assert Webhook(secret).verify(body, retry) and retry["webhook-id"] == first["webhook-id"]


def test_during_a_rotation_both_secrets_verify() -> None:
    """PITFALLS 2.5: two space-separated signatures; a receiver holding either secret accepts."""
    new, old = new_secret(), new_secret()
    _, headers, body = _signed([new, old])
    assert len(headers["webhook-signature"].split(" ")) == 2
    assert Webhook(new).verify(body, headers) and Webhook(old).verify(body, headers)


@pytest.mark.parametrize(
    "address",
    ["127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254", "100.64.0.1", "0.0.0.0",
     "224.0.0.1", "::1", "fe80::1", "fc00::1", "::ffff:127.0.0.1", "2002:7f00:1::", "ff02::1",
     "fec0::1", "192.0.0.8"],
)  # fmt: skip
def test_the_address_rule_refuses_internal_addresses(address: str) -> None:
    assert refused_address(ipaddress.ip_address(address)) is not None


@pytest.mark.parametrize("address", ["93.184.215.14", "2606:2800:21f:cb07:6820:80da:af6b:8b2c"])
def test_the_address_rule_allows_public_addresses(address: str) -> None:
    assert refused_address(ipaddress.ip_address(address)) is None


@pytest.mark.parametrize(
    "url",
    ["http://example.com/hook", "https://127.0.0.1/hook", "https://[::1]/hook", "https://localhost/hook",
     "https://10.0.0.8:8443/", "https://user:pw@example.com/", "https://example.com/hook#frag", "ftp://x.example/"],
)  # fmt: skip
def test_endpoint_urls_are_https_and_not_internal(url: str) -> None:
    with pytest.raises(EndpointRefused):
        endpoint_url(url, allow_private=False)


def test_allow_private_lifts_the_rule_for_development() -> None:
    assert endpoint_url("http://127.0.0.1:8080/hook", allow_private=True) == "http://127.0.0.1:8080/hook"
    assert endpoint_url("https://example.com/hook", allow_private=False) == "https://example.com/hook"


def test_ticker_events_become_standard_webhooks_messages() -> None:
    """Each ticker event maps to its type; the body is {type, timestamp (UTC, the event's time), data}."""
    cases = [
        ("line", {"line": LINE}, "line.published"),
        ("update", {"line": LINE, "change": "correction", "previous": {"topics": [], "urgency": "flash"}},
         "line.corrected"),
        ("update", {"line": LINE, "change": "pin"}, "line.pinned"),
        ("update", {"line": LINE, "change": "expiry"}, "line.expiry_changed"),
        ("retract", {"line": LINE, "id": LINE["id"], "reason": "killed", "note": "Wrong"}, "line.killed"),
        ("retract", {"line": LINE, "id": LINE["id"], "reason": "expired", "note": ""}, "line.expired"),
    ]  # fmt: skip
    for event_type, data, kind in cases:
        message = message_of("en", "1796640003117-0", event_type, data)
        assert message is not None and message.type == kind
        body = orjson.loads(message.body)
        assert body["type"] == kind and body["timestamp"] == "2026-12-07T10:40:03.117Z"
        assert body["data"]["line"] == LINE and body["data"]["cursor"] == "1796640003117-0"
    killed = orjson.loads(message_of("en", "1-0", "retract", cases[4][1]).body)  # type: ignore[union-attr]
    assert killed["data"]["note"] == "Wrong"
    assert message_of("en", "1-0", "heartbeat", {}) is None
    corrected = message_of("en", "1-0", *cases[1][:2])
    assert corrected is not None and withdrawn(corrected).type == "line.withdrawn"


# -- the examples of docs/webhooks.md ---------------------------------------------------------------

GO_MAIN = """package main

import (
\t"encoding/base64"
\t"encoding/json"
\t"fmt"
\t"net/http"
\t"os"

\t"gocheck/webhooks"
)

func main() {
\tvar given struct {
\t\tSecret  string
\t\tHeaders map[string]string
\t\tBody    string
\t}
\traw, _ := os.ReadFile(os.Args[1])
\tjson.Unmarshal(raw, &given)
\theader := http.Header{}
\tfor k, v := range given.Headers {
\t\theader.Set(k, v)
\t}
\tbody, _ := base64.StdEncoding.DecodeString(given.Body)
\tif err := webhooks.Verify(given.Secret, header, body); err != nil {
\t\tfmt.Fprintln(os.Stderr, err)
\t\tos.Exit(1)
\t}
\tfmt.Println("verified")
}
"""


def _example(language: str) -> str:
    text = DOC.read_text()
    found = re.search(rf"<!-- verify: {language} -->\n```\w+\n(.*?)```", text, re.S)
    assert found, f"no {language} example in {DOC}"
    return found.group(1)


def _inputs(tmp_path: Path, *, tamper: bool) -> Path:
    secret, headers, body = _signed()
    if tamper:
        body = body.replace(b"March", b"April")
    path = tmp_path / "signed.json"
    path.write_text(
        json.dumps({"secret": secret, "headers": headers, "body": base64.b64encode(body).decode()})
    )
    return path


@pytest.mark.parametrize("tamper", [False, True])
def test_the_python_example_verifies_a_real_message(tmp_path: Path, tamper: bool) -> None:
    """Run in TZ=Asia/Bangkok too (PITFALLS 2.2)."""
    script = tmp_path / "verify.py"
    script.write_text(
        _example("python")
        + "\nimport base64, json, sys\n"
        + "given = json.load(open(sys.argv[1]))\n"
        + "print(verify(given['secret'], given['headers'], base64.b64decode(given['body']))['type'])\n"
    )
    result = subprocess.run(
        [sys.executable, str(script), str(_inputs(tmp_path, tamper=tamper))],
        capture_output=True,
        text=True,
        env={**os.environ, "TZ": "Asia/Bangkok"},
        timeout=30,
    )
    if tamper:
        assert result.returncode != 0 and "WebhookVerificationError" in result.stderr
    else:
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == "line.published"


@pytest.mark.parametrize("tamper", [False, True])
def test_the_node_example_verifies_a_real_message(tmp_path: Path, tamper: bool) -> None:
    node = shutil.which("node") or "/usr/bin/node"
    script = tmp_path / "verify.mjs"
    script.write_text(
        _example("node")
        + '\nimport fs from "node:fs";\n'
        + "const given = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));\n"
        + "console.log(verify(given.secret, given.headers, Buffer.from(given.body, 'base64')).type);\n"
    )
    result = subprocess.run(
        [node, str(script), str(_inputs(tmp_path, tamper=tamper))], capture_output=True, text=True, timeout=30
    )
    if tamper:
        assert result.returncode != 0 and "no matching signature" in result.stderr
    else:
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == "line.published"


@pytest.mark.skipif(shutil.which("go") is None, reason="no Go toolchain on this machine")
@pytest.mark.parametrize("tamper", [False, True])
def test_the_go_example_verifies_a_real_message(tmp_path: Path, tamper: bool) -> None:  # pragma: no cover
    module = tmp_path / "gocheck"
    (module / "webhooks").mkdir(parents=True)
    (module / "go.mod").write_text("module gocheck\n\ngo 1.21\n")
    (module / "webhooks" / "verify.go").write_text(_example("go"))
    (module / "main.go").write_text(GO_MAIN)
    result = subprocess.run(
        ["go", "run", ".", str(_inputs(tmp_path, tamper=tamper))],
        cwd=module,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert (result.returncode == 0) is (not tamper), result.stderr
