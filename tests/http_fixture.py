"""A local HTTP server for download tests: ranges honoured or not, a transfer cut short."""

from __future__ import annotations

import http.server
import threading

from comm_repro import download


class Server:
    """A local HTTP server of ``payload`` at ``url`` (ending in ``name``); ``ranges``: whether
    it honours Range; ``cut``: the next GET sends only that many bytes of its body, then closes
    the connection. ``requests``: the Range header of each GET."""

    def __init__(self, payload: bytes, ranges: bool = True, name: str = "file.bin"):
        self.payload, self.ranges, self.cut, self.requests = payload, ranges, None, []
        self.asked: list[str] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                server.requests.append(self.headers.get("Range"))
                data, start = server.payload, 0
                wanted = self.headers.get("Range")
                if wanted and server.ranges:
                    start = int(wanted.removeprefix("bytes=").rstrip("-"))
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                body = data[start:]
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if server.cut is not None:
                    body, server.cut = body[: server.cut], None
                    self.close_connection = True
                self.wfile.write(body)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/{name}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()

    def transport(self, url, output, progress):
        """A download transport (``download.fetch``'s) that fetches this server's payload
        whatever ``url`` says; the urls asked for are kept in ``asked``."""
        self.asked.append(url)
        return download.http_range_transport(self.url, output, progress, timeout=10)
