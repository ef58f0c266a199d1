"""A hostile FHIR server for tests, on a free loopback port in a thread of its own: gzip bombs,
pages whose next link points to themselves, and answers that trickle in forever.

Each behaviour is chosen by the request path's first segment (the service's `fhirServer` is simply
pointed at e.g. `http://127.0.0.1:PORT/bomb`), so one server serves every test. `started` is set
whenever a response body begins, so a test can act while an answer is still arriving.
"""

from __future__ import annotations

import functools
import threading
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import orjson

MB = 1024 * 1024


@functools.cache
def gzip_bomb(decoded_bytes: int = 1024 * MB) -> bytes:
    """A valid gzip stream that decodes to a JSON Bundle padded with `decoded_bytes` of spaces
    (about a thousand times smaller than what it decodes to).

    Made quickly: after a full flush a deflate stream refers to nothing before it, so one
    megabyte of spaces is compressed once and its compressed form repeated."""
    prefix, block, suffix = b'{"resourceType": "Bundle", "type": "searchset", "entry": [', b" " * MB, b"]}"
    deflate = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    head = deflate.compress(prefix) + deflate.flush(zlib.Z_FULL_FLUSH)
    middle = deflate.compress(block) + deflate.flush(zlib.Z_FULL_FLUSH)
    tail = deflate.compress(suffix) + deflate.flush()
    count = decoded_bytes // MB
    crc = zlib.crc32(prefix)
    for _ in range(count):
        crc = zlib.crc32(block, crc)
    crc = zlib.crc32(suffix, crc)
    size = (len(prefix) + count * MB + len(suffix)) % 2**32
    header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"
    trailer = crc.to_bytes(4, "little") + size.to_bytes(4, "little")
    return header + head + middle * count + tail + trailer


def gzip_of(data: bytes) -> bytes:
    compressor = zlib.compressobj(6, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    return compressor.compress(data) + compressor.flush()


def big_bundle(resources: int, base: str, next_url: str | None = None) -> bytes:
    """A searchset of Observations of about 1 KB each, with an optional next link."""
    entries = [
        {
            "resource": {
                "resourceType": "Observation",
                "id": f"o{i}",
                "status": "final",
                "code": {"coding": [{"system": "http://loinc.org", "code": "17861-6"}], "text": "x" * 800},
                "subject": {"reference": "Patient/p1"},
                "effectiveDateTime": "2026-01-01",
                "valueQuantity": {"value": 9.5, "unit": "mg/dL"},
            }
        }
        for i in range(resources)
    ]
    bundle: dict[str, object] = {"resourceType": "Bundle", "type": "searchset", "entry": entries}
    if next_url is not None:
        bundle["link"] = [{"relation": "next", "url": next_url}]
    return orjson.dumps(bundle)


@dataclass
class HostileServer:
    """`url` is the origin; `requests` counts the requests received."""

    url: str = ""
    requests: int = 0
    started: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    big_sent: bool = False
    stop: threading.Event = field(default_factory=threading.Event)


@contextmanager
def hostile_server(self_page_resources: int = 2000) -> Iterator[HostileServer]:
    """Serve the behaviours below until the block ends.

    - `/bomb/...`: a 1 GB gzip bomb, sent in 64 KB chunks (Content-Encoding: gzip, chunked);
    - `/loop/...`: a searchset of `self_page_resources` Observations (~1 KB each) whose next link
      is the page itself;
    - `/trickle/...`: a chunked, gzip-encoded body that never ends: small valid pieces of JSON
      whitespace, one every 20 ms (no single read ever times out);
    - `/big/...`: a gzip-encoded searchset of 20,000 Observations (~20 MB decoded) to the first
      request, and an empty one to the others: decoding that takes a while but stays under the
      caps.
    """
    state = HostileServer()
    bomb = gzip_bomb()  # made once, before any request waits for it

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _chunk(self, data: bytes) -> None:
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")

        def do_GET(self) -> None:
            state.requests += 1
            mode = urlsplit(self.path).path.strip("/").split("/")[0]
            try:
                if mode == "loop":
                    body = big_bundle(self_page_resources, state.url, next_url=f"{state.url}{self.path}")
                    self._send(body, gzip=False)
                elif mode == "big":
                    with state.lock:
                        first, state.big_sent = not state.big_sent, True
                    self._send(gzip_of(big_bundle(20_000 if first else 0, state.url)), gzip=True)
                elif mode == "bomb":
                    self._stream(iter_chunks(bomb, 64 * 1024), delay=0.0)
                elif mode == "trickle":
                    self._stream(trickle(state.stop), delay=0.02)
                else:
                    self._send(b'{"resourceType": "OperationOutcome"}', gzip=False, status=404)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the service hung up: exactly what it should do

        def _send(self, body: bytes, gzip: bool, status: int = 200) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/fhir+json")
            if gzip:
                self.send_header("Content-Encoding", "gzip")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            state.started.set()
            self.wfile.write(body)

        def _stream(self, chunks: Iterator[bytes], delay: float) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/fhir+json")
            self.send_header("Content-Encoding", "gzip")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            state.started.set()
            for chunk in chunks:
                if state.stop.is_set():
                    break
                self._chunk(chunk)
                self.wfile.flush()
                if delay:
                    time.sleep(delay)
            self.wfile.write(b"0\r\n\r\n")
            self.close_connection = True

        def log_message(self, format: str, *args: object) -> None:
            """Quiet."""

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        state.stop.set()
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def iter_chunks(data: bytes, size: int) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


def trickle(stop: threading.Event) -> Iterator[bytes]:
    """A gzip stream of a Bundle opening followed by whitespace, flushed piece by piece, forever
    (until `stop`)."""
    compressor = zlib.compressobj(6, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    yield compressor.compress(b'{"resourceType": "Bundle", "entry": [') + compressor.flush(zlib.Z_SYNC_FLUSH)
    while not stop.is_set():
        yield compressor.compress(b" " * 100) + compressor.flush(zlib.Z_SYNC_FLUSH)
