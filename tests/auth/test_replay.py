"""The replay cache (hooks.auth.replay): in memory, and in Redis shared by replicas."""

from __future__ import annotations

import asyncio
import time
import uuid

from hooks.auth import (
    InMemoryReplayCache,
    RedisReplayCache,
)
from tests.auth.tokens import (
    NOW,
    Clock,
    run,
)

# --- replay cache --------------------------------------------------------------------------------


def test_in_memory_replay_cache_forgets_expired_keys_and_stays_bounded() -> None:
    clock = Clock()
    cache = InMemoryReplayCache(max_entries=3, clock=clock)

    async def scenario() -> None:
        assert await cache.first_use("a", NOW + 10)
        assert not await cache.first_use("a", NOW + 10)
        clock.now += 11
        assert await cache.first_use("a", NOW + 100)  # expired, so new again
        assert not await cache.first_use("a", NOW + 100)
        for key in ("b", "c", "d", "e"):
            assert await cache.first_use(key, NOW + 50)
        assert len(cache) == 3
        assert not await cache.first_use("e", NOW + 50)

    run(scenario())


def test_in_memory_replay_cache_under_concurrency() -> None:
    cache = InMemoryReplayCache()

    async def scenario() -> list[bool]:
        return list(await asyncio.gather(*(cache.first_use("same", NOW + 60) for _ in range(50))))

    results = asyncio.run(scenario())
    assert results.count(True) == 1


REDIS = "redis://127.0.0.1:6379/0"


def test_redis_replay_cache_refuses_a_second_use_from_any_replica() -> None:
    async def scenario() -> tuple[bool, bool, bool]:
        key = f"iss|{uuid.uuid4()}"
        replica_a, replica_b = RedisReplayCache(REDIS), RedisReplayCache(REDIS)
        try:
            assert await replica_a.ping()
            first = await replica_a.first_use(key, time.time() + 60)
            second = await replica_b.first_use(key, time.time() + 60)
            other = await replica_b.first_use(key + "-other", time.time() + 60)
            return first, second, other
        finally:
            await replica_a.close()
            await replica_b.close()

    assert asyncio.run(scenario()) == (True, False, True)
