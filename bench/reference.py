"""The reference limit: a minimal Python fan-out server, as fast as plain Python gets.

websockets' `broadcast()` on uvloop, compression off, one XREAD reader on the
same ticker stream as Flashwire, the frame built once per event exactly like
Flashwire's. No filters, no resume, no outbox: what is left is the cost of
writing the frames. bench.fanout runs it beside the service in the same run.

With `--reuse-port`, several of these processes listen on one port (SO_REUSEPORT: the kernel
spreads the connections over them), each with its own XREAD reader: the reference for a node of
`flashwire serve --workers N` (`bench.fanout --reference-processes N`).
"""

from __future__ import annotations

import argparse
import resource

import orjson
import uvloop
from redis.asyncio import Redis
from websockets.asyncio.server import ServerConnection, broadcast, serve

CONNECTIONS: set[ServerConnection] = set()


async def handler(connection: ServerConnection) -> None:
    CONNECTIONS.add(connection)
    try:
        await connection.send(orjson.dumps({"type": "snapshot", "edition": "en", "lines": []}).decode())
        await connection.wait_closed()
    finally:
        CONNECTIONS.discard(connection)


async def reader(redis_url: str, stream: str, edition: str) -> None:
    redis = Redis.from_url(redis_url)
    newest = await redis.xrevrange(stream, count=1)
    position = newest[0][0].decode() if newest else "0-0"
    while True:
        response = await redis.xread({stream: position}, block=5000, count=1000)
        for _, entries in response or []:
            for entry_id, fields in entries:
                position = entry_id.decode()
                body = fields[b"d"].decode()
                frame = f'{{"type":"{fields[b"t"].decode()}","edition":"{edition}","cursor":"{position}",{body[1:]}'
                broadcast(CONNECTIONS, frame)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--redis", required=True)
    parser.add_argument("--edition", default="en")
    parser.add_argument("--reuse-port", action="store_true", help="share the port with other processes")
    args = parser.parse_args()
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 20_000), hard))
    async with serve(
        handler,
        "127.0.0.1",
        args.port,
        compression=None,
        ping_interval=None,
        max_queue=1,
        reuse_port=args.reuse_port or None,
    ):
        print("ready", flush=True)
        await reader(args.redis, f"{{fw}}:ticker:{args.edition}", args.edition)


if __name__ == "__main__":
    uvloop.run(main())
