"""A real Redis for the tests whose logic lives in Redis (Lua, streams); skipped without one."""

from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError


@pytest.fixture
async def redis() -> AsyncIterator[Redis]:
    client = Redis.from_url("redis://127.0.0.1:6379/0", socket_connect_timeout=1)
    try:
        await client.ping()
    except (RedisConnectionError, OSError):
        await client.aclose()
        pytest.skip("no Redis on 127.0.0.1:6379 (make stack-up)")
    yield client
    await client.aclose()
