"""Thin adapters around Kafka and Redis for the chat service."""

import asyncio
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import (
    KafkaError,
    TopicAlreadyExistsError,
    UnknownTopicOrPartitionError,
)
from faststream.kafka import KafkaBroker
from redis.asyncio import Redis
from redis.exceptions import RedisError

from switchboard.common.kafka import BrokerPublisher
from switchboard.common.settings import KafkaSettings
from switchboard.common.topics import Topics
from switchboard.gateway.directory import DirectoryUnavailableError
from switchboard.gateway.ports import (
    BackendUnavailableError,
    PublishOutcomeUnknownError,
)
from switchboard.v1.events_pb2 import CancelGeneration, TurnRequest

log = logging.getLogger(__name__)


class KafkaTurnPublisher:
    """Publishes turns keyed by conversation and cancellations keyed by request."""

    def __init__(self, broker: KafkaBroker, topics: Topics, timeout_s: float) -> None:
        self._publisher = BrokerPublisher(broker)
        self._topics = topics
        self._timeout_s = timeout_s
        # Sends whose caller stopped waiting: kept referenced until they settle.
        self._sending: set[asyncio.Future[None]] = set()

    async def publish_turn(self, turn: TurnRequest) -> None:
        """Hand a turn to the orchestrators and wait for Kafka's acknowledgement, up to
        `timeout_s` or the client's deadline, whichever is sooner.

        The send is never cancelled (aiokafka cannot withdraw a record once handed over, so
        a cancelled send may still land): without an acknowledgement in time the outcome is
        unknown, and `PublishOutcomeUnknownError` says so.
        """
        timeout_s = self._timeout_s
        if turn.HasField("deadline"):
            remaining = (turn.deadline.ToNanoseconds() - time.time_ns()) / 1e9
            timeout_s = max(0.0, min(timeout_s, remaining))
        sending = asyncio.ensure_future(
            self._publisher.publish(self._topics.chat_requests, turn, key=turn.conversation_id)
        )
        self._sending.add(sending)
        sending.add_done_callback(self._settled)
        done, _ = await asyncio.wait([sending], timeout=timeout_s)
        if not done:
            raise PublishOutcomeUnknownError(f"Kafka did not acknowledge it within {timeout_s:g}s")
        exc = sending.exception()
        if exc is not None:
            # Even a failure may follow a write that landed (its acknowledgement lost), and
            # a retry with the same request id is safe either way: say it is unknown.
            raise PublishOutcomeUnknownError(f"Kafka answered {exc!r}") from exc

    def _settled(self, sending: "asyncio.Future[None]") -> None:
        self._sending.discard(sending)
        if not sending.cancelled() and sending.exception() is not None:
            log.info("a turn's send ended late: %r", sending.exception())

    async def publish_cancel(self, cancel: CancelGeneration) -> None:
        """Ask the workers to stop a generation."""
        await self._publish(self._topics.chat_cancel, cancel, cancel.request_id)

    async def _publish(self, topic: str, message: TurnRequest | CancelGeneration, key: str) -> None:
        try:
            async with asyncio.timeout(self._timeout_s):
                await self._publisher.publish(topic, message, key=key)
        except (TimeoutError, KafkaError) as exc:
            raise BackendUnavailableError(f"Kafka did not accept the message: {exc!r}") from exc


def conversation_lock_key(tenant_id: str, conversation_id: str) -> str:
    """The Redis key of a conversation's generation lock (its value: the request id)."""
    return f"sb:{tenant_id}:conversation:{conversation_id}:generating"


def conversation_marker_key(tenant_id: str, conversation_id: str) -> str:
    """The Redis key that says the tenant has the conversation."""
    return f"sb:{tenant_id}:conversation:{conversation_id}:known"


@contextmanager
def _directory_errors() -> Iterator[None]:
    try:
        yield
    except RedisError as exc:
        raise DirectoryUnavailableError(f"Redis is unreachable: {exc}") from exc


class RedisConversationMarkers:
    """One key per (tenant, conversation) with a TTL that each use renews."""

    def __init__(self, redis: Redis, ttl_s: int) -> None:
        self._redis = redis
        self._ttl_s = ttl_s

    async def known(self, tenant_id: str, conversation_id: str) -> bool:
        """Whether the marker exists; renews its TTL in the same round trip."""
        with _directory_errors():
            # EXPIRE answers whether the key exists, and keeps a used conversation marked.
            return bool(
                await self._redis.expire(
                    conversation_marker_key(tenant_id, conversation_id), self._ttl_s
                )
            )

    async def add(self, tenant_id: str, conversation_id: str) -> None:
        """Write (or renew) the marker."""
        with _directory_errors():
            await self._redis.set(
                conversation_marker_key(tenant_id, conversation_id), b"1", ex=self._ttl_s
            )

    async def remove(self, tenant_id: str, conversation_id: str) -> None:
        """Delete the marker."""
        with _directory_errors():
            await self._redis.delete(conversation_marker_key(tenant_id, conversation_id))


class ReplyTopicAdmin:
    """Creates this instance's reply topic at start and deletes it at a clean stop; lists and
    deletes the reply topics of dead instances for the sweeper."""

    def __init__(self, settings: KafkaSettings, topic: str, partitions: int) -> None:
        self._settings = settings
        self.topic = topic
        self._partitions = partitions

    async def create(self) -> None:
        """Create the reply topic (already existing is fine)."""
        admin = self._client()
        await admin.start()
        try:
            response = await admin.create_topics(
                [NewTopic(self.topic, num_partitions=self._partitions, replication_factor=1)]
            )
        finally:
            await admin.close()
        # The admin client reports per-topic errors in the response instead of raising.
        for _topic, error_code, *_rest in response.topic_errors:
            if error_code not in (0, TopicAlreadyExistsError.errno):
                raise KafkaError(f"cannot create reply topic {self.topic}: error {error_code}")

    async def delete(self) -> None:
        """Delete the reply topic; a failure only leaves an empty topic behind (swept later)."""
        try:
            await self.delete_topics([self.topic])
        except KafkaError as exc:
            log.warning("reply topic %s not deleted: %s", self.topic, exc)

    async def list_topics(self) -> list[str]:
        """Every topic of the cluster."""
        admin = self._client()
        try:
            await admin.start()
            topics: list[str] = await admin.list_topics()
            return topics
        finally:
            await admin.close()

    async def delete_topics(self, topics: list[str]) -> None:
        """Delete `topics`; one already gone is not an error."""
        admin = self._client()
        try:
            await admin.start()
            response = await admin.delete_topics(topics)
        finally:
            await admin.close()
        for topic, error_code in response.topic_error_codes:
            if error_code not in (0, UnknownTopicOrPartitionError.errno):
                raise KafkaError(f"cannot delete topic {topic}: error {error_code}")

    def _client(self) -> AIOKafkaAdminClient:
        return AIOKafkaAdminClient(
            bootstrap_servers=self._settings.bootstrap_servers,
            request_timeout_ms=self._settings.request_timeout_ms,
        )
