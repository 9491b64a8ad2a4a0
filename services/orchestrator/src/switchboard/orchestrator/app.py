"""Wires the orchestrator: two Kafka handlers around the turn logic in `core`."""

import asyncio
import logging

from aiokafka.errors import KafkaError
from faststream.kafka import KafkaBroker, KafkaMessage
from redis.asyncio import Redis
from redis.exceptions import RedisError

from switchboard.common.health import HealthServer
from switchboard.common.kafka import (
    create_broker,
    decode_or_dead_letter,
    durable_subscriber,
    publish,
)
from switchboard.common.lifecycle import wait_for_stop_signal
from switchboard.common.redis import create_redis
from switchboard.common.retry import retrying
from switchboard.common.telemetry import setup_telemetry
from switchboard.common.topics import Topics
from switchboard.orchestrator import core
from switchboard.orchestrator.adapters import MemoryClient, RedisTurnStore
from switchboard.orchestrator.settings import OrchestratorSettings
from switchboard.v1.events_pb2 import LlmResult, TurnRequest

log = logging.getLogger(__name__)

TRANSIENT = (RedisError, KafkaError, TimeoutError)


def build(settings: OrchestratorSettings, broker: KafkaBroker, redis: Redis) -> MemoryClient:
    """Register the handlers on `broker`; returns the memory client to close at the end."""
    memory = MemoryClient(
        settings.memory_target, settings.memory_timeout_s, settings.context_max_tokens
    )
    turns = RedisTurnStore(redis, settings.turn_state_ttl_s)
    group = settings.consumer_group
    topics = Topics(settings.kafka.topic_prefix)

    @durable_subscriber(broker, topics.chat_requests, group)
    async def on_turn_request(message: KafkaMessage) -> None:
        turn = await decode_or_dead_letter(broker, message, TurnRequest, consumer_group=group)
        if turn is None:
            return
        route = core.choose_route(turn, settings.default_tier)
        context = await memory.context_for(turn)
        task = core.build_task(
            turn,
            context,
            route,
            result_topic=topics.llm_results,
            system_prompt=settings.system_prompt,
            default_max_output_tokens=settings.default_max_output_tokens,
        )
        async for attempt in retrying(
            settings.step_attempts, settings.step_backoff_max_s, TRANSIENT
        ):
            with attempt:
                await turns.save(turn, route)
                await publish(broker, topics.llm_tasks(route.tier), task, key=turn.conversation_id)

    @durable_subscriber(broker, topics.llm_results, group)
    async def on_llm_result(message: KafkaMessage) -> None:
        result = await decode_or_dead_letter(broker, message, LlmResult, consumer_group=group)
        if result is None:
            return
        async for attempt in retrying(
            settings.step_attempts, settings.step_backoff_max_s, TRANSIENT
        ):
            with attempt:
                state = await turns.load(result.request_id)
                if state is None:
                    # Redelivered after the turn finished, or expired: nothing left to do.
                    log.info("no open turn for %s; result ignored", result.request_id)
                    return
                turn, route = state
                if not result.HasField("error"):
                    await publish(
                        broker,
                        topics.chat_turns,
                        core.completed_turn(turn, route, result),
                        key=turn.conversation_id,
                    )
                await publish(
                    broker, turn.reply_topic, core.final_event(result), key=turn.request_id
                )
                await turns.forget(turn.request_id)

    return memory


async def serve(settings: OrchestratorSettings) -> None:
    """Run the orchestrator until SIGTERM or SIGINT."""
    tracer_provider = setup_telemetry("orchestrator", settings.telemetry)
    health_server = HealthServer(settings.health.host, settings.health.port)
    await health_server.start()
    broker = create_broker(settings.kafka, "orchestrator", tracer_provider)
    redis = create_redis(settings.redis)
    memory = build(settings, broker, redis)
    async with asyncio.timeout(settings.kafka.connect_timeout_s):
        await broker.start()
    health_server.ready = True
    log.info("orchestrator ready (topic prefix %r)", settings.kafka.topic_prefix)

    await wait_for_stop_signal()

    health_server.ready = False
    await broker.stop()
    await memory.close()
    await redis.aclose()
    await health_server.stop()
    tracer_provider.shutdown()
