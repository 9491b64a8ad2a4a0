"""Wires the orchestrator: two Kafka handlers around the `TurnEngine`."""

import asyncio
import contextlib
import functools
import json
import logging
from typing import Any

from aiokafka.errors import KafkaError
from faststream.kafka import KafkaBroker
from opentelemetry import trace
from pymongo import AsyncMongoClient
from pymongo.errors import PyMongoError
from redis.asyncio import Redis
from redis.exceptions import RedisError

from switchboard.common.budget import BudgetLedger
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
    consumer_span,
    create_broker,
    dead_letter_sink,
    decode_or_dead_letter,
    record_headers,
)
from switchboard.common.lag import LagReporter
from switchboard.common.lifecycle import freeze_startup_objects, tune_process, wait_for_stop_signal
from switchboard.common.redis import create_redis
from switchboard.common.retry import retrying
from switchboard.common.telemetry import setup_telemetry
from switchboard.common.tenants import TenantConfig, TenantStore
from switchboard.common.topics import Topics
from switchboard.conversation.tokens import count_tokens, load_encodings
from switchboard.embeddings import EmbeddingSettings, QueryEmbeddings, create_embedder
from switchboard.embeddings.multilingual import MultilingualEmbedder
from switchboard.knowledge_index.index import KnowledgeIndex
from switchboard.knowledge_index.replica import IndexReplica
from switchboard.knowledge_index.store import KnowledgeStore
from switchboard.knowledge_index.sync import ChunkChanges
from switchboard.orchestrator import metrics
from switchboard.orchestrator.adapters import (
    MemoryClient,
    MongoTicketStore,
    RedisResponseCache,
    RedisTurnStore,
)
from switchboard.orchestrator.context_reuse import NextContexts
from switchboard.orchestrator.guardrails import InjectionDetector
from switchboard.orchestrator.guardrails.classifier import InjectionClassifier
from switchboard.orchestrator.knowledge import (
    KnowledgeClientSettings,
    LocalRetriever,
    Retriever,
    ServiceRetriever,
    search_knowledge_tool,
)
from switchboard.orchestrator.learned_router import TenantRouters, bundled_encoder, load_router
from switchboard.orchestrator.router import Classifier, ComplexityClassifier, RouterConfig
from switchboard.orchestrator.settings import OrchestratorSettings
from switchboard.orchestrator.tools import HttpToolClient, ToolRegistry, build_registry
from switchboard.orchestrator.turns import EngineSettings, TurnEngine
from switchboard.v1.chat_pb2 import ChatEvent
from switchboard.v1.events_pb2 import CompletedTurn, LlmResult, LlmTask, TurnRequest

log = logging.getLogger(__name__)
tracer = trace.get_tracer("switchboard.orchestrator")

TRANSIENT = (RedisError, KafkaError, TimeoutError, PyMongoError)


class KafkaOutbox:
    """The engine's messages, published with the broker's acknowledgement."""

    def __init__(self, broker: KafkaBroker, topics: Topics) -> None:
        self._publisher = BrokerPublisher(broker)
        self._topics = topics

    async def reply(self, turn: TurnRequest, event: ChatEvent) -> None:
        await self._publisher.publish(
            turn.reply_topic, event, key=event.request_id, tenant_id=turn.tenant_id
        )

    async def task(self, task: LlmTask) -> None:
        await self._publisher.publish(
            self._topics.llm_tasks(task.tier), task, key=task.conversation_id
        )

    async def completed(self, turn: CompletedTurn) -> None:
        await self._publisher.publish(self._topics.chat_turns, turn, key=turn.conversation_id)


class Resources:
    """What `build` wired: the record handler, and what `serve` must close."""

    def __init__(
        self,
        memory: MemoryClient,
        mongo: AsyncMongoClient[dict[str, Any]],
        http: HttpToolClient,
        handler: "RecordHandler",
    ) -> None:
        self.memory = memory
        self.mongo = mongo
        self.http = http
        self.handler = handler
        self.knowledge: Retriever | None = None
        self.embeddings: QueryEmbeddings | None = None
        self.injection: InjectionDetector | None = None
        self.contexts: NextContexts | None = None

    async def close(self) -> None:
        await self.memory.close()
        if self.knowledge is not None:
            await self.knowledge.close()
        if self.embeddings is not None:
            await self.embeddings.embedder.close()
        if self.injection is not None and self.injection.embeddings is not None:
            await self.injection.embeddings.embedder.close()
        await self.http.close()
        await self.mongo.close()


class RecordHandler:
    """One record of `chat.requests` or `llm.results`: trace, decode (or dead-letter), run
    the engine with bounded retries. A step that still fails is fetched again later."""

    def __init__(
        self,
        settings: OrchestratorSettings,
        broker: KafkaBroker,
        engine: TurnEngine,
        topics: Topics,
    ) -> None:
        self._settings = settings
        self._broker = broker
        self._engine = engine
        self._requests_topic = topics.chat_requests
        self.group_id = settings.consumer_group

    async def __call__(self, record: Record, lease: Lease) -> None:
        with consumer_span(tracer, record, self.group_id):
            message_type: type[TurnRequest | LlmResult] = (
                TurnRequest if record.topic == self._requests_topic else LlmResult
            )
            message = await decode_or_dead_letter(
                self._broker,
                record,
                message_type,
                group_id=self.group_id,
                attempts=self._settings.step_attempts,
                backoff_max_s=self._settings.step_backoff_max_s,
            )
            if message is None:
                return
            # A record whose partition moved mid-rebalance is left to its new owner, so that
            # two members never run one step side by side.
            if not await lease.held():
                raise PartitionLostError(f"{record.topic}[{record.partition}]@{record.offset}")
            async for attempt in retrying(
                self._settings.step_attempts, self._settings.step_backoff_max_s, TRANSIENT
            ):
                with attempt:
                    if isinstance(message, TurnRequest):
                        await self._engine.on_request(message)
                    elif isinstance(message, LlmResult):
                        await self._engine.on_result(message)

    async def abandon(self, record: Record, error: str) -> None:
        """Tell the client of a dead-lettered record's turn (its dead-letter sink's notice)."""
        message_type: type[TurnRequest | LlmResult] = (
            TurnRequest if record.topic == self._requests_topic else LlmResult
        )
        try:
            message = decode(record.value or b"", record_headers(record), message_type)
        except PoisonMessageError:
            return  # no turn to tell
        await self._engine.abandon(message, error)


def build(settings: OrchestratorSettings, broker: KafkaBroker, redis: Redis) -> Resources:
    """Wire the engine and its adapters; returns the record handler and what to close."""
    topics = Topics(settings.kafka.topic_prefix)
    memory = MemoryClient(
        settings.memory_target, settings.memory_timeout_s, settings.context_max_tokens
    )
    mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        settings.mongo_url,
        serverSelectionTimeoutMS=settings.mongo_timeout_ms,
        timeoutMS=settings.mongo_timeout_ms,
    )
    tenants = TenantStore(mongo, settings.database, cache_ttl_s=settings.tenant_cache_ttl_s)
    tickets = MongoTicketStore(mongo, settings.database)
    http = HttpToolClient(settings.http_tool_allowed_hosts, settings.http_tool_max_response_bytes)
    injection = injection_detector(settings)
    embeddings = query_embeddings()
    knowledge_settings = KnowledgeClientSettings()
    knowledge: Retriever
    if knowledge_settings.search == "local" and knowledge_settings.enabled:
        replica = IndexReplica(
            KnowledgeStore(settings.mongo_url, settings.database, settings.mongo_timeout_ms),
            KnowledgeIndex(embeddings.embedder.dimensions, knowledge_settings.retrieval),
            embeddings.embedder.name,
        )
        knowledge = LocalRetriever(knowledge_settings, replica, embeddings)
    else:
        knowledge = ServiceRetriever(knowledge_settings, embeddings)
    knowledge_tools = [search_knowledge_tool(knowledge, settings.builtin_tool_timeout_s)]

    # Built once per distinct tool configuration: checking the tools' JSON schemas on every
    # turn was a fifth of the orchestrator's CPU (make bench, py-spy).
    @functools.lru_cache(maxsize=settings.tool_registry_cache_size)
    def registry_of(builtin_names: tuple[str, ...], definitions_json: str) -> ToolRegistry:
        return build_registry(
            builtin_names=builtin_names,
            tool_definitions=json.loads(definitions_json),
            tickets=tickets,
            http=http,
            builtin_timeout_s=settings.builtin_tool_timeout_s,
            max_result_chars=settings.tool_result_max_chars,
            extra_builtins=knowledge_tools,
        )

    def registry_for(tenant: TenantConfig) -> ToolRegistry:
        return registry_of(tuple(tenant.builtin_tools), json.dumps(tenant.tools, sort_keys=True))

    rules = ComplexityClassifier(RouterConfig(threshold=settings.router_threshold))
    classifier: Classifier = rules
    if settings.router_classifier == "learned":
        classifier = (
            load_router(
                settings.router_model_path,
                bundled_encoder,
                rules,
                target_recall=settings.router_target_recall,
            )
            or rules
        )
    else:
        metrics.ROUTER_MODEL_LOADED.set(0)

    contexts = NextContexts(
        settings.context_reuse,
        max_tokens=settings.context_max_tokens,
        count=count_tokens,
        read_ahead=memory.context_after,
    )
    engine = TurnEngine(
        EngineSettings(
            result_topic=topics.llm_results,
            default_max_output_tokens=settings.default_max_output_tokens,
            max_input_chars=settings.max_input_chars,
            max_tool_rounds=settings.max_tool_rounds,
            cache_namespace=settings.kafka.topic_prefix,
        ),
        outbox=KafkaOutbox(broker, topics),
        states=RedisTurnStore(redis, settings.turn_state_ttl_s),
        memory=memory,
        tenants=tenants,
        ledger=BudgetLedger(redis),
        tickets=tickets,
        cache=RedisResponseCache(redis),
        registry_for=registry_for,
        classifier=classifier,
        classifier_for=TenantRouters(
            classifier, settings.router_models_dir, settings.router_tenant_models_max
        ).for_tenant,
        injection=injection,
        knowledge=knowledge if knowledge.settings.enabled else None,
        contexts=contexts,
    )
    resources = Resources(memory, mongo, http, RecordHandler(settings, broker, engine, topics))
    resources.contexts = contexts
    resources.knowledge = knowledge
    resources.embeddings = embeddings
    resources.injection = injection
    return resources


async def start_knowledge_replica(
    settings: OrchestratorSettings, retriever: LocalRetriever, stack: contextlib.AsyncExitStack
) -> None:
    """Fill the local replica of the indexes and keep it current, as the knowledge service's
    replicas do (so all converge)."""
    knowledge = retriever.settings
    changes = ChunkChanges(
        settings.kafka,
        Topics(settings.kafka.topic_prefix).knowledge_chunks,
        retriever.replica,
        knowledge.sync_poll_timeout_ms,
        client_id="orchestrator-knowledge",
    )
    loaded = await changes.start(
        stack,
        settings.kafka.connect_timeout_s,
        load_attempts=knowledge.load_attempts,
        load_backoff_max_s=knowledge.load_backoff_max_s,
    )
    log.info("knowledge replica loaded: %d chunks", loaded)


def injection_detector(settings: OrchestratorSettings) -> InjectionDetector:
    """The rules, with the classifier when it is on. The classifier has its own embedding
    model (multilingual, decision 0086), whatever SWITCHBOARD_EMBEDDINGS_* configures for
    retrieval; a model file trained on other vectors turns it off (another model's vectors
    would mean nothing to its weights)."""
    cache_size = settings.injection_rules_cache_size
    if not settings.injection_classifier:
        return InjectionDetector(rules_cache_size=cache_size)
    classifier = InjectionClassifier()
    embedder = MultilingualEmbedder()
    if embedder.name != classifier.embedding_model:
        log.warning(
            "injection classifier off: it needs %s vectors, its embedder is %s",
            classifier.embedding_model,
            embedder.name,
        )
        return InjectionDetector(rules_cache_size=cache_size)
    # Loads the weights now (~1 s), not on the first turn.
    embedder.embed_sync(["warm-up"])
    cache = EmbeddingSettings()
    # Cased: the classifier was trained on the vectors of the messages as they were written.
    embeddings = QueryEmbeddings(
        embedder, cache.query_cache_size, cache.query_cache_ttl_s, case_sensitive=True
    )
    return InjectionDetector(classifier, embeddings, rules_cache_size=cache_size)


def query_embeddings() -> QueryEmbeddings:
    """The configured embedding model (SWITCHBOARD_EMBEDDINGS_*) behind its query cache."""
    embedding_settings = EmbeddingSettings()
    return QueryEmbeddings(
        create_embedder(embedding_settings),
        embedding_settings.query_cache_size,
        embedding_settings.query_cache_ttl_s,
    )


async def serve(settings: OrchestratorSettings) -> None:
    """Run the orchestrator until SIGTERM or SIGINT.

    Teardown mirrors start-up: each resource registers its release on an exit stack the
    moment it exists, so shutdown (or a failed start) releases exactly what was started, in
    reverse order.
    """
    async with contextlib.AsyncExitStack() as stack:
        tracer_provider = setup_telemetry("orchestrator", settings.telemetry)
        stack.callback(tracer_provider.shutdown)
        health_server = HealthServer(settings.health.host, settings.health.port)
        await health_server.start()
        stack.push_async_callback(health_server.stop)
        broker = create_broker(settings.kafka, "orchestrator", tracer_provider)
        redis = create_redis(settings.redis)
        stack.push_async_callback(redis.aclose)
        resources = build(settings, broker, redis)
        stack.push_async_callback(resources.close)
        if isinstance(resources.knowledge, LocalRetriever):
            await start_knowledge_replica(settings, resources.knowledge, stack)
        async with asyncio.timeout(settings.kafka.connect_timeout_s):
            await broker.start()
        stack.push_async_callback(broker.stop)
        topics = Topics(settings.kafka.topic_prefix)
        # Many turns at once, one at a time per conversation, offsets committed only over
        # finished records.
        consumer = ConcurrentConsumer(
            topics=[topics.chat_requests, topics.llm_results],
            group_id=settings.consumer_group,
            client_id="orchestrator",
            kafka=settings.kafka,
            handler=resources.handler,
            capacity=Capacity(settings.max_concurrency),
            retry_backoff_s=settings.step_backoff_max_s,
            ordered_by_key=True,
            # Other members may run the conversations of revoked partitions meanwhile.
            on_revoked=resources.contexts.clear if resources.contexts is not None else None,
            dead_letter=dead_letter_sink(
                broker,
                group_id=settings.consumer_group,
                attempts=settings.step_attempts,
                backoff_max_s=settings.step_backoff_max_s,
                notify=resources.handler.abandon,
            ),
        )
        async with asyncio.timeout(settings.kafka.connect_timeout_s):
            await consumer.start()
        stack.push_async_callback(consumer.stop, settings.shutdown_grace_s)
        lag = LagReporter(
            settings.kafka,
            {settings.consumer_group: [topics.chat_requests, topics.llm_results]},
            settings.kafka.lag_report_interval_s,
        )
        lag.start()
        stack.push_async_callback(lag.stop)
        tune_process()
        load_encodings()  # frozen with the rest, never walked by a collection
        freeze_startup_objects()
        health_server.ready = True
        log.info("orchestrator ready (topic prefix %r)", settings.kafka.topic_prefix)

        await wait_for_stop_signal()

        health_server.ready = False
