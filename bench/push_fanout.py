"""Time for a flash line to be handed to N push targets, by the number of worker processes.

    python -m bench.push_fanout --targets 100000 --workers 1,2 [--platform webpush] [--record]

For each worker count, in one run (so the figures compare on the same machine, at the same
moment): a private redis-server, the local push service of the platform (tests/push_services/,
started with --fast: it checks each request's authentication and headers but does not decrypt
the Web Push bodies, so that the stand-in is not what is measured), W `flashwire worker`
processes and one `flashwire serve`; N registrations (through the registry, the code behind the
API); then one flash line is posted through the API and the run measures the time from the POST
to the moment every target is settled (accepted by the push service, by the reach counts in
Redis), and the sends per second over the fan-out. Loopback only, bounded in time.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
from redis.asyncio import Redis

from flashwire.core.keys import Keys
from flashwire.core.push_models import parse_registration
from flashwire.core.push_registry import PushRegistry
from flashwire.core.settings import Settings
from flashwire.dev.ports import free_port
from flashwire.dev.redis_server import RedisProcess
from flashwire.service.tokens import TokenStore
from tests.push_services import PushService
from tests.push_stack import PushServices, registration_body

DEADLINE_S = 600


@dataclass
class Result:
    workers: int
    targets: int
    seconds: float
    accepted: int

    @property
    def per_second(self) -> float:
        return self.accepted / self.seconds if self.seconds else 0.0


def _spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        args, env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
    )


async def _register(
    redis_url: str, settings: Settings, platform_name: str, targets: list[dict[str, object]]
) -> None:
    redis = Redis.from_url(redis_url)
    registry = PushRegistry(redis, Keys(settings.key_prefix))
    try:
        for start in range(0, len(targets), 500):
            await asyncio.gather(
                *(
                    registry.register(
                        parse_registration(registration_body(platform_name, target), settings),
                        client=f"198.51.100.{i % 250}",
                        now_ms=int(time.time() * 1000),
                        max_per_client=10**9,
                    )
                    for i, target in enumerate(targets[start : start + 500])
                )
            )
    finally:
        await redis.aclose()


async def _token(redis_url: str, settings: Settings) -> str:
    redis = Redis.from_url(redis_url)
    try:
        secret, _ = await TokenStore(redis, Keys(settings.key_prefix)).create(
            name="bench", role="editor", editions=["en"]
        )
        return secret
    finally:
        await redis.aclose()


async def _settled(redis_url: str, keys: Keys, line_id: str) -> tuple[int, int]:
    redis = Redis.from_url(redis_url)
    try:
        raw = await redis.hgetall(keys.push_reach(line_id))
    finally:
        await redis.aclose()
    fields = {k.decode(): int(v) for k, v in raw.items()}
    done = sum(v for k, v in fields.items() if k.startswith("1:line:") and k.split(":")[2] in (
        "accepted", "gone", "failed", "capped", "quiet", "expired", "superseded"))  # fmt: skip
    return done, fields.get("1:line:accepted", 0)


def run_once(workers: int, count: int, platform_name: str, folder: Path) -> Result:
    folder.mkdir(parents=True)
    redis = RedisProcess(folder / "redis", appendonly=False).start()
    processes: list[subprocess.Popen[bytes]] = []
    services = PushServices.start(folder / "push", only=platform_name, fast=True)
    try:
        env = {
            **os.environ,
            "REDIS_URL": redis.url,
            **services.env,
            "FLASHWIRE_POST_RATE_LIMIT": "1000/second",
            "FLASHWIRE_PUSH_HOURLY_CAP": "1000",
        }
        settings = Settings.from_env(env)
        service: PushService = getattr(services, platform_name)
        targets = service.targets(count)
        asyncio.run(_register(redis.url, settings, platform_name, targets))
        for index in range(workers):
            processes.append(
                _spawn([sys.executable, "-m", "flashwire.cli", "worker"], env, folder / f"worker-{index}.log")
            )
        port = free_port()
        node = _spawn(
            [sys.executable, "-m", "flashwire.cli", "serve", "--port", str(port)], env, folder / "service.log"
        )
        processes.append(node)
        url = f"http://127.0.0.1:{port}"
        for _ in range(300):
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        time.sleep(2)  # the workers' planners join the tickers' group
        token = asyncio.run(_token(redis.url, settings))
        started = time.monotonic()
        response = httpx.post(
            f"{url}/api/v1/lines",
            json={
                "edition": "en",
                "text": "Bench: a flash line for every registered target",
                "urgency": "flash",
            },
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
        )
        response.raise_for_status()
        line_id = response.json()["id"]
        keys = Keys(settings.key_prefix)
        while time.monotonic() - started < DEADLINE_S:
            done, accepted = asyncio.run(_settled(redis.url, keys, line_id))
            if done >= count:
                return Result(workers, count, time.monotonic() - started, accepted)
            time.sleep(0.1)
        raise SystemExit(f"not settled within {DEADLINE_S} s: {done} of {count}")
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
        services.stop()
        redis.stop()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--targets", type=int, default=100_000)
    parser.add_argument("--workers", default="1,2", help="worker process counts to compare, e.g. 1,2")
    parser.add_argument("--platform", default="webpush", choices=["webpush", "apns", "fcm"])
    parser.add_argument("--record", action="store_true", help="append the table to docs/benchmarks.md")
    args = parser.parse_args()
    results: list[Result] = []
    with tempfile.TemporaryDirectory() as tmp:
        for workers in (int(w) for w in args.workers.split(",")):
            result = run_once(workers, args.targets, args.platform, Path(tmp) / f"w{workers}")
            print(
                f"{workers} worker(s): {result.seconds:.1f} s, {result.per_second:,.0f} sends/s", flush=True
            )
            results.append(result)
    base = results[0].seconds
    lines = [
        f"### `python -m bench.push_fanout --targets {args.targets} --workers {args.workers} --platform {args.platform}`",
        "",
        f"{platform.node()} ({os.cpu_count()} cores), {time.strftime('%Y-%m-%d')}; the local {args.platform}"
        " push service with --fast (authentication and headers checked, bodies not decrypted).",
        "",
        "| workers | targets | POST → every target settled | accepted | sends/s | time vs first row |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        lines.append(
            f"| {r.workers} | {r.targets:,} | {r.seconds:.1f} s | {r.accepted:,} | {r.per_second:,.0f} |"
            f" {r.seconds / base:.2f}× |"
        )
    table = "\n".join(lines) + "\n"
    print(table)
    if args.record:
        with (Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md").open("a") as doc:
            doc.write("\n" + table)


if __name__ == "__main__":
    main()
