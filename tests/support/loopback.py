"""One raw client connection to a loopback server, for the tests of the endpoint's HTTP layer
(tests/unit/test_http_wire.py, tests/unit/test_http_wire_fuzz.py): the test controls every byte it sends.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@contextlib.asynccontextmanager
async def connected(serve: Handler, finished: asyncio.Event,
                    bound_s: float) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    """A loopback listener running `serve` for each connection, and one raw client connection to it; on leaving,
    the connection is closed and the handler has set `finished`. Every wait is bounded by `bound_s`."""
    listener = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        async with asyncio.timeout(bound_s):
            reader, writer = await asyncio.open_connection("127.0.0.1", listener.sockets[0].getsockname()[1])
        try:
            yield reader, writer
        finally:
            writer.close()
            async with asyncio.timeout(bound_s):
                await finished.wait()
    finally:
        listener.close()
        await listener.wait_closed()
