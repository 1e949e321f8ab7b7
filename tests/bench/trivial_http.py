"""The gateway benchmark's floor: the least an HTTP/1.1 server on asyncio can do per MCP-shaped POST.

`python trivial_http.py PORT` serves 127.0.0.1:PORT until killed. It parses just enough HTTP (request line,
Content-Length, keep-alive) to answer the bench's clients: a request with an `id` gets a fixed `tools/call
echo` result as one JSON body (200), a notification 202, a DELETE 200; every answer carries an
`Mcp-Session-Id`, so the clients' handshake works unchanged. No JSON parsing, no forwarding: the same
interpreter and event loop as the runner, minus everything the runner does, so "added p50 over this floor"
is the runner's own work (SPEC §13 "p50 within 200 µs of a trivial HTTP server").
"""

from __future__ import annotations

import asyncio
import json
import sys

RESULT = json.dumps({"jsonrpc": "2.0", "id": 1, "result": {
    "protocolVersion": "2025-06-18", "capabilities": {"tools": {}}, "serverInfo": {"name": "floor", "version": "0"},
    "content": [{"type": "text", "text": "Echo: bench"}]}}).encode()
SESSION = b"Mcp-Session-Id: floor\r\n"


def _reply(status: bytes, body: bytes) -> bytes:
    return (b"HTTP/1.1 " + status + b"\r\nContent-Type: application/json\r\n" + SESSION
            + b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)


OK = _reply(b"200 OK", RESULT)
ACCEPTED = _reply(b"202 Accepted", b"")
DELETED = _reply(b"200 OK", b"")


class Floor(asyncio.Protocol):
    """One connection: requests parsed from a buffer, answered in order."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while (end := self.buffer.find(b"\r\n\r\n")) >= 0:
            head = self.buffer[:end].lower()
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name == b"content-length":
                    length = int(value)
            if len(self.buffer) < end + 4 + length:
                return
            body = self.buffer[end + 4:end + 4 + length]
            self.buffer = self.buffer[end + 4 + length:]
            if head.startswith(b"delete"):
                self.transport.write(DELETED)
            else:
                self.transport.write(OK if b'"id"' in body else ACCEPTED)


async def main(port: int) -> None:
    server = await asyncio.get_running_loop().create_server(Floor, "127.0.0.1", port)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
