"""A tiny HTTP server whose speed the tests control (run as a script, never imported by tests).

    python slow_server.py PORT MODE [ARG]

MODE stall: the server freezes for 1 s once every 2 s (answers arriving then wait until the
freeze ends), as a garbage-collection pause or a stuck disk would. MODE drift: each answer
waits ARG ms for every second since start (the server slows down steadily). MODE fixed: each
answer waits ARG ms. Every answer is 200 with the body "ok".
"""

from __future__ import annotations

import asyncio
import sys
import time

RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok"


def delay_s(mode: str, arg: float, started: float) -> float:
    elapsed = time.monotonic() - started
    if mode == "stall":
        phase = elapsed % 2.0
        return 1.0 - phase if phase < 1.0 else 0.0
    if mode == "drift":
        return arg * elapsed / 1000.0
    return arg / 1000.0


async def main(port: int, mode: str, arg: float) -> None:
    started = time.monotonic()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                if length:
                    await reader.readexactly(length)
                wait = delay_s(mode, arg, started)
                if wait > 0:
                    await asyncio.sleep(wait)
                writer.write(RESPONSE)
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", port, backlog=1024)
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), sys.argv[2], float(sys.argv[3]) if len(sys.argv) > 3 else 0))
