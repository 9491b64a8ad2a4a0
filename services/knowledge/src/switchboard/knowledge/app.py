"""Wires the knowledge service: MongoDB, the embedder, the indexes, the chunk-change
consumer, the gRPC server."""

import asyncio
import contextlib
import logging

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from pymongo.errors import PyMongoError

from switchboard.common.health import HealthServer
from switchboard.common.kafka import BrokerPublisher, create_broker
from switchboard.common.lifecycle import freeze_startup_objects, tune_process, wait_for_stop_signal
from switchboard.common.retry import retrying
from switchboard.common.telemetry import grpc_server_interceptors, setup_telemetry
from switchboard.common.tenants import TenantStore
from switchboard.common.topics import Topics
from switchboard.embeddings import create_embedder
from switchboard.embeddings.remote import OpenAIEmbedder
from switchboard.knowledge.documents import KnowledgeBase
from switchboard.knowledge.service import KnowledgeService
from switchboard.knowledge.settings import KnowledgeSettings
from switchboard.knowledge_index.index import KnowledgeIndex
from switchboard.knowledge_index.replica import IndexReplica
from switchboard.knowledge_index.store import KnowledgeStore
from switchboard.knowledge_index.sync import ChunkChanges
from switchboard.v1 import knowledge_pb2, knowledge_pb2_grpc
from switchboard.v1.knowledge_pb2 import KnowledgeChunkChange

log = logging.getLogger(__name__)


async def serve(settings: KnowledgeSettings) -> None:
    """Run the knowledge service until SIGTERM or SIGINT.

    Teardown mirrors start-up: each resource registers its release on an exit stack the
    moment it exists, so shutdown (or a failed start) releases exactly what was started, in
    reverse order.
    """
    async with contextlib.AsyncExitStack() as stack:
        tracer_provider = setup_telemetry("knowledge", settings.telemetry)
        stack.callback(tracer_provider.shutdown)
        health_server = HealthServer(settings.health.host, settings.health.port)
        await health_server.start()
        stack.push_async_callback(health_server.stop)
        store = KnowledgeStore(settings.mongo_url, settings.database, settings.mongo_timeout_ms)
        stack.push_async_callback(store.close)
        async for attempt in retrying(
            settings.write_attempts, settings.write_backoff_max_s, (PyMongoError,)
        ):
            with attempt:
                await store.ensure_indexes()
        embedder = create_embedder(settings.embeddings)
        stack.push_async_callback(embedder.close)
        if isinstance(embedder, OpenAIEmbedder):
            await embedder.probe()
        topic = Topics(settings.kafka.topic_prefix).knowledge_chunks
        broker = create_broker(settings.kafka, "knowledge", tracer_provider)

        publisher = BrokerPublisher(broker)

        async def publish_change(change: KnowledgeChunkChange) -> None:
            await publisher.publish(topic, change, key=f"{change.tenant_id}/{change.document_id}")

        tenants = TenantStore(store.client, settings.database)
        knowledge = KnowledgeBase(
            settings,
            store=store,
            replica=IndexReplica(
                store, KnowledgeIndex(embedder.dimensions, settings.retrieval), embedder.name
            ),
            embedder=embedder,
            publish=publish_change,
            tenants=tenants.get,
        )
        async with asyncio.timeout(settings.kafka.connect_timeout_s):
            await broker.start()
        stack.push_async_callback(broker.stop)
        changes = ChunkChanges(
            settings.kafka, topic, knowledge.replica, settings.sync_poll_timeout_ms
        )
        loaded = await changes.start(stack, settings.kafka.connect_timeout_s)
        log.info("knowledge indexes loaded: %d chunks", loaded)

        server = grpc.aio.server(interceptors=grpc_server_interceptors())
        knowledge_pb2_grpc.add_KnowledgeServiceServicer_to_server(
            KnowledgeService(knowledge), server
        )
        health_servicer = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
        service_name = knowledge_pb2.DESCRIPTOR.services_by_name["KnowledgeService"].full_name
        reflection.enable_server_reflection(
            [service_name, reflection.SERVICE_NAME, health.SERVICE_NAME], server
        )
        address = f"{settings.grpc_host}:{settings.grpc_port}"
        server.add_insecure_port(address)
        await server.start()
        stack.push_async_callback(server.stop, settings.shutdown_grace_s)
        for name in ("", service_name):
            await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
        tune_process()
        freeze_startup_objects()
        health_server.ready = True
        log.info("knowledge serving gRPC on %s", address)

        await wait_for_stop_signal()

        health_server.ready = False
