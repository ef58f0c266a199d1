"""A minimal HTTP/1.1 keep-alive client over raw sockets, for loopback benchmarking only.

Why not httpx: on a two-core machine the client shares the CPU with the server, so a client that
spends milliseconds encoding and parsing per request would distort both latency and throughput.
This one writes a prepared request and reads `Content-Length` bytes back; nothing else. It talks
to 127.0.0.1 only and every socket operation has a timeout.
"""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

LOOPBACK = "127.0.0.1"


class HttpError(Exception):
    """A response the benchmark cannot use (bad status line, no Content-Length, closed socket)."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


class Connection:
    """One keep-alive connection to 127.0.0.1:port."""

    def __init__(self, port: int, timeout: float = 60.0) -> None:
        self.port = port
        self.sock = socket.create_connection((LOOPBACK, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buffer = b""

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        """Send one request and read the whole response; (status, body)."""
        head = f"{method} {path} HTTP/1.1\r\nHost: {LOOPBACK}:{self.port}\r\n"
        if body is not None:
            head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        self.sock.sendall(head.encode("ascii") + b"\r\n")
        if body:
            self.sock.sendall(body)
        return self._response()

    def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        return self.request("POST", path, body)

    def _fill(self) -> None:
        chunk = self.sock.recv(1 << 18)
        if not chunk:
            raise HttpError("connection closed by the server")
        self.buffer += chunk

    def _response(self) -> tuple[int, bytes]:
        while b"\r\n\r\n" not in self.buffer:
            self._fill()
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or not parts[1].isdigit():
            raise HttpError(f"bad status line {lines[0][:40]!r}")
        length = None
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value.strip())
        if length is None:
            raise HttpError("response without Content-Length")
        while len(self.buffer) < length:
            self._fill()
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        return int(parts[1]), body


def wait_until_up(port: int, deadline: float, alive: Callable[[], bool]) -> None:
    """Poll GET /healthz until it answers 200 or the deadline passes."""
    while time.monotonic() < deadline:
        if not alive():
            raise HttpError("server process exited during start-up")
        try:
            with Connection(port, timeout=2) as conn:
                if conn.request("GET", "/healthz")[0] == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise HttpError("server did not answer /healthz in time")


@dataclass
class LoadResult:
    """Outcome of a closed-loop run at fixed concurrency."""

    latencies: list[float] = field(default_factory=list)
    completed: int = 0
    errors: int = 0
    elapsed: float = 0.0
    samples: dict[int, float] = field(default_factory=dict)

    @property
    def rps(self) -> float:
        return self.completed / self.elapsed if self.elapsed > 0 else 0.0


def closed_loop(
    port: int,
    path: str,
    body_for: Callable[[], bytes],
    concurrency: int,
    total: int,
    time_cap: float,
    on_completed: Callable[[int], float | None] | None = None,
) -> LoadResult:
    """`concurrency` connections each send the next request as soon as the previous one answers,
    until `total` requests completed or `time_cap` seconds passed. `on_completed(n)` is called
    after every completion (under a lock); a float it returns is kept in `samples[n]`."""
    result = LoadResult()
    lock = threading.Lock()
    issued = 0
    stop_at = time.monotonic() + time_cap
    problems: list[BaseException] = []

    def worker() -> None:
        nonlocal issued
        try:
            with Connection(port) as conn:
                while True:
                    with lock:
                        if issued >= total or time.monotonic() >= stop_at or problems:
                            return
                        issued += 1
                    body = body_for()
                    started = time.perf_counter()
                    status, _ = conn.post(path, body)
                    took = time.perf_counter() - started
                    with lock:
                        if status != 200:
                            result.errors += 1
                        result.latencies.append(took)
                        result.completed += 1
                        if on_completed is not None:
                            sample = on_completed(result.completed)
                            if sample is not None:
                                result.samples[result.completed] = sample
        except BaseException as error:  # recorded and re-raised in the caller
            with lock:
                problems.append(error)

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(concurrency)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(time_cap + 120)
    result.elapsed = time.perf_counter() - started
    if problems:
        raise HttpError(f"load run failed: {problems[0]!r}") from problems[0]
    return result


class Bodies:
    """Request bodies with a fresh hookInstance each, from one template holding a placeholder."""

    def __init__(self, template: bytes, placeholder: str) -> None:
        marker = placeholder.encode("ascii")
        if template.count(marker) != 1:
            raise ValueError("the template must hold the hookInstance placeholder exactly once")
        self.before, _, self.after = template.partition(marker)
        self.size = len(template)

    def __call__(self) -> bytes:
        return self.before + str(uuid.uuid4()).encode("ascii") + self.after
