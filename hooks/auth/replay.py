"""The replay cache: each token's `jti` is accepted once, and remembered until the token could no
longer pass the `exp` check. In memory for one process, or in Redis shared by every replica and
worker."""

from __future__ import annotations

import asyncio
import heapq
import logging
import threading
import time
from collections.abc import Callable
from typing import Protocol
from urllib.parse import urlsplit

from redis.exceptions import RedisError

from hooks.auth.errors import ReplayCacheUnavailableError
from hooks.metrics import store_failed
from hooks.stores import StoreConfigError

log = logging.getLogger("calcinosis_cds.auth")


class ReplayCache(Protocol):
    """Remembers `iss|jti` keys until their token expires (hooks.stores.RedisReplayCache is the
    shared implementation for several replicas)."""

    async def first_use(self, key: str, expires_at: float) -> bool:
        """True the first time `key` is seen; it is then remembered until `expires_at` (epoch s)."""
        ...


class InMemoryReplayCache:
    """A per-process replay cache: enough for one instance. Bounded: expired entries are dropped
    as new ones come, and beyond `max_entries` the entries closest to expiry are dropped first
    (and a warning logged), so a flood of valid tokens cannot exhaust memory. A threading lock
    (never held across an await) makes it safe from both tasks and threads."""

    def __init__(self, max_entries: int = 100_000, clock: Callable[[], float] = time.time) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.max_entries = max_entries
        self._clock = clock
        self._expiry: dict[str, float] = {}
        self._heap: list[tuple[float, str]] = []
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._expiry)

    async def first_use(self, key: str, expires_at: float) -> bool:
        with self._lock:
            now = self._clock()
            self._evict_expired(now)
            known = self._expiry.get(key)
            if known is not None and known > now:
                return False
            while len(self._expiry) >= self.max_entries and self._heap:
                self._drop_soonest()
                log.warning("replay cache full (%d entries): forgot the entry closest to expiry", self.max_entries)
            self._expiry[key] = expires_at
            heapq.heappush(self._heap, (expires_at, key))
            return True

    def _evict_expired(self, now: float) -> None:
        while self._heap and self._heap[0][0] <= now:
            self._drop_soonest()

    def _drop_soonest(self) -> None:
        expires_at, key = heapq.heappop(self._heap)
        # The heap may hold an older expiry for a key re-added since; only the current one counts.
        if self._expiry.get(key) == expires_at:
            del self._expiry[key]


class RedisReplayCache:
    """A `jti` replay cache in Redis (SET NX with expiry): shared by every replica and worker.

    It fails closed: when Redis is down, stalled or every connection is busy, `first_use` raises
    `ReplayCacheUnavailableError` (answered 503 with Retry-After) after at most `timeout` seconds,
    pool wait included, rather than accept a token it cannot check. The pool holds up to
    `max_connections`, sized by the app to the requests one worker admits at once, so a burst
    waits for a connection instead of failing.
    """

    def __init__(
        self, url: str, prefix: str = "calcinosis:jti:", *, max_connections: int = 32, timeout: float = 1.0
    ) -> None:
        import redis.asyncio as redis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        pool = redis.BlockingConnectionPool.from_url(
            url,
            max_connections=max_connections,
            timeout=timeout,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 0),
        )
        self._redis = redis.Redis(connection_pool=pool)
        self._prefix = prefix
        self.timeout = timeout

    async def first_use(self, key: str, expires_at: float) -> bool:
        ttl = max(1, int(expires_at - time.time()) + 1)
        try:
            async with asyncio.timeout(self.timeout):
                created = await self._redis.set(self._prefix + key, b"1", nx=True, ex=ttl)
        except (TimeoutError, OSError, RedisError) as error:
            store_failed("replay_cache", "first_use")
            raise ReplayCacheUnavailableError(f"replay cache unavailable ({type(error).__name__})") from None
        return bool(created)

    async def ping(self) -> bool:
        try:
            async with asyncio.timeout(self.timeout):
                return bool(await self._redis.ping())
        except Exception:  # any connection error or time-out means "not ready"
            return False

    async def close(self) -> None:
        await self._redis.aclose()


def open_replay_cache(url: str, *, max_connections: int = 32, timeout: float = 1.0) -> ReplayCache:
    """The replay cache a URL names: memory:// (one process) or redis:// (several replicas)."""
    if url == "memory://":
        return InMemoryReplayCache()
    if urlsplit(url).scheme in ("redis", "rediss"):
        return RedisReplayCache(url, max_connections=max_connections, timeout=timeout)
    raise StoreConfigError(f"replay cache URL scheme '{urlsplit(url).scheme}' is not supported (memory, redis)")
