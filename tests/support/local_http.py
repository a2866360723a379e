"""Small HTTP servers run from a thread of the test process on 127.0.0.1, and the request handlers the tests'
stand-ins share:

* ``QuietHandler``: HTTP/1.1 keep-alive, no request log on stderr;
* ``HeadGetHandler``: HEAD and GET answered by one ``respond(body=...)`` (HEAD sends the headers only), as
  the Hub look-alike (hub_mirror.py) and the local registry (docker_fixtures.py) need;
* ``StreamOnlyHandler``: a minimal TGI stand-in without ``/health`` and ``/info`` (every GET answers 404),
  like a server that implements only the generation routes; subclasses write ``do_POST``.

``serving(handler)`` runs one until the block ends:

    with serving(MyHandler) as url:
        ... start the gateway with ``--endpoint url`` ...
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

__all__ = ["HeadGetHandler", "QuietHandler", "StreamOnlyHandler", "serving"]


class QuietHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:  # keep test output clean
        pass


class HeadGetHandler(QuietHandler):
    def do_HEAD(self) -> None:
        self.respond(body=False)

    def do_GET(self) -> None:
        self.respond(body=True)

    def respond(self, *, body: bool) -> None:
        raise NotImplementedError


class StreamOnlyHandler(QuietHandler):
    def do_GET(self) -> None:
        self.send_response(404)
        self.send_header("content-length", "0")
        self.end_headers()


@contextlib.contextmanager
def serving(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """Serve ``handler`` on a free port of 127.0.0.1 until the block ends; yields its base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
