"""Wires the gateway: reply consumer, Kafka publisher, Redis locks, gRPC server."""

import asyncio
import logging

import grpc
from faststream.kafka import KafkaMessage
from faststream.middlewares import AckPolicy
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import Counter

from switchboard.common.envelope import PoisonMessageError, decode
from switchboard.common.health import HealthServer
from switchboard.common.kafka import create_broker
from switchboard.common.lifecycle import wait_for_stop_signal
from switchboard.common.redis import create_redis
from switchboard.common.telemetry import setup_telemetry
from switchboard.common.tenants import hash_api_key
from switchboard.common.topics import Topics
from switchboard.gateway.adapters import (
    KafkaTurnPublisher,
    RedisConversationLocks,
    ReplyTopicAdmin,
)
from switchboard.gateway.auth import ApiKeyAuthenticator
from switchboard.gateway.conversations import ConversationMethods, MemoryClient
from switchboard.gateway.replies import ReplyRouter
from switchboard.gateway.service import ChatService
from switchboard.gateway.settings import GatewaySettings
from switchboard.gateway.validation import ChatLimits
from switchboard.v1 import chat_pb2, chat_pb2_grpc
from switchboard.v1.chat_pb2 import ChatEvent

log = logging.getLogger(__name__)

REPLIES = Counter("switchboard_gateway_reply_events", "Reply events by delivery", ["delivery"])


async def serve(settings: GatewaySettings) -> None:
    """Run the gateway until SIGTERM or SIGINT."""
    tracer_provider = setup_telemetry("gateway", settings.telemetry)
    health_server = HealthServer(settings.health.host, settings.health.port)
    await health_server.start()

    topics = Topics(settings.kafka.topic_prefix)
    reply_admin = ReplyTopicAdmin(
        settings.kafka,
        topics.chat_replies(settings.instance_id),
        settings.reply_topic_partitions,
    )
    await reply_admin.create()

    router = ReplyRouter(settings.stream_buffer_events)
    broker = create_broker(settings.kafka, f"gateway-{settings.instance_id}", tracer_provider)

    # No consumer group: this instance alone reads its topic, from the start, without commits.
    @broker.subscriber(
        reply_admin.topic,
        auto_offset_reset="earliest",
        ack_policy=AckPolicy.ACK_FIRST,
    )
    async def on_reply(body: bytes, message: KafkaMessage) -> None:
        try:
            event = decode(body, dict(message.headers), ChatEvent)
        except PoisonMessageError as exc:
            REPLIES.labels("poison").inc()
            log.warning("dropping unreadable reply event: %s", exc)
            return
        REPLIES.labels(router.deliver(event).value).inc()

    redis = create_redis(settings.redis)
    async with asyncio.timeout(settings.kafka.connect_timeout_s):
        await broker.start()

    memory = MemoryClient(settings.memory.target)
    chat_service = ChatService(
        authenticator=ApiKeyAuthenticator(
            {hash_api_key(settings.dev.api_key.get_secret_value()): settings.dev.tenant_id}
        ),
        limits=ChatLimits(
            max_message_chars=settings.max_message_chars,
            max_user_id_chars=settings.max_user_id_chars,
            max_metadata_entries=settings.max_metadata_entries,
            max_output_tokens=settings.max_output_tokens_limit,
        ),
        publisher=KafkaTurnPublisher(broker, topics, settings.publish_timeout_s),
        locks=RedisConversationLocks(redis, settings.conversation_lock_ttl_s),
        router=router,
        reply_topic=reply_admin.topic,
        reply_idle_timeout_s=settings.reply_idle_timeout_s,
        conversations=ConversationMethods(memory.stub, settings.memory.timeout_s),
    )
    server = grpc.aio.server()
    chat_pb2_grpc.add_ChatServiceServicer_to_server(chat_service, server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    service_names = (
        chat_pb2.DESCRIPTOR.services_by_name["ChatService"].full_name,
        health.SERVICE_NAME,
        reflection.SERVICE_NAME,
    )
    reflection.enable_server_reflection(service_names, server)
    address = f"{settings.grpc_host}:{settings.grpc_port}"
    server.add_insecure_port(address)
    await server.start()
    for name in ("", service_names[0]):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    health_server.ready = True
    log.info("gateway %s serving gRPC on %s", settings.instance_id, address)

    await wait_for_stop_signal()

    log.info("draining open streams for up to %.0fs", settings.shutdown_grace_s)
    health_server.ready = False
    await health_servicer.enter_graceful_shutdown()
    await server.stop(settings.shutdown_grace_s)
    await broker.stop()
    await reply_admin.delete()
    await memory.close()
    await redis.aclose()
    await health_server.stop()
    tracer_provider.shutdown()
