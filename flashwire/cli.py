"""The `flashwire` command: dev, serve, worker, token; post, correct, retract, pin, unpin, lines
(the newsroom API, as the desk uses it); listen (the live ticker).

Exit status: 0 done; 1 the server refused the action or could not be reached; 2 the command
itself is wrong (a usage error, as argparse reports them).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from flashwire.core.settings import Settings, SettingsError

if TYPE_CHECKING:
    import uvicorn

    from flashwire.client import Retry
    from flashwire.core.models import TokenRecord

DEFAULT_URL = "http://127.0.0.1:8000"
URGENCIES = ("flash", "urgent", "routine")
# A write answered 503 (Redis unreachable for a moment; docs/api.md "Errors") is sent again with
# the same Idempotency-Key, after its Retry-After (at most RETRY_AFTER_MAX_S), this many times in all.
WRITE_ATTEMPTS = 3
RETRY_AFTER_MAX_S = 5.0
REQUEST_TIMEOUT_S = 10.0
EXIT_REFUSED = 1


def _settings() -> Settings:
    env = dict(os.environ)
    if not env.get("REDIS_URL"):
        from flashwire.dev.stack import data_dir

        dev_url = data_dir() / "redis-url"
        if dev_url.exists():
            env["REDIS_URL"] = dev_url.read_text().strip()
    return Settings.from_env(env)


def server_config(settings: Settings, host: str, port: int, *, access_log: bool = True) -> uvicorn.Config:
    """uvicorn's configuration for one service process (service/processes.py). Also used by bench/."""
    from flashwire.service.processes import server_config as config

    return config(settings, host, port, access_log=access_log)


def cmd_serve(args: argparse.Namespace) -> int:
    """Run one service node under uvicorn: one process, or --workers N on one port."""
    import uvicorn

    from flashwire.core.logs import configure_logging
    from flashwire.service.connection_log import silence_server_lines
    from flashwire.service.processes import run_processes

    settings = Settings.from_env()
    host = args.host or settings.host
    port = settings.port if args.port is None else args.port
    workers = settings.serve_workers if args.workers is None else args.workers
    # Our handler for every logger, uvicorn's included (log_config=None below): one format, text
    # or JSON. Reader connections get one line each from the reader endpoints (service/ws.py, sse.py);
    # uvicorn's access and handshake lines for them are dropped, other requests keep theirs.
    configure_logging("service", settings.log_format)
    silence_server_lines()
    if workers > 1:
        return run_processes(settings, host, port, workers)
    config = server_config(settings, host, port)
    uvicorn.Server(config).run()
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    """Run the arq worker."""
    from flashwire.workers.main import run_worker

    run_worker(Settings.from_env())
    return 0


def cmd_dev(args: argparse.Namespace) -> int:
    """Redis (embedded if REDIS_URL is unset), worker and service together."""
    from flashwire.dev.stack import run_dev

    return run_dev()


def _token(args: argparse.Namespace) -> str:
    token = args.token or os.environ.get("FLASHWIRE_TOKEN")
    if token:
        return str(token)
    from flashwire.dev.stack import data_dir

    path = data_dir() / "dev-token"
    if path.exists():
        return path.read_text().strip()
    raise SystemExit("flashwire: no token: pass --token or set FLASHWIRE_TOKEN")


def _parse_duration(text: str) -> timedelta:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    if text and text[-1] in units and text[:-1].isdigit():
        return timedelta(seconds=int(text[:-1]) * units[text[-1]])
    if text.isdigit():
        return timedelta(seconds=int(text))
    raise SystemExit(f"flashwire: --expires-in takes e.g. 90s, 30m, 6h, got {text!r}")


def local_time(iso: str) -> str:
    """An RFC 3339 time of the API in the local zone (the TZ environment variable, else the
    system's) with the zone's abbreviation and UTC offset: `2026-12-07 19:20:03 CET (UTC+01:00)`."""
    moment = datetime.fromisoformat(iso).astimezone()
    offset = moment.utcoffset() or timedelta(0)
    minutes = int(offset.total_seconds()) // 60
    sign = "-" if minutes < 0 else "+"
    hours, rest = divmod(abs(minutes), 60)
    return f"{moment:%Y-%m-%d %H:%M:%S} {moment.tzname()} (UTC{sign}{hours:02d}:{rest:02d})"


class ApiRefusal(Exception):
    """The server answered an API request with an error (`status`, and from the API's JSON error body
    `code`, `field`, `message` and any further `details`, e.g. a version a 412 reports)."""

    def __init__(
        self, status: int, code: str, message: str, field: str | None, details: dict[str, Any]
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.details = details

    @classmethod
    def from_http_error(cls, exc: urllib.error.HTTPError) -> ApiRefusal:
        """Read the API's error body (docs/api.md "Errors"), with what it sends beside `error` (a 412's
        `revision`, `etag`, and the `line` as now: its text); a body that is not one (a proxy's page)
        gives the status's phrase."""
        try:
            body = json.loads(exc.read() or b"{}")
        except ValueError:
            body = None
        error = body.get("error") if isinstance(body, dict) else None
        if not isinstance(body, dict) or not isinstance(error, dict):
            return cls(exc.code, "http_error", str(exc.reason), None, {})
        details = {k: v for k, v in error.items() if k not in {"status", "code", "message", "field"}}
        details.update({k: v for k, v in body.items() if k not in {"error", "line"}})
        line = body.get("line")
        if isinstance(line, dict) and isinstance(line.get("text"), str):
            details["text now"] = _printable(line["text"])
        field = error.get("field")
        return cls(
            exc.code,
            str(error.get("code", "error")),
            str(error.get("message", exc.reason)),
            field if isinstance(field, str) else None,
            details,
        )


class Unreachable(Exception):
    """The server could not be reached, or did not answer in time."""


def _server(args: argparse.Namespace) -> str:
    return str(args.server).rstrip("/")


def api_request(args: argparse.Namespace, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    """Send one API request with the token (`--token`, $FLASHWIRE_TOKEN or the dev token) and return
    the JSON answer. A write carries `args.idempotency_key` and is sent again, with the same key, on
    a 503 (WRITE_ATTEMPTS in all): the server then takes the action at most once (docs/api.md).

    :raises ApiRefusal: the server answered with an error.
    :raises Unreachable: no answer (connection refused, DNS, timeout after REQUEST_TIMEOUT_S).
    """
    headers = {"Authorization": f"Bearer {_token(args)}", "Accept": "application/json"}
    data = None
    if method != "GET":
        headers["Idempotency-Key"] = args.idempotency_key
        if getattr(args, "if_revision", None) is not None:
            # The line's ETag is "v<revision>" (docs/api.md "Concurrent changes: If-Match").
            headers["If-Match"] = f'"v{args.if_revision}"'
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
    url = f"{_server(args)}{path}"
    for attempt in range(1, WRITE_ATTEMPTS + 1):
        request = urllib.request.Request(url, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=REQUEST_TIMEOUT_S) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            refusal = ApiRefusal.from_http_error(exc)
            if exc.code != 503 or attempt == WRITE_ATTEMPTS:
                raise refusal from None
            from flashwire.client import retry_after_s

            time.sleep(min(retry_after_s(exc.headers.get("Retry-After")) or 1.0, RETRY_AFTER_MAX_S))
        except OSError as exc:
            raise Unreachable(f"cannot reach {_server(args)}: {getattr(exc, 'reason', exc)}") from None
        except ValueError as exc:  # a URL urllib cannot use, or an answer that is not JSON
            raise Unreachable(f"no API answer from {_server(args)}: {exc}") from None
    raise AssertionError("unreachable")  # pragma: no cover


def _report_refusal(args: argparse.Namespace, refusal: ApiRefusal) -> None:
    """Print the API's refusal on stderr: status, code, field and message, then what to do."""
    field = f", field {refusal.field}" if refusal.field else ""
    message = _printable(refusal.message)
    print(f"flashwire: refused ({refusal.status} {refusal.code}{field}): {message}", file=sys.stderr)
    for key, value in refusal.details.items():
        print(f"  {key}: {_printable(str(value))}", file=sys.stderr)
    if refusal.status == 412:
        print(
            "flashwire: not changed: the line is no longer at --if-revision"
            f" {getattr(args, 'if_revision', None)} (another editor changed it); look at it with"
            " `flashwire lines --json` and try again",
            file=sys.stderr,
        )
    elif refusal.status in {429, 503} and getattr(args, "idempotency_key", None):
        print(
            f"flashwire: retry later with --idempotency-key {args.idempotency_key}: the action is then"
            " taken at most once",
            file=sys.stderr,
        )


def _run_api(args: argparse.Namespace, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    """`api_request`, with a refusal or an unreachable server reported and turned into SystemExit(1)."""
    try:
        return api_request(args, method, path, body)
    except ApiRefusal as refusal:
        _report_refusal(args, refusal)
    except Unreachable as exc:
        print(f"flashwire: {exc}", file=sys.stderr)
        if method != "GET":
            print(
                "flashwire: the action may or may not have been taken; retry with"
                f" --idempotency-key {args.idempotency_key} to take it at most once",
                file=sys.stderr,
            )
    raise SystemExit(EXIT_REFUSED)


def _line_path(line_id: str, action: str) -> str:
    return f"/api/v1/lines/{urllib.parse.quote(line_id, safe='')}/{action}"


def _topics(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def cmd_post(args: argparse.Namespace) -> int:
    """Post a line through the API, like the desk page does."""
    body: dict[str, Any] = {"edition": args.edition, "text": " ".join(args.text), "urgency": args.urgency}
    if args.topics:
        body["topics"] = _topics(args.topics)
    if args.link:
        body["url"] = args.link
    if args.expires_in:
        body["expires_at"] = (datetime.now(UTC) + _parse_duration(args.expires_in)).isoformat()
    result = _run_api(args, "POST", "/api/v1/lines", body)
    print(f"posted {result['id']} to {result['edition']} (desk {result['desk_id']})")
    return 0


def cmd_correct(args: argparse.Namespace) -> int:
    """Correct a line: a new version replaces it in every ticker; only what is given changes."""
    body: dict[str, Any] = {}
    if args.text:
        body["text"] = " ".join(args.text)
    if args.urgency:
        body["urgency"] = args.urgency
    if args.topics is not None:
        body["topics"] = _topics(args.topics)
    if args.link:
        body["url"] = args.link
    elif args.no_link:
        body["url"] = None
    if not body:
        args.parser.error("nothing to correct: give the new TEXT, --urgency, --topics, --link or --no-link")
    result = _run_api(args, "POST", _line_path(args.line_id, "corrections"), body)
    changed = ", ".join(result.get("changes", {})) or "nothing"
    print(f"corrected {result['id']} ({changed}) at {local_time(result['accepted_at'])}")
    return 0


def cmd_retract(args: argparse.Namespace) -> int:
    """Retract (kill) a line: every reader showing it removes it."""
    body = {"reason": args.reason} if args.reason else None
    result = _run_api(args, "POST", _line_path(args.line_id, "retraction"), body)
    print(f"retracted {result['id']} at {local_time(result['accepted_at'])}")
    return 0


def cmd_pin(args: argparse.Namespace) -> int:
    """Pin or unpin a line (`args.action`): a pinned line leads its edition's ticker."""
    result = _run_api(args, "POST", _line_path(args.line_id, args.action), None)
    print(f"{args.action}ned {result['id']} at {local_time(result['accepted_at'])}")
    return 0


def format_line_row(line: dict[str, Any]) -> str:
    """One live line for `flashwire lines`: id, publication time in the local zone, urgency, a pin
    mark, text (control and bidi-override characters escaped)."""
    pinned = "PINNED" if line.get("pinned") else ""
    return (
        f"{line['id']}  {local_time(line['published_at'])}  {line['urgency'].upper():<7} "
        f"{pinned:<6} {_printable(line['text'])}"
    )


def cmd_lines(args: argparse.Namespace) -> int:
    """List an edition's live lines, newest first (or the API's answer as JSON with --json)."""
    edition = urllib.parse.quote(args.edition, safe="")
    result = _run_api(args, "GET", f"/api/v1/editions/{edition}/lines")
    if args.json:
        print(json.dumps(result, ensure_ascii=False))
        return 0
    lines = sorted(result["lines"], key=lambda line: str(line["published_at"]), reverse=True)
    if not lines:
        print(f"flashwire: no live lines in {result['edition']}", file=sys.stderr)
    for line in lines:
        print(format_line_row(line))
    return 0


def _format_event(event: dict[str, Any]) -> str:
    kind = event["type"]
    edition = event.get("edition", "")
    if kind == "snapshot":
        reset = " (reset)" if event.get("reset") else ""
        return f"[{edition}] snapshot{reset}: {len(event['lines'])} live lines at {event['cursor']}"
    line = event.get("line", {})
    stamp = time.strftime("%H:%M:%S")
    if kind == "update":
        label = {"correction": "CORRECTED", "pin": "PINNED", "unpin": "UNPINNED", "expiry": "EXPIRY"}.get(
            event.get("change", ""), "UPDATED"
        )
    else:
        label = {"line": "NEW", "retract": "RETRACTED"}.get(kind, kind)
    urgency = line.get("urgency", "").upper()
    return f"{stamp} [{edition}] {label:<9} {urgency:<7} {line.get('text', '')}  ({event.get('cursor')})"


def _report_retry(retry: Retry) -> None:
    """Say on stderr that the ticker is not live, why, and when the next attempt is made."""
    if retry.was_live:
        what = f"connection lost ({retry.reason})"
    elif retry.attempt == 1:
        what = f"not connected ({retry.reason})"
    else:
        what = f"still not connected (attempt {retry.attempt}: {retry.reason})"
    print(
        f"flashwire: {what}; reconnecting in {retry.delay_s:.1f} s",
        file=sys.stderr,
        flush=True,
    )


def _report_live(cursors: dict[str, str]) -> None:
    """Say on stderr that the ticker is live again after a reported loss, and from which cursors
    (those of the last events seen, sent as `since`) it resumed."""
    resumed = ", ".join(f"{e}:{c}" for e, c in sorted(cursors.items())) or "none yet: a fresh snapshot"
    print(
        f"flashwire: connection back; resumed from the last cursors ({resumed})", file=sys.stderr, flush=True
    )


async def _listen(args: argparse.Namespace) -> None:
    from flashwire.client import TickerClient
    from flashwire.core.cursors import parse_since

    base = _server(args).replace("http://", "ws://", 1).replace("https://", "wss://", 1)
    editions = [e for e in (args.editions or "").split(",") if e]
    since: dict[str, str] | None = None
    if args.since:
        try:
            since = parse_since(args.since, editions)
        except ValueError as exc:
            raise SystemExit(
                f"flashwire: --since: {exc} (a bare cursor needs exactly one --editions)"
            ) from None
    client = TickerClient(
        f"{base}/ws",
        editions=editions,
        topics=[t for t in (args.topics or "").split(",") if t],
        min_urgency=args.min_urgency,
        since=since,
        on_retry=_report_retry,
    )
    # Called before the first event of the new connection is taken in: the cursors are still the
    # ones the connection resumed from.
    client.on_live = lambda: _report_live(client.cursors)
    count = 0
    async with contextlib.aclosing(client.events()) as events:
        async for event in events:
            if args.json:
                print(json.dumps(event, ensure_ascii=False), flush=True)
            elif event["type"] == "snapshot":
                print(_format_event(event), flush=True)
                for line in event["lines"]:
                    urgency = line["urgency"].upper()
                    print(f"{'':11}[{event['edition']}] LIVE      {urgency:<7} {line['text']}", flush=True)
            else:
                print(_format_event(event), flush=True)
            if event["type"] != "snapshot":
                count += 1
                if args.count and count >= args.count:
                    return


def cmd_listen(args: argparse.Namespace) -> int:
    """Print the live ticker, resuming after dropped connections."""
    from flashwire.client import SubscriptionRefused

    try:
        asyncio.run(_listen(args))
    except KeyboardInterrupt:
        return 0
    except SubscriptionRefused as exc:
        print(f"flashwire: {exc}", file=sys.stderr)
        return 1
    return 0


async def _audit_token_change(
    redis: Any, settings: Settings, action: str, before: TokenRecord | None, after: TokenRecord
) -> None:
    """Token changes made from the shell are audited like those made through the API."""
    from flashwire.core.keys import Keys
    from flashwire.core.models import Actor
    from flashwire.service import audit

    operator = Actor(name=os.environ.get("USER") or "operator", role="operator (cli)")
    entry = audit.token_change(operator, action, before, after)
    await audit.record(redis, Keys(settings.key_prefix), entry)


def _printable(text: str) -> str:
    """`text` safe to print on a terminal: control, format, line-separator, surrogate, private-use
    and unassigned characters (ESC of an ANSI sequence, bidi overrides, …) shown as \\x1b, \\u202e.

    Token names are checked by the free-text rule now (flashwire/core/text.py), but a name stored
    before it existed must not recolour, rewrite or reorder an operator's terminal either.
    """
    import unicodedata

    def safe(char: str) -> str:
        if unicodedata.category(char) in {"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"}:
            return char.encode("unicode_escape").decode("ascii")
        return char

    return "".join(safe(char) for char in text)


async def _token_command(args: argparse.Namespace) -> int:
    from redis.asyncio import Redis

    from flashwire.core.keys import Keys
    from flashwire.core.redis_connect import RedisConnector
    from flashwire.service.tokens import TokenStore

    settings = _settings()
    connector = RedisConnector(settings)
    redis = connector.primary(Redis)
    store = TokenStore(redis, Keys(settings.key_prefix))
    try:
        if args.token_command == "create":
            editions = [e.strip() for e in args.editions.split(",") if e.strip()]
            unknown = [e for e in editions if e != "*" and e not in settings.editions]
            if unknown:
                print(f"flashwire: unknown edition(s) {', '.join(unknown)}", file=sys.stderr)
                return 2
            secret, record = await store.create(name=args.name, role=args.role, editions=editions)
            await _audit_token_change(redis, settings, "token-create", None, record.record())
            print(secret)
            print(
                f"created token {record.id} for {record.name} ({record.role}; {', '.join(record.editions)})."
                " The secret is shown only once.",
                file=sys.stderr,
            )
        elif args.token_command == "list":
            for token in await store.list():
                state = f"revoked {token.revoked_at}" if token.revoked_at else "active"
                scope = _printable(",".join(token.editions))
                print(
                    f"{_printable(token.id)}  {_printable(token.name):<20} {_printable(token.role):<7} "
                    f"{scope:<10} created {_printable(token.created_at)}  {state}"
                )
        else:
            before = next((t.record() for t in await store.list() if t.id == args.id), None)
            if before is None or not await store.revoke(args.id):
                print(f"flashwire: no token {args.id!r}", file=sys.stderr)
                return 1
            after = next(t.record() for t in await store.list() if t.id == args.id)
            await _audit_token_change(redis, settings, "token-revoke", before, after)
            print(f"revoked {args.id}")
        return 0
    finally:
        await connector.aclose()


async def _migrate_keys() -> int:
    from redis.asyncio import Redis

    from flashwire.core.key_layout import migrate_key_layout
    from flashwire.core.keys import Keys
    from flashwire.core.redis_connect import RedisConnector

    settings = _settings()
    connector = RedisConnector(settings)
    try:
        done = await migrate_key_layout(connector.primary(Redis), Keys(settings.key_prefix))
    finally:
        await connector.aclose()
    print(f"renamed {done.renamed} key(s) to the hash-tagged layout")
    for old in done.conflicts:
        print(f"flashwire: left {old!r}: its new name exists already (resolve by hand)", file=sys.stderr)
    return 1 if done.conflicts else 0


def cmd_migrate_keys(args: argparse.Namespace) -> int:
    """Rename the keys of the untagged layout to the hash-tagged one, once, with every node and
    worker stopped (flashwire/core/key_layout.py; docs/operations.md, "Redis Cluster")."""
    return asyncio.run(_migrate_keys())


def cmd_token(args: argparse.Namespace) -> int:
    """Manage editor tokens directly in Redis (an operator's tool)."""
    try:
        return asyncio.run(_token_command(args))
    except ValueError as exc:
        print(f"flashwire: {exc}", file=sys.stderr)
        return 2


URL_REFUSED = (
    "--url is no longer accepted: it named the server, while the API's `url` is the story's link."
    " Use --server URL for the Flashwire server (default $FLASHWIRE_URL, then {default}) and"
    " --link URL for the story's link"
)


class _RefusedUrl(argparse.Action):
    """`--url` on a command that sends the token: a usage error saying what to use instead.

    Not an alias of --server here: `post --url https://example.com/story` (the story link, as the API
    names it) would send the editor's token to the story's host; refusing costs one retyped command.
    """

    def __call__(
        self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any, option: Any = None
    ) -> None:
        parser.error(URL_REFUSED.format(default=DEFAULT_URL))


class _DeprecatedUrl(argparse.Action):
    """`listen --url`: the server, as before (listen has no story link and sends no token), with a
    warning on stderr."""

    def __call__(
        self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any, option: Any = None
    ) -> None:
        print("flashwire: --url is deprecated; use --server (or FLASHWIRE_URL)", file=sys.stderr)
        namespace.server = values


def _add_server(parser: argparse.ArgumentParser, *, deprecated_url: type[argparse.Action]) -> None:
    parser.add_argument(
        "--server",
        default=os.environ.get("FLASHWIRE_URL") or DEFAULT_URL,
        metavar="URL",
        help=f"the Flashwire server (default $FLASHWIRE_URL, then {DEFAULT_URL})",
    )
    parser.add_argument("--url", action=deprecated_url, help=argparse.SUPPRESS)


def _add_editor(parser: argparse.ArgumentParser) -> None:
    """The options of a command that acts through the newsroom API with a token."""
    _add_server(parser, deprecated_url=_RefusedUrl)
    parser.add_argument("--token", help="default $FLASHWIRE_TOKEN, or the dev token of `flashwire dev`")


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number from 1, got {text!r}")
    return int(text)


def _add_line_write(parser: argparse.ArgumentParser) -> None:
    """The options of an action on one line: those of a write, and a precondition on its revision."""
    parser.add_argument("line_id", metavar="LINE_ID")
    _add_write(parser)
    parser.add_argument(
        "--if-revision",
        type=_positive,
        metavar="N",
        help="act only if the line is still at revision N (sent as If-Match); 412 otherwise."
        " Without it the action is taken whatever changed meanwhile",
    )


def _add_write(parser: argparse.ArgumentParser) -> None:
    _add_editor(parser)
    parser.add_argument(
        "--idempotency-key",
        default=f"cli-{uuid.uuid4()}",
        metavar="KEY",
        help="sent as Idempotency-Key (default: a new one per invocation); give a failed action's key"
        " again to retry it without taking it twice",
    )


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    parser = argparse.ArgumentParser(
        prog="flashwire",
        description="Real-time breaking-news push.",
        epilog="Exit status: 0 done, 1 refused by the server or not reached, 2 a usage error.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser("dev", help="embedded Redis + worker + service, for a laptop").set_defaults(func=cmd_dev)
    serve = sub.add_parser("serve", help="run a service node (uvicorn)")
    serve.add_argument("--host", default=None, help="default $FLASHWIRE_HOST or 127.0.0.1")
    serve.add_argument("--port", type=int, default=None, help="default $FLASHWIRE_PORT or 8000")
    serve.add_argument(
        "--workers",
        type=_positive,
        default=None,
        metavar="N",
        help="processes on the port, each with its own hub (default $FLASHWIRE_SERVE_WORKERS or 1)",
    )
    serve.set_defaults(func=cmd_serve)
    sub.add_parser("worker", help="run the fan-out worker (arq)").set_defaults(func=cmd_worker)

    post = sub.add_parser("post", help="post a breaking line")
    post.add_argument("text", nargs="+")
    post.add_argument("--edition", default="en")
    post.add_argument("--urgency", choices=URGENCIES, default="routine")
    post.add_argument("--topics", help="comma-separated, e.g. politics,mena")
    post.add_argument("--link", metavar="URL", help="the full story's link (the API's `url`)")
    post.add_argument("--expires-in", help="e.g. 30m, 6h")
    _add_write(post)
    post.set_defaults(func=cmd_post)

    correct = sub.add_parser("correct", help="correct a line (only what is given changes)")
    _add_line_write(correct)
    correct.add_argument("text", nargs="*", metavar="TEXT", help="the corrected text")
    correct.add_argument("--urgency", choices=URGENCIES)
    correct.add_argument("--topics", help="comma-separated; '' removes every topic")
    link = correct.add_mutually_exclusive_group()
    link.add_argument("--link", metavar="URL", help="the full story's new link")
    link.add_argument("--no-link", action="store_true", help="remove the link")
    correct.set_defaults(func=cmd_correct, parser=correct)

    retract = sub.add_parser("retract", help="retract (kill) a line: every reader removes it")
    _add_line_write(retract)
    retract.add_argument("--reason", help="a public reason, for readers' apps")
    retract.set_defaults(func=cmd_retract)

    for action, what in (("pin", "pin a line at the head of its ticker"), ("unpin", "unpin a line")):
        pin = sub.add_parser(action, help=what)
        _add_line_write(pin)
        pin.set_defaults(func=cmd_pin, action=action)

    lines = sub.add_parser("lines", help="list an edition's live lines, newest first")
    lines.add_argument("--edition", default="en")
    lines.add_argument("--json", action="store_true", help="print the API's answer as it is")
    _add_editor(lines)
    lines.set_defaults(func=cmd_lines)

    listen = sub.add_parser("listen", help="print the live ticker")
    listen.add_argument("--editions", help="comma-separated; default all")
    listen.add_argument("--topics")
    listen.add_argument("--min-urgency", choices=URGENCIES)
    listen.add_argument("--since", help="resume from cursors: en:<cursor>,ar:<cursor>")
    listen.add_argument("--count", type=int, default=0, help="exit after this many events")
    listen.add_argument("--json", action="store_true", help="print the raw protocol messages")
    _add_server(listen, deprecated_url=_DeprecatedUrl)
    listen.set_defaults(func=cmd_listen)

    token = sub.add_parser("token", help="manage editor tokens (directly in Redis)")
    token_sub = token.add_subparsers(dest="token_command", required=True)
    create = token_sub.add_parser("create")
    create.add_argument("--name", required=True)
    create.add_argument("--role", choices=["editor", "chief", "admin", "partner"], default="editor")
    create.add_argument("--editions", required=True, help="comma-separated, or '*' for all")
    token_sub.add_parser("list")
    revoke = token_sub.add_parser("revoke")
    revoke.add_argument("id")
    token.set_defaults(func=cmd_token)

    sub.add_parser(
        "migrate-keys",
        help="rename keys of the untagged layout to the hash-tagged one (run once, all stopped)",
    ).set_defaults(func=cmd_migrate_keys)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `flashwire` console script."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # A line's words may come on both sides of options (`correct en-… --urgency flash New text`):
    # argparse gives the positionals after the first option back as unrecognised.
    if extra and args.command in {"post", "correct"} and not any(word.startswith("-") for word in extra):
        args.text.extend(extra)
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return int(args.func(args))
    except SettingsError as exc:
        print(f"flashwire: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # The reader of our output went away (`flashwire lines | head -3`): stop quietly, as
        # Unix tools do (https://docs.python.org/3/library/signal.html#note-on-sigpipe).
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, a shell's status for a command ended by a closed pipe


if __name__ == "__main__":
    sys.exit(main())
