"""The Redis client every service configures the same way."""

from redis.asyncio import Redis

from switchboard.common.settings import RedisSettings


def create_redis(settings: RedisSettings) -> Redis:
    """A client whose every call is bounded by the configured timeouts."""
    return Redis.from_url(
        settings.url,
        socket_timeout=settings.socket_timeout_s,
        socket_connect_timeout=settings.connect_timeout_s,
    )
