"""An OpenAI-compatible chat endpoint that answers instantly with canned
bodies, on a bare asyncio protocol (uvloop when present).

For `factory bench overhead`: the server must cost far less than the client
it measures, so it parses only what it needs (Content-Length and `"n"`) and
writes precomputed responses. Run it in its own process:
`python -m factory.bench.instant_openai --port 8000`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re

_N = re.compile(rb'"n"\s*:\s*(\d+)')
_TEXT = "<think>\nQuick check of the arithmetic.\n</think>\n\nThe answer is $\\boxed{42}$."


def _response(n: int) -> bytes:
    body = json.dumps({
        "id": "instant", "object": "chat.completion", "model": "fake",
        "choices": [{"index": i, "message": {"role": "assistant", "content": _TEXT}, "finish_reason": "stop"}
                    for i in range(n)],
        "usage": {"prompt_tokens": 20, "completion_tokens": 12 * n},
    }).encode()
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)
    return head + body


_CACHE = {n: _response(n) for n in range(1, 17)}
_HEALTH = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


class _Protocol(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport
        self.buf = b""

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buf[:end].lower()
            i = head.find(b"content-length:")
            length = int(head[i + 15 : head.find(b"\r\n", i) if head.find(b"\r\n", i) > 0 else None]) if i >= 0 else 0
            if len(self.buf) < end + 4 + length:
                return
            body = self.buf[end + 4 : end + 4 + length]
            self.buf = self.buf[end + 4 + length :]
            if head.startswith(b"get"):
                self.transport.write(_HEALTH)
                continue
            m = _N.search(body)
            n = int(m.group(1)) if m else 1
            self.transport.write(_CACHE.get(n) or _response(n))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=8000)
    args = ap.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass

    async def serve():
        server = await asyncio.get_running_loop().create_server(_Protocol, "127.0.0.1", args.port, backlog=1024)
        async with server:
            await server.serve_forever()

    asyncio.run(serve())


if __name__ == "__main__":
    main()
