"""Tool use in both wire formats: the choice rule, streamed calls, and answers to results."""

import json
from typing import Any

import anthropic
import openai
import pytest
from anthropic.types import ToolParam
from openai.types.chat import ChatCompletionMessageParam, ChatCompletionToolParam

from switchboard.simulator import intents
from switchboard.simulator import tools as simulator_tools
from switchboard.simulator.replies import count_tokens
from switchboard.simulator.tools import (
    OfferedTool,
    ToolOutput,
    arguments_for,
    capabilities_reply,
    choose_calls,
    followup_opening,
    mentions,
)

ORDER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "order_id": {"type": "string", "description": "the order number"},
        "channel": {"type": "string", "enum": ["email", "sms"]},
        "verbose": {"type": "boolean"},
    },
    "required": ["order_id", "channel"],
}
WEATHER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
}
OPENAI_TOOLS: list[ChatCompletionToolParam] = [
    {
        "type": "function",
        "function": {"name": "lookup_order", "description": "Find an order", "parameters": s},
    }
    if name == "lookup_order"
    else {"type": "function", "function": {"name": name, "parameters": s}}
    for name, s in (("lookup_order", ORDER_SCHEMA), ("get_weather", WEATHER_SCHEMA))
]
ANTHROPIC_TOOLS: list[ToolParam] = [
    {"name": "lookup_order", "description": "Find an order", "input_schema": ORDER_SCHEMA},
    {"name": "get_weather", "input_schema": WEATHER_SCHEMA},
]
ASK = "Please lookup order #A-77 for me"


def test_a_tool_is_mentioned_by_its_name_whatever_the_separators() -> None:
    assert mentions("can you Lookup-Order 5?", "lookup_order")
    assert mentions("lookup_order please", "lookup_order")
    assert mentions("LOOKUP ORDER", "lookup-order")
    assert not mentions("lookup orders", "lookup_order")
    assert not mentions("forget it", "get")
    assert not mentions("anything", "")


def test_the_choice_rule() -> None:
    tools = [OfferedTool("lookup_order", ORDER_SCHEMA), OfferedTool("get_weather", WEATHER_SCHEMA)]
    both = "get weather in Paris for 3 days, then lookup order 12"
    assert [c.name for c in choose_calls(both, tools, "auto", None)] == [
        "lookup_order",
        "get_weather",
    ], "every mentioned tool, in the order offered"
    assert choose_calls("hello", tools, "auto", None) == []
    assert choose_calls(both, tools, "none", None) == []
    assert choose_calls(both, tools, "auto", "none") == []
    assert [c.name for c in choose_calls("hello", tools, "required", None)] == ["lookup_order"]
    assert [c.name for c in choose_calls("hello", tools, "get_weather", None)] == ["get_weather"]
    assert [c.name for c in choose_calls("hello", tools, "auto", "get_weather")] == ["get_weather"]
    assert choose_calls("hello", tools, "auto", "unknown_tool") == []
    assert choose_calls(both, [], "auto", None) == []


def test_arguments_follow_the_schema_and_the_message() -> None:
    order = OfferedTool("lookup_order", ORDER_SCHEMA)
    # The id from the message, the required enum's first value (none is mentioned), the
    # optional boolean left out.
    assert arguments_for(order, "where is order #A-77, please?") == {
        "order_id": "A-77",
        "channel": "email",
    }
    assert arguments_for(order, "order 12 by sms") == {"order_id": "12", "channel": "sms"}
    weather = OfferedTool("get_weather", WEATHER_SCHEMA)
    assert arguments_for(weather, "weather in Oslo for 4 days") == {
        "city": "weather in Oslo for 4 days",
        "days": 4,
    }
    assert arguments_for(weather, "hi") == {"city": "hi"}, "optional days: not in the message"
    assert arguments_for(OfferedTool("x", {}), "hi") == {}


def test_the_answer_to_results_tells_what_they_say() -> None:
    opening = followup_opening([ToolOutput("lookup_order", '{"status": "shipped"}')])
    assert opening == "Your order has shipped."
    long = followup_opening([ToolOutput("", "x" * 500)])
    assert long == "The tool says: " + "x" * 197 + "..."


async def test_openai_streams_a_tool_call_as_the_non_streamed_one(
    openai_client: openai.AsyncOpenAI,
) -> None:
    messages: list[ChatCompletionMessageParam] = [{"role": "user", "content": ASK}]
    whole = await openai_client.chat.completions.create(
        model="gpt-4o-mini", messages=messages, tools=OPENAI_TOOLS
    )
    stream = await openai_client.chat.completions.create(
        model="gpt-4o-mini",
        messages=messages,
        tools=OPENAI_TOOLS,
        stream=True,
        stream_options={"include_usage": True},
    )
    calls: dict[int, dict[str, str]] = {}
    finish = None
    argument_chunks = 0
    usage = None
    async for chunk in stream:
        usage = chunk.usage or usage
        for choice in chunk.choices:
            assert not choice.delta.content
            finish = choice.finish_reason or finish
            for delta in choice.delta.tool_calls or ():
                call = calls.setdefault(delta.index, {"id": "", "name": "", "arguments": ""})
                assert delta.function is not None
                if delta.id:
                    call["id"], call["name"] = delta.id, delta.function.name or ""
                if delta.function.arguments:
                    argument_chunks += 1
                    call["arguments"] += delta.function.arguments

    message = whole.choices[0].message
    assert whole.choices[0].finish_reason == "tool_calls" == finish
    assert message.content is None and message.tool_calls is not None
    [expected] = message.tool_calls
    assert expected.type == "function"
    assert list(calls) == [0] and calls[0]["id"].startswith("call_")
    assert calls[0]["name"] == expected.function.name == "lookup_order"
    assert json.loads(calls[0]["arguments"]) == json.loads(expected.function.arguments)
    assert json.loads(calls[0]["arguments"]) == {"order_id": "A-77", "channel": "email"}
    assert argument_chunks == count_tokens(calls[0]["arguments"]) > 1, "one chunk per token"
    assert usage is not None and whole.usage is not None
    assert usage.completion_tokens == whole.usage.completion_tokens
    assert usage.completion_tokens == count_tokens("lookup_order") + argument_chunks


async def test_openai_answers_tool_results_with_text_that_uses_them(
    openai_client: openai.AsyncOpenAI,
) -> None:
    messages: list[ChatCompletionMessageParam] = [
        {"role": "user", "content": ASK},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "lookup_order", "arguments": '{"order_id":"A-77"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "shipped on Monday"},
    ]
    stream = await openai_client.chat.completions.create(
        model="gpt-4o-mini", messages=messages, tools=OPENAI_TOOLS, stream=True
    )
    text, finish = "", None
    async for chunk in stream:
        for choice in chunk.choices:
            assert not choice.delta.tool_calls
            text += choice.delta.content or ""
            finish = choice.finish_reason or finish
    assert finish == "stop"
    assert text.startswith("The lookup order tool says: shipped on Monday. ")


async def test_openai_tool_choice_forces_or_forbids(openai_client: openai.AsyncOpenAI) -> None:
    messages: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hello"}]
    forced = await openai_client.chat.completions.create(
        model="m",
        messages=messages,
        tools=OPENAI_TOOLS,
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
    )
    calls = forced.choices[0].message.tool_calls
    assert calls is not None and [c.function.name for c in calls] == ["get_weather"]
    none = await openai_client.chat.completions.create(
        model="m",
        messages=[{"role": "user", "content": ASK}],
        tools=OPENAI_TOOLS,
        tool_choice="none",
    )
    assert none.choices[0].message.tool_calls is None
    assert none.choices[0].finish_reason == "stop"


@pytest.mark.parametrize(
    ("tools", "extra", "param"),
    [
        ([{"type": "function"}], {}, "tools[0].function"),
        ([{"type": "function", "function": {"name": "bad name!"}}], {}, "tools[0].function.name"),
        ([{"type": "code", "function": {"name": "x"}}], {}, "tools[0].type"),
        (None, {"tool_choice": "auto"}, "tool_choice"),
        (OPENAI_TOOLS, {"tool_choice": {"type": "function", "function": {"name": "nope"}}}, None),
    ],
)
async def test_openai_rejects_bad_tools_naming_the_parameter(
    openai_client: openai.AsyncOpenAI,
    tools: Any,
    extra: dict[str, Any],
    param: str | None,
) -> None:
    body: dict[str, Any] = dict(extra)
    if tools is not None:
        body["tools"] = tools
    with pytest.raises(openai.BadRequestError) as failure:
        await openai_client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "hi"}], extra_body=body
        )
    assert failure.value.param == (param or "tool_choice")


async def test_anthropic_streams_tool_use_blocks_with_input_json_deltas(
    anthropic_client: anthropic.AsyncAnthropic,
) -> None:
    partial_json: list[str] = []
    async with anthropic_client.messages.stream(
        model="claude-haiku-4-5",
        max_tokens=200,
        messages=[{"role": "user", "content": "get weather in Rome, and lookup order 5"}],
        tools=ANTHROPIC_TOOLS,
    ) as stream:
        async for event in stream:
            if event.type == "content_block_delta" and event.delta.type == "input_json_delta":
                partial_json.append(event.delta.partial_json)
            assert event.type != "text"
        final = await stream.get_final_message()
    whole = await anthropic_client.messages.create(
        model="claude-haiku-4-5",
        max_tokens=200,
        messages=[{"role": "user", "content": "get weather in Rome, and lookup order 5"}],
        tools=ANTHROPIC_TOOLS,
    )
    assert final.stop_reason == whole.stop_reason == "tool_use"
    uses = [b for b in final.content if b.type == "tool_use"]
    assert [(u.name, u.input) for u in uses] == [
        ("lookup_order", {"order_id": "5", "channel": "email"}),
        ("get_weather", {"city": "get weather in Rome, and lookup order 5", "days": 5}),
    ]
    assert all(u.id.startswith("toolu_01") for u in uses)
    assert [(b.type, getattr(b, "input", None)) for b in whole.content] == [
        ("tool_use", u.input) for u in uses
    ]
    assert "".join(partial_json) == "".join(
        json.dumps(u.input, separators=(",", ":")) for u in uses
    )
    assert (
        final.usage.output_tokens
        == whole.usage.output_tokens
        == len(partial_json) + sum(count_tokens(u.name) for u in uses)
    )


async def test_anthropic_answers_tool_results_with_text_that_uses_them(
    anthropic_client: anthropic.AsyncAnthropic,
) -> None:
    async with anthropic_client.messages.stream(
        model="claude-haiku-4-5",
        max_tokens=200,
        messages=[
            {"role": "user", "content": ASK},
            {
                "role": "assistant",
                "content": [
                    {
                        "type": "tool_use",
                        "id": "toolu_1",
                        "name": "lookup_order",
                        "input": {"order_id": "A-77"},
                    }
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": "in transit"}
                ],
            },
        ],
        tools=ANTHROPIC_TOOLS,
    ) as stream:
        text = await stream.get_final_text()
        final = await stream.get_final_message()
    assert final.stop_reason == "end_turn"
    assert text.startswith("The lookup order tool says: in transit. ")


async def test_anthropic_tool_choice(anthropic_client: anthropic.AsyncAnthropic) -> None:
    forced = await anthropic_client.messages.create(
        model="m",
        max_tokens=100,
        messages=[{"role": "user", "content": "hello"}],
        tools=ANTHROPIC_TOOLS,
        tool_choice={"type": "tool", "name": "get_weather"},
    )
    assert [b.name for b in forced.content if b.type == "tool_use"] == ["get_weather"]
    anything = await anthropic_client.messages.create(
        model="m",
        max_tokens=100,
        messages=[{"role": "user", "content": "hello"}],
        tools=ANTHROPIC_TOOLS,
        tool_choice={"type": "any"},
    )
    assert [b.name for b in anything.content if b.type == "tool_use"] == ["lookup_order"]
    with pytest.raises(anthropic.BadRequestError, match="input_schema"):
        await anthropic_client.messages.create(
            model="m",
            max_tokens=100,
            messages=[{"role": "user", "content": "hello"}],
            extra_body={"tools": [{"name": "x"}]},
        )


def test_what_can_you_do_is_answered_from_the_offered_tools() -> None:
    tools = [
        OfferedTool("order_status", {}, "Look up the status and carrier of an order."),
        OfferedTool("current_time", {}, "The current date and time, in an IANA time zone."),
        OfferedTool("escalate_to_human", {}, "Hand the chat to a human agent when asked."),
    ]
    reply = capabilities_reply(tools)
    assert reply == (
        "I'm the virtual assistant here. I can look up the status and carrier of an order; "
        "give you the current date and time; and hand the chat to a human agent. "
        "What would you like to do?"
    )
    answer = simulator_tools.answer(
        "sim-small",
        "Hi! What can you help me with?",
        tools=tools,
        choice="auto",
        forced=None,
        outputs=[],
        reply_tokens=80,
        max_tokens=None,
    )
    assert answer.calls == ()
    assert answer.reply is not None and answer.reply.text == reply


def test_a_request_is_not_taken_for_what_can_you_do() -> None:
    assert intents.asks_what_the_assistant_can_do("What can you do?")
    assert intents.asks_what_the_assistant_can_do("Hello! I am Bob, how can you help?")
    assert not intents.asks_what_the_assistant_can_do("What can you tell me about returns?")
    assert not intents.asks_what_the_assistant_can_do("Where is my order A12345?")
    long = "what can you do " + "about my broken router that keeps dropping " * 3
    assert not intents.asks_what_the_assistant_can_do(long)
