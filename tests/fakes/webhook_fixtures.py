"""A real HTTP endpoint on 127.0.0.1 for ALERT_WEBHOOK_URL: what the trader's phone would receive."""
from __future__ import annotations

import http.server
import json
import threading

import pytest


@pytest.fixture
def webhook_server():
    """Yields (base url, received): each POST as (path, JSON body), in arrival order."""
    received: list[tuple[str, dict]] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        disable_nagle_algorithm = True  # headers and body are two writes: no 40 ms delayed-ACK wait
        def do_POST(self):  # noqa: N802
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append((self.path, json.loads(body)))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", received
    server.shutdown()
    server.server_close()
