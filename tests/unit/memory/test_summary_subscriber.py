"""Memory's summary-result subscriber (FastStream `durable_subscriber`), run in memory with
`TestKafkaBroker`: a result is stored, a poison record goes to its dead-letter topic."""

from typing import Any

from faststream.kafka import KafkaBroker, TestKafkaBroker
from opentelemetry.sdk.trace import TracerProvider

from switchboard.common.envelope import headers_for
from switchboard.common.kafka import create_broker
from switchboard.common.settings import KafkaSettings
from switchboard.common.topics import Topics
from switchboard.memory.app import build
from switchboard.memory.cache import ContextCache
from switchboard.memory.settings import MemorySettings
from switchboard.v1.events_pb2 import DeadLetter, LlmResult


def broker() -> KafkaBroker:
    return create_broker(KafkaSettings(), "test", TracerProvider())


class SummaryStore:
    """What the summarizer asks of memory's store when a summary result arrives."""

    def __init__(self) -> None:
        self.saved: list[tuple[str, str, str]] = []

    async def save_summary(
        self, tenant_id: str, conversation_id: str, task_id: str, text: str, *_: Any, **__: Any
    ) -> int:
        self.saved.append((conversation_id, task_id, text))
        return 1

    async def release_summary(self, *_: Any) -> None:
        raise AssertionError("no summary task fails in these tests")


async def test_a_summary_result_is_stored_and_a_poison_one_is_dead_lettered() -> None:
    settings = MemorySettings()
    topics = Topics(settings.kafka.topic_prefix)
    kafka = broker()
    store = SummaryStore()
    build(settings, kafka, store, ContextCache(10, 10, 60))  # type: ignore[arg-type]
    letters: list[DeadLetter] = []

    @kafka.subscriber(f"{topics.memory_summaries}.dlq", group_id="test")
    async def on_letter(body: bytes) -> None:
        letters.append(DeadLetter.FromString(body))

    result = LlmResult(
        task_id="t1", tenant_id="acme", conversation_id="c1", text=" The customer asked. "
    )
    async with TestKafkaBroker(kafka) as test:
        await test.publish(
            result.SerializeToString(),
            topics.memory_summaries,
            key=b"c1",
            headers=headers_for(result),
        )
        await test.publish(
            b"\xff not a result",
            topics.memory_summaries,
            key=b"c2",
            headers={"sb-type": "switchboard.v1.LlmTask", "sb-schema-version": "1"},
        )

    assert store.saved == [("c1", "t1", "The customer asked.")]
    (letter,) = letters
    assert letter.source_topic == topics.memory_summaries
    assert letter.value == b"\xff not a result"
    assert letter.consumer_group == f"{settings.consumer_group}-summaries"
    assert "switchboard.v1.LlmResult" in letter.error
