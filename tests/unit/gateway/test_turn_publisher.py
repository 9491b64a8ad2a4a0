"""The gateway's turn publisher: an unacknowledged send is reported unknown, never cancelled
(issue 14, finding 7)."""

import asyncio
from typing import Any

import pytest

from switchboard.common.topics import Topics
from switchboard.gateway.adapters import KafkaTurnPublisher
from switchboard.gateway.service import PublishOutcomeUnknownError
from switchboard.v1.events_pb2 import TurnRequest


class SlowBroker:
    """Acknowledges a send only when `ack` is set; records whether it was cancelled."""

    def __init__(self) -> None:
        self.ack = asyncio.Event()
        self.acknowledged = asyncio.Event()
        self.cancelled = False

    async def publish(self, *args: Any, **kwargs: Any) -> None:
        try:
            await self.ack.wait()
        except asyncio.CancelledError:
            self.cancelled = True
            raise
        self.acknowledged.set()


class FailingBroker:
    async def publish(self, *args: Any, **kwargs: Any) -> None:
        raise ConnectionError("connection reset after the write")


async def test_a_send_without_ack_in_time_is_unknown_and_goes_on() -> None:
    broker = SlowBroker()
    publisher = KafkaTurnPublisher(broker, Topics(""), timeout_s=0.05)  # type: ignore[arg-type]
    with pytest.raises(PublishOutcomeUnknownError, match="did not acknowledge"):
        await publisher.publish_turn(TurnRequest(request_id="r1", conversation_id="c1"))
    broker.ack.set()
    await asyncio.wait_for(broker.acknowledged.wait(), 5)
    assert not broker.cancelled, "the record may land: the send is left to finish"


async def test_a_failed_send_is_unknown_too() -> None:
    publisher = KafkaTurnPublisher(FailingBroker(), Topics(""), timeout_s=5)  # type: ignore[arg-type]
    with pytest.raises(PublishOutcomeUnknownError, match="connection reset"):
        await publisher.publish_turn(TurnRequest(request_id="r1", conversation_id="c1"))
