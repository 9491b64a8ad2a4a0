"""Wires a worker process: one concurrent consumer per tier it serves, plus cancellations."""

import asyncio
import contextlib
import logging

from faststream.kafka import KafkaBroker, KafkaMessage
from faststream.middlewares import AckPolicy
from opentelemetry import trace

from switchboard.common.consumer import (
    Capacity,
    ConcurrentConsumer,
    Lease,
    PartitionLostError,
    Record,
)
from switchboard.common.envelope import PoisonMessageError, decode
from switchboard.common.health import HealthServer
from switchboard.common.kafka import (
    BrokerPublisher,
    Notify,
    StreamPublisher,
    consumer_span,
    create_broker,
    dead_letter_sink,
    decode_or_dead_letter,
    record_headers,
)
from switchboard.common.lag import LagReporter
from switchboard.common.lifecycle import freeze_startup_objects, tune_process, wait_for_stop_signal
from switchboard.common.redis import create_redis
from switchboard.common.sequencing import FINAL_SEQUENCE
from switchboard.common.telemetry import setup_telemetry
from switchboard.common.topics import Topics
from switchboard.llm_worker.generation import GenerationPolicy
from switchboard.llm_worker.ledger import RedisGenerationLedger
from switchboard.llm_worker.metrics import IN_FLIGHT
from switchboard.llm_worker.providers import AnthropicProvider, OpenAIProvider, Provider
from switchboard.llm_worker.settings import WorkerSettings
from switchboard.llm_worker.worker import InFlight, NotOwnedError, TaskRunner
from switchboard.v1.chat_pb2 import ChatEvent, Error
from switchboard.v1.events_pb2 import CancelGeneration, LlmResult, LlmTask

log = logging.getLogger(__name__)
tracer = trace.get_tracer("switchboard.llm_worker")


def policy_of(settings: WorkerSettings) -> GenerationPolicy:
    """The generation policy the settings describe."""
    return GenerationPolicy(
        coalesce_window_s=settings.coalesce_window_ms / 1000,
        coalesce_max_chars=settings.coalesce_max_chars,
        retries_per_model=settings.max_retries,
        backoff_initial_s=settings.retry_backoff_initial_s,
        backoff_max_s=settings.retry_backoff_max_s,
        retry_after_max_s=settings.retry_after_max_s,
        stream_idle_timeout_s=settings.stream_idle_timeout_s,
        attempt_timeout_s=settings.attempt_timeout_s,
        default_max_output_tokens=settings.default_max_output_tokens,
        send_error_events=settings.send_error_events,
        forward_sim_controls=settings.forward_sim_controls,
    )


class KafkaPublisher:
    """Reply events keyed by request id (on the lean stream publisher: there are dozens per
    reply), results keyed by conversation id."""

    def __init__(self, broker: KafkaBroker, replies: StreamPublisher) -> None:
        self._results = BrokerPublisher(broker)
        self._replies = replies

    async def reply(self, topic: str, event: ChatEvent, tenant_id: str) -> None:
        await self._replies.publish(topic, event, key=event.request_id, tenant_id=tenant_id)

    async def result(self, topic: str, result: LlmResult) -> None:
        await self._results.publish(topic, result, key=result.conversation_id)


class TaskHandler:
    """Handles one record of a tier's task topic: trace context, decoding, dead letters."""

    def __init__(
        self, settings: WorkerSettings, broker: KafkaBroker, runner: TaskRunner, tier: str
    ) -> None:
        self._settings = settings
        self._broker = broker
        self._runner = runner
        self._tier = tier
        self.group_id = f"{settings.consumer_group_prefix}-{tier}"

    async def __call__(self, record: Record, lease: Lease) -> None:
        # The task's trace continues here; spans and records published below join it.
        with consumer_span(tracer, record, self.group_id) as span:
            task = await decode_or_dead_letter(
                self._broker,
                record,
                LlmTask,
                group_id=self.group_id,
                attempts=self._settings.step_attempts,
                backoff_max_s=self._settings.step_backoff_max_s,
            )
            if task is None:
                return
            span.set_attribute("switchboard.request_id", task.request_id)
            with IN_FLIGHT.labels(self._tier).track_inprogress():
                try:
                    await self._runner.run(task, lease.held)
                except NotOwnedError as exc:
                    raise PartitionLostError(str(exc)) from exc


def dead_letter_notice(publisher: KafkaPublisher, default_result_topic: str) -> Notify:
    """For a task given up on: an error result, so that whoever waits on it (the turn's
    orchestrator, memory's summary) ends it; numbered above every attempt's events."""

    async def notify(record: Record, error: str) -> None:
        try:
            task = decode(record.value or b"", record_headers(record), LlmTask)
        except PoisonMessageError:
            return
        result = LlmResult(
            task_id=task.task_id,
            tenant_id=task.tenant_id,
            conversation_id=task.conversation_id,
            request_id=task.request_id,
            tier=task.tier,
            error=Error(
                code="INTERNAL",
                message=f"the generation could not be run and was set aside: {error[:300]}",
            ),
            last_sequence=FINAL_SEQUENCE - 1,
        )
        await publisher.result(task.result_topic or default_result_topic, result)

    return notify


def register_cancellations(broker: KafkaBroker, topics: Topics, in_flight: InFlight) -> None:
    """Every worker hears every cancellation: no group, so each reads all partitions."""

    @broker.subscriber(topics.chat_cancel, ack_policy=AckPolicy.ACK_FIRST)
    async def on_cancel(body: bytes, message: KafkaMessage) -> None:
        try:
            cancel = decode(body, dict(message.headers), CancelGeneration)
        except PoisonMessageError as exc:
            log.warning("ignoring unreadable cancellation: %s", exc)
            return
        if in_flight.cancel(cancel.tenant_id, cancel.request_id):
            log.info("cancelling the generation of %s", cancel.request_id)


async def _stop_all(consumers: list[ConcurrentConsumer], grace_s: float) -> None:
    """Stop the consumers side by side: they share one grace period."""
    await asyncio.gather(*(c.stop(grace_s) for c in consumers))


async def serve(settings: WorkerSettings) -> None:
    """Run the worker until SIGTERM or SIGINT.

    Teardown mirrors start-up: each resource registers its release on an exit stack the
    moment it exists, so shutdown (or a failed start) releases exactly what was started, in
    reverse order.
    """
    async with contextlib.AsyncExitStack() as stack:
        tracer_provider = setup_telemetry("llm-worker", settings.telemetry)
        stack.callback(tracer_provider.shutdown)
        # The SDKs' HTTP client logs every request at INFO: far too much at this volume.
        logging.getLogger("httpx2").setLevel(logging.WARNING)
        health_server = HealthServer(settings.health.host, settings.health.port)
        await health_server.start()
        stack.push_async_callback(health_server.stop)
        redis = create_redis(settings.redis)
        stack.push_async_callback(redis.aclose)
        openai_url, openai_key = settings.providers.openai()
        anthropic_url, anthropic_key = settings.providers.anthropic()
        anthropic_provider = AnthropicProvider(
            anthropic_url, anthropic_key, settings.request_timeout_s
        )
        stack.push_async_callback(anthropic_provider.close)
        openai_provider = OpenAIProvider(openai_url, openai_key, settings.request_timeout_s)
        stack.push_async_callback(openai_provider.close)
        providers: dict[str, Provider] = {
            "openai": openai_provider,
            "anthropic": anthropic_provider,
        }
        topics = Topics(settings.kafka.topic_prefix)
        broker = create_broker(
            settings.kafka, f"llm-worker-{settings.instance_id}", tracer_provider
        )
        replies = StreamPublisher(settings.kafka, f"llm-worker-{settings.instance_id}-replies")
        in_flight = InFlight(settings.cancelled_memory)
        publisher = KafkaPublisher(broker, replies)
        runner = TaskRunner(
            catalogue=settings.catalogue,
            providers=providers,
            policy=policy_of(settings),
            ledger=RedisGenerationLedger(redis, settings.task_state_ttl_s),
            in_flight=in_flight,
            publisher=publisher,
            default_result_topic=topics.llm_results,
            step_attempts=settings.step_attempts,
            step_backoff_max_s=settings.step_backoff_max_s,
        )
        register_cancellations(broker, topics, in_flight)
        async with asyncio.timeout(settings.kafka.connect_timeout_s):
            await broker.start()
            stack.push_async_callback(broker.stop)
            await replies.start()
            stack.push_async_callback(replies.stop)
        capacity = Capacity(settings.max_concurrency)
        consumers = []
        for tier in settings.tiers:
            handler = TaskHandler(settings, broker, runner, tier)
            consumers.append(
                ConcurrentConsumer(
                    topics=[topics.llm_tasks(tier)],
                    group_id=handler.group_id,
                    client_id=f"llm-worker-{settings.instance_id}-{tier}",
                    kafka=settings.kafka,
                    handler=handler,
                    capacity=capacity,
                    poll_timeout_ms=settings.poll_timeout_ms,
                    commit_interval_s=settings.commit_interval_ms / 1000,
                    retry_backoff_s=settings.task_retry_backoff_s,
                    rebalance_wait_s=settings.rebalance_wait_s,
                    dead_letter=dead_letter_sink(
                        broker,
                        group_id=handler.group_id,
                        attempts=settings.step_attempts,
                        backoff_max_s=settings.step_backoff_max_s,
                        notify=dead_letter_notice(publisher, topics.llm_results),
                    ),
                )
            )
        started: list[ConcurrentConsumer] = []
        stack.push_async_callback(_stop_all, started, settings.shutdown_grace_s)
        async with asyncio.timeout(settings.kafka.connect_timeout_s):
            for consumer in consumers:
                await consumer.start()
                started.append(consumer)
        lag = LagReporter(
            settings.kafka,
            {
                f"{settings.consumer_group_prefix}-{tier}": [topics.llm_tasks(tier)]
                for tier in settings.tiers
            },
            settings.kafka.lag_report_interval_s,
        )
        lag.start()
        stack.push_async_callback(lag.stop)
        tune_process()
        freeze_startup_objects()
        health_server.ready = True
        log.info(
            "worker %s serving tiers %s, up to %d generations at once",
            settings.instance_id,
            ",".join(settings.tiers),
            settings.max_concurrency,
        )

        await wait_for_stop_signal()

        health_server.ready = False
