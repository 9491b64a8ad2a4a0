"""The conversation directory's Redis markers, against the real Redis."""

import uuid

import pytest
from redis.asyncio import Redis

from switchboard.gateway.adapters import RedisConversationMarkers, conversation_marker_key
from switchboard.gateway.directory import DirectoryUnavailableError


async def test_a_marker_is_added_renewed_by_use_and_removed(redis: Redis) -> None:
    markers = RedisConversationMarkers(redis, ttl_s=600)
    conversation = f"c-{uuid.uuid4()}"
    key = conversation_marker_key("acme", conversation)
    try:
        assert not await markers.known("acme", conversation)
        await markers.add("acme", conversation)
        assert await markers.known("acme", conversation)
        assert not await markers.known("globex", conversation), "markers are per tenant"
        await redis.expire(key, 5)
        assert await markers.known("acme", conversation)
        assert await redis.ttl(key) > 500, "using the conversation renews its marker"
        await markers.remove("acme", conversation)
        assert not await markers.known("acme", conversation)
        await markers.remove("acme", conversation)  # forgetting twice is harmless
    finally:
        await redis.delete(key)


@pytest.mark.parametrize("operation", ["known", "add", "remove"])
async def test_an_unreachable_redis_is_directory_unavailable(operation: str) -> None:
    # Port 1 refuses at once on loopback.
    client = Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.5)
    markers = RedisConversationMarkers(client, ttl_s=600)
    try:
        with pytest.raises(DirectoryUnavailableError, match="Redis is unreachable"):
            await getattr(markers, operation)("acme", "c1")
    finally:
        await client.aclose()
