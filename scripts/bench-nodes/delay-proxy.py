"""A TCP proxy that delays every chunk it forwards, each way, in order:
PostgreSQL as if across a network, for scripts/bench-nodes.sh.

    python3 scripts/bench-nodes/delay-proxy.py 6543 0.0005 &
    MANDATE_TEST_DATABASE_URL=postgres://postgres@127.0.0.1:6543/test scripts/bench-nodes.sh

listens on 127.0.0.1:6543 and forwards to 127.0.0.1:5432 (the second
argument, in seconds, is the delay asked for; asyncio's timers round it up
to the millisecond, so measure the round trip it makes with `pgbench`
through it). Delays chunks, not the exchange: a pipelined batch still
crosses once each way.
"""

import asyncio
import sys
import time

LISTEN = int(sys.argv[1])
DELAY = float(sys.argv[2])
UPSTREAM = ("127.0.0.1", 5432)


async def pipe(reader, writer):
    due = asyncio.Queue()

    async def send():
        while True:
            at, data = await due.get()
            if data is None:
                break
            wait = at - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            writer.write(data)
            await writer.drain()
        writer.close()

    sender = asyncio.create_task(send())
    while True:
        data = await reader.read(65536)
        if not data:
            await due.put((0, None))
            break
        await due.put((time.monotonic() + DELAY, data))
    await sender


async def handle(client_reader, client_writer):
    server_reader, server_writer = await asyncio.open_connection(*UPSTREAM)
    await asyncio.gather(
        pipe(client_reader, server_writer),
        pipe(server_reader, client_writer),
        return_exceptions=True,
    )


async def main():
    server = await asyncio.start_server(handle, "127.0.0.1", LISTEN)
    async with server:
        await server.serve_forever()


asyncio.run(main())
