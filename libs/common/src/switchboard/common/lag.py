"""Consumer lag per topic and group, exported as a Prometheus gauge.

Each service reports the lag of its own consumer groups: the committed offsets (admin API)
against the partitions' end offsets. This is the figure SREs and KEDA scale worker pools on.
"""

import asyncio
import logging
from collections.abc import Mapping, Sequence

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from switchboard.common.metrics import CONSUMER_LAG
from switchboard.common.settings import KafkaSettings

log = logging.getLogger(__name__)


def lag_by_topic(
    committed: Mapping[TopicPartition, int], end_offsets: Mapping[TopicPartition, int]
) -> dict[str, int]:
    """Lag per topic; a partition the group never committed counts from offset 0."""
    lag: dict[str, int] = {}
    for partition, end in end_offsets.items():
        behind = max(0, end - max(0, committed.get(partition, 0)))
        lag[partition.topic] = lag.get(partition.topic, 0) + behind
    return lag


class LagReporter:
    """Refreshes CONSUMER_LAG for `groups` (group -> topics) every `interval_s`."""

    def __init__(
        self,
        settings: KafkaSettings,
        groups: Mapping[str, Sequence[str]],
        interval_s: float = 15.0,
    ) -> None:
        self._settings = settings
        self._groups = groups
        self._interval_s = interval_s
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Begin reporting in the background."""
        self._task = asyncio.create_task(self._run(), name="lag-reporter")

    async def stop(self) -> None:
        """Stop reporting."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        admin = AIOKafkaAdminClient(
            bootstrap_servers=self._settings.bootstrap_servers,
            request_timeout_ms=self._settings.request_timeout_ms,
        )
        offsets = AIOKafkaConsumer(
            bootstrap_servers=self._settings.bootstrap_servers,
            request_timeout_ms=self._settings.request_timeout_ms,
            enable_auto_commit=False,
        )
        await admin.start()
        await offsets.start()
        try:
            while True:
                try:
                    await self.refresh(admin, offsets)
                except KafkaError as exc:
                    log.warning("consumer lag not refreshed: %s", exc)
                await asyncio.sleep(self._interval_s)
        finally:
            await offsets.stop()
            await admin.close()

    async def refresh(self, admin: AIOKafkaAdminClient, offsets: AIOKafkaConsumer) -> None:
        """Read committed and end offsets once and update the gauge."""
        wanted = sorted({t for topics in self._groups.values() for t in topics})
        described = await admin.describe_topics(wanted)
        partitions_of = {
            d["topic"]: [TopicPartition(d["topic"], p["partition"]) for p in d["partitions"]]
            for d in described
            if d["error_code"] == 0
        }
        for group, group_topics in self._groups.items():
            partitions = [tp for topic in group_topics for tp in partitions_of.get(topic, [])]
            if not partitions:
                continue
            committed_raw = await admin.list_consumer_group_offsets(group, partitions=partitions)
            committed = {tp: meta.offset for tp, meta in committed_raw.items()}
            ends: dict[TopicPartition, int] = await offsets.end_offsets(partitions)
            for topic, lag in lag_by_topic(committed, ends).items():
                CONSUMER_LAG.labels(group, topic).set(lag)
