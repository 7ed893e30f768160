"""A NIP-05 domain on 127.0.0.1: `/.well-known/nostr.json?name=` answered from a dict, in a thread."""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


@contextlib.contextmanager
def nip05_server(names: dict[str, str], relays: dict[str, list[str]] | None = None) -> Iterator[str]:
    """Serve `names` (name -> hex key); yields the domain (`127.0.0.1:port`)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            parts = urlsplit(self.path)
            if parts.path != "/.well-known/nostr.json":
                self.send_error(404)
                return
            name = parse_qs(parts.query).get("name", [""])[0]
            body = {"names": {name: names[name]} if name in names else {},
                    "relays": {names[name]: (relays or {}).get(name, [])} if name in names else {}}
            data = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
