"""Reads this instance's reply topic into the `ReplyRouter`.

Written on aiokafka directly: this is the gateway's hottest path (one record per relayed
delta), and a framework's per-message middleware (spans, logging, dependency injection)
cost more CPU than the relay itself. The trace of a turn already holds the gateway's call
span and the worker's publish spans; a span per delta would add nothing but load.
"""

import asyncio
import logging
from collections.abc import Callable

from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError

from switchboard.common.envelope import TENANT_HEADER, PoisonMessageError, decode
from switchboard.common.settings import KafkaSettings
from switchboard.gateway.metrics import REPLIES
from switchboard.gateway.replies import Delivery
from switchboard.v1.chat_pb2 import ChatEvent

log = logging.getLogger(__name__)


class ReplyConsumer:
    """No consumer group: this instance alone reads its topic, from the start, uncommitted."""

    def __init__(
        self,
        settings: KafkaSettings,
        topic: str,
        deliver: Callable[[str, ChatEvent], Delivery],
        *,
        max_records: int = 500,
        retry_backoff_s: float = 1.0,
    ) -> None:
        self._deliver = deliver
        self._max_records = max_records
        self._retry_backoff_s = retry_backoff_s
        self._consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=settings.bootstrap_servers,
            client_id=f"gateway-replies-{topic}",
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            request_timeout_ms=settings.request_timeout_ms,
            retry_backoff_ms=settings.retry_backoff_ms,
        )
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Connect and start relaying."""
        await self._consumer.start()
        self._task = asyncio.create_task(self._run(), name="reply-consumer")

    async def stop(self) -> None:
        """Stop relaying and disconnect."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self._consumer.stop()

    async def _run(self) -> None:
        while True:
            try:
                batches = await self._consumer.getmany(
                    timeout_ms=1_000, max_records=self._max_records
                )
            except KafkaError as exc:
                log.warning("reading replies failed, retrying: %s", exc)
                await asyncio.sleep(self._retry_backoff_s)
                continue
            for records in batches.values():
                for record in records:
                    self.handle(record.value or b"", record.headers or ())

    def handle(
        self, value: bytes, headers: tuple[tuple[str, bytes], ...] | list[tuple[str, bytes]]
    ) -> None:
        """Decode one reply record and hand it to its stream (an unreadable one is dropped)."""
        text = {k: v.decode("utf-8", "replace") for k, v in headers}
        try:
            event = decode(value, text, ChatEvent)
        except PoisonMessageError as exc:
            REPLIES.labels("poison").inc()
            log.warning("dropping unreadable reply event: %s", exc)
            return
        # Without the tenant header an event matches no stream (it names no tenant).
        REPLIES.labels(self._deliver(text.get(TENANT_HEADER, ""), event).value).inc()
