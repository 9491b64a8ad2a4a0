"""Wires a worker process: one consumer per tier it serves, plus cancellations."""

import asyncio
import logging
from functools import partial

from faststream.kafka import KafkaBroker, KafkaMessage
from faststream.middlewares import AckPolicy
from prometheus_client import Gauge

from switchboard.common.envelope import PoisonMessageError, decode
from switchboard.common.health import HealthServer
from switchboard.common.kafka import (
    create_broker,
    decode_or_dead_letter,
    durable_subscriber,
    publish,
)
from switchboard.common.lifecycle import wait_for_stop_signal
from switchboard.common.telemetry import setup_telemetry
from switchboard.common.topics import Topics
from switchboard.llm_worker.generation import Coalescer, generate, models_for
from switchboard.llm_worker.providers import AnthropicProvider, OpenAIProvider, Provider
from switchboard.llm_worker.settings import WorkerSettings
from switchboard.v1.chat_pb2 import ChatEvent, Error
from switchboard.v1.events_pb2 import CancelGeneration, LlmResult, LlmTask

log = logging.getLogger(__name__)

IN_FLIGHT = Gauge("switchboard_worker_generations_in_flight", "Generations running", ["tier"])


class InFlight:
    """Running generations by request id, so a cancellation can find its task."""

    def __init__(self) -> None:
        self._tasks: dict[str, asyncio.Task[LlmResult]] = {}
        self.cancelled: set[str] = set()

    def add(self, request_id: str, task: asyncio.Task[LlmResult]) -> None:
        self._tasks[request_id] = task

    def remove(self, request_id: str) -> None:
        self._tasks.pop(request_id, None)
        self.cancelled.discard(request_id)

    def cancel(self, request_id: str) -> bool:
        """Stop the generation of `request_id` if this process runs it."""
        task = self._tasks.get(request_id)
        if task is None:
            return False
        self.cancelled.add(request_id)
        task.cancel()
        return True


def build(
    settings: WorkerSettings, broker: KafkaBroker, providers: dict[str, Provider]
) -> InFlight:
    """Register the handlers on `broker`."""
    in_flight = InFlight()
    topics = Topics(settings.kafka.topic_prefix)

    async def send_reply(topic: str, event: ChatEvent) -> None:
        await publish(broker, topic, event, key=event.request_id)

    def new_coalescer() -> Coalescer:
        return Coalescer(settings.coalesce_window_ms / 1000, settings.coalesce_max_chars)

    async def run(task: LlmTask) -> LlmResult:
        generation = asyncio.create_task(
            generate(
                task,
                models_for(task, settings.catalogue),
                providers,
                partial(send_reply, task.reply_topic),
                new_coalescer,
            )
        )
        in_flight.add(task.request_id, generation)
        try:
            return await generation
        except asyncio.CancelledError:
            if task.request_id not in in_flight.cancelled:
                raise  # shutting down: the task is redelivered to another worker
            log.info("generation of %s cancelled by the client", task.request_id)
            return LlmResult(
                task_id=task.task_id,
                tenant_id=task.tenant_id,
                conversation_id=task.conversation_id,
                request_id=task.request_id,
                tier=task.tier,
                error=Error(code="CANCELLED", message="cancelled by the client"),
            )
        finally:
            in_flight.remove(task.request_id)

    def register_tier(tier: str) -> None:
        group = f"{settings.consumer_group_prefix}-{tier}"

        @durable_subscriber(broker, topics.llm_tasks(tier), group)
        async def on_task(message: KafkaMessage) -> None:
            task = await decode_or_dead_letter(broker, message, LlmTask, consumer_group=group)
            if task is None:
                return
            with IN_FLIGHT.labels(tier).track_inprogress():
                result = await run(task)
            await publish(
                broker,
                task.result_topic or topics.llm_results,
                result,
                key=task.conversation_id,
            )

    for tier in settings.tiers:
        register_tier(tier)

    # Every worker hears every cancellation: no group, so each reads all partitions.
    @broker.subscriber(topics.chat_cancel, ack_policy=AckPolicy.ACK_FIRST)
    async def on_cancel(body: bytes, message: KafkaMessage) -> None:
        try:
            cancel = decode(body, dict(message.headers), CancelGeneration)
        except PoisonMessageError as exc:
            log.warning("ignoring unreadable cancellation: %s", exc)
            return
        in_flight.cancel(cancel.request_id)

    return in_flight


async def serve(settings: WorkerSettings) -> None:
    """Run the worker until SIGTERM or SIGINT."""
    tracer_provider = setup_telemetry("llm-worker", settings.telemetry)
    health_server = HealthServer(settings.health.host, settings.health.port)
    await health_server.start()
    openai_url, openai_key = settings.providers.openai()
    anthropic_url, anthropic_key = settings.providers.anthropic()
    openai_provider = OpenAIProvider(
        openai_url, openai_key, settings.request_timeout_s, settings.max_retries
    )
    anthropic_provider = AnthropicProvider(
        anthropic_url, anthropic_key, settings.request_timeout_s, settings.max_retries
    )
    providers: dict[str, Provider] = {"openai": openai_provider, "anthropic": anthropic_provider}
    broker = create_broker(settings.kafka, f"llm-worker-{settings.instance_id}", tracer_provider)
    build(settings, broker, providers)
    async with asyncio.timeout(settings.kafka.connect_timeout_s):
        await broker.start()
    health_server.ready = True
    log.info("worker %s serving tiers %s", settings.instance_id, ",".join(settings.tiers))

    await wait_for_stop_signal()

    health_server.ready = False
    await broker.stop()
    await openai_provider.close()
    await anthropic_provider.close()
    await health_server.stop()
    tracer_provider.shutdown()
