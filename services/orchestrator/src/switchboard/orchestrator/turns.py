"""The life of a turn: guardrails, routing, tool rounds, cascade, handoff, the end.

`TurnEngine` holds the decisions; everything it touches (Kafka, Redis, MongoDB, memory,
HTTP tools) comes in through the small protocols of `ports`, so it is tested with fakes.
Its helpers, by job: `screening` (the input guardrails), `cascade` (a cheap answer redone
on frontier), `direct_answers` (refusals, handoffs, cached answers, errors),
`turn_state` (what is remembered between a task and its result), `tasks` (building
generation tasks), `response_cache`, `records` (completed-turn records) and `replies` (the
events the engine sends itself).

Sequence numbers: the gateway sends `started` unnumbered; every later event of a request
is numbered from 1. A worker numbers its events after its task's `sequence_base` and
reports the last one it used; the orchestrator numbers its own events (tool status, reset,
handoff, done, refusals) after that and starts the next task after them.
"""

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from opentelemetry import trace

from switchboard.common.consumer import UnprocessableError
from switchboard.common.redaction import (
    ALL_KINDS,
    Kind,
    Redactor,
    placeholder_kinds,
    redactor_for,
)
from switchboard.common.tenants import TenantConfig
from switchboard.orchestrator import (
    cascade,
    metrics,
    records,
    replies,
    response_cache,
    screening,
    tasks,
    tool_rounds,
)
from switchboard.orchestrator import knowledge as kb
from switchboard.orchestrator.context_reuse import NextContexts
from switchboard.orchestrator.direct_answers import BLOCKED, DirectAnswers
from switchboard.orchestrator.guardrails import (
    InjectionDetector,
    escalation_trigger,
)
from switchboard.orchestrator.ports import (
    ContextSource,
    Outbox,
    RegistryFactory,
    ResponseCache,
    SpendLedger,
    StateStore,
    TenantSource,
    Tickets,
    tenant_config,
)
from switchboard.orchestrator.router import (
    Classifier,
    ComplexityClassifier,
    choose_route,
    low_confidence,
)
from switchboard.orchestrator.turn_state import TurnState
from switchboard.v1.chat_pb2 import (
    ROLE_ASSISTANT,
    ROLE_TOOL,
    ROLE_USER,
    Usage,
)
from switchboard.v1.events_pb2 import (
    ChatMessage,
    LlmResult,
    TurnRequest,
)
from switchboard.v1.memory_pb2 import ConversationContext

log = logging.getLogger(__name__)
tracer = trace.get_tracer("switchboard.orchestrator")


@dataclass(frozen=True)
class EngineSettings:
    """The engine's limits and defaults."""

    result_topic: str
    default_max_output_tokens: int = 512
    max_input_chars: int = 8_000
    max_tool_rounds: int = 5
    cache_namespace: str = ""
    cascade_min_words: int = 8
    max_metadata_value_chars: int = 200


# ---- the engine ---------------------------------------------------------------------


class TurnEngine:
    """Decides what each turn does; see the module docstring."""

    def __init__(
        self,
        settings: EngineSettings,
        *,
        outbox: Outbox,
        states: StateStore,
        memory: ContextSource,
        tenants: TenantSource,
        ledger: SpendLedger,
        tickets: Tickets,
        cache: ResponseCache,
        registry_for: RegistryFactory,
        classifier: Classifier | None = None,
        classifier_for: Callable[[str | None], Classifier] | None = None,
        injection: InjectionDetector | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        knowledge: kb.Retriever | None = None,
        contexts: NextContexts | None = None,
    ) -> None:
        self._settings = settings
        self._outbox = outbox
        self._states = states
        self._memory = memory
        self._tenants = tenants
        self._ledger = ledger
        self._contexts = contexts
        self._answers = DirectAnswers(
            outbox, tickets, completed=contexts.completed if contexts is not None else None
        )
        self._cache = cache
        self._registry_for = registry_for
        self._classifier: Classifier = classifier or ComplexityClassifier()
        # A tenant's own router (model_policy.router_model), else the service's.
        self._classifier_for = classifier_for or (lambda _name: self._classifier)
        self._injection = injection or InjectionDetector()
        self._clock = clock
        self._knowledge = knowledge

    # ---- a new turn ----

    async def on_request(self, turn: TurnRequest) -> None:
        """Handle a user message from `chat.requests`."""
        # The reads need only the turn and change nothing, so they all start now, side by
        # side: the context read, the state lookup and, once the message is redacted, the
        # retrieval. A turn that does not go on (redelivered, ended, refused) cancels them.
        # The previous turn of the conversation may have left its context here, extended by
        # itself or read ahead (decision 0084): then there is nothing to read now.
        ahead = self._contexts.take(turn) if self._contexts is not None else None
        context = (
            ahead.context
            if ahead is not None
            else asyncio.ensure_future(self._memory.context_for(turn))
        )
        context_source = ahead.how if ahead is not None else "read on arrival"
        metrics.CONTEXTS.labels(context_source).inc()
        lookup = asyncio.ensure_future(self._states.lookup(turn.tenant_id, turn.request_id))
        retrieval: asyncio.Task[list[kb.Passage]] | None = None
        try:
            # Two turns of the loop, so that both requests are on the wire before the CPU work
            # below (redaction) holds the loop: the first starts the reads, the second the task
            # from which grpc.aio sends a call.
            for _ in range(2):
                await asyncio.sleep(0)
            try:
                tenant: TenantConfig | None = await self._tenant(turn.tenant_id)
            except UnprocessableError:
                tenant = None  # raised again below, once the turn is known to be new
            redacted = None
            if tenant is not None:
                redacted, retrieval = self._redact_and_retrieve(turn, tenant)
            existing, ended = await lookup
            if existing is not None:
                # Redelivered after the task went out: publishing it again is harmless (the
                # workers run one generation per request and sequence base).
                await self._outbox.task(existing.task)
                return
            if ended:
                # A late copy (redelivered, or published again after an unacknowledged send).
                log.info("turn %s ended already; its request is ignored", turn.request_id)
                return
            if tenant is None:
                # Its configuration was invalid a moment ago: UnprocessableError unless fixed.
                tenant = await self._tenant(turn.tenant_id)
                redacted, retrieval = self._redact_and_retrieve(turn, tenant)
            with tracer.start_as_current_span("orchestrator.turn") as span:
                span.set_attribute("switchboard.request_id", turn.request_id)
                span.set_attribute("switchboard.tenant_id", turn.tenant_id)
                span.set_attribute("switchboard.context.source", context_source)
                await self._start(turn, span, tenant, redacted, _Reads(context, retrieval))
        finally:
            for read in (context, lookup, retrieval):
                if read is not None:
                    _settle(read)

    def _redact_and_retrieve(
        self, turn: TurnRequest, tenant: TenantConfig
    ) -> tuple[screening.Redacted | None, "asyncio.Task[list[kb.Passage]] | None"]:
        """The redacted message and its retrieval, started; (None, None) for a message with a
        problem (answered once the turn is known to be new)."""
        if self._input_problem(turn.message) is not None:
            return None, None
        redacted = screening.redact_message(turn.message, tenant.guardrails)
        retrieval = kb.start_retrieval(
            self._knowledge, turn, redacted.stored.text, grounding=tenant.knowledge_grounding
        )
        return redacted, retrieval

    def _input_problem(self, text: str) -> str | None:
        return screening.input_problem(text, self._settings.max_input_chars)

    async def _start(
        self,
        turn: TurnRequest,
        span: trace.Span,
        tenant: TenantConfig,
        redacted: screening.Redacted | None,
        reads: "_Reads",
    ) -> None:
        policy = tenant.guardrails
        text = turn.message
        problem = self._input_problem(text)
        if problem is not None or redacted is None:
            # No redaction means the message had a problem (see on_request).
            await self._answers.fail(turn, "INVALID_ARGUMENT", problem or "the message is invalid")
            return

        stored, to_provider = redacted.stored, redacted.to_provider
        # The gateway already replaced the secrets with placeholders: count those too.
        kinds = stored.kinds | placeholder_kinds(text)
        flags = [f"redacted:{kind}" for kind in sorted(kinds)]
        span.set_attribute("switchboard.guardrails.redactions", len(stored.findings))

        refusal = await screening.screen_request(
            turn, redacted, policy, self._injection, flags, span
        )
        if refusal is not None:
            await self._answers.answer(
                turn,
                stored.text,
                refusal.message,
                finish_reason=BLOCKED,
                reason=refusal.reason,
                flags=flags,
            )
            return

        # The retrieval (for the redacted message) started beside the context read; what does
        # not need its passages (escalation, routing, the task) is done before they are
        # awaited, while the search is in flight.
        context = await reads.context
        if self._contexts is not None:
            self._contexts.started(turn, context)
        if reads.retrieval is not None and not reads.retrieval.done():
            # One turn of the loop first: grpc.aio sends a call from a task of its own, and
            # the search started a moment ago should go out before the work below, not after.
            await asyncio.sleep(0)
        if context.degraded:
            flags.append("context-degraded")
        history = [m.text for m in context.messages if m.role == ROLE_USER]

        if policy.escalation:
            trigger = escalation_trigger(
                text,
                history,
                frustration_threshold=policy.frustration_threshold,
                failure_turns=policy.failure_turns,
            )
            if trigger is not None:
                reason = self._redactor(policy.phone_regions).redact(trigger.reason, ALL_KINDS)
                await self._answers.hand_off(turn, tenant, stored.text, reason.text, flags)
                return

        routing_started, routing_cpu_started = time.perf_counter(), time.thread_time()
        classifier = self._classifier_for(tenant.model_policy.router_model)
        route = choose_route(
            requested_tier=turn.options.tier,
            tenant_default_tier=tenant.model_policy.default_tier,
            allowed_tiers=tenant.model_policy.allowed_tiers,
            message=to_provider,
            history=history,
            classifier=classifier,
            target_recall=tenant.model_policy.router_target_recall,
            target_cheap_share=tenant.model_policy.router_target_cheap_share,
        )
        if route.classified:
            routing_s = time.perf_counter() - routing_started
            metrics.ROUTING_SECONDS.labels(classifier.kind).observe(routing_s)
            # On the trace too, so one slow decision can be found (issue 20: p99 <= 5 ms).
            span.set_attribute("switchboard.route.ms", round(routing_s * 1000, 3))
            # This thread's CPU time: wall minus CPU is waiting (for a core, or for the GIL
            # while another thread of the process runs Python).
            routing_cpu_ms = (time.thread_time() - routing_cpu_started) * 1000
            span.set_attribute("switchboard.route.cpu_ms", round(routing_cpu_ms, 3))
        span.set_attribute("switchboard.route.tier", route.tier)
        span.set_attribute("switchboard.route.reason", route.reason)
        span.set_attribute("switchboard.route.score", route.score)
        metrics.ROUTES.labels(route.tier, "classified" if route.classified else "policy").inc()
        task = tasks.first_task(
            turn,
            tenant,
            context,
            route,
            to_provider,
            self._registry_for(tenant),
            flags,
            system=self.system_prompt(turn, tenant),
            default_max_output_tokens=self._settings.default_max_output_tokens,
            result_topic=self._settings.result_topic,
        )

        passages = await reads.retrieval if reads.retrieval is not None else []
        if passages and policy.prompt_injection != "off":
            passages, held = kb.screen(passages, self._injection, policy.injection_threshold)
            if held:
                flags.append(f"knowledge-injection-dropped:{held}")
        # A grounded answer is cached with its passages' fingerprint in the key (an edited
        # document makes a new key) and its citations in the entry.
        cache_key = response_cache.cache_key(
            turn,
            tenant,
            context,
            route,
            bool(stored.findings),
            namespace=self._settings.cache_namespace,
            grounding=kb.fingerprint(passages),
        )
        if cache_key:
            cached = await self._cache.get(cache_key)
            metrics.CACHE.labels("miss" if cached is None else "hit").inc()
            if cached is not None:
                span.set_attribute("switchboard.cache.hit", True)
                await self._answers.from_cache(turn, stored.text, route, cached, flags)
                return

        kb.ground(task, passages)
        # A client that cannot unsay text holds back an answer the cascade may replace.
        provisional = cascade.may_cascade(tenant, route)
        if provisional:
            task.sequence_base = 1
        state = TurnState(
            turn=turn,
            task=task,
            route=route,
            stored_message=stored.text,
            flags=flags,
            cache_key=cache_key,
            citations=kb.citation_records(passages),
        )
        # Created only if absent: two starts of one turn (a redelivery while the first ran, or
        # two owners across a rebalance) publish the same task, never two competing ones.
        state = await self._states.create(state)
        if provisional:
            # Sent before the task, so it reaches the client before the answer's first text.
            await self._outbox.reply(turn, replies.provisional(turn, route.tier))
        await self._outbox.task(state.task)

    # ---- a result ----

    async def on_result(self, result: LlmResult) -> None:
        """Handle a finished generation from `llm.results`."""
        state = await self._states.load(result.tenant_id, result.request_id)
        if state is None:
            log.info("no open turn for %s; result ignored", result.request_id)
            return
        if result.task_id != state.task.task_id:
            if result.task_id == state.previous_task_id:
                # Redelivered: its successor was saved but perhaps never published.
                await self._outbox.task(state.task)
            return
        with tracer.start_as_current_span("orchestrator.result") as span:
            span.set_attribute("switchboard.request_id", result.request_id)
            span.set_attribute("switchboard.route.tier", result.tier)
            await self._continue(state, result)

    async def _continue(self, state: TurnState, result: LlmResult) -> None:
        turn = state.turn
        metrics.record_result(result)
        if result.cost_usd > 0:
            # Once per task: a result redelivered after a later step failed is not charged again.
            await self._ledger.add(turn.tenant_id, result.cost_usd, charge_id=result.task_id)
        state.input_tokens += result.usage.input_tokens
        state.output_tokens += result.usage.output_tokens
        state.cost_usd += result.cost_usd
        if result.HasField("error"):
            await self._outbox.reply(turn, replies.generation_error(turn, result))
            await self._states.forget(turn.tenant_id, turn.request_id)
            return

        tenant = await self._tenant(turn.tenant_id)
        if result.tool_calls and state.task.tools:
            await self._tool_round(state, result, tenant)
            return

        if cascade.may_cascade(tenant, state.route) and cascade.first_cheap_answer(state, result):
            policy = tenant.model_policy
            why = low_confidence(
                result.text,
                state.route.score,
                self._settings.cascade_min_words,
                self._classifier_for(policy.router_model).threshold_for(
                    policy.router_target_recall, policy.router_target_cheap_share
                ),
            )
            if why is not None:
                await self._cascade(state, result, why)
                return
        await self._finish(state, result, tenant)

    async def _tool_round(self, state: TurnState, result: LlmResult, tenant: TenantConfig) -> None:
        turn = state.turn
        registry = self._registry_for(tenant)
        outcomes, sequence = await tool_rounds.call_tools(self._outbox, turn, result, registry)
        redactor = self._redactor(tenant.guardrails.phone_regions)
        provider_kinds = screening.provider_kinds(tenant.guardrails)
        messages = list(state.task.messages)
        messages.append(
            ChatMessage(role=ROLE_ASSISTANT, text=result.text, tool_calls=result.tool_calls)
        )
        for outcome in outcomes:
            sequence = await tool_rounds.announce(self._outbox, turn, outcome, sequence, redactor)
            if outcome.handoff is not None:
                state.ticket_id = outcome.handoff.ticket_id
            result_text = screening.withhold_instructions(
                redactor.redact(outcome.result, provider_kinds).text,
                outcome.call.name,
                tenant.guardrails,
                self._injection,
                state.flags,
            )
            messages.append(
                ChatMessage(role=ROLE_TOOL, tool_call_id=outcome.call.id, text=result_text)
            )
            state.exchanges.append(records.exchange(outcome, redactor))
        if result.text:
            state.texts.append(result.text)
        state.tool_rounds += 1
        offer_tools = state.tool_rounds < self._settings.max_tool_rounds
        if not offer_tools:
            state.flags.append(f"tool-rounds-exhausted:{state.tool_rounds}")
        next_task = tasks.next_task(
            state.task,
            messages=messages,
            tier=state.task.tier,
            sequence_base=sequence,
            tools=state.task.tools if offer_tools else None,
        )
        state.previous_task_id, state.task = state.task.task_id, next_task
        await self._states.save(state)
        await self._outbox.task(next_task)

    async def _cascade(self, state: TurnState, result: LlmResult, why: str) -> None:
        reset, next_task = cascade.escalate(state, result, why)
        await self._outbox.reply(state.turn, reset)
        await self._states.save(state)
        await self._outbox.task(next_task)

    async def _finish(self, state: TurnState, result: LlmResult, tenant: TenantConfig) -> None:
        turn = state.turn
        redactor = self._redactor(tenant.guardrails.phone_regions)
        reply = redactor.redact("".join([*state.texts, result.text]), ALL_KINDS)
        if reply.findings:
            state.flags.extend(f"output-redacted:{k}" for k in sorted(reply.kinds))
        usage = Usage(input_tokens=state.input_tokens, output_tokens=state.output_tokens)
        await self._answers.complete(records.generated(state, result, reply.text, usage))
        await self._outbox.reply(turn, replies.done(state, result, usage, reply.text))
        if response_cache.cacheable(state, result, reply.text, bool(reply.findings)):
            await self._cache.put(
                state.cache_key,
                response_cache.entry(reply.text, result, state.citations),
                tenant.response_cache_ttl_s,
            )
        await self._states.forget(turn.tenant_id, turn.request_id)

    # ---- helpers ----

    async def abandon(self, message: TurnRequest | LlmResult, error: str) -> None:
        """A record of this turn was given up on (dead-lettered): end the turn for its
        client with a clear `error`, numbered above anything a generation can have sent."""
        turn: TurnRequest | None = message if isinstance(message, TurnRequest) else None
        state = await self._states.load(message.tenant_id, message.request_id)
        if state is not None:
            turn = state.turn
        if turn is None or not turn.reply_topic:
            return
        await self._answers.set_aside(turn, error)
        await self._states.forget(turn.tenant_id, turn.request_id)

    async def _tenant(self, tenant_id: str) -> TenantConfig:
        return await tenant_config(self._tenants, tenant_id)

    def _redactor(self, regions: Sequence[str]) -> Redactor:
        return redactor_for(tuple(regions))

    def system_prompt(self, turn: TurnRequest, tenant: TenantConfig) -> str:
        """The tenant's template filled with what is known about this user and turn."""
        return tasks.system_prompt(
            turn,
            tenant,
            today=self._clock().date(),
            max_value_chars=self._settings.max_metadata_value_chars,
        )


@dataclass(frozen=True)
class _Reads:
    """The reads a new turn started at once: its context and its passages (None: off)."""

    context: "asyncio.Future[ConversationContext]"
    retrieval: "asyncio.Future[list[kb.Passage]] | None"


def _settle(read: "asyncio.Future[Any]") -> None:
    """Cancel a read the turn no longer needs; mark a failed one's error as seen."""
    if not read.done():
        read.cancel()
    elif not read.cancelled():
        read.exception()


__all__ = ["EngineSettings", "Kind", "TurnEngine", "TurnState"]
