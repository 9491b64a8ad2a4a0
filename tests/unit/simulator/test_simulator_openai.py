"""The OpenAI Chat Completions API of the simulator, through the official `openai` SDK."""

import warnings
from typing import Any

import aiohttp
import bpe_openai
import openai
import pytest
from openai.types.chat import ChatCompletionChunk, ChatCompletionMessageParam

from switchboard.simulator import RunningSimulator
from switchboard.simulator.replies import count_prompt_tokens, generate_reply

MODEL = "gpt-4o-mini"
SYSTEM = "You are a helpful contact-center agent."
QUESTION = "Hi, my order #4411 has not arrived yet. Can you check where it is?"
MESSAGES: list[ChatCompletionMessageParam] = [
    {"role": "system", "content": SYSTEM},
    {"role": "user", "content": QUESTION},
]

# The tokenizer the simulator claims to count with, loaded independently of it.
with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)  # bpe-openai 0.1.4 loads its data so
    O200K = bpe_openai.get_encoding("o200k_base")


async def _collect(stream: openai.AsyncStream[ChatCompletionChunk]) -> list[ChatCompletionChunk]:
    return [chunk async for chunk in stream]


async def test_streamed_text_equals_the_non_streamed_reply(
    openai_client: openai.AsyncOpenAI,
) -> None:
    whole = await openai_client.chat.completions.create(model=MODEL, messages=MESSAGES)
    chunks = await _collect(
        await openai_client.chat.completions.create(
            model=MODEL, messages=MESSAGES, stream=True, stream_options={"include_usage": True}
        )
    )

    assert whole.object == "chat.completion"
    assert whole.id.startswith("chatcmpl-")
    assert whole.model == MODEL
    assert whole.system_fingerprint and whole.system_fingerprint.startswith("fp_")
    assert whole.choices[0].message.role == "assistant"
    assert whole.choices[0].finish_reason == "stop"

    first, *deltas, final, usage_chunk = chunks
    assert {c.id for c in chunks} == {first.id}
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert first.choices[0].delta.role == "assistant"
    assert first.choices[0].delta.content == ""
    assert all(c.choices[0].finish_reason is None for c in deltas)
    assert final.choices[0].finish_reason == "stop"
    assert usage_chunk.choices == []
    assert usage_chunk.usage == whole.usage
    assert all(c.usage is None for c in chunks[:-1])
    text = "".join(c.choices[0].delta.content or "" for c in deltas)
    assert text == whole.choices[0].message.content
    # One chunk per token.
    assert whole.usage is not None
    assert len(deltas) == whole.usage.completion_tokens


async def test_usage_counts_real_tokens(
    sim: RunningSimulator, openai_client: openai.AsyncOpenAI
) -> None:
    completion = await openai_client.chat.completions.create(model=MODEL, messages=MESSAGES)

    text = completion.choices[0].message.content or ""
    usage = completion.usage
    assert usage is not None
    assert usage.completion_tokens == len(O200K.encode(text))
    assert 0 < usage.completion_tokens <= sim.state.settings.reply_tokens
    # 3 tokens of framing per message and 3 to prime the reply, as OpenAI documents.
    expected_prompt = sum(3 + len(O200K.encode(m["role"])) for m in MESSAGES) + 3
    expected_prompt += len(O200K.encode(SYSTEM)) + len(O200K.encode(QUESTION))
    assert usage.prompt_tokens == expected_prompt
    assert usage.prompt_tokens == count_prompt_tokens([["system", SYSTEM], ["user", QUESTION]])
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


async def test_stream_without_usage_option_sends_no_usage_chunk(
    openai_client: openai.AsyncOpenAI,
) -> None:
    chunks = await _collect(
        await openai_client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True)
    )

    assert chunks[-1].choices[0].finish_reason == "stop"
    assert all(c.usage is None and c.choices for c in chunks)


@pytest.mark.parametrize("limit", ["max_tokens", "max_completion_tokens"])
async def test_a_token_limit_cuts_the_reply_with_finish_reason_length(
    openai_client: openai.AsyncOpenAI, limit: str
) -> None:
    limits: dict[str, Any] = {limit: 5}
    full = await openai_client.chat.completions.create(model=MODEL, messages=MESSAGES)
    cut = await openai_client.chat.completions.create(model=MODEL, messages=MESSAGES, **limits)
    chunks = await _collect(
        await openai_client.chat.completions.create(
            model=MODEL,
            messages=MESSAGES,
            stream=True,
            stream_options={"include_usage": True},
            **limits,
        )
    )

    assert cut.choices[0].finish_reason == "length"
    assert cut.usage is not None and cut.usage.completion_tokens == 5
    full_text = full.choices[0].message.content or ""
    cut_text = cut.choices[0].message.content or ""
    assert cut_text == O200K.decode(O200K.encode(full_text)[:5])
    assert chunks[-2].choices[0].finish_reason == "length"
    assert chunks[-1].usage == cut.usage
    assert "".join(c.choices[0].delta.content or "" for c in chunks[:-1]) == cut_text


async def test_a_limit_above_the_reply_length_changes_nothing(
    openai_client: openai.AsyncOpenAI,
) -> None:
    full = await openai_client.chat.completions.create(model=MODEL, messages=MESSAGES)
    roomy = await openai_client.chat.completions.create(
        model=MODEL, messages=MESSAGES, max_completion_tokens=4096
    )

    assert roomy.choices[0].message.content == full.choices[0].message.content
    assert roomy.choices[0].finish_reason == "stop"


async def test_replies_are_deterministic(openai_client: openai.AsyncOpenAI) -> None:
    async def reply(model: str, question: str) -> str:
        completion = await openai_client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": question}]
        )
        return completion.choices[0].message.content or ""

    first = await reply(MODEL, QUESTION)
    assert await reply(MODEL, QUESTION) == first
    assert first == generate_reply(MODEL, QUESTION, reply_tokens=40).text
    assert await reply(MODEL, "Can I change my delivery address?") != first
    assert await reply("gpt-4o", QUESTION) != first
    # The reply echoes the start of the question.
    assert "my order #4411" in first


async def test_the_last_user_message_seeds_the_reply(openai_client: openai.AsyncOpenAI) -> None:
    conversation: list[ChatCompletionMessageParam] = [
        {"role": "user", "content": "First question"},
        {"role": "assistant", "content": "First answer"},
        {"role": "user", "content": [{"type": "text", "text": QUESTION}]},
    ]
    completion = await openai_client.chat.completions.create(model=MODEL, messages=conversation)

    assert (
        completion.choices[0].message.content
        == generate_reply(MODEL, QUESTION, reply_tokens=40).text
    )


async def test_stream_helper_accumulates_the_same_completion(
    openai_client: openai.AsyncOpenAI,
) -> None:
    whole = await openai_client.chat.completions.create(model=MODEL, messages=MESSAGES)

    deltas: list[str] = []
    async with openai_client.chat.completions.stream(
        model=MODEL, messages=MESSAGES, stream_options={"include_usage": True}
    ) as stream:
        async for event in stream:
            if event.type == "content.delta":
                deltas.append(event.delta)
        final = await stream.get_final_completion()

    assert "".join(deltas) == whole.choices[0].message.content
    assert final.choices[0].message.content == whole.choices[0].message.content
    assert final.choices[0].finish_reason == "stop"
    assert final.usage == whole.usage
    assert final.system_fingerprint == whole.system_fingerprint


async def test_models_are_listed(sim: RunningSimulator, openai_client: openai.AsyncOpenAI) -> None:
    models = [m async for m in openai_client.models.list()]
    one = await openai_client.models.retrieve("any-model-name")

    assert [m.id for m in models] == list(sim.state.settings.models)
    assert all(m.object == "model" for m in models)
    assert one.id == "any-model-name"


@pytest.mark.parametrize(
    ("kwargs", "param", "code"),
    [
        ({"messages": []}, "messages", "empty_array"),
        ({"messages": [{"role": "robot", "content": "hi"}]}, "messages[0].role", "invalid_value"),
        ({"messages": [{"role": "user"}]}, "messages[0].content", "missing_required_parameter"),
        ({"messages": [{"role": "user", "content": 7}]}, "messages[0].content", "invalid_type"),
        ({"messages": MESSAGES, "max_tokens": 0}, "max_tokens", "integer_below_min_value"),
        (
            {"messages": MESSAGES, "max_completion_tokens": "5"},
            "max_completion_tokens",
            "invalid_type",
        ),
        ({"messages": MESSAGES, "n": 2}, "n", "unsupported_value"),
        ({"messages": MESSAGES, "stream_options": {"include_usage": True}}, "stream_options", None),
    ],
)
async def test_invalid_requests_raise_bad_request_naming_the_field(
    openai_client: openai.AsyncOpenAI, kwargs: dict[str, Any], param: str, code: str | None
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        await openai_client.chat.completions.create(model=MODEL, **kwargs)

    error = caught.value
    assert error.status_code == 400
    assert error.type == "invalid_request_error"
    assert error.param == param
    assert error.code == code
    assert param in error.message


async def test_a_prompt_over_the_context_window_is_rejected(
    openai_client: openai.AsyncOpenAI,
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        await openai_client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "word " * 130_000}]
        )

    assert caught.value.code == "context_length_exceeded"


async def _post(sim: RunningSimulator, body: bytes, headers: dict[str, str]) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{sim.openai_base_url}/chat/completions", data=body, headers=headers) as r,
    ):
        return r.status, await r.json()


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (b'{"messages": [{"role": "user", "content": "hi"}]}', "model"),
        (b'{"model": "gpt-4o-mini"}', "'messages'"),
        (b'{"model": 7, "messages": []}', "'model'"),
        (b"{not json", "could not parse the JSON body"),
        (b"[]", "expected an object"),
    ],
)
async def test_raw_invalid_bodies_get_openai_errors(
    sim: RunningSimulator, body: bytes, needle: str
) -> None:
    status, payload = await _post(sim, body, {"Authorization": "Bearer test"})

    assert status == 400
    assert set(payload) == {"error"}
    assert set(payload["error"]) == {"message", "type", "param", "code"}
    assert payload["error"]["type"] == "invalid_request_error"
    assert needle in payload["error"]["message"]


@pytest.mark.parametrize(
    "headers", [{}, {"Authorization": "Bearer "}, {"Authorization": "Basic x"}]
)
async def test_a_request_without_api_key_is_unauthorized(
    sim: RunningSimulator, headers: dict[str, str]
) -> None:
    body = b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}'
    status, payload = await _post(sim, body, headers)

    assert status == 401
    assert payload["error"]["type"] == "invalid_request_error"
    assert "API key" in payload["error"]["message"]


async def test_an_unknown_route_gets_a_json_404(sim: RunningSimulator) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{sim.openai_base_url}/nowhere", json={}) as response,
    ):
        payload = await response.json()

    assert response.status == 404
    assert payload["error"]["message"] == "Invalid URL (POST /v1/nowhere)"
