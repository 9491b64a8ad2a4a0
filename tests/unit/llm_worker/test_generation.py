"""The generation core with scripted providers: relay, sequences, retries, fallback, resets."""

import asyncio
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field

import pytest

from switchboard.llm_worker.deltas import Coalescer
from switchboard.llm_worker.generation import (
    ATTEMPT_STRIDE,
    GenerationPolicy,
    generate,
    models_for,
    sim_headers,
)
from switchboard.llm_worker.providers import (
    Finished,
    GenerationRequest,
    ProviderError,
    StreamEvent,
    TextDelta,
)
from switchboard.llm_worker.settings import ModelSpec
from switchboard.v1.chat_pb2 import ChatEvent
from switchboard.v1.events_pb2 import LlmTask, ToolCall, ToolSpec

CHEAP = ModelSpec(
    provider="openai", model="a", input_usd_per_mtok=1, output_usd_per_mtok=2, context_window=1000
)
BACKUP = ModelSpec(
    provider="anthropic",
    model="b",
    input_usd_per_mtok=3,
    output_usd_per_mtok=4,
    context_window=1000,
)
# No coalescing, no waiting: every delta is its own event.
EAGER = GenerationPolicy(coalesce_window_s=0, coalesce_max_chars=1, backoff_initial_s=0.01)


def retryable(kind: str = "server_error", retry_after_s: float | None = None) -> ProviderError:
    return ProviderError(f"boom ({kind})", retryable=True, kind=kind, retry_after_s=retry_after_s)


@dataclass
class Script:
    """One call's behaviour: deltas, then a failure after `fail_after` deltas if set."""

    deltas: list[str]
    fail_after: int | None = None
    error: ProviderError = field(default_factory=retryable)
    tool_calls: tuple[ToolCall, ...] = ()
    stall: asyncio.Event | None = None  # wait on it after the deltas
    pause_s: float = 0.0  # between deltas


class FakeProvider:
    """Replays one script per call; the last script repeats."""

    def __init__(self, name: str, *scripts: Script) -> None:
        self.name = name
        self.scripts = list(scripts)
        self.requests: list[GenerationRequest] = []
        self.yielded = 0  # deltas handed to the generation so far

    async def stream(self, request: GenerationRequest) -> AsyncGenerator[StreamEvent, None]:
        self.requests.append(request)
        script = self.scripts[min(len(self.requests), len(self.scripts)) - 1]
        for index, text in enumerate(script.deltas):
            if script.fail_after is not None and index == script.fail_after:
                raise script.error
            if index and script.pause_s:
                await asyncio.sleep(script.pause_s)
            self.yielded += 1
            yield TextDelta(text)
        if script.fail_after is not None and script.fail_after >= len(script.deltas):
            raise script.error
        if script.stall is not None:
            await script.stall.wait()
        reason = "tool_calls" if script.tool_calls else "stop"
        yield Finished(reason, 12, len(script.deltas), script.tool_calls, "model-v1")


class Sink:
    def __init__(self) -> None:
        self.events: list[ChatEvent] = []

    async def __call__(self, event: ChatEvent) -> None:
        self.events.append(event)

    @property
    def kinds(self) -> list[str]:
        return [str(e.WhichOneof("event")) for e in self.events]

    @property
    def text_after_last_reset(self) -> str:
        kinds = self.kinds
        start = len(kinds) - kinds[::-1].index("reset") if "reset" in kinds else 0
        return "".join(e.delta.text for e in self.events[start:])


class Sleeps:
    def __init__(self) -> None:
        self.calls: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


def task(reply_topic: str = "replies", **fields: object) -> LlmTask:
    defaults: dict[str, object] = {
        "task_id": "t",
        "tenant_id": "demo",
        "request_id": "r",
        "conversation_id": "c",
        "tier": "cheap",
        "sequence_base": 0,
    }
    return LlmTask(reply_topic=reply_topic, **{**defaults, **fields})  # type: ignore[arg-type]


def test_first_delta_goes_at_once_then_text_waits_for_the_window_or_size() -> None:
    coalescer = Coalescer(window_s=0.05, max_chars=10)
    assert coalescer.add("Hi", now=0.0)
    assert coalescer.drain() == "Hi"
    coalescer.sent(0.0)
    assert not coalescer.add(" the", now=0.01)
    assert not coalescer.add("re", now=0.02)
    assert coalescer.deadline() == pytest.approx(0.05)
    assert coalescer.add("!", now=0.07)
    assert coalescer.drain() == " there!"
    coalescer.sent(0.07)
    assert coalescer.deadline() is None
    assert coalescer.add("0123456789", now=0.08), "the size limit sends at once"
    assert coalescer.drain() == "0123456789"
    assert coalescer.drain() == ""


def test_text_is_sent_at_once_until_some_went_out() -> None:
    coalescer = Coalescer(window_s=0.05, max_chars=100)
    assert coalescer.add("Tha", now=0.0)
    assert coalescer.drain() == "Tha"  # held back by a guardrail: not sent
    assert coalescer.add("nks ", now=0.001), "nothing went out yet: no window to wait for"


def test_models_follow_the_task_choice_within_the_tier() -> None:
    catalogue = {"cheap": [CHEAP, BACKUP]}
    assert models_for(task(), catalogue) == [CHEAP, BACKUP]
    assert models_for(LlmTask(tier="cheap", models=["b", "unknown"]), catalogue) == [BACKUP]
    assert models_for(LlmTask(tier="gold"), catalogue) == []


async def test_deltas_are_sequenced_and_usage_priced() -> None:
    sink = Sink()
    result = await generate(
        task(), [CHEAP], {"openai": FakeProvider("openai", Script(["Hel", "lo"]))}, sink, EAGER
    )
    assert "".join(e.delta.text for e in sink.events) == "Hello" == result.text
    assert [e.sequence for e in sink.events] == [1, 2]
    assert all(e.request_id == "r" for e in sink.events)
    assert result.last_sequence == 2
    assert (result.provider, result.model, result.finish_reason) == ("openai", "a", "stop")
    assert (result.usage.input_tokens, result.usage.output_tokens) == (12, 2)
    assert result.cost_usd == pytest.approx((12 * 1 + 2 * 2) / 1e6)
    assert not result.HasField("error")


async def test_coalescing_joins_deltas_but_sends_the_first_at_once() -> None:
    sink = Sink()
    policy = GenerationPolicy(coalesce_window_s=60, coalesce_max_chars=6)
    provider = FakeProvider("openai", Script(["Hi", " the", "re", " you", "!"]))
    await generate(task(), [CHEAP], {"openai": provider}, sink, policy)
    # "re" fills the size: a send starts, and " you", read before it ran, joins it.
    assert [e.delta.text for e in sink.events] == ["Hi", " there you", "!"]


class SlowSink(Sink):
    """A sink whose sends after the first wait until `release` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.release = asyncio.Event()

    async def __call__(self, event: ChatEvent) -> None:
        if self.events:
            await self.release.wait()
        self.events.append(event)


async def test_the_stream_is_read_on_while_a_send_is_in_flight() -> None:
    sink = SlowSink()
    policy = GenerationPolicy(coalesce_window_s=0, coalesce_max_chars=1000)
    provider = FakeProvider("openai", Script(["a", "b", "c", "d", "e"], pause_s=0.005))
    generation = asyncio.create_task(generate(task(), [CHEAP], {"openai": provider}, sink, policy))
    for _ in range(500):  # bounded wait: "b"'s send waits, and "c", "d", "e" are read meanwhile
        if provider.yielded == 5:
            break
        await asyncio.sleep(0.01)
    assert provider.yielded == 5
    assert [e.delta.text for e in sink.events] == ["a"]
    sink.release.set()
    result = await generation
    assert [e.delta.text for e in sink.events] == ["a", "b", "cde"]
    assert result.text == "abcde"


async def test_text_waiting_behind_a_send_is_bounded() -> None:
    sink = SlowSink()
    policy = GenerationPolicy(coalesce_window_s=0, coalesce_max_chars=2)
    provider = FakeProvider("openai", Script(["a", "b", "c", "d", "e", "f"]))
    generation = asyncio.create_task(generate(task(), [CHEAP], {"openai": provider}, sink, policy))
    await asyncio.sleep(0.05)
    # "a" went out; "b" and "c" (2 characters) wait behind the send of "b", which is stuck:
    # the stream is not read on.
    assert provider.yielded == 3 and not generation.done()
    sink.release.set()
    await generation
    texts = [e.delta.text for e in sink.events]
    assert "".join(texts) == "abcdef"
    assert all(len(t) <= 3 for t in texts), texts


async def test_a_first_word_held_by_the_output_guardrail_does_not_wait_for_the_window() -> None:
    sink = Sink()
    policy = GenerationPolicy(coalesce_window_s=60, coalesce_max_chars=1000)
    provider = FakeProvider("openai", Script(["Thanks", " for", " asking", "."]))
    await generate(task(redact_output=True), [CHEAP], {"openai": provider}, sink, policy)
    # "Thanks" could still grow into a longer word; it goes out with the next delta, not
    # when the 60 s window closes (the rest waits for the window, then the final flush).
    assert [e.delta.text for e in sink.events] == ["Thanks ", "for asking."]


async def test_a_stalled_provider_does_not_hold_back_buffered_text() -> None:
    sink = Sink()
    stall = asyncio.Event()
    policy = GenerationPolicy(coalesce_window_s=0.02, coalesce_max_chars=1000)
    provider = FakeProvider("openai", Script(["first", " second"], stall=stall))
    generation = asyncio.create_task(generate(task(), [CHEAP], {"openai": provider}, sink, policy))
    for _ in range(500):  # bounded wait: the window timer must send " second"
        if len(sink.events) == 2:
            break
        await asyncio.sleep(0.01)
    assert [e.delta.text for e in sink.events] == ["first", " second"]
    assert not generation.done(), "the provider is still stalled"
    stall.set()
    result = await generation
    assert result.text == "first second" and len(sink.events) == 2


async def test_transient_failures_are_retried_with_growing_jittered_backoff() -> None:
    sink, sleeps = Sink(), Sleeps()
    policy = GenerationPolicy(
        coalesce_window_s=0,
        coalesce_max_chars=1,
        retries_per_model=3,
        backoff_initial_s=1.0,
        backoff_max_s=3.0,
    )
    provider = FakeProvider(
        "openai", Script([], fail_after=0), Script([], fail_after=0), Script(["ok"])
    )
    result = await generate(task(), [CHEAP], {"openai": provider}, sink, policy, sleep=sleeps)
    assert result.text == "ok" and len(provider.requests) == 3
    # Exponential from 1 s (1, 2, 4 ...) capped at 3 s, plus up to 1 s of jitter.
    assert 1.0 <= sleeps.calls[0] <= 2.0
    assert 2.0 <= sleeps.calls[1] <= 3.0
    assert sink.kinds == ["delta"], "nothing reached the client before the retry: no reset"


async def test_retry_after_is_honoured() -> None:
    sleeps = Sleeps()
    provider = FakeProvider(
        "openai",
        Script([], fail_after=0, error=retryable("rate_limited", retry_after_s=7.5)),
        Script(["ok"]),
    )
    result = await generate(task(), [CHEAP], {"openai": provider}, Sink(), EAGER, sleep=sleeps)
    assert result.text == "ok"
    assert sleeps.calls == [7.5]


async def test_retries_are_bounded_then_the_next_model_answers() -> None:
    sink, sleeps = Sink(), Sleeps()
    failing = FakeProvider("openai", Script([], fail_after=0))
    backup = FakeProvider("anthropic", Script(["Fine"]))
    result = await generate(
        task(), [CHEAP, BACKUP], {"openai": failing, "anthropic": backup}, sink, EAGER, sleep=sleeps
    )
    assert len(failing.requests) == EAGER.retries_per_model + 1
    assert len(sleeps.calls) == EAGER.retries_per_model
    assert (result.model, result.text) == ("b", "Fine")


async def test_a_retry_after_beyond_the_limit_goes_to_the_next_model_at_once() -> None:
    sleeps = Sleeps()
    failing = FakeProvider(
        "openai", Script([], fail_after=0, error=retryable("rate_limited", retry_after_s=3600))
    )
    backup = FakeProvider("anthropic", Script(["Fine"]))
    providers = {"openai": failing, "anthropic": backup}
    result = await generate(task(), [CHEAP, BACKUP], providers, Sink(), EAGER, sleep=sleeps)
    assert len(failing.requests) == 1 and sleeps.calls == []
    assert result.model == "b"


async def test_a_rejected_request_is_not_retried() -> None:
    rejected = ProviderError("HTTP 400", retryable=False, kind="rejected", status=400)
    failing = FakeProvider("openai", Script([], fail_after=0, error=rejected))
    backup = FakeProvider("anthropic", Script(["Fine"]))
    result = await generate(
        task(), [CHEAP, BACKUP], {"openai": failing, "anthropic": backup}, Sink(), EAGER
    )
    assert len(failing.requests) == 1 and result.model == "b"


async def test_a_failure_mid_stream_resets_then_the_new_text_follows() -> None:
    sink = Sink()
    provider = FakeProvider(
        "openai", Script(["par", "tial", "x"], fail_after=2), Script(["Whole", " reply"])
    )
    result = await generate(task(), [CHEAP], {"openai": provider}, sink, EAGER)
    assert sink.kinds == ["delta", "delta", "reset", "delta", "delta"]
    assert [e.sequence for e in sink.events] == [1, 2, 3, 4, 5]
    assert sink.text_after_last_reset == "Whole reply" == result.text
    assert result.last_sequence == 5


async def test_when_every_model_fails_the_client_gets_an_error_and_the_result_carries_it() -> None:
    sink = Sink()
    provider = FakeProvider("openai", Script(["x"], fail_after=1))
    result = await generate(task(), [CHEAP], {"openai": provider}, sink, EAGER, sleep=Sleeps())
    assert result.error.code == "UNAVAILABLE" and "boom" in result.error.message
    assert sink.kinds[-1] == "error" and sink.events[-1].error == result.error
    assert sink.kinds.count("reset") == EAGER.retries_per_model + 1
    assert result.last_sequence == sink.events[-1].sequence

    quiet = Sink()
    policy = GenerationPolicy(send_error_events=False)
    none = await generate(task(), [], {}, quiet, policy)
    assert none.error.code == "INVALID_ARGUMENT" and quiet.events == []


async def test_a_hanging_provider_times_out_and_is_retried() -> None:
    policy = GenerationPolicy(coalesce_window_s=0, stream_idle_timeout_s=0.05)
    never = asyncio.Event()
    provider = FakeProvider("openai", Script(["a"], stall=never), Script(["b"]))
    sink = Sink()
    result = await generate(task(), [CHEAP], {"openai": provider}, sink, policy, sleep=Sleeps())
    assert result.text == "b"
    assert sink.kinds == ["delta", "reset", "delta"]


async def test_a_redelivered_task_resets_first_and_numbers_above_earlier_attempts() -> None:
    sink = Sink()
    provider = FakeProvider("openai", Script(["again"]))
    result = await generate(
        task(sequence_base=7), [CHEAP], {"openai": provider}, sink, EAGER, attempt=3
    )
    assert sink.kinds == ["reset", "delta"]
    base = 7 + 2 * ATTEMPT_STRIDE
    assert [e.sequence for e in sink.events] == [base + 1, base + 2]
    assert result.last_sequence == base + 2


async def test_tasks_without_a_reply_topic_stream_nothing() -> None:
    sink = Sink()
    provider = FakeProvider("openai", Script(["a", "b"]))
    result = await generate(task(reply_topic=""), [CHEAP], {"openai": provider}, sink, EAGER)
    assert sink.events == [] and result.text == "ab"


async def test_tools_go_to_the_provider_and_calls_come_back_in_the_result() -> None:
    call = ToolCall(id="call_1", name="lookup_order", arguments_json='{"order_id":"7"}')
    provider = FakeProvider("openai", Script([], tool_calls=(call,)))
    spec = ToolSpec(name="lookup_order", parameters_json_schema='{"type":"object"}')
    result = await generate(task(tools=[spec]), [CHEAP], {"openai": provider}, Sink(), EAGER)
    assert list(provider.requests[0].tools) == [spec]
    assert list(result.tool_calls) == [call] and result.finish_reason == "tool_calls"


async def test_an_unreadable_tool_schema_fails_the_task_without_calling_a_model() -> None:
    provider = FakeProvider("openai", Script(["never"]))
    spec = ToolSpec(name="broken", parameters_json_schema="{not json")
    sink = Sink()
    result = await generate(task(tools=[spec]), [CHEAP], {"openai": provider}, sink, EAGER)
    assert result.error.code == "INVALID_ARGUMENT" and "broken" in result.error.message
    assert provider.requests == [] and sink.kinds == ["error"]


def test_sim_metadata_becomes_control_headers_keyed_by_generation() -> None:
    headers = sim_headers(
        task(
            sequence_base=4,
            metadata={
                "sim.fault": "500",
                "sim.fault_attempts": "2",
                "other": "x",
                "sim.bad": "a\nb",
            },
        )
    )
    assert headers == {"x-sim-fault": "500", "x-sim-fault-attempts": "2", "x-sim-key": "r:4"}
    assert sim_headers(task(metadata={"sim.key": "mine"})) == {"x-sim-key": "mine"}
    assert sim_headers(task(metadata={"plain": "1"})) == {}


async def test_the_provider_request_carries_the_controls_and_params() -> None:
    provider = FakeProvider("openai", Script(["x"]))
    await generate(task(metadata={"sim.tokens": "5"}), [CHEAP], {"openai": provider}, Sink(), EAGER)
    [request] = provider.requests
    assert request.model == "a" and request.headers["x-sim-tokens"] == "5"
    disabled = FakeProvider("openai", Script(["x"]))
    await generate(
        task(metadata={"sim.tokens": "5"}),
        [CHEAP],
        {"openai": disabled},
        Sink(),
        GenerationPolicy(forward_sim_controls=False),
    )
    assert disabled.requests[0].headers == {}
