"""Wires the memory service: the `chat.turns` consumer and the gRPC server."""

import asyncio
import logging

import grpc
from faststream.kafka import KafkaBroker, KafkaMessage
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from prometheus_client import Counter
from pymongo.errors import PyMongoError

from switchboard.common.health import HealthServer
from switchboard.common.kafka import create_broker, decode_or_dead_letter, durable_subscriber
from switchboard.common.lifecycle import wait_for_stop_signal
from switchboard.common.retry import retrying
from switchboard.common.telemetry import setup_telemetry
from switchboard.common.topics import Topics
from switchboard.memory.service import MemoryService
from switchboard.memory.settings import MemorySettings
from switchboard.memory.store import ConversationStore
from switchboard.v1 import memory_pb2, memory_pb2_grpc
from switchboard.v1.events_pb2 import CompletedTurn

log = logging.getLogger(__name__)

TURNS_STORED = Counter("switchboard_memory_turns_stored", "Turns written to the store")


def build(settings: MemorySettings, broker: KafkaBroker, store: ConversationStore) -> None:
    """Register the `chat.turns` handler on `broker`."""
    group = settings.consumer_group

    # Returning means MongoDB acknowledged the write: only then is the offset committed.
    @durable_subscriber(broker, Topics(settings.kafka.topic_prefix).chat_turns, group)
    async def on_turn(message: KafkaMessage) -> None:
        turn = await decode_or_dead_letter(broker, message, CompletedTurn, consumer_group=group)
        if turn is None:
            return
        async for attempt in retrying(
            settings.write_attempts, settings.write_backoff_max_s, (PyMongoError,)
        ):
            with attempt:
                await store.save_turn(turn)
        TURNS_STORED.inc()


async def serve(settings: MemorySettings) -> None:
    """Run the memory service until SIGTERM or SIGINT."""
    tracer_provider = setup_telemetry("memory", settings.telemetry)
    health_server = HealthServer(settings.health.host, settings.health.port)
    await health_server.start()
    store = ConversationStore(settings.mongo_url, settings.database, settings.mongo_timeout_ms)
    async for attempt in retrying(
        settings.write_attempts, settings.write_backoff_max_s, (PyMongoError,)
    ):
        with attempt:
            await store.ensure_indexes()

    broker = create_broker(settings.kafka, "memory", tracer_provider)
    build(settings, broker, store)

    server = grpc.aio.server()
    memory_pb2_grpc.add_MemoryServiceServicer_to_server(
        MemoryService(store, settings.default_context_tokens, settings.context_scan_limit),
        server,
    )
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    address = f"{settings.grpc_host}:{settings.grpc_port}"
    server.add_insecure_port(address)
    await server.start()
    async with asyncio.timeout(settings.kafka.connect_timeout_s):
        await broker.start()
    service_name = memory_pb2.DESCRIPTOR.services_by_name["MemoryService"].full_name
    for name in ("", service_name):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    health_server.ready = True
    log.info("memory serving gRPC on %s", address)

    await wait_for_stop_signal()

    health_server.ready = False
    await server.stop(settings.shutdown_grace_s)
    await broker.stop()
    await store.close()
    await health_server.stop()
    tracer_provider.shutdown()
