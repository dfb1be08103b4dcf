"""A loopback HTTP server for download tests: Range and If-Range requests, ETags, cut-off transfers."""

from __future__ import annotations

import threading
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Files:
    """What the server serves, and how it misbehaves."""

    def __init__(self) -> None:
        self.content: dict[str, bytes] = {}
        self.cut_after: dict[str, int] = {}   # path -> bytes sent before the first transfer breaks
        self.chunked_cut_after: dict[str, int] = {}   # the same, in a chunked answer that stops mid-chunk
        self.status: dict[str, int] = {}      # path -> an error status to answer with
        self.requests: list[tuple[str, str | None]] = []  # (path, Range header)
        self.validators = True                # send an ETag, and honour If-Range


def make_handler(files: Files):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):  # keep test output clean
            pass

        def do_HEAD(self):
            files.requests.append((self.path, "HEAD"))
            if self.path not in files.content:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(files.content[self.path])))
            self.end_headers()

        def do_GET(self):
            files.requests.append((self.path, self.headers.get("Range")))
            if self.path in files.status:
                self.send_error(files.status[self.path])
                return
            body = files.content.get(self.path)
            if body is None:
                self.send_error(404)
                return
            start = 0
            etag = f'"{zlib.crc32(body):08x}"'
            if_range = self.headers.get("If-Range")
            if self.headers.get("Range") and (if_range is None or if_range == etag):
                start = int(self.headers["Range"].split("=")[1].split("-")[0])
                if start >= len(body):
                    self.send_error(416)
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
            else:
                self.send_response(200)
            if files.validators:
                self.send_header("ETag", etag)
            cut = files.chunked_cut_after.pop(self.path, None)
            if cut is not None:   # announce a chunk of the whole rest, send part of it, hang up
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                self.wfile.write(f"{len(body) - start:x}\r\n".encode() + body[start:cut])
                self.wfile.flush()
                self.close_connection = True
                return
            self.send_header("Content-Length", str(len(body) - start))
            self.end_headers()
            cut = files.cut_after.pop(self.path, None)
            if cut is not None:
                self.wfile.write(body[start:cut])
                self.wfile.flush()
                self.close_connection = True
                return
            self.wfile.write(body[start:])

    return Handler


class LoopbackServer:
    """``with LoopbackServer() as server: server.url('/a.zip')``."""

    def __enter__(self):
        self.files = Files()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(self.files))
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        return self

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
