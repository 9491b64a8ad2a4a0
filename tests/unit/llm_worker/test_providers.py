"""Both provider paths through their official SDKs against the simulator: text, tools,
message translation, error classification, retries, fallback, resets and cancellation."""

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx2
import openai
import pytest

from switchboard.llm_worker.generation import GenerationPolicy, generate
from switchboard.llm_worker.providers import (
    SSE_DRAIN_MAX_LINES,
    AnthropicProvider,
    Finished,
    GenerationRequest,
    OpenAIProvider,
    Provider,
    ProviderError,
    TextDelta,
    anthropic_messages,
    openai_messages,
    retry_after_s,
    sse_data,
)
from switchboard.llm_worker.settings import ModelSpec
from switchboard.simulator import RunningSimulator
from switchboard.v1.chat_pb2 import (
    ROLE_ASSISTANT,
    ROLE_SYSTEM,
    ROLE_TOOL,
    ROLE_USER,
    ChatEvent,
)
from switchboard.v1.events_pb2 import ChatMessage, GenerationParams, LlmTask, ToolCall, ToolSpec

ORDER_TOOL = ToolSpec(
    name="lookup_order",
    description="Find an order by its number",
    parameters_json_schema=json.dumps(
        {
            "type": "object",
            "properties": {"order_id": {"type": "string"}},
            "required": ["order_id"],
        }
    ),
)
OPENAI_MODEL = ModelSpec(
    provider="openai",
    model="gpt-4o-mini",
    input_usd_per_mtok=0.15,
    output_usd_per_mtok=0.6,
    context_window=128_000,
)
ANTHROPIC_MODEL = ModelSpec(
    provider="anthropic",
    model="claude-haiku-4-5",
    input_usd_per_mtok=1,
    output_usd_per_mtok=5,
    context_window=200_000,
)
FAST = GenerationPolicy(coalesce_window_s=0, coalesce_max_chars=1, backoff_initial_s=0.01)


@pytest.fixture
async def providers(sim: RunningSimulator) -> AsyncIterator[dict[str, Provider]]:
    openai_provider = OpenAIProvider(sim.openai_base_url, "test-key", timeout_s=10)
    anthropic_provider = AnthropicProvider(sim.anthropic_base_url, "test-key", timeout_s=10)
    yield {"openai": openai_provider, "anthropic": anthropic_provider}
    await openai_provider.close()
    await anthropic_provider.close()


def journal(sim: RunningSimulator) -> list[dict[str, Any]]:
    return [dict(entry) for entry in sim.state.journal.entries()]


def conversation(text: str) -> list[ChatMessage]:
    return [
        ChatMessage(role=ROLE_SYSTEM, text="You are a support agent."),
        ChatMessage(role=ROLE_USER, text=text),
    ]


async def run(provider: Provider, request: GenerationRequest) -> tuple[str, Finished]:
    text, finished = "", None
    async for event in provider.stream(request):
        if isinstance(event, TextDelta):
            text += event.text
        else:
            finished = event
    assert finished is not None
    return text, finished


def task(metadata: dict[str, str] | None = None, **fields: Any) -> LlmTask:
    defaults: dict[str, Any] = {
        "task_id": "t-1",
        "tenant_id": "demo",
        "conversation_id": "c-1",
        "request_id": f"r-{time.monotonic_ns()}",
        "tier": "frontier",
        "reply_topic": "replies",
        "messages": conversation("Where is my parcel?"),
    }
    return LlmTask(metadata=metadata or {}, **{**defaults, **fields})


class Sink:
    def __init__(self) -> None:
        self.events: list[ChatEvent] = []

    async def __call__(self, event: ChatEvent) -> None:
        self.events.append(event)

    @property
    def kinds(self) -> list[str]:
        return [str(e.WhichOneof("event")) for e in self.events]

    def text_after_last_reset(self) -> str:
        kinds = self.kinds
        start = len(kinds) - kinds[::-1].index("reset") if "reset" in kinds else 0
        return "".join(e.delta.text for e in self.events[start:])


@pytest.mark.parametrize("name", ["openai", "anthropic"])
async def test_text_streams_through_the_official_sdk(
    sim: RunningSimulator, providers: dict[str, Provider], name: str
) -> None:
    text, finished = await run(
        providers[name],
        GenerationRequest(
            model="m-1",
            messages=conversation("Where is my parcel?"),
            params=GenerationParams(max_output_tokens=200),
        ),
    )
    assert "Where is my parcel" in text
    assert finished.finish_reason == "stop", "normalized to OpenAI's words"
    assert finished.input_tokens > 0 and finished.output_tokens > 0
    assert finished.tool_calls == ()
    [request] = journal(sim)
    assert request["api"] == name
    if name == "anthropic":
        assert request["body"]["system"] == "You are a support agent."
        assert request["body"]["messages"] == [{"role": "user", "content": "Where is my parcel?"}]
        assert request["body"]["max_tokens"] == 200
    else:
        assert request["body"]["messages"][0] == {
            "role": "system",
            "content": "You are a support agent.",
        }
        assert request["body"]["stream_options"] == {"include_usage": True}


@pytest.mark.parametrize("name", ["openai", "anthropic"])
async def test_tool_calls_stream_through_the_official_sdk(
    sim: RunningSimulator, providers: dict[str, Provider], name: str
) -> None:
    text, finished = await run(
        providers[name],
        GenerationRequest(
            model="m-1",
            messages=conversation("Please lookup order #A-99"),
            tools=[ORDER_TOOL],
        ),
    )
    assert text == ""
    assert finished.finish_reason == "tool_calls"
    [call] = finished.tool_calls
    assert call.name == "lookup_order" and call.id
    assert json.loads(call.arguments_json) == {"order_id": "A-99"}
    [request] = journal(sim)
    schema = json.loads(ORDER_TOOL.parameters_json_schema)
    if name == "openai":
        assert request["body"]["tools"] == [
            {
                "type": "function",
                "function": {
                    "name": "lookup_order",
                    "description": "Find an order by its number",
                    "parameters": schema,
                },
            }
        ]
    else:
        assert request["body"]["tools"] == [
            {
                "name": "lookup_order",
                "description": "Find an order by its number",
                "input_schema": schema,
            }
        ]


@pytest.mark.parametrize("name", ["openai", "anthropic"])
async def test_tool_results_go_back_in_each_wire_format_and_the_reply_uses_them(
    sim: RunningSimulator, providers: dict[str, Provider], name: str
) -> None:
    messages = [
        *conversation("Please lookup order #A-99"),
        ChatMessage(
            role=ROLE_ASSISTANT,
            tool_calls=[
                ToolCall(id="call_9", name="lookup_order", arguments_json='{"order_id":"A-99"}')
            ],
        ),
        ChatMessage(role=ROLE_TOOL, tool_call_id="call_9", text='{"status":"shipped"}'),
    ]
    text, finished = await run(
        providers[name], GenerationRequest(model="m-1", messages=messages, tools=[ORDER_TOOL])
    )
    assert finished.finish_reason == "stop"
    assert text.startswith("Your order has shipped. ")  # the simulator read the result
    [request] = journal(sim)
    if name == "openai":
        assert request["body"]["messages"][2:] == [
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_9",
                        "type": "function",
                        "function": {"name": "lookup_order", "arguments": '{"order_id":"A-99"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_9", "content": '{"status":"shipped"}'},
        ]
    else:
        assert request["body"]["messages"][1:] == [
            {
                "role": "assistant",
                "content": [
                    {
                        "type": "tool_use",
                        "id": "call_9",
                        "name": "lookup_order",
                        "input": {"order_id": "A-99"},
                    }
                ],
            },
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": "call_9",
                        "content": '{"status":"shipped"}',
                    }
                ],
            },
        ]


def test_anthropic_turns_alternate_and_tool_results_share_one_user_turn() -> None:
    system, turns = anthropic_messages(
        [
            ChatMessage(role=ROLE_SYSTEM, text="a"),
            ChatMessage(role=ROLE_SYSTEM, text="b"),
            ChatMessage(role=ROLE_USER, text="two tools please"),
            ChatMessage(
                role=ROLE_ASSISTANT,
                text="Checking.",
                tool_calls=[
                    ToolCall(id="1", name="x", arguments_json="{}"),
                    ToolCall(id="2", name="y", arguments_json='{"q":1}'),
                ],
            ),
            ChatMessage(role=ROLE_TOOL, tool_call_id="1", text="r1"),
            ChatMessage(role=ROLE_TOOL, tool_call_id="2", text="r2"),
            ChatMessage(role=ROLE_USER, text="and?"),
            ChatMessage(role=ROLE_ASSISTANT, text=""),
        ]
    )
    assert system == "a\n\nb"
    assert [t["role"] for t in turns] == ["user", "assistant", "user"]
    assert turns[1]["content"] == [
        {"type": "text", "text": "Checking."},
        {"type": "tool_use", "id": "1", "name": "x", "input": {}},
        {"type": "tool_use", "id": "2", "name": "y", "input": {"q": 1}},
    ]
    assert [b["type"] for b in turns[2]["content"]] == ["tool_result", "tool_result", "text"]


def test_messages_that_cannot_be_translated_are_rejected() -> None:
    from switchboard.llm_worker.providers import InvalidTaskError

    with pytest.raises(InvalidTaskError, match="tool_call_id"):
        openai_messages([ChatMessage(role=ROLE_TOOL, text="r")])
    with pytest.raises(InvalidTaskError, match="not JSON"):
        anthropic_messages(
            [ChatMessage(role=ROLE_ASSISTANT, tool_calls=[ToolCall(id="1", arguments_json="{")])]
        )


@pytest.mark.parametrize("name", ["openai", "anthropic"])
async def test_provider_failures_are_classified(
    sim: RunningSimulator, providers: dict[str, Provider], name: str
) -> None:
    async def failure(headers: dict[str, str], **request: Any) -> ProviderError:
        with pytest.raises(ProviderError) as caught:
            await run(
                providers[name],
                GenerationRequest(
                    model="m",
                    messages=request.get("messages", conversation("hi")),
                    headers=headers,
                ),
            )
        return caught.value

    limited = await failure({"x-sim-fault": "429", "x-sim-retry-after-ms": "250"})
    assert (limited.retryable, limited.kind, limited.status) == (True, "rate_limited", 429)
    assert limited.retry_after_s == pytest.approx(0.25)
    broken = await failure({"x-sim-fault": "500"})
    assert (broken.retryable, broken.kind, broken.status) == (True, "server_error", 500)
    dropped = await failure({"x-sim-fault": "disconnect"})
    assert (dropped.retryable, dropped.kind) == (True, "connection")
    rejected = await failure({"x-sim-colour": "blue"})
    assert (rejected.retryable, rejected.kind, rejected.status) == (False, "rejected", 400)


def test_retry_after_headers_are_read_in_every_form() -> None:
    assert retry_after_s({"retry-after-ms": "1500", "retry-after": "9"}) == 1.5
    assert retry_after_s({"retry-after": "3"}) == 3.0
    assert retry_after_s({"retry-after": "Wed, 21 Oct 2015 07:28:10 GMT"}, now=1445412480) == 10
    assert retry_after_s({"retry-after": "soon"}) is None
    assert retry_after_s({}) is None


async def test_server_errors_are_retried_then_the_next_model_answers(
    sim: RunningSimulator, providers: dict[str, Provider]
) -> None:
    # The first three attempts of this generation fail: all of the first model's tries.
    sink = Sink()
    result = await generate(
        task({"sim.fault": "500", "sim.fault_attempts": str(FAST.retries_per_model + 1)}),
        [OPENAI_MODEL, ANTHROPIC_MODEL],
        providers,
        sink,
        FAST,
    )
    assert not result.HasField("error"), result.error
    assert (result.provider, result.model) == ("anthropic", "claude-haiku-4-5")
    assert sink.kinds and set(sink.kinds) == {"delta"}
    assert "".join(e.delta.text for e in sink.events) == result.text
    assert [(e["api"], e["outcome"]) for e in journal(sim)] == [
        ("openai", "error 500"),
        ("openai", "error 500"),
        ("openai", "error 500"),
        ("anthropic", "completed"),
    ]
    assert result.cost_usd == pytest.approx(
        ANTHROPIC_MODEL.cost_usd(result.usage.input_tokens, result.usage.output_tokens)
    )


@pytest.mark.parametrize("model", [OPENAI_MODEL, ANTHROPIC_MODEL], ids=lambda m: m.provider)
async def test_a_stream_that_breaks_midway_restarts_after_a_reset(
    sim: RunningSimulator, providers: dict[str, Provider], model: ModelSpec
) -> None:
    sink = Sink()
    result = await generate(
        task({"sim.fault": "disconnect", "sim.fault_attempts": "1", "sim.fault_after": "4"}),
        [model],
        providers,
        sink,
        FAST,
    )
    assert not result.HasField("error"), result.error
    # The text sent before the break (four tokens, in one or more events), then the reset.
    cut = sink.kinds.index("reset")
    assert cut >= 1 and set(sink.kinds[:cut]) == {"delta"}
    assert len("".join(e.delta.text for e in sink.events[:cut]).split()) == 4
    assert sink.text_after_last_reset() == result.text
    assert "Where is my parcel" in result.text
    sequences = [e.sequence for e in sink.events]
    assert sequences == list(range(1, len(sequences) + 1))
    assert [e["outcome"] for e in journal(sim)] == ["fault_disconnect", "completed"]


async def test_a_hanging_stream_is_abandoned_and_retried(
    sim: RunningSimulator, providers: dict[str, Provider]
) -> None:
    policy = GenerationPolicy(
        coalesce_window_s=0, backoff_initial_s=0.01, stream_idle_timeout_s=0.3
    )
    sink = Sink()
    result = await generate(
        task({"sim.fault": "hang", "sim.fault_attempts": "1"}),
        [OPENAI_MODEL],
        providers,
        sink,
        policy,
    )
    assert not result.HasField("error")
    assert "reset" in sink.kinds and sink.text_after_last_reset() == result.text
    for _ in range(100):
        outcomes = [e.get("outcome") for e in journal(sim)]
        if outcomes == ["client_disconnected", "completed"]:
            break
        await asyncio.sleep(0.01)
    assert outcomes == ["client_disconnected", "completed"], "the hung stream was closed"


@pytest.mark.parametrize("model", [OPENAI_MODEL, ANTHROPIC_MODEL], ids=lambda m: m.provider)
async def test_cancelling_a_generation_closes_the_provider_stream(
    sim: RunningSimulator, providers: dict[str, Provider], model: ModelSpec
) -> None:
    sink = Sink()
    # 400 tokens 50 ms apart: 20 s if nothing stops it.
    generation = asyncio.create_task(
        generate(task({"sim.delay_ms": "50", "sim.tokens": "400"}), [model], providers, sink, FAST)
    )
    for _ in range(500):
        if sink.events:
            break
        await asyncio.sleep(0.01)
    assert sink.events, "the stream started"
    cancelled_at = time.time()
    generation.cancel()
    with pytest.raises(asyncio.CancelledError):
        await generation
    entry: dict[str, Any] = {}
    for _ in range(300):  # bounded: well before the stream would have ended by itself
        entry = journal(sim)[-1]
        if "outcome" in entry:
            break
        await asyncio.sleep(0.01)
    assert entry.get("outcome") == "client_disconnected"
    assert entry["tokens_sent"] < 100
    print(f"provider stream closed {1000 * (entry['ended'] - cancelled_at):.1f} ms after cancel")


async def lines_of(text: str) -> AsyncIterator[str]:
    for line in text.split("\n"):
        yield line


async def test_the_sse_reader_follows_the_event_stream_rules() -> None:
    stream = (
        ": keep-alive comment\n"
        'data: {"n": 1}\n'
        "\n"
        "event: chunk\n"
        'data: {"n":\n'
        "data: 2}\n"
        "\n"
        'data:{"n": 3}\n'
        "\n"
        "data: [DONE]\n"
        "\n"
        'data: {"n": 4}\n'
        "\n"
    )
    assert [chunk async for chunk in sse_data(lines_of(stream))] == [{"n": 1}, {"n": 2}, {"n": 3}]
    # A stream cut before its blank line still gives its last event.
    assert [c async for c in sse_data(lines_of('data: {"n": 5}'))] == [{"n": 5}]
    with pytest.raises(ValueError, match="not a JSON object"):
        [c async for c in sse_data(lines_of("data: [1, 2]\n\n"))]


async def test_the_sse_reader_reads_the_body_to_its_end_after_done_within_a_bound() -> None:
    # An unread body makes httpx close the connection instead of pooling it.
    read: list[str] = []
    ended = False

    async def lines(after_done: list[str]) -> AsyncIterator[str]:
        nonlocal ended
        for line in ['data: {"n": 1}', "", "data: [DONE]", "", *after_done]:
            read.append(line)
            yield line
        ended = True

    assert [c async for c in sse_data(lines([]))] == [{"n": 1}]
    assert ended
    read.clear()
    ended = False
    assert [c async for c in sse_data(lines(["junk"] * 100))] == [{"n": 1}]
    assert not ended and len(read) == 4 + SSE_DRAIN_MAX_LINES


async def test_an_error_inside_an_openai_stream_is_a_retryable_stream_error() -> None:
    body = (
        'data: {"model": "m", "choices": [{"index": 0, "delta": {"content": "Hel"}}]}\n\n'
        'data: {"error": {"message": "overloaded mid-stream", "type": "server_error"}}\n\n'
    )

    def respond(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(
            200, content=body.encode(), headers={"content-type": "text/event-stream"}
        )

    provider = OpenAIProvider("http://sim.invalid/v1", "test-key", timeout_s=5)
    provider._client = openai.AsyncOpenAI(
        base_url="http://sim.invalid/v1",
        api_key="test-key",
        max_retries=0,
        http_client=httpx2.AsyncClient(transport=httpx2.MockTransport(respond)),
    )
    seen: list[Any] = []
    with pytest.raises(ProviderError) as caught:
        async for event in provider.stream(
            GenerationRequest(model="m", messages=conversation("hi"))
        ):
            seen.append(event)
    assert seen == [TextDelta("Hel")]
    assert (caught.value.retryable, caught.value.kind) == (True, "stream_error")
    assert "overloaded mid-stream" in str(caught.value)
    await provider.close()
