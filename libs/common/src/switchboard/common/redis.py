"""The Redis client every service configures the same way."""

from redis.asyncio import BlockingConnectionPool, Redis

from switchboard.common.settings import RedisSettings


def create_redis(settings: RedisSettings) -> Redis:
    """A client whose every call is bounded: the pool (a call waits a bounded time for a
    connection instead of failing at once) and each socket operation."""
    pool = BlockingConnectionPool.from_url(
        settings.url,
        max_connections=settings.max_connections,
        timeout=settings.pool_timeout_s,
        socket_timeout=settings.socket_timeout_s,
        socket_connect_timeout=settings.connect_timeout_s,
    )
    return Redis.from_pool(pool)
