"""Wires the gateway: reply consumer, Kafka publisher, Redis, tenants, the gRPC server."""

import asyncio
import contextlib
import logging
from typing import Any

import grpc
from aiohttp import web
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from pymongo import AsyncMongoClient
from redis.asyncio import Redis
from redis.exceptions import RedisError

from switchboard.common.health import HealthServer
from switchboard.common.kafka import create_broker
from switchboard.common.lifecycle import (
    BoundedExitStack,
    freeze_startup_objects,
    tune_process,
    wait_for_stop_signal,
)
from switchboard.common.redis import create_redis
from switchboard.common.telemetry import grpc_server_interceptors, setup_telemetry
from switchboard.common.tenants import TenantStore
from switchboard.common.topics import Topics
from switchboard.gateway.adapters import (
    KafkaTurnPublisher,
    RedisConversationMarkers,
    ReplyTopicAdmin,
)
from switchboard.gateway.admission import RedisAdmission
from switchboard.gateway.auth import TenantAuthenticator
from switchboard.gateway.browser import BrowserSessions
from switchboard.gateway.conversations import ConversationMethods, MemoryClient
from switchboard.gateway.directory import MemoryBackedDirectory
from switchboard.gateway.http_edge import HttpEdge
from switchboard.gateway.http_stream import StreamOptions
from switchboard.gateway.idempotency import RedisRequestStore
from switchboard.gateway.instances import Heartbeats, ReplyTopicSweeper, run_heartbeats
from switchboard.gateway.knowledge import SERVICE_NAME as KNOWLEDGE_SERVICE
from switchboard.gateway.knowledge import KnowledgeForwarder, add_knowledge_service
from switchboard.gateway.metrics import OPEN_STREAMS
from switchboard.gateway.replies import ReplyRouter
from switchboard.gateway.reply_consumer import ReplyConsumer
from switchboard.gateway.service import ChatService
from switchboard.gateway.settings import GatewaySettings
from switchboard.gateway.validation import ChatLimits
from switchboard.v1 import chat_pb2, chat_pb2_grpc

log = logging.getLogger(__name__)


def server_options(settings: GatewaySettings) -> list[tuple[str, Any]]:
    """Keepalive, message sizes and stream limits of the gRPC server."""
    options: list[tuple[str, Any]] = [
        ("grpc.max_receive_message_length", settings.max_receive_message_bytes),
        ("grpc.max_send_message_length", settings.max_send_message_bytes),
        ("grpc.max_concurrent_streams", settings.max_concurrent_streams_per_connection),
        ("grpc.keepalive_time_ms", int(settings.keepalive_time_s * 1000)),
        ("grpc.keepalive_timeout_ms", int(settings.keepalive_timeout_s * 1000)),
        # Long replies may pass without data frames in either direction: ping anyway.
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
        (
            "grpc.http2.min_ping_interval_without_data_ms",
            int(settings.keepalive_min_client_ping_interval_s * 1000),
        ),
        (
            "grpc.http2.min_recv_ping_interval_without_data_ms",
            int(settings.keepalive_min_client_ping_interval_s * 1000),
        ),
    ]
    if settings.max_connection_idle_s > 0:
        options.append(("grpc.max_connection_idle_ms", int(settings.max_connection_idle_s * 1000)))
    return options


async def drain(server: grpc.aio.Server, router: ReplyRouter, grace_s: float) -> bool:
    """Stop the server (new calls are refused at once) and wait up to `grace_s` for the open
    streams; True when they all ended by themselves, False when some were cut off."""
    stopping = asyncio.create_task(server.stop(grace_s))
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(router.wait_until_empty(), grace_s)
    drained = router.open_streams == 0
    await stopping
    log.info("gRPC server stopped; open streams %s", "drained" if drained else "cut off")
    return drained


async def start_http(
    settings: GatewaySettings,
    chat_service: ChatService,
    tenants: TenantStore,
    redis: Redis,
    knowledge: KnowledgeForwarder | None = None,
) -> tuple[web.AppRunner | None, web.TCPSite | None]:
    """Serve the HTTP door in this event loop, over the gRPC door's own pipeline."""
    if not settings.http_enabled:
        return None, None
    edge = HttpEdge(
        core=chat_service.core,
        conversations=chat_service.conversations,
        publishable_keys=tenants,
        sessions=BrowserSessions(redis, settings.http_session_ttl_s),
        max_body_bytes=settings.http_max_body_bytes,
        demo_widget_key=settings.http_demo_widget_key,
        knowledge=knowledge,
        stream_options=StreamOptions(
            keepalive_s=settings.http_sse_keepalive_s,
            hold_max_s=settings.http_hold_max_s,
            hold_max_chars=settings.http_hold_max_chars,
        ),
    )
    # handler_cancellation: a client that goes away mid-reply cancels its handler, and so
    # the generation, as a gRPC client does.
    runner = web.AppRunner(
        edge.app(),
        access_log=None,
        handler_cancellation=True,
        shutdown_timeout=max(settings.shutdown_grace_s, 0.1),
    )
    await runner.setup()
    site = web.TCPSite(runner, settings.http_host, settings.http_port)
    await site.start()
    log.info("gateway serving HTTP on http://%s:%d", settings.http_host, settings.http_port)
    return runner, site


class ReplyTopicRelease:
    """Deletes the reply topic at shutdown only when every stream drained: streams cut off
    may still have generations publishing there (and a publish to a deleted topic stalls its
    producer), so their topic is left to another replica's sweeper."""

    def __init__(self, admin: ReplyTopicAdmin) -> None:
        self._admin = admin
        self.drained = False

    async def __call__(self) -> None:
        if self.drained:
            await self._admin.delete()
        else:
            log.info("leaving reply topic %s to the sweeper", self._admin.topic)


async def _cancel(task: "asyncio.Task[None]") -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _stop_heartbeats(heartbeats: Heartbeats) -> None:
    try:
        await heartbeats.stop()
    except Exception as exc:  # Redis gone: the heartbeat expires on its own
        log.warning("heartbeat not removed: %s", exc)


async def serve(settings: GatewaySettings) -> None:
    """Run the gateway until SIGTERM or SIGINT.

    Teardown mirrors start-up: each resource registers its own release on an exit stack the
    moment it exists, so shutdown (or a failed start) releases exactly what was started, in
    reverse order, and no release can be forgotten or run out of turn.
    """
    async with BoundedExitStack(settings.teardown_step_timeout_s) as stack:
        tracer_provider = setup_telemetry("gateway", settings.telemetry)
        stack.callback(tracer_provider.shutdown)
        health_server = HealthServer(settings.health.host, settings.health.port)
        await health_server.start()
        stack.push_async_callback(health_server.stop)

        topics = Topics(settings.kafka.topic_prefix)
        reply_admin = ReplyTopicAdmin(
            settings.kafka,
            topics.chat_replies(settings.instance_id),
            settings.reply_topic_partitions,
        )
        redis = create_redis(settings.redis)
        stack.push_async_callback(redis.aclose)
        heartbeats = Heartbeats(redis, reply_admin.topic, settings.heartbeat_ttl_s)
        # Beat before the topic exists, so that no sweeper ever sees it without a heartbeat.
        try:
            await heartbeats.beat()
        except RedisError as exc:  # the loop below keeps trying, and re-creates the topic then
            log.warning("no heartbeat at start: %s", exc)
        stack.push_async_callback(_stop_heartbeats, heartbeats)
        await reply_admin.create()
        release_topic = ReplyTopicRelease(reply_admin)
        stack.push_async_callback(release_topic)
        # Started after the topic exists and so stopped before it is released: its recovery
        # (re-creating a missing topic) must not bring a deleted topic back.
        heartbeat_task = asyncio.create_task(
            run_heartbeats(
                heartbeats,
                ReplyTopicSweeper(
                    reply_admin,
                    heartbeats,
                    topics.chat_replies(""),
                    settings.abandoned_reply_topic_grace_s,
                ),
                topic_prefix=settings.kafka.topic_prefix,
                heartbeat_interval_s=settings.heartbeat_interval_s,
                sweep_interval_s=settings.reply_topic_sweep_interval_s,
                recover=reply_admin.create,
            ),
            name="heartbeats",
        )
        stack.push_async_callback(_cancel, heartbeat_task)

        router = ReplyRouter(settings.stream_buffer_events, settings.max_open_streams)
        broker = create_broker(settings.kafka, f"gateway-{settings.instance_id}", tracer_provider)

        # No consumer group: this instance alone reads its topic, from the start, no commits.
        OPEN_STREAMS.set_function(lambda: router.open_streams)
        replies = ReplyConsumer(settings.kafka, reply_admin.topic, router.deliver)
        async with asyncio.timeout(settings.kafka.connect_timeout_s):
            await broker.start()
            stack.push_async_callback(broker.stop)
            await replies.start()
            stack.push_async_callback(replies.stop)

        memory = MemoryClient(settings.memory.target)
        stack.push_async_callback(memory.close)
        mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
            settings.mongo.url,
            serverSelectionTimeoutMS=settings.mongo.timeout_ms,
            timeoutMS=settings.mongo.timeout_ms,
        )
        stack.push_async_callback(mongo.close)
        tenants = TenantStore(
            mongo,
            settings.mongo.database,
            cache_ttl_s=settings.mongo.tenant_cache_ttl_s,
            cache_size=settings.mongo.tenant_cache_size,
        )
        conversation_directory = MemoryBackedDirectory(
            RedisConversationMarkers(redis, settings.conversation_marker_ttl_s),
            memory.stub,
            settings.memory.timeout_s,
        )
        running_ttl_s = int(max(settings.conversation_lock_ttl_s, settings.idempotency_ttl_s))
        chat_service = ChatService(
            authenticator=TenantAuthenticator(tenants),
            limits=ChatLimits(
                max_message_chars=settings.max_message_chars,
                max_user_id_chars=settings.max_user_id_chars,
                max_metadata_entries=settings.max_metadata_entries,
                max_output_tokens=settings.max_output_tokens_limit,
            ),
            admission=RedisAdmission(
                redis,
                running_ttl_s=running_ttl_s,
                lock_ttl_s=settings.conversation_lock_ttl_s,
                marker_ttl_s=settings.conversation_marker_ttl_s,
            ),
            requests=RedisRequestStore(
                redis,
                running_ttl_s=running_ttl_s,
                done_ttl_s=settings.idempotency_ttl_s,
                poll_s=settings.attach_poll_s,
                buffer_events=settings.record_buffer_events,
                batch_window_s=settings.record_batch_window_s,
            ),
            owner_alive=heartbeats.alive,
            publisher=KafkaTurnPublisher(broker, topics, settings.publish_timeout_s),
            conversation_directory=conversation_directory,
            router=router,
            reply_topic=reply_admin.topic,
            reply_idle_timeout_s=settings.reply_idle_timeout_s,
            conversations=ConversationMethods(
                memory.stub, settings.memory.timeout_s, conversation_directory
            ),
            disconnect_grace_s=settings.disconnect_grace_s,
        )
        # Cancels the replies kept for retries while Kafka is still up.
        stack.push_async_callback(chat_service.close)
        server = grpc.aio.server(
            options=server_options(settings),
            maximum_concurrent_rpcs=settings.max_concurrent_rpcs,
            interceptors=grpc_server_interceptors(),
        )
        chat_pb2_grpc.add_ChatServiceServicer_to_server(chat_service, server)
        knowledge = add_knowledge_service(server, TenantAuthenticator(tenants))
        stack.push_async_callback(knowledge.close)
        health_servicer = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
        service_names = (
            chat_pb2.DESCRIPTOR.services_by_name["ChatService"].full_name,
            health.SERVICE_NAME,
            reflection.SERVICE_NAME,
            KNOWLEDGE_SERVICE,
        )
        reflection.enable_server_reflection(service_names, server)
        port = server.add_insecure_port(f"{settings.grpc_host}:{settings.grpc_port}")
        address = f"{settings.grpc_host}:{port}"  # port 0 picks a free one
        await server.start()
        # Stops at once if start-up fails below; after the drain, stopping again is a no-op.
        stack.push_async_callback(server.stop, 0)
        for name in ("", service_names[0]):
            await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
        http_runner, http_site = await start_http(settings, chat_service, tenants, redis, knowledge)
        if http_runner is not None:
            stack.push_async_callback(http_runner.cleanup)
        tune_process()
        freeze_startup_objects()
        health_server.ready = True
        log.info("gateway %s serving gRPC on %s", settings.instance_id, address)

        await wait_for_stop_signal()

        # Drain: refuse new calls, let open streams finish for up to the grace, then cancel
        # them (each cancelled stream publishes its `chat.cancel`). Kafka and Redis stay up
        # meanwhile; the exit stack then releases everything in reverse order of start-up.
        log.info(
            "draining %d open streams for up to %gs",
            router.open_streams,
            settings.shutdown_grace_s,
        )
        health_server.ready = False
        await health_servicer.enter_graceful_shutdown()
        if http_site is not None:
            await http_site.stop()  # no new HTTP connections; open streams go on
        release_topic.drained = await drain(server, router, settings.shutdown_grace_s)
