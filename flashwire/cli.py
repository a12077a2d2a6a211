"""The `flashwire` command: dev, serve, worker, post, listen, token."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from flashwire.core.settings import Settings, SettingsError

if TYPE_CHECKING:
    import uvicorn

    from flashwire.client import Retry
    from flashwire.core.models import TokenRecord

DEFAULT_URL = "http://127.0.0.1:8000"


def _settings() -> Settings:
    env = dict(os.environ)
    if not env.get("REDIS_URL"):
        from flashwire.dev.stack import data_dir

        dev_url = data_dir() / "redis-url"
        if dev_url.exists():
            env["REDIS_URL"] = dev_url.read_text().strip()
    return Settings.from_env(env)


def server_config(settings: Settings, host: str, port: int, *, access_log: bool = True) -> uvicorn.Config:
    """uvicorn's configuration for one service node: the node's own HTTP protocol, which bounds
    sockets, request heads and the time to send them, and its WebSocket protocol, uvicorn's
    websockets-sansio one (what the direct frame writes rely on, docs/architecture.md) with a send
    budget for pongs (service/server_limits.py, service/ws_protocol.py); uvicorn's own limits and
    the trusted proxies (`edge_options`, which explains each); protocol pings every heartbeat, no
    compression, 64 KiB messages at most, our logging (log_config=None). Also used by bench/."""
    import uvicorn

    from flashwire.service.app import create_app
    from flashwire.service.server_limits import edge_options, protocol_classes

    http_protocol, ws_protocol = protocol_classes(settings)
    return uvicorn.Config(
        create_app(settings),
        host=host,
        port=port,
        http=http_protocol,
        ws=ws_protocol,
        **edge_options(settings),
        ws_ping_interval=settings.heartbeat_s,
        ws_ping_timeout=settings.heartbeat_s,
        ws_per_message_deflate=False,
        ws_max_size=64 * 1024,
        lifespan="on",
        log_config=None,
        access_log=access_log,
        timeout_graceful_shutdown=5,
    )


def cmd_serve(args: argparse.Namespace) -> int:
    """Run one service node under uvicorn."""
    import uvicorn

    from flashwire.core.logs import configure_logging
    from flashwire.service.connection_log import silence_server_lines

    settings = Settings.from_env()
    host = args.host or settings.host
    port = settings.port if args.port is None else args.port
    # Our handler for every logger, uvicorn's included (log_config=None below): one format, text
    # or JSON. Reader connections get one line each from the reader endpoints (service/ws.py, sse.py);
    # uvicorn's access and handshake lines for them are dropped, other requests keep theirs.
    configure_logging("service", settings.log_format)
    silence_server_lines()
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


def cmd_post(args: argparse.Namespace) -> int:
    """Post a line through the API, like the desk page does."""
    body: dict[str, Any] = {"edition": args.edition, "text": " ".join(args.text), "urgency": args.urgency}
    if args.topics:
        body["topics"] = [t.strip() for t in args.topics.split(",") if t.strip()]
    if args.link:
        body["url"] = args.link
    if args.expires_in:
        body["expires_at"] = (datetime.now(UTC) + _parse_duration(args.expires_in)).isoformat()
    headers = {"Authorization": f"Bearer {_token(args)}", "Content-Type": "application/json"}
    if args.idempotency_key:
        headers["Idempotency-Key"] = args.idempotency_key
    request = urllib.request.Request(
        f"{args.url.rstrip('/')}/api/v1/lines", data=json.dumps(body).encode(), headers=headers, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            result = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        detail = json.loads(exc.read() or b"{}").get("error", {})
        field = f" [{detail['field']}]" if "field" in detail else ""
        print(f"refused ({exc.code}){field}: {detail.get('message', exc.reason)}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"flashwire: cannot reach {args.url}: {exc}", file=sys.stderr)
        return 1
    print(f"posted {result['id']} to {result['edition']} (desk {result['desk_id']})")
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


def _report_live() -> None:
    """Say on stderr that the ticker is live again after a reported loss."""
    print("flashwire: connection back; resumed from the last cursors", file=sys.stderr, flush=True)


async def _listen(args: argparse.Namespace) -> None:
    from flashwire.client import TickerClient
    from flashwire.core.cursors import parse_since

    base = args.url.rstrip("/").replace("http://", "ws://").replace("https://", "wss://")
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
        on_live=_report_live,
    )
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
    from flashwire.service.tokens import TokenStore

    settings = _settings()
    redis = Redis.from_url(settings.redis_url)
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
        await redis.aclose()


def cmd_token(args: argparse.Namespace) -> int:
    """Manage editor tokens directly in Redis (an operator's tool)."""
    try:
        return asyncio.run(_token_command(args))
    except ValueError as exc:
        print(f"flashwire: {exc}", file=sys.stderr)
        return 2


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    parser = argparse.ArgumentParser(prog="flashwire", description="Real-time breaking-news push.")
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser("dev", help="embedded Redis + worker + service, for a laptop").set_defaults(func=cmd_dev)
    serve = sub.add_parser("serve", help="run a service node (uvicorn)")
    serve.add_argument("--host", default=None, help="default $FLASHWIRE_HOST or 127.0.0.1")
    serve.add_argument("--port", type=int, default=None, help="default $FLASHWIRE_PORT or 8000")
    serve.set_defaults(func=cmd_serve)
    sub.add_parser("worker", help="run the fan-out worker (arq)").set_defaults(func=cmd_worker)

    post = sub.add_parser("post", help="post a breaking line")
    post.add_argument("text", nargs="+")
    post.add_argument("--edition", default="en")
    post.add_argument("--urgency", choices=["flash", "urgent", "routine"], default="routine")
    post.add_argument("--topics", help="comma-separated, e.g. politics,mena")
    post.add_argument("--link", help="URL of the full story")
    post.add_argument("--expires-in", help="e.g. 30m, 6h")
    post.add_argument("--idempotency-key")
    post.add_argument("--token", help="default $FLASHWIRE_TOKEN, or the dev token")
    post.add_argument("--url", default=os.environ.get("FLASHWIRE_URL", DEFAULT_URL))
    post.set_defaults(func=cmd_post)

    listen = sub.add_parser("listen", help="print the live ticker")
    listen.add_argument("--editions", help="comma-separated; default all")
    listen.add_argument("--topics")
    listen.add_argument("--min-urgency", choices=["flash", "urgent", "routine"])
    listen.add_argument("--since", help="resume from cursors: en:<cursor>,ar:<cursor>")
    listen.add_argument("--count", type=int, default=0, help="exit after this many events")
    listen.add_argument("--json", action="store_true", help="print the raw protocol messages")
    listen.add_argument("--url", default=os.environ.get("FLASHWIRE_URL", DEFAULT_URL))
    listen.set_defaults(func=cmd_listen)

    token = sub.add_parser("token", help="manage editor tokens")
    token_sub = token.add_subparsers(dest="token_command", required=True)
    create = token_sub.add_parser("create")
    create.add_argument("--name", required=True)
    create.add_argument("--role", choices=["editor", "chief", "admin"], default="editor")
    create.add_argument("--editions", required=True, help="comma-separated, or '*' for all")
    token_sub.add_parser("list")
    revoke = token_sub.add_parser("revoke")
    revoke.add_argument("id")
    token.set_defaults(func=cmd_token)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `flashwire` console script."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except SettingsError as exc:
        print(f"flashwire: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
