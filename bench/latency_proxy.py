"""A TCP relay on 127.0.0.1 that holds every request for a fixed delay: a Hub across a LAN.

    .venv/bin/python bench/latency_proxy.py UPSTREAM_PORT DELAY_MS    # prints the port it listens on

HTTP/1.1 clients without pipelining send one request and wait for its response, so each burst of
bytes from the client is a request: the relay sleeps `DELAY_MS` before forwarding it, and relays
responses at once. One asyncio loop, no HTTP parsing: the relay's own CPU per request is a few
tens of microseconds, so the benchmark measures the client and the delay, not the proxy. (The
recording proxy of the tests, tests/harness/http_proxy.py, parses HTTP and costs far more.)
"""

from __future__ import annotations

import asyncio
import contextlib
import sys


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay_s: float) -> None:
    try:
        while data := await reader.read(256 * 1024):
            if delay_s:
                await asyncio.sleep(delay_s)
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()


async def serve(upstream_port: int, delay_s: float) -> None:
    async def connection(client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", upstream_port)
        await asyncio.gather(
            pipe(client_reader, upstream_writer, delay_s),  # requests: held for the delay
            pipe(upstream_reader, client_writer, 0.0),  # responses: at once
        )

    server = await asyncio.start_server(connection, "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    upstream_port, delay_ms = int(sys.argv[1]), float(sys.argv[2])
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(upstream_port, delay_ms / 1000))


if __name__ == "__main__":
    main()
