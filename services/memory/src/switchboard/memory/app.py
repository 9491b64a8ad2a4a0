"""Wires the memory service: `chat.turns` and summary consumers, gRPC server, sweeper."""

import asyncio
import contextlib
import logging

import grpc
from aiokafka.errors import KafkaError
from faststream.kafka import KafkaBroker, KafkaMessage
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from opentelemetry import trace
from pymongo.errors import PyMongoError

from switchboard.common.consumer import (
    Capacity,
    ConcurrentConsumer,
    Lease,
    PartitionLostError,
    Record,
)
from switchboard.common.health import HealthServer
from switchboard.common.kafka import (
    BrokerPublisher,
    consumer_span,
    create_broker,
    dead_letter_sink,
    decode_or_dead_letter,
    durable_subscriber,
)
from switchboard.common.lag import LagReporter
from switchboard.common.lifecycle import (
    cancel_and_wait,
    freeze_startup_objects,
    tune_process,
    wait_for_stop_signal,
)
from switchboard.common.retry import retrying
from switchboard.common.telemetry import grpc_server_interceptors, setup_telemetry
from switchboard.common.tenants import TenantStore
from switchboard.common.topics import Topics
from switchboard.conversation.facts import facts_of
from switchboard.conversation.records import messages_of, turn_problem
from switchboard.conversation.tokens import load_encodings
from switchboard.memory.cache import ContextCache
from switchboard.memory.metrics import TURNS
from switchboard.memory.retention import RetentionSweeper
from switchboard.memory.service import MemoryService
from switchboard.memory.settings import MemorySettings
from switchboard.memory.store import ConversationStore, SaveOutcome
from switchboard.memory.summarizer import Summarizer
from switchboard.v1 import memory_pb2, memory_pb2_grpc
from switchboard.v1.events_pb2 import CompletedTurn, LlmResult, LlmTask

log = logging.getLogger(__name__)
tracer = trace.get_tracer("switchboard.memory")


TRANSIENT = (PyMongoError, KafkaError, TimeoutError)


class TurnRecordHandler:
    """One record of `chat.turns`. Returning means MongoDB acknowledged the write: only then
    is the offset committed. Raising (after the bounded retries) has the record fetched
    again later, so during an outage nothing is lost and it is stored once it is back."""

    def __init__(
        self,
        settings: MemorySettings,
        broker: KafkaBroker,
        store: ConversationStore,
        cache: ContextCache,
        summarizer: Summarizer,
    ) -> None:
        self._settings = settings
        self._broker = broker
        self._store = store
        self._cache = cache
        self._summarizer = summarizer
        self.group_id = settings.consumer_group

    async def __call__(self, record: Record, lease: Lease) -> None:
        with consumer_span(tracer, record, self.group_id):
            turn = await decode_or_dead_letter(
                self._broker,
                record,
                CompletedTurn,
                group_id=self.group_id,
                attempts=self._settings.write_attempts,
                backoff_max_s=self._settings.write_backoff_max_s,
                problem_of=turn_problem,
            )
            if turn is None:
                TURNS.labels("invalid").inc()
                return
            await self._store_turn(turn, lease)

    async def _store_turn(self, turn: CompletedTurn, lease: Lease) -> None:
        settings = self._settings
        key = (turn.tenant_id, turn.conversation_id)
        messages = messages_of(turn)
        # In the cache before the write, so contexts include it even while MongoDB is away.
        self._cache.add(key, messages, [fact for fact, _ in facts_of(messages)])
        async for attempt in retrying(
            settings.write_attempts, settings.write_backoff_max_s, (PyMongoError,)
        ):
            with attempt:
                saved = await self._store.save_turn_with_state(turn)
        if saved.outcome is SaveOutcome.DROPPED_DELETED:
            self._cache.forget(key)
            TURNS.labels("dropped_deleted").inc()
            log.info("turn %s of deleted conversation %s dropped", turn.request_id, key[1])
            return
        TURNS.labels("stored").inc()
        # The write is idempotent, the summary plan is not: a record whose partition moved
        # mid-rebalance leaves the plan to the new owner, which stores the turn again.
        if not await lease.held():
            raise PartitionLostError(f"turn {turn.request_id}")
        async for attempt in retrying(
            settings.write_attempts, settings.write_backoff_max_s, TRANSIENT
        ):
            with attempt:
                # The state the write left, then (on a retry) whatever the store holds.
                first = attempt.retry_state.attempt_number == 1
                await self._summarizer.after_turn(
                    turn.tenant_id, turn.conversation_id, saved if first else None
                )


def build(
    settings: MemorySettings,
    broker: KafkaBroker,
    store: ConversationStore,
    cache: ContextCache,
) -> Summarizer:
    """Register the summary-result handler on `broker`; `chat.turns` is consumed by a
    `ConcurrentConsumer` running `TurnRecordHandler` (see `serve`)."""
    topics = Topics(settings.kafka.topic_prefix)
    group = settings.consumer_group
    summaries_group = f"{group}-summaries"

    publisher = BrokerPublisher(broker)

    async def publish_task(topic: str, task: LlmTask) -> None:
        await publisher.publish(topic, task, key=task.conversation_id)

    summarizer = Summarizer(
        store,
        publish_task,
        settings,
        task_topic=topics.llm_tasks(settings.summary_tier),
        result_topic=topics.memory_summaries,
    )

    @durable_subscriber(broker, topics.memory_summaries, summaries_group)
    async def on_summary(message: KafkaMessage) -> None:
        result = await decode_or_dead_letter(
            broker,
            message,
            LlmResult,
            group_id=summaries_group,
            attempts=settings.write_attempts,
            backoff_max_s=settings.write_backoff_max_s,
        )
        if result is None:
            return
        async for attempt in retrying(
            settings.write_attempts, settings.write_backoff_max_s, (PyMongoError,)
        ):
            with attempt:
                await summarizer.on_result(result)

    return summarizer


async def serve(settings: MemorySettings) -> None:
    """Run the memory service until SIGTERM or SIGINT.

    Teardown mirrors start-up: each resource registers its release on an exit stack the
    moment it exists, so shutdown (or a failed start) releases exactly what was started, in
    reverse order.
    """
    async with contextlib.AsyncExitStack() as stack:
        tracer_provider = setup_telemetry("memory", settings.telemetry)
        stack.callback(tracer_provider.shutdown)
        health_server = HealthServer(settings.health.host, settings.health.port)
        await health_server.start()
        stack.push_async_callback(health_server.stop)
        store = ConversationStore(
            settings.mongo_url,
            settings.database,
            settings.mongo_timeout_ms,
            recent_limit=settings.recent_messages,
            facts_limit=settings.known_facts_limit,
        )
        stack.push_async_callback(store.close)
        async for attempt in retrying(
            settings.write_attempts, settings.write_backoff_max_s, (PyMongoError,)
        ):
            with attempt:
                await store.ensure_indexes()
        cache = ContextCache(
            settings.cache_max_conversations,
            settings.cache_max_messages,
            settings.cache_ttl_s,
            max_bytes=settings.cache_max_bytes,
        )

        broker = create_broker(settings.kafka, "memory", tracer_provider)
        summarizer = build(settings, broker, store, cache)

        server = grpc.aio.server(interceptors=grpc_server_interceptors())
        memory_pb2_grpc.add_MemoryServiceServicer_to_server(
            MemoryService(store, cache, settings), server
        )
        health_servicer = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
        address = f"{settings.grpc_host}:{settings.grpc_port}"
        server.add_insecure_port(address)
        await server.start()
        # Stops at once if start-up fails below; after the drain, stopping again is a no-op.
        stack.push_async_callback(server.stop, 0)
        async with asyncio.timeout(settings.kafka.connect_timeout_s):
            await broker.start()
        stack.push_async_callback(broker.stop)
        # Many turns stored at once, one at a time per conversation (and the store serialises
        # every write to a conversation document, which FerretDB needs); offsets committed
        # only over turns MongoDB acknowledged.
        turns_consumer = ConcurrentConsumer(
            topics=[Topics(settings.kafka.topic_prefix).chat_turns],
            group_id=settings.consumer_group,
            client_id="memory",
            kafka=settings.kafka,
            handler=TurnRecordHandler(settings, broker, store, cache, summarizer),
            capacity=Capacity(settings.max_concurrent_writes),
            retry_backoff_s=settings.write_backoff_max_s,
            ordered_by_key=True,
            # No client waits on a stored turn; a turn set aside can be replayed from its DLQ.
            dead_letter=dead_letter_sink(
                broker,
                group_id=settings.consumer_group,
                attempts=settings.write_attempts,
                backoff_max_s=settings.write_backoff_max_s,
            ),
        )
        async with asyncio.timeout(settings.kafka.connect_timeout_s):
            await turns_consumer.start()
        stack.push_async_callback(turns_consumer.stop, settings.shutdown_grace_s)

        tenants = TenantStore(store.client, settings.database)
        sweeper = RetentionSweeper(
            store,
            tenants.get,
            default_retention_days=settings.default_retention_days,
            batch_size=settings.sweep_batch_size,
            tombstone_keep_s=settings.tombstone_keep_s,
            on_deleted=lambda tenant, conversation: cache.forget((tenant, conversation)),
        )
        sweeping = asyncio.create_task(sweeper.run(settings.sweep_interval_s))
        stack.push_async_callback(cancel_and_wait, sweeping)

        service_name = memory_pb2.DESCRIPTOR.services_by_name["MemoryService"].full_name
        for name in ("", service_name):
            await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
        topics = Topics(settings.kafka.topic_prefix)
        lag = LagReporter(
            settings.kafka,
            {
                settings.consumer_group: [topics.chat_turns],
                f"{settings.consumer_group}-summaries": [topics.memory_summaries],
            },
            settings.kafka.lag_report_interval_s,
        )
        lag.start()
        stack.push_async_callback(lag.stop)
        tune_process()
        load_encodings()  # frozen with the rest, never walked by a collection
        freeze_startup_objects()
        health_server.ready = True
        log.info("memory serving gRPC on %s", address)

        await wait_for_stop_signal()

        # Drain the gRPC calls first; the exit stack then releases the rest in reverse order.
        health_server.ready = False
        await server.stop(settings.shutdown_grace_s)
