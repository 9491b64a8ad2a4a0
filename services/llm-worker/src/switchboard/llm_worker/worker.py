"""The life of one task in a worker, free of Kafka: ledger, generation, cancellation, result."""

import asyncio
import logging
import weakref
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Protocol

from aiokafka.errors import KafkaError
from cachetools import LRUCache
from redis.exceptions import RedisError
from tenacity import AsyncRetrying

from switchboard.common.retry import retrying
from switchboard.llm_worker.generation import GenerationPolicy, Sleep, generate, models_for
from switchboard.llm_worker.ledger import Begun, GenerationLedger, generation_key
from switchboard.llm_worker.providers import Provider
from switchboard.llm_worker.settings import ModelSpec
from switchboard.v1.chat_pb2 import ChatEvent, Error
from switchboard.v1.events_pb2 import LlmResult, LlmTask

log = logging.getLogger(__name__)

# Failures of the worker's own backends, worth a bounded retry.
TRANSIENT = (KafkaError, RedisError, TimeoutError, ConnectionError)

StillOwned = Callable[[], Awaitable[bool]]


class NotOwnedError(Exception):
    """The task moved to another worker while it ran: its result is left to that worker."""


async def _always_owned() -> bool:
    return True


class Publisher(Protocol):
    """Where reply events and results go (Kafka in production)."""

    async def reply(self, topic: str, event: ChatEvent, tenant_id: str) -> None: ...

    async def result(self, topic: str, result: LlmResult) -> None: ...


RequestKey = tuple[str, str]  # (tenant id, request id): request ids are chosen by clients


class InFlight:
    """Running generations by tenant and request id, so that a cancellation can find them,
    plus the last `remember` cancelled requests, for tasks that arrive after their
    cancellation."""

    def __init__(self, remember: int) -> None:
        self._tasks: dict[RequestKey, set[asyncio.Task[LlmResult]]] = {}
        self._by_client: set[asyncio.Task[LlmResult]] = set()
        self._remember = remember
        # The most recently cancelled requests (cachetools: least recently cancelled go first).
        self._cancelled: LRUCache[RequestKey, None] = LRUCache(max(remember, 1))

    def __len__(self) -> int:
        return sum(len(tasks) for tasks in self._tasks.values())

    def add(self, tenant_id: str, request_id: str, task: asyncio.Task[LlmResult]) -> None:
        """Register a running generation."""
        self._tasks.setdefault((tenant_id, request_id), set()).add(task)

    def remove(self, tenant_id: str, request_id: str, task: asyncio.Task[LlmResult]) -> None:
        """Forget a generation that ended."""
        key = (tenant_id, request_id)
        tasks = self._tasks.get(key)
        if tasks is not None:
            tasks.discard(task)
            if not tasks:
                del self._tasks[key]
        self._by_client.discard(task)

    def cancel(self, tenant_id: str, request_id: str) -> bool:
        """Stop the generations of the tenant's `request_id`; True when this process ran one."""
        key = (tenant_id, request_id)
        if self._remember:
            self._cancelled[key] = None
        tasks = self._tasks.get(key, set())
        for task in tasks:
            self._by_client.add(task)
            task.cancel()
        return bool(tasks)

    def cancelled_by_client(self, task: asyncio.Task[LlmResult]) -> bool:
        """Whether `task` was stopped by a cancellation (not by a shutdown)."""
        return task in self._by_client

    def was_cancelled(self, tenant_id: str, request_id: str) -> bool:
        """Whether a cancellation of the tenant's `request_id` was received."""
        return (tenant_id, request_id) in self._cancelled


def cancelled_result(task: LlmTask, last_sequence: int = 0) -> LlmResult:
    """The result of a task its client cancelled."""
    return LlmResult(
        task_id=task.task_id,
        tenant_id=task.tenant_id,
        conversation_id=task.conversation_id,
        request_id=task.request_id,
        tier=task.tier,
        error=Error(code="CANCELLED", message="cancelled by the client"),
        last_sequence=last_sequence,
    )


class TaskRunner:
    """Runs tasks to a published result, exactly once per generation as far as it can tell.

    Raises when a backend (Kafka, Redis) stays unreachable: the task is then left
    uncommitted and fetched again. An abandoned task (its partition moved, or the process
    stops) is cancelled without a result, for another worker to run again.
    """

    def __init__(
        self,
        *,
        catalogue: Mapping[str, Sequence[ModelSpec]],
        providers: Mapping[str, Provider],
        policy: GenerationPolicy,
        ledger: GenerationLedger,
        in_flight: InFlight,
        publisher: Publisher,
        default_result_topic: str,
        step_attempts: int = 4,
        step_backoff_max_s: float = 2.0,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self._catalogue = catalogue
        self._providers = providers
        self._policy = policy
        self._ledger = ledger
        self._in_flight = in_flight
        self._publisher = publisher
        self._default_result_topic = default_result_topic
        self._step_attempts = step_attempts
        self._step_backoff_max_s = step_backoff_max_s
        self._sleep = sleep
        # Per generation, its lock: an entry lives as long as a run holds or awaits it.
        self._generations: weakref.WeakValueDictionary[str, asyncio.Lock] = (
            weakref.WeakValueDictionary()
        )

    def _retrying(self) -> AsyncRetrying:
        return retrying(self._step_attempts, self._step_backoff_max_s, TRANSIENT)

    async def run(self, task: LlmTask, still_owned: StillOwned = _always_owned) -> LlmResult | None:
        """Run `task`; returns its published result, or None when it had finished already.

        `still_owned` is asked before the result is published: a task whose partition moved
        to another worker meanwhile raises `NotOwnedError` instead, as that worker runs it.

        A copy of a task that arrives while the task runs (a producer retry that wrote it
        twice, or a redelivered request the orchestrator published again) waits for it, then
        finds it finished. Run side by side, the copy would be attempt 2: the client would see
        its reset and text, while the first attempt's result, published first, would end
        the turn with a `done` numbered below them, which the gateway drops as a duplicate.
        Copies share the conversation key, hence the partition and this process.
        """
        lock = self._generations.setdefault(generation_key(task), asyncio.Lock())
        async with lock:
            return await self._run(task, still_owned)

    async def _run(self, task: LlmTask, still_owned: StillOwned) -> LlmResult | None:
        begun: Begun = None
        async for step in self._retrying():
            with step:
                begun = await self._ledger.begin(task)
        if begun is None:
            log.info("task %s of %s finished already; skipped", task.task_id, task.request_id)
            return None
        attempt: int | None = None
        if isinstance(begun, LlmResult):
            # Recorded by an attempt that stopped before (or while) publishing it.
            log.info("task %s of %s: publishing its recorded result", task.task_id, task.request_id)
            result = begun
        elif self._in_flight.was_cancelled(task.tenant_id, task.request_id):
            log.info("%s was cancelled before its task %s ran", task.request_id, task.task_id)
            attempt, result = begun, cancelled_result(task)
        else:
            attempt = begun
            if attempt > 1:
                log.warning("task %s of %s: attempt %d", task.task_id, task.request_id, attempt)
            result = await self._generate(task, attempt)
        if attempt is not None:
            result.attempt = attempt
        if not await still_owned():
            raise NotOwnedError(task.task_id)
        # Shielded: a run cancelled now (its partition was reassigned) still records and
        # publishes the result it has, instead of leaving a record that a redelivery cannot
        # tell apart from one never published.
        return await asyncio.shield(self._deliver(task, attempt, result))

    async def _deliver(
        self, task: LlmTask, attempt: int | None, result: LlmResult
    ) -> LlmResult | None:
        """Record the result (unless a later attempt superseded this one), publish it, and
        mark the generation finished."""
        if attempt is not None:
            settled = False
            async for step in self._retrying():
                with step:
                    settled = await self._ledger.settle(task, attempt, result)
            if not settled:
                log.warning(
                    "task %s of %s: attempt %d superseded by a later one; result dropped",
                    task.task_id,
                    task.request_id,
                    attempt,
                )
                # Not finished here: the later attempt may be abandoned in turn (its partition
                # moved again), and committing this record would then lose the turn. Left
                # uncommitted, it is run again wherever its partition ends up.
                raise NotOwnedError(task.task_id)
        result_topic = task.result_topic or self._default_result_topic
        async for step in self._retrying():
            with step:
                await self._publisher.result(result_topic, result)
        async for step in self._retrying():
            with step:
                await self._ledger.finish(task)
        return result

    async def _generate(self, task: LlmTask, attempt: int) -> LlmResult:
        async def send(event: ChatEvent) -> None:
            await self._publisher.reply(task.reply_topic, event, task.tenant_id)

        generation = asyncio.create_task(
            generate(
                task,
                models_for(task, self._catalogue),
                self._providers,
                send,
                self._policy,
                attempt=attempt,
                sleep=self._sleep,
            )
        )
        self._in_flight.add(task.tenant_id, task.request_id, generation)
        try:
            return await generation
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if not self._in_flight.cancelled_by_client(generation) or (
                current is not None and current.cancelling()
            ):
                raise  # abandoned: another worker runs it again
            log.info("generation of %s cancelled by the client", task.request_id)
            return cancelled_result(task)
        finally:
            if not generation.done():
                generation.cancel()
            self._in_flight.remove(task.tenant_id, task.request_id, generation)
