"""The workers' cancellation subscriber (FastStream), run in memory with `TestKafkaBroker`."""

import asyncio

from faststream.kafka import TestKafkaBroker
from opentelemetry.sdk.trace import TracerProvider

from switchboard.common.envelope import headers_for
from switchboard.common.kafka import create_broker
from switchboard.common.settings import KafkaSettings
from switchboard.common.topics import Topics
from switchboard.llm_worker.app import register_cancellations
from switchboard.llm_worker.worker import InFlight
from switchboard.v1.events_pb2 import CancelGeneration


async def test_a_cancellation_stops_the_running_generation_of_its_tenant_only() -> None:
    kafka = create_broker(KafkaSettings(), "test", TracerProvider())
    topics = Topics("")
    in_flight = InFlight(remember=10)
    register_cancellations(kafka, topics, in_flight)
    ours = asyncio.create_task(asyncio.sleep(60))
    theirs = asyncio.create_task(asyncio.sleep(60))
    in_flight.add("acme", "r1", ours)  # type: ignore[arg-type]
    in_flight.add("other", "r1", theirs)  # type: ignore[arg-type]
    cancel = CancelGeneration(tenant_id="acme", request_id="r1", reason="client left")
    try:
        async with TestKafkaBroker(kafka) as test:
            await test.publish(b"garbage", topics.chat_cancel, headers={"sb-type": "x"})
            await test.publish(
                cancel.SerializeToString(), topics.chat_cancel, headers=headers_for(cancel)
            )
        await asyncio.wait([ours], timeout=5)
        assert ours.cancelled()
        assert not theirs.done()
        assert in_flight.was_cancelled("acme", "r1")
        assert not in_flight.was_cancelled("other", "r1")
    finally:
        theirs.cancel()
