"""Keeps this replica's indexes current from `knowledge.chunks`.

Every replica reads every partition (no consumer group: each one needs all changes, and
nothing is committed). At start it takes the topic's end offsets first, then loads MongoDB,
then applies the records from those offsets on; a change seen twice (in MongoDB and on the
topic) is applied once, by its version.
"""

import asyncio
import contextlib
import logging

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from pymongo.errors import PyMongoError

from switchboard.common.envelope import PoisonMessageError, decode
from switchboard.common.retry import retrying
from switchboard.common.settings import KafkaSettings
from switchboard.knowledge_index.metrics import CHANGES
from switchboard.knowledge_index.replica import IndexReplica
from switchboard.v1.knowledge_pb2 import KnowledgeChunkChange

log = logging.getLogger(__name__)


class ChunkChanges:
    """The broadcast consumer of one replica."""

    def __init__(
        self,
        kafka: KafkaSettings,
        topic: str,
        replica: IndexReplica,
        poll_timeout_ms: int,
        *,
        client_id: str = "knowledge-sync",
    ) -> None:
        self._kafka = kafka
        self._topic = topic
        self._replica = replica
        self._poll_timeout_ms = poll_timeout_ms
        self._client_id = client_id
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None

    async def start_at_end(self) -> None:
        """Connect, and position every partition at its current end."""
        kafka = self._kafka
        consumer = AIOKafkaConsumer(
            bootstrap_servers=kafka.bootstrap_servers,
            client_id=self._client_id,
            group_id=None,
            enable_auto_commit=False,
            request_timeout_ms=kafka.request_timeout_ms,
            retry_backoff_ms=kafka.retry_backoff_ms,
        )
        await consumer.start()
        self._consumer = consumer
        partitions = consumer.partitions_for_topic(self._topic)
        if not partitions:
            # Metadata for a topic arrives after asking for it.
            await consumer._client.force_metadata_update()
            partitions = consumer.partitions_for_topic(self._topic) or set()
        if not partitions:
            raise KafkaError(f"topic {self._topic} does not exist")
        assigned = [TopicPartition(self._topic, p) for p in sorted(partitions)]
        consumer.assign(assigned)
        await consumer.seek_to_end(*assigned)
        for tp in assigned:  # resolve the positions now, before MongoDB is read
            await consumer.position(tp)

    async def start(
        self,
        stack: contextlib.AsyncExitStack,
        connect_timeout_s: float,
        *,
        load_attempts: int = 1,
        load_backoff_max_s: float = 1.0,
    ) -> int:
        """Bring the replica up: the end offsets first, then MongoDB (`load_attempts` tries),
        then the changes from those offsets on, in the background until the stack closes.
        Returns the number of chunks loaded."""
        async with asyncio.timeout(connect_timeout_s):
            await self.start_at_end()
        stack.push_async_callback(self.stop)
        async for attempt in retrying(load_attempts, load_backoff_max_s, (PyMongoError,)):
            with attempt:
                loaded = await self._replica.load()
        self.run()
        return loaded

    def run(self) -> None:
        """Apply changes in the background until `stop`."""
        self._task = asyncio.create_task(self._loop(), name="knowledge-sync")

    async def _loop(self) -> None:
        assert self._consumer is not None
        while True:
            try:
                batches = await self._consumer.getmany(timeout_ms=self._poll_timeout_ms)
            except KafkaError as exc:
                log.warning("knowledge.chunks poll failed (retrying): %s", exc)
                await asyncio.sleep(1.0)
                continue
            for records in batches.values():
                for record in records:
                    await self._apply(record)

    async def _apply(self, record: object) -> None:
        headers = {k: v.decode("utf-8", "replace") for k, v in getattr(record, "headers", ())}
        try:
            change = decode(getattr(record, "value", b"") or b"", headers, KnowledgeChunkChange)
        except PoisonMessageError as exc:
            CHANGES.labels("poison").inc()
            log.warning("skipping an unreadable knowledge.chunks record: %s", exc)
            return
        for attempt in range(5):
            try:
                await self._replica.apply_change(change)
                return
            except Exception as exc:  # MongoDB away while reading chunks: try again
                log.warning("applying a chunk change failed (attempt %d): %s", attempt + 1, exc)
                await asyncio.sleep(min(2.0**attempt * 0.2, 5.0))
        CHANGES.labels("failed").inc()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._consumer is not None:
            await self._consumer.stop()
