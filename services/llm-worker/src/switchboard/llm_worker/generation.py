"""One generation: the tier's models in order, bounded retries, coalesced and sequenced deltas.

Sequence numbers: the events of a task's first attempt are numbered from
`task.sequence_base + 1`. A task redelivered after a worker died runs as attempt n > 1 and
numbers its events from `sequence_base + (n - 1) * ATTEMPT_STRIDE + 1`, above anything an
earlier attempt can have sent, and starts with `reset`; the gateway keeps only events with a
sequence above the last it delivered, so a late event of a dead attempt is dropped.

How the text reaches the client (coalescing, redaction, numbering) is in deltas.py.
"""

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass

from opentelemetry import trace
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt
from tenacity.wait import wait_exponential_jitter

from switchboard.common.redaction import StreamingRedactor, redactor_for
from switchboard.common.sequencing import ATTEMPT_STRIDE
from switchboard.llm_worker.deltas import Coalescer, DeltaRelay, ReplyChannel, ReplySink
from switchboard.llm_worker.metrics import PROVIDER_CALLS, RESETS, TIME_TO_FIRST_TOKEN
from switchboard.llm_worker.providers import (
    Finished,
    GenerationRequest,
    InvalidTaskError,
    Provider,
    ProviderError,
    StreamEvent,
    TextDelta,
    tool_schema,
)
from switchboard.llm_worker.settings import ModelSpec
from switchboard.v1.chat_pb2 import ChatEvent, Error, Reset, Usage
from switchboard.v1.events_pb2 import LlmResult, LlmTask

log = logging.getLogger(__name__)
tracer = trace.get_tracer("switchboard.llm_worker")

Sleep = Callable[[float], Awaitable[None]]

SIM_PREFIX = "sim."
_HEADER_SAFE = re.compile(r"^[a-z0-9_.-]{1,64}$")


@dataclass(frozen=True)
class GenerationPolicy:
    """How a generation relays text and survives failures (from WorkerSettings)."""

    coalesce_window_s: float = 0.015
    coalesce_max_chars: int = 256
    retries_per_model: int = 2
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 8.0
    retry_after_max_s: float = 30.0
    stream_idle_timeout_s: float = 30.0
    attempt_timeout_s: float = 300.0
    default_max_output_tokens: int = 1024
    send_error_events: bool = True
    forward_sim_controls: bool = True


def models_for(task: LlmTask, catalogue: Mapping[str, Sequence[ModelSpec]]) -> list[ModelSpec]:
    """The models to try, in order: the task's choice within its tier, or the whole tier."""
    tier_models = list(catalogue.get(task.tier, ()))
    if not task.models:
        return tier_models
    by_name = {spec.model: spec for spec in tier_models}
    return [by_name[name] for name in task.models if name in by_name]


def sim_headers(task: LlmTask) -> dict[str, str]:
    """The task's `sim.*` metadata as simulator control headers (`sim.fault` → `x-sim-fault`).

    Attempts are counted per generation unless the task names its own `sim.key`, so that a
    fault limited to the first N attempts spans retries, fallbacks and worker restarts.
    """
    headers = {
        "x-sim-" + key.removeprefix(SIM_PREFIX).replace("_", "-"): value
        for key, value in task.metadata.items()
        if key.startswith(SIM_PREFIX)
        and _HEADER_SAFE.match(key)
        and "\r" not in value
        and "\n" not in value
    }
    if headers and "x-sim-key" not in headers:
        headers["x-sim-key"] = f"{task.request_id or task.task_id}:{task.sequence_base}"
    return headers


async def _bounded(
    events: AsyncGenerator[StreamEvent, None], idle_timeout_s: float, where: str
) -> AsyncGenerator[StreamEvent, None]:
    """`events`, failing when the provider sends nothing for `idle_timeout_s`."""
    try:
        while True:
            try:
                async with asyncio.timeout(idle_timeout_s):
                    event = await anext(events)
            except StopAsyncIteration:
                return
            except TimeoutError:
                raise ProviderError(
                    f"{where}: no data for {idle_timeout_s:g}s", retryable=True, kind="timeout"
                ) from None
            yield event
    finally:
        await events.aclose()  # closes the provider's HTTP stream at once


def _wait(policy: GenerationPolicy) -> Callable[[RetryCallState], float]:
    backoff = wait_exponential_jitter(
        multiplier=policy.backoff_initial_s,
        max=policy.backoff_max_s,
        jitter=policy.backoff_initial_s,
    )

    def wait(state: RetryCallState) -> float:
        delay = backoff(state)
        exc = state.outcome.exception() if state.outcome is not None else None
        if isinstance(exc, ProviderError) and exc.retry_after_s is not None:
            delay = max(delay, exc.retry_after_s)  # the provider knows best when to come back
        return delay

    return wait


def _worth_retrying(policy: GenerationPolicy) -> Callable[[BaseException], bool]:
    def worth(exc: BaseException) -> bool:
        if not isinstance(exc, ProviderError) or not exc.retryable:
            return False
        # A provider that asks for a longer pause than we accept: go to the next model.
        return exc.retry_after_s is None or exc.retry_after_s <= policy.retry_after_max_s

    return worth


class Generation:
    """Runs one task (one attempt of it, as counted by the ledger) to its result."""

    def __init__(
        self,
        task: LlmTask,
        models: Sequence[ModelSpec],
        providers: Mapping[str, Provider],
        send: ReplySink,
        policy: GenerationPolicy,
        *,
        attempt: int = 1,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self._task = task
        self._models = models
        self._providers = providers
        self._policy = policy
        self._attempt = attempt
        self._sleep = sleep
        self._channel = ReplyChannel(
            task, send, task.sequence_base + (attempt - 1) * ATTEMPT_STRIDE
        )
        self._result = LlmResult(
            task_id=task.task_id,
            tenant_id=task.tenant_id,
            conversation_id=task.conversation_id,
            request_id=task.request_id,
            tier=task.tier,
        )

    async def run(self) -> LlmResult:
        """The task's result; reply events go to `send` on the way."""
        task = self._task
        if self._attempt > 1:
            RESETS.labels("redelivered").inc()
            await self._channel.emit(
                ChatEvent(reset=Reset(reason="the generation restarted after a worker failure"))
            )
        if not self._models:
            return await self._fail(
                "INVALID_ARGUMENT", f"no model configured for tier {task.tier!r}"
            )
        headers = sim_headers(task) if self._policy.forward_sim_controls else {}
        failures: list[str] = []
        try:
            for tool in task.tools:
                tool_schema(tool)
            for spec in self._models:
                provider = self._providers.get(spec.provider)
                if provider is None:
                    failures.append(f"{spec.model}: provider {spec.provider!r} is not configured")
                    continue
                request = GenerationRequest(
                    model=spec.model,
                    messages=task.messages,
                    tools=task.tools,
                    params=task.params,
                    headers=headers,
                    default_max_output_tokens=self._policy.default_max_output_tokens,
                )
                try:
                    finished, text = await self._with_retries(provider, spec, request)
                except ProviderError as exc:
                    log.warning("%s: giving up on %s: %s", task.request_id, spec.model, exc)
                    failures.append(str(exc))
                    continue
                return self._succeed(spec, finished, text)
        except InvalidTaskError as exc:
            return await self._fail("INVALID_ARGUMENT", str(exc))
        return await self._fail(
            "UNAVAILABLE", "every model of the tier failed: " + "; ".join(failures)
        )

    async def _with_retries(
        self, provider: Provider, spec: ModelSpec, request: GenerationRequest
    ) -> tuple[Finished, str]:
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self._policy.retries_per_model + 1),
            wait=_wait(self._policy),
            retry=retry_if_exception(_worth_retrying(self._policy)),
            sleep=self._sleep,
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                return await self._stream_once(provider, spec, request)
        raise AssertionError("tenacity re-raises the last failure")  # pragma: no cover

    async def _stream_once(
        self, provider: Provider, spec: ModelSpec, request: GenerationRequest
    ) -> tuple[Finished, str]:
        policy = self._policy
        relay = DeltaRelay(
            self._channel,
            Coalescer(policy.coalesce_window_s, policy.coalesce_max_chars),
            _output_redactor(self._task) if self._task.redact_output else None,
        )
        parts: list[str] = []
        finished: Finished | None = None
        attributes: dict[str, str | int | float] = {
            "gen_ai.operation.name": "chat",
            "gen_ai.system": spec.provider,
            "gen_ai.provider.name": spec.provider,
            "gen_ai.request.model": spec.model,
        }
        if request.params.max_output_tokens:
            attributes["gen_ai.request.max_tokens"] = request.params.max_output_tokens
        if request.params.HasField("temperature"):
            attributes["gen_ai.request.temperature"] = request.params.temperature
        started = time.monotonic()
        with tracer.start_as_current_span(
            f"chat {spec.model}", kind=trace.SpanKind.CLIENT, attributes=attributes
        ) as span:
            try:
                deadline = asyncio.timeout(policy.attempt_timeout_s)
                events = _bounded(
                    provider.stream(request),
                    policy.stream_idle_timeout_s,
                    f"{spec.provider} {spec.model}",
                )
                try:
                    async with deadline, contextlib.aclosing(events):
                        async for event in events:
                            if isinstance(event, TextDelta):
                                if not parts:
                                    TIME_TO_FIRST_TOKEN.labels(spec.provider, spec.model).observe(
                                        time.monotonic() - started
                                    )
                                parts.append(event.text)
                                await relay.add(event.text)
                            else:
                                finished = event
                except TimeoutError:
                    if not deadline.expired():
                        raise
                    raise ProviderError(
                        f"{spec.provider} {spec.model}: no answer within "
                        f"{policy.attempt_timeout_s:g}s",
                        retryable=True,
                        kind="timeout",
                    ) from None
                if finished is None:
                    raise ProviderError(
                        f"{spec.provider} {spec.model}: the stream ended without a finish",
                        retryable=True,
                        kind="incomplete",
                    )
                await relay.flush()
            except ProviderError as exc:
                PROVIDER_CALLS.labels(spec.provider, spec.model, exc.kind).inc()
                span.set_attribute("error.type", exc.kind)
                span.set_status(trace.Status(trace.StatusCode.ERROR, str(exc)))
                await relay.discard()
                if relay.sent:
                    # The client saw part of a reply that will not be finished: drop it.
                    RESETS.labels(exc.kind).inc()
                    await self._channel.emit(
                        ChatEvent(reset=Reset(reason=f"{spec.model} failed ({exc.kind}); retrying"))
                    )
                raise
            finally:
                relay.close()
            PROVIDER_CALLS.labels(spec.provider, spec.model, "ok").inc()
            span.set_attributes(
                {
                    "gen_ai.response.model": finished.response_model or spec.model,
                    "gen_ai.usage.input_tokens": finished.input_tokens,
                    "gen_ai.usage.output_tokens": finished.output_tokens,
                    "gen_ai.response.finish_reasons": [finished.finish_reason],
                }
            )
        return finished, "".join(parts)

    def _succeed(self, spec: ModelSpec, finished: Finished, text: str) -> LlmResult:
        result = self._result
        result.provider = spec.provider
        result.model = spec.model
        result.text = text
        result.tool_calls.extend(finished.tool_calls)
        result.finish_reason = finished.finish_reason
        result.usage.CopyFrom(
            Usage(input_tokens=finished.input_tokens, output_tokens=finished.output_tokens)
        )
        result.cost_usd = spec.cost_usd(finished.input_tokens, finished.output_tokens)
        result.last_sequence = self._channel.last_sequence
        return result

    async def _fail(self, code: str, message: str) -> LlmResult:
        error = Error(code=code, message=message)
        self._result.error.CopyFrom(error)
        if self._policy.send_error_events:
            await self._channel.emit(ChatEvent(error=error))
        self._result.last_sequence = self._channel.last_sequence
        return self._result


async def generate(
    task: LlmTask,
    models: Sequence[ModelSpec],
    providers: Mapping[str, Provider],
    send: ReplySink,
    policy: GenerationPolicy,
    *,
    attempt: int = 1,
    sleep: Sleep = asyncio.sleep,
) -> LlmResult:
    """Run `task` to completion and return its result; reply events go to `send`."""
    return await Generation(
        task, models, providers, send, policy, attempt=attempt, sleep=sleep
    ).run()


def _output_redactor(task: LlmTask) -> StreamingRedactor:
    """A streaming redactor for the task's tenant: its phone regions, else the defaults."""
    regions = tuple(task.phone_regions)
    if not regions:
        return StreamingRedactor()
    return StreamingRedactor(redactor_for(regions))
