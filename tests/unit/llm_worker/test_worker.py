"""A task's life in a worker: ledger, cancellation, abandonment and its result."""

import asyncio
from collections.abc import AsyncGenerator

import pytest
from aiokafka.errors import KafkaTimeoutError

from switchboard.common.sequencing import ATTEMPT_STRIDE
from switchboard.gateway.replies import Delivery, ReplyRouter
from switchboard.llm_worker.generation import GenerationPolicy
from switchboard.llm_worker.ledger import MemoryGenerationLedger, generation_key
from switchboard.llm_worker.providers import (
    Finished,
    GenerationRequest,
    StreamEvent,
    TextDelta,
)
from switchboard.llm_worker.settings import ModelSpec
from switchboard.llm_worker.worker import InFlight, NotOwnedError, TaskRunner
from switchboard.v1.chat_pb2 import ChatEvent
from switchboard.v1.events_pb2 import LlmResult, LlmTask

MODEL = ModelSpec(
    provider="openai", model="a", input_usd_per_mtok=1, output_usd_per_mtok=1, context_window=9
)


class SlowProvider:
    """Sends one delta, then waits for `release` before finishing."""

    name = "openai"

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.started = asyncio.Event()
        self.closed = False

    async def stream(self, request: GenerationRequest) -> AsyncGenerator[StreamEvent, None]:
        try:
            yield TextDelta("Hel")
            self.started.set()
            await self.release.wait()
            yield TextDelta("lo")
            yield Finished("stop", 3, 2)
        finally:
            self.closed = True


class Recorder:
    def __init__(self, failures: int = 0) -> None:
        self.replies: list[ChatEvent] = []
        self.results: list[tuple[str, LlmResult]] = []
        self.failures = failures

    async def reply(self, topic: str, event: ChatEvent, tenant_id: str) -> None:
        assert tenant_id == "demo"
        self.replies.append(event)

    async def result(self, topic: str, result: LlmResult) -> None:
        if self.failures:
            self.failures -= 1
            raise KafkaTimeoutError("broker away")
        self.results.append((topic, result))


def make_task(request_id: str = "r-1", result_topic: str = "") -> LlmTask:
    return LlmTask(
        task_id="t-1",
        tenant_id="demo",
        conversation_id="c-1",
        request_id=request_id,
        tier="cheap",
        reply_topic="replies",
        result_topic=result_topic,
    )


def runner(
    provider: SlowProvider,
    publisher: Recorder,
    ledger: MemoryGenerationLedger,
    in_flight: InFlight,
) -> TaskRunner:
    return TaskRunner(
        catalogue={"cheap": [MODEL]},
        providers={"openai": provider},
        policy=GenerationPolicy(coalesce_window_s=0, coalesce_max_chars=1),
        ledger=ledger,
        in_flight=in_flight,
        publisher=publisher,
        default_result_topic="llm.results",
        step_backoff_max_s=0.01,
    )


async def test_a_task_runs_once_and_is_skipped_when_redelivered_after_its_result() -> None:
    provider, publisher, ledger = SlowProvider(), Recorder(failures=1), MemoryGenerationLedger()
    run = runner(provider, publisher, ledger, InFlight(10))
    provider.release.set()
    result = await run.run(make_task())
    assert result is not None and result.text == "Hello"
    assert [topic for topic, _ in publisher.results] == ["llm.results"], "published after a retry"
    assert generation_key(make_task()) in ledger.done

    again = await run.run(make_task())
    assert again is None and len(publisher.results) == 1


async def test_a_copy_of_a_running_task_waits_for_it_and_publishes_nothing() -> None:
    provider, publisher, ledger = SlowProvider(), Recorder(), MemoryGenerationLedger()
    run = runner(provider, publisher, ledger, InFlight(10))
    first = asyncio.create_task(run.run(make_task()))
    await asyncio.wait_for(provider.started.wait(), 5)  # attempt 1 sent "Hel" (sequence 1)
    copy = asyncio.create_task(run.run(make_task()))  # the same task, delivered again
    await asyncio.sleep(0.05)
    provider.release.set()
    results = await asyncio.wait_for(asyncio.gather(first, copy), 5)

    assert results[1] is None  # finished already by the time the copy ran
    # One result, whose `done` (last_sequence + 1) is above every reply event sent: the
    # gateway drops events at or below the highest sequence it delivered.
    assert len(publisher.results) == 1, [r.last_sequence for _, r in publisher.results]
    assert publisher.results[0][1].last_sequence + 1 > max(e.sequence for e in publisher.replies)
    assert not any(e.HasField("reset") for e in publisher.replies)
    assert run._generations == {}  # nothing kept for finished generations


async def test_different_generations_run_side_by_side() -> None:
    provider, publisher, ledger = SlowProvider(), Recorder(), MemoryGenerationLedger()
    run = runner(provider, publisher, ledger, InFlight(10))
    first = asyncio.create_task(run.run(make_task("r-1")))
    other = asyncio.create_task(run.run(make_task("r-2")))
    await asyncio.sleep(0.05)
    # Both have sent their first delta before either finished.
    assert {e.request_id for e in publisher.replies} == {"r-1", "r-2"}
    provider.release.set()
    await asyncio.wait_for(asyncio.gather(first, other), 5)
    assert len(publisher.results) == 2


async def test_a_second_attempt_resets_and_numbers_its_events_above_the_first() -> None:
    provider, publisher, ledger = SlowProvider(), Recorder(), MemoryGenerationLedger()
    ledger.attempts[generation_key(make_task())] = 1  # a first attempt died mid-way
    provider.release.set()
    result = await runner(provider, publisher, ledger, InFlight(10)).run(make_task())
    assert result is not None
    assert [e.WhichOneof("event") for e in publisher.replies] == ["reset", "delta", "delta"]
    assert publisher.replies[0].sequence == ATTEMPT_STRIDE + 1
    assert result.last_sequence == ATTEMPT_STRIDE + 3


async def test_a_client_cancellation_stops_the_stream_and_reports_cancelled() -> None:
    provider, publisher, in_flight = SlowProvider(), Recorder(), InFlight(10)
    running = asyncio.create_task(
        runner(provider, publisher, MemoryGenerationLedger(), in_flight).run(make_task())
    )
    await asyncio.wait_for(provider.started.wait(), 5)
    assert in_flight.cancel("demo", "r-1")
    result = await asyncio.wait_for(running, 5)
    assert result is not None and result.error.code == "CANCELLED"
    assert provider.closed, "the provider stream was closed"
    assert [r.error.code for _, r in publisher.results] == ["CANCELLED"]
    assert len(in_flight) == 0


async def test_a_cancellation_that_arrives_first_prevents_the_generation() -> None:
    provider, publisher, in_flight = SlowProvider(), Recorder(), InFlight(10)
    assert not in_flight.cancel("demo", "r-early")
    result = await runner(provider, publisher, MemoryGenerationLedger(), in_flight).run(
        make_task("r-early")
    )
    assert result is not None and result.error.code == "CANCELLED"
    assert not provider.started.is_set() and publisher.replies == []


async def test_an_abandoned_task_publishes_nothing() -> None:
    provider, publisher, in_flight = SlowProvider(), Recorder(), InFlight(10)
    ledger = MemoryGenerationLedger()
    running = asyncio.create_task(runner(provider, publisher, ledger, in_flight).run(make_task()))
    await asyncio.wait_for(provider.started.wait(), 5)
    running.cancel()  # the partition moved, or the worker stops
    with pytest.raises(asyncio.CancelledError):
        await running
    assert provider.closed and publisher.results == [] and ledger.done == set()
    assert len(in_flight) == 0


def test_remembered_cancellations_are_bounded() -> None:
    in_flight = InFlight(remember=2)
    for request_id in ("a", "b", "c"):
        in_flight.cancel("demo", request_id)
    assert not in_flight.was_cancelled("demo", "a")
    assert in_flight.was_cancelled("demo", "b") and in_flight.was_cancelled("demo", "c")
    assert not in_flight.was_cancelled("other", "c"), "scoped by tenant"


async def test_a_task_whose_partition_moved_meanwhile_publishes_no_result() -> None:
    provider, publisher, ledger = SlowProvider(), Recorder(), MemoryGenerationLedger()
    provider.release.set()

    async def moved() -> bool:
        return False

    with pytest.raises(NotOwnedError):
        await runner(provider, publisher, ledger, InFlight(10)).run(make_task(), moved)
    assert publisher.results == [] and ledger.done == set(), "left to the new owner"


class BlockingRecorder(Recorder):
    """Records the first result, then blocks forever, as a send whose ack never comes."""

    def __init__(self) -> None:
        super().__init__()
        self.sent = asyncio.Event()

    async def result(self, topic: str, result: LlmResult) -> None:
        self.results.append((topic, result))
        self.sent.set()
        if len(self.results) == 1:
            await asyncio.Event().wait()


def through_the_gateway(publisher: Recorder) -> list[Delivery]:
    """Every reply event, then the `done` the orchestrator numbers after the first result
    it reads, through the gateway's router."""
    router = ReplyRouter(100)
    router.open("demo", "r-1")
    done = ChatEvent(request_id="r-1", sequence=publisher.results[0][1].last_sequence + 1)
    done.done.finish_reason = "stop"
    return [router.deliver("demo", event) for event in [*publisher.replies, done]]


async def test_a_run_cancelled_after_its_result_went_out_is_not_run_again() -> None:
    """Finding 1: a run cancelled by `partitions_assigned` while its result was being
    published (aiokafka does not withdraw it) used to leave the ledger unfinished; the
    redelivered task ran as attempt 2, and the `done` of attempt 1 reached the gateway below
    attempt 2's events: DUPLICATE, the client left waiting."""
    provider, publisher, ledger = SlowProvider(), BlockingRecorder(), MemoryGenerationLedger()
    run = runner(provider, publisher, ledger, InFlight(10))
    provider.release.set()
    first = asyncio.create_task(run.run(make_task()))
    await asyncio.wait_for(publisher.sent.wait(), 5)
    first.cancel()  # the partition was reassigned while the send waited for its ack
    with pytest.raises(asyncio.CancelledError):
        await first
    again = await asyncio.wait_for(run.run(make_task()), 5)  # redelivered, same ledger

    assert again is not None and again.attempt == 1, "the recorded result, not a new attempt"
    assert not any(e.HasField("reset") for e in publisher.replies)
    assert {r.task_id for _, r in publisher.results} == {"t-1"}
    assert len({r.last_sequence for _, r in publisher.results}) == 1, "the same result"
    assert through_the_gateway(publisher)[-1] is Delivery.DELIVERED


async def test_a_superseded_attempt_publishes_no_result() -> None:
    """Finding 1: an attempt still running on a worker that lost its partition must not end
    the turn once a later attempt (on the new owner) began and reset the client."""
    provider, publisher, ledger = SlowProvider(), Recorder(), MemoryGenerationLedger()
    run = runner(provider, publisher, ledger, InFlight(10))
    first = asyncio.create_task(run.run(make_task()))
    await asyncio.wait_for(provider.started.wait(), 5)
    assert await ledger.begin(make_task()) == 2  # the new owner starts attempt 2
    provider.release.set()
    with pytest.raises(NotOwnedError):  # left uncommitted: not finished by this attempt
        await asyncio.wait_for(first, 5)
    assert publisher.results == []
    await ledger.settle(make_task(), 2, LlmResult(task_id="t-1", attempt=2))
    assert await ledger.begin(make_task()) == LlmResult(task_id="t-1", attempt=2)
