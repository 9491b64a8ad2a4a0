"""One generation: try the tier's models in order, relay coalesced deltas, report usage."""

import time
from collections.abc import Awaitable, Callable, Mapping, Sequence

from switchboard.common.redaction import StreamingRedactor
from switchboard.llm_worker.providers import Finished, Provider, ProviderError, TextDelta
from switchboard.llm_worker.settings import ModelSpec
from switchboard.v1.chat_pb2 import ChatEvent, Delta, Error, Reset, Usage
from switchboard.v1.events_pb2 import LlmResult, LlmTask

ReplySink = Callable[[ChatEvent], Awaitable[None]]


class Coalescer:
    """Joins provider deltas into fewer reply events: the first goes out at once, then
    text is sent when `window_s` passed since the last send or `max_chars` are waiting."""

    def __init__(
        self,
        window_s: float,
        max_chars: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._window_s = window_s
        self._max_chars = max_chars
        self._clock = clock
        self._pending: list[str] = []
        self._pending_chars = 0
        self._last_sent: float | None = None

    def add(self, text: str) -> str | None:
        """Take a delta; returns the text to send now, if any."""
        self._pending.append(text)
        self._pending_chars += len(text)
        now = self._clock()
        if (
            self._last_sent is None
            or now - self._last_sent >= self._window_s
            or self._pending_chars >= self._max_chars
        ):
            self._last_sent = now
            return self.drain()
        return None

    def drain(self) -> str:
        """Everything not sent yet."""
        text = "".join(self._pending)
        self._pending.clear()
        self._pending_chars = 0
        return text


def models_for(task: LlmTask, catalogue: Mapping[str, Sequence[ModelSpec]]) -> list[ModelSpec]:
    """The models to try, in order: the task's choice within its tier, or the whole tier."""
    tier_models = list(catalogue.get(task.tier, ()))
    if not task.models:
        return tier_models
    by_name = {spec.model: spec for spec in tier_models}
    return [by_name[name] for name in task.models if name in by_name]


async def generate(
    task: LlmTask,
    models: Sequence[ModelSpec],
    providers: Mapping[str, Provider],
    send: ReplySink,
    new_coalescer: Callable[[], Coalescer],
) -> LlmResult:
    """Run `task` to completion and return its result; reply events go to `send`."""
    result = LlmResult(
        task_id=task.task_id,
        tenant_id=task.tenant_id,
        conversation_id=task.conversation_id,
        request_id=task.request_id,
        tier=task.tier,
    )
    sequence = task.sequence_base

    async def emit(event: ChatEvent) -> None:
        nonlocal sequence
        if not task.reply_topic:
            return
        sequence += 1
        event.request_id = task.request_id
        event.sequence = sequence
        await send(event)

    if not models:
        result.error.CopyFrom(
            Error(code="INVALID_ARGUMENT", message=f"no model configured for tier {task.tier!r}")
        )
        return result

    failures: list[str] = []
    for spec in models:
        coalescer = new_coalescer()
        # Output guardrail: PII and secrets never reach the client. It redacts the coalesced
        # chunks (not every token, which would cost more), holding back a short tail.
        redactor = StreamingRedactor() if task.redact_output else None
        parts: list[str] = []
        sent_text = False
        try:
            finished: Finished | None = None
            async for event in providers[spec.provider].stream(
                spec.model, task.messages, task.params
            ):
                if isinstance(event, TextDelta):
                    parts.append(event.text)
                    chunk = coalescer.add(event.text)
                    if chunk and redactor is not None:
                        chunk = redactor.push(chunk)
                    if chunk:
                        await emit(ChatEvent(delta=Delta(text=chunk)))
                        sent_text = True
                else:
                    finished = event
            rest = coalescer.drain()
            if redactor is not None:
                rest = redactor.push(rest) + redactor.flush()
            if rest:
                await emit(ChatEvent(delta=Delta(text=rest)))
        except ProviderError as exc:
            failures.append(str(exc))
            if sent_text:
                # The client saw part of a reply that will not be finished: tell it to drop it.
                await emit(ChatEvent(reset=Reset(reason=f"{spec.model} failed; retrying")))
            continue
        assert finished is not None, "a provider stream ends with Finished"
        result.provider = spec.provider
        result.model = spec.model
        result.text = "".join(parts)
        result.finish_reason = finished.finish_reason
        result.usage.CopyFrom(
            Usage(input_tokens=finished.input_tokens, output_tokens=finished.output_tokens)
        )
        result.cost_usd = spec.cost_usd(finished.input_tokens, finished.output_tokens)
        result.last_sequence = sequence
        return result

    result.error.CopyFrom(
        Error(code="UNAVAILABLE", message="every model of the tier failed: " + "; ".join(failures))
    )
    result.last_sequence = sequence
    return result
