from collections.abc import AsyncIterator, Sequence

from switchboard.llm_worker.generation import Coalescer, generate, models_for
from switchboard.llm_worker.providers import Finished, ProviderError, StreamEvent, TextDelta
from switchboard.llm_worker.settings import ModelSpec
from switchboard.v1.chat_pb2 import ChatEvent
from switchboard.v1.events_pb2 import ChatMessage, GenerationParams, LlmTask

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


class FakeProvider:
    """Replays scripted deltas; fails after `fail_after` deltas when set."""

    def __init__(self, name: str, deltas: list[str], fail_after: int | None = None) -> None:
        self.name = name
        self.deltas = deltas
        self.fail_after = fail_after

    async def stream(
        self, model: str, messages: Sequence[ChatMessage], params: GenerationParams
    ) -> AsyncIterator[StreamEvent]:
        for index, text in enumerate(self.deltas):
            if self.fail_after is not None and index == self.fail_after:
                raise ProviderError(f"{self.name} broke")
            yield TextDelta(text)
        yield Finished("stop", 12, len(self.deltas))


def task(reply_topic: str = "replies") -> LlmTask:
    return LlmTask(
        task_id="t",
        request_id="r",
        conversation_id="c",
        tier="cheap",
        reply_topic=reply_topic,
        sequence_base=0,
    )


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_first_delta_goes_at_once_then_text_waits_for_the_window_or_size() -> None:
    clock = Clock()
    coalescer = Coalescer(window_s=0.05, max_chars=10, clock=clock)
    assert coalescer.add("Hi") == "Hi"
    clock.now = 0.01
    assert coalescer.add(" the") is None
    assert coalescer.add("re") is None
    clock.now = 0.07
    assert coalescer.add("!") == " there!"
    clock.now = 0.08
    assert coalescer.add("0123456789") == "0123456789"
    assert coalescer.add("end") is None
    assert coalescer.drain() == "end"
    assert coalescer.drain() == ""


def test_models_follow_the_task_choice_within_the_tier() -> None:
    catalogue = {"cheap": [CHEAP, BACKUP]}
    assert models_for(task(), catalogue) == [CHEAP, BACKUP]
    assert models_for(LlmTask(tier="cheap", models=["b", "unknown"]), catalogue) == [BACKUP]
    assert models_for(LlmTask(tier="gold"), catalogue) == []


async def test_deltas_are_sequenced_and_usage_priced() -> None:
    sent: list[ChatEvent] = []

    async def send(event: ChatEvent) -> None:
        sent.append(event)

    result = await generate(
        task(),
        [CHEAP],
        {"openai": FakeProvider("openai", ["Hel", "lo"])},
        send,
        lambda: Coalescer(0, 100),
    )
    assert "".join(e.delta.text for e in sent) == "Hello" == result.text
    assert [e.sequence for e in sent] == list(range(1, len(sent) + 1))
    assert result.last_sequence == len(sent)
    assert (result.provider, result.model, result.finish_reason) == ("openai", "a", "stop")
    assert (result.usage.input_tokens, result.usage.output_tokens) == (12, 2)
    assert abs(result.cost_usd - (12 * 1 + 2 * 2) / 1e6) < 1e-12
    assert not result.HasField("error")


async def test_a_failure_mid_stream_resets_then_the_next_model_answers() -> None:
    sent: list[ChatEvent] = []

    async def send(event: ChatEvent) -> None:
        sent.append(event)

    providers = {
        "openai": FakeProvider("openai", ["par", "tial", "x"], fail_after=2),
        "anthropic": FakeProvider("anthropic", ["Fine"]),
    }
    result = await generate(task(), [CHEAP, BACKUP], providers, send, lambda: Coalescer(0, 100))
    kinds = [e.WhichOneof("event") for e in sent]
    assert kinds == ["delta", "delta", "reset", "delta"]
    assert sent[-1].delta.text == "Fine" and result.text == "Fine" and result.model == "b"
    assert [e.sequence for e in sent] == [1, 2, 3, 4]


async def test_when_every_model_fails_the_result_carries_the_error() -> None:
    async def send(event: ChatEvent) -> None:
        pass

    providers = {"openai": FakeProvider("openai", ["x"], fail_after=0)}
    result = await generate(task(), [CHEAP], providers, send, lambda: Coalescer(0, 100))
    assert result.error.code == "UNAVAILABLE" and "openai broke" in result.error.message
    none = await generate(task(), [], providers, send, lambda: Coalescer(0, 100))
    assert none.error.code == "INVALID_ARGUMENT"


async def test_tasks_without_a_reply_topic_stream_nothing() -> None:
    sent: list[ChatEvent] = []

    async def send(event: ChatEvent) -> None:
        sent.append(event)

    result = await generate(
        task(reply_topic=""),
        [CHEAP],
        {"openai": FakeProvider("openai", ["a", "b"])},
        send,
        lambda: Coalescer(0, 100),
    )
    assert sent == [] and result.text == "ab"
