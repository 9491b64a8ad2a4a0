"""The Anthropic Messages API of the simulator, through the official `anthropic` SDK."""

import json
import warnings
from typing import Any

import aiohttp
import anthropic
import bpe_openai
import pytest
from anthropic.types import MessageParam

from switchboard.simulator import RunningSimulator
from switchboard.simulator.replies import count_prompt_tokens, generate_reply

MODEL = "claude-haiku-4-5"
SYSTEM = "You are a helpful contact-center agent."
QUESTION = "Bonjour, ma commande n'est pas arrivée 😕 — pouvez-vous vérifier ?"
MESSAGES: list[MessageParam] = [{"role": "user", "content": QUESTION}]

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)  # bpe-openai 0.1.4 loads its data so
    O200K = bpe_openai.get_encoding("o200k_base")


async def test_streamed_text_equals_the_non_streamed_message(
    anthropic_client: anthropic.AsyncAnthropic,
) -> None:
    whole = await anthropic_client.messages.create(
        model=MODEL, max_tokens=1024, system=SYSTEM, messages=MESSAGES
    )
    stream = await anthropic_client.messages.create(
        model=MODEL, max_tokens=1024, system=SYSTEM, messages=MESSAGES, stream=True
    )
    events = [event async for event in stream]

    assert whole.type == "message"
    assert whole.id.startswith("msg_")
    assert whole.role == "assistant"
    assert whole.model == MODEL
    assert whole.stop_reason == "end_turn"
    assert whole.content[0].type == "text"

    kinds = [event.type for event in events]
    deltas = [e for e in events if e.type == "content_block_delta"]
    assert kinds == [
        "message_start",
        "content_block_start",
        *["content_block_delta"] * len(deltas),
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    start, block_start, message_delta = events[0], events[1], events[-2]
    assert start.type == "message_start"
    assert start.message.usage.input_tokens == whole.usage.input_tokens
    assert start.message.usage.output_tokens == 1
    assert start.message.stop_reason is None
    assert block_start.type == "content_block_start"
    assert block_start.content_block.type == "text"
    assert message_delta.type == "message_delta"
    assert message_delta.delta.stop_reason == "end_turn"
    assert message_delta.usage.output_tokens == whole.usage.output_tokens
    text = "".join(d.delta.text for d in deltas if d.delta.type == "text_delta")
    assert text == whole.content[0].text


async def test_usage_counts_real_tokens(
    sim: RunningSimulator, anthropic_client: anthropic.AsyncAnthropic
) -> None:
    message = await anthropic_client.messages.create(
        model=MODEL, max_tokens=1024, system=SYSTEM, messages=MESSAGES
    )

    assert message.content[0].type == "text"
    text = message.content[0].text
    assert message.usage.output_tokens == len(O200K.encode(text))
    assert 0 < message.usage.output_tokens <= sim.state.settings.reply_tokens
    expected_input = 3 + (3 + len(O200K.encode(SYSTEM)))
    expected_input += 3 + len(O200K.encode("user")) + len(O200K.encode(QUESTION))
    assert message.usage.input_tokens == expected_input
    assert message.usage.input_tokens == count_prompt_tokens([[SYSTEM], ["user", QUESTION]])


async def test_max_tokens_cuts_the_reply(anthropic_client: anthropic.AsyncAnthropic) -> None:
    full = await anthropic_client.messages.create(model=MODEL, max_tokens=1024, messages=MESSAGES)
    cut = await anthropic_client.messages.create(model=MODEL, max_tokens=6, messages=MESSAGES)
    async with anthropic_client.messages.stream(
        model=MODEL, max_tokens=6, messages=MESSAGES
    ) as stream:
        streamed = await stream.get_final_message()

    assert cut.stop_reason == "max_tokens"
    assert cut.usage.output_tokens == 6
    assert full.content[0].type == "text" and cut.content[0].type == "text"
    assert full.content[0].text.startswith(cut.content[0].text)
    assert streamed.stop_reason == "max_tokens"
    assert streamed.content[0].type == "text"
    assert streamed.content[0].text == cut.content[0].text
    assert streamed.usage.output_tokens == 6


async def test_replies_are_deterministic(anthropic_client: anthropic.AsyncAnthropic) -> None:
    async def reply(question: str) -> str:
        message = await anthropic_client.messages.create(
            model=MODEL, max_tokens=1024, messages=[{"role": "user", "content": question}]
        )
        assert message.content[0].type == "text"
        return message.content[0].text

    first = await reply(QUESTION)
    assert await reply(QUESTION) == first
    assert first == generate_reply(MODEL, QUESTION, reply_tokens=40).text
    assert await reply("Autre question") != first
    assert "ma commande" in first


async def test_stream_helper_gives_the_same_message(
    anthropic_client: anthropic.AsyncAnthropic,
) -> None:
    whole = await anthropic_client.messages.create(
        model=MODEL, max_tokens=1024, system=SYSTEM, messages=MESSAGES
    )

    async with anthropic_client.messages.stream(
        model=MODEL, max_tokens=1024, system=SYSTEM, messages=MESSAGES
    ) as stream:
        pieces = [text async for text in stream.text_stream]
        final = await stream.get_final_message()
        final_text = await stream.get_final_text()

    assert whole.content[0].type == "text"
    assert "".join(pieces) == whole.content[0].text == final_text
    # Each piece is one token, or two when a character spans two tokens.
    assert len(pieces) <= whole.usage.output_tokens
    assert final.stop_reason == "end_turn"
    assert final.usage.input_tokens == whole.usage.input_tokens
    assert final.usage.output_tokens == whole.usage.output_tokens


async def test_block_content_and_conversations_are_accepted(
    anthropic_client: anthropic.AsyncAnthropic,
) -> None:
    conversation: list[MessageParam] = [
        {"role": "user", "content": "First question"},
        {"role": "assistant", "content": [{"type": "text", "text": "First answer"}]},
        {"role": "user", "content": [{"type": "text", "text": QUESTION}]},
    ]
    message = await anthropic_client.messages.create(
        model=MODEL,
        max_tokens=1024,
        system=[{"type": "text", "text": SYSTEM}],
        messages=conversation,
    )

    assert message.content[0].type == "text"
    assert message.content[0].text == generate_reply(MODEL, QUESTION, reply_tokens=40).text


async def test_models_are_listed(
    sim: RunningSimulator, anthropic_client: anthropic.AsyncAnthropic
) -> None:
    models = [m async for m in anthropic_client.models.list()]

    assert [m.id for m in models] == list(sim.state.settings.models)
    assert all(m.type == "model" for m in models)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "system", "content": "x"}]}, "messages.0.role"),
        ({"messages": [{"role": "robot", "content": "x"}]}, "messages.0.role"),
        ({"messages": [{"role": "user"}]}, "messages.0.content"),
        ({"messages": [{"role": "user", "content": [{"type": "text"}]}]}, "messages.0.content.0"),
        ({"messages": MESSAGES, "max_tokens": 0}, "max_tokens"),
        ({"messages": MESSAGES, "system": 5}, "system"),
    ],
)
async def test_invalid_requests_raise_bad_request_naming_the_field(
    anthropic_client: anthropic.AsyncAnthropic, kwargs: dict[str, Any], field: str
) -> None:
    arguments: dict[str, Any] = {"model": MODEL, "max_tokens": 100, **kwargs}
    with pytest.raises(anthropic.BadRequestError) as caught:
        await anthropic_client.messages.create(**arguments)

    error = caught.value
    assert error.status_code == 400
    assert isinstance(error.body, dict)
    assert error.body["type"] == "error"
    assert error.body["error"]["type"] == "invalid_request_error"
    assert error.body["error"]["message"].startswith(field)
    assert field in error.message


async def _post(sim: RunningSimulator, body: bytes, headers: dict[str, str]) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{sim.anthropic_base_url}/v1/messages", data=body, headers=headers) as r,
    ):
        return r.status, await r.json()


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"max_tokens": 10, "messages": []}', "model: Field required"),
        (b'{"model": "m", "messages": []}', "max_tokens: Field required"),
        (b'{"model": "m", "max_tokens": 10}', "messages: Field required"),
        (b'{"model": "m", "max_tokens": true, "messages": []}', "max_tokens: Input should be"),
        (b"{oops", "not valid JSON"),
    ],
)
async def test_raw_invalid_bodies_get_anthropic_errors(
    sim: RunningSimulator, body: bytes, message: str
) -> None:
    status, payload = await _post(sim, body, {"x-api-key": "test"})

    assert status == 400
    assert payload["type"] == "error"
    assert payload["error"]["type"] == "invalid_request_error"
    assert message in payload["error"]["message"]


async def test_x_api_key_and_bearer_are_both_accepted(sim: RunningSimulator) -> None:
    body = json.dumps({"model": MODEL, "max_tokens": 5, "messages": MESSAGES}).encode()
    for headers in ({"x-api-key": "k"}, {"Authorization": "Bearer k"}):
        status, payload = await _post(sim, body, headers)
        assert status == 200
        assert payload["stop_reason"] == "max_tokens"


async def test_a_request_without_api_key_is_unauthorized(sim: RunningSimulator) -> None:
    body = json.dumps({"model": MODEL, "max_tokens": 5, "messages": MESSAGES}).encode()
    for headers in ({}, {"x-api-key": ""}, {"Authorization": "Bearer "}):
        status, payload = await _post(sim, body, headers)
        assert status == 401
        assert payload["type"] == "error"
        assert payload["error"]["type"] == "authentication_error"


async def test_the_wire_events_are_named_as_anthropic_names_them(sim: RunningSimulator) -> None:
    body = {"model": MODEL, "max_tokens": 3, "messages": MESSAGES, "stream": True}
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{sim.anthropic_base_url}/v1/messages", json=body, headers={"x-api-key": "k"}
        ) as response,
    ):
        assert response.headers["Content-Type"].startswith("text/event-stream")
        assert response.headers["request-id"].startswith("req_")
        raw = (await response.read()).decode()

    events = [block.split("\n") for block in raw.split("\n\n") if block]
    names = [lines[0].removeprefix("event: ") for lines in events]
    assert names == [
        "message_start",
        "content_block_start",
        "ping",
        "content_block_delta",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    for name, lines in zip(names, events, strict=True):
        assert lines[1].startswith("data: ")
        assert json.loads(lines[1].removeprefix("data: "))["type"] == name
