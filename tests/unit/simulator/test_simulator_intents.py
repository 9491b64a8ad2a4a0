"""Tools by intent: which tool a message asks for, its arguments, and the answer to results.

The tools are the local demo tenant's, exactly as the orchestrator offers them (the built-ins'
specs and deploy/local/tenants.yaml), so that a change to their wording that breaks the demo
shows here.
"""

import json
from datetime import date
from pathlib import Path
from typing import Any

import pytest
import yaml

from switchboard.demo_orders.app import find_order
from switchboard.orchestrator.tools import current_time_tool, escalate_to_human_tool
from switchboard.simulator.intents import is_greeting, stem, stems, time_zone_in
from switchboard.simulator.replies import count_tokens
from switchboard.simulator.tools import GREETING_REPLY, OfferedTool, ToolOutput, answer, plan_calls

ROOT = Path(__file__).resolve().parents[3]


class _NoTickets:
    async def open_ticket(self, context: object, reason: str, priority: str) -> str:
        raise AssertionError("not called")


def _demo_tools() -> list[OfferedTool]:
    seed = yaml.safe_load((ROOT / "deploy/local/tenants.yaml").read_text())
    [demo] = [t for t in seed["tenants"] if t["tenant_id"] == "demo"]
    builtins = [escalate_to_human_tool(_NoTickets(), 1.0), current_time_tool(1.0)]
    offered = [OfferedTool(t.name, dict(t.parameters), t.description) for t in builtins]
    offered += [OfferedTool(t["name"], t["parameters"], t["description"]) for t in demo["tools"]]
    return offered


DEMO_TOOLS = _demo_tools()


def calls(message: str, choice: str = "auto", forced: str | None = None) -> list[Any]:
    plan = plan_calls(message, DEMO_TOOLS, choice, forced)
    return [(c.name, c.arguments) for c in plan.calls]


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ("Where is my order A12345?", [("order_status", {"order_id": "A12345"})]),
        ("Please check the order status for A12345", [("order_status", {"order_id": "A12345"})]),
        ("has order #B77120 been delivered yet?", [("order_status", {"order_id": "B77120"})]),
        ("Hi, my order 31337 has not arrived.", [("order_status", {"order_id": "31337"})]),
        (
            "case x9y8: refund for Order 12345 from 2024-05-01",
            [("order_status", {"order_id": "12345"})],
        ),
        ("What time is it in Tokyo?", [("current_time", {"timezone": "Asia/Tokyo"})]),
        ("what's the time in new york", [("current_time", {"timezone": "America/New_York"})]),
        ("Current time in Europe/Paris?", [("current_time", {"timezone": "Europe/Paris"})]),
        ("What time is it?", [("current_time", {})]),
        (
            "Please escalate this to a human",
            [("escalate_to_human", {"reason": "Please escalate this to a human"})],
        ),
    ],
)
def test_a_message_calls_the_tool_it_asks_for_with_arguments_from_it(
    message: str, expected: list[Any]
) -> None:
    assert calls(message) == expected


@pytest.mark.parametrize(
    "message",
    [
        "hello",
        "My name is Dana.",
        "How do I reset my password?",
        "Can I change the delivery address to my office?",
        "Is the refund paid to my card or as store credit?",
        "Thanks. And how do I return the blue jacket?",
        "I have a problem with my bill",
        "Where is my parcel?",
    ],
)
def test_a_message_that_asks_for_no_tool_calls_none(message: str) -> None:
    plan = plan_calls(message, DEMO_TOOLS, "auto", None)
    assert plan.calls == () and plan.missing == ()
    reply = answer(
        "m",
        message,
        tools=DEMO_TOOLS,
        choice="auto",
        forced=None,
        outputs=(),
        reply_tokens=40,
        max_tokens=None,
    )
    assert reply.calls == () and reply.reply is not None


def test_a_tool_whose_identifier_is_missing_is_not_called_the_model_asks_for_it() -> None:
    plan = plan_calls("Any news on my order?", DEMO_TOOLS, "auto", None)
    assert plan.calls == () and plan.missing == ("order id",)
    reply = answer(
        "m",
        "Any news on my order?",
        tools=DEMO_TOOLS,
        choice="auto",
        forced=None,
        outputs=(),
        reply_tokens=40,
        max_tokens=None,
    ).reply
    assert reply is not None
    assert reply.text.startswith("I can look that up for you. Could you tell me the order id?")


def test_sim_tool_still_forces_or_forbids() -> None:
    assert calls("Where is my order A12345?", forced="none") == []
    assert calls("Where is my order A12345?", choice="none") == []
    # Forced without an id in the message: the call is made with a stand-in.
    [(name, arguments)] = calls("hello", forced="order_status")
    assert name == "order_status" and set(arguments) == {"order_id"}
    assert calls("What time is it in Tokyo?", forced="current_time") == [
        ("current_time", {"timezone": "Asia/Tokyo"})
    ]
    assert calls("hello", forced="no_such_tool") == []


def test_several_asked_for_tools_are_called_in_the_order_offered() -> None:
    assert calls("What time is it in Tokyo, and where is my order A12345?") == [
        ("current_time", {"timezone": "Asia/Tokyo"}),
        ("order_status", {"order_id": "A12345"}),
    ]


def test_the_choice_is_deterministic() -> None:
    message = "Where is my order A12345?"
    assert all(calls(message) == calls(message) for _ in range(3))


def test_stemming_folds_plurals_and_verb_forms() -> None:
    assert stem("orders") == stem("ordered") == stem("ordering") == stem("order")
    assert stem("delivery") == stem("delivered") == stem("deliver")
    assert stem("shipped") == stem("ship") and stem("status") == "status"
    assert stems("Where is my order?") == {stem("order")}, "stop words say nothing"


@pytest.mark.parametrize(
    ("message", "zone"),
    [
        ("in Tokyo", "Asia/Tokyo"),
        ("in los angeles please", "America/Los_Angeles"),
        ("time in San Francisco", "America/Los_Angeles"),
        ("in Sao Paulo", "America/Sao_Paulo"),
        ("what about UTC", "UTC"),
        ("Australia/Sydney", "Australia/Sydney"),
        ("nowhere in particular", None),
    ],
)
def test_places_give_iana_time_zones(message: str, zone: str | None) -> None:
    assert time_zone_in(message) == zone


def _answer_to(name: str, result: Any, reply_tokens: int = 40) -> str:
    content = result if isinstance(result, str) else json.dumps(result, separators=(",", ":"))
    reply = answer(
        "m",
        "Where is my order A12345?",
        tools=DEMO_TOOLS,
        choice="auto",
        forced=None,
        outputs=[ToolOutput(name, content)],
        reply_tokens=reply_tokens,
        max_tokens=None,
    ).reply
    assert reply is not None and not reply.truncated
    return reply.text


def test_the_answer_to_an_order_is_a_sentence_from_its_fields() -> None:
    order = find_order("A12345", date(2026, 12, 5))
    text = _answer_to("order_status", order)
    assert text.startswith(
        "Your order A12345 has shipped with DHL and should arrive on 24 November. "
        "The tracking code is JD014600006281234567."
    )
    assert text.endswith((".", "!", "?")) and "{" not in text
    delivered = _answer_to("order_status", find_order("B77120", date(2026, 12, 5)))
    assert delivered.startswith("Your order B77120 was delivered by UPS on 18 November.")


@pytest.mark.parametrize(
    ("name", "result", "start"),
    [
        (
            "current_time",
            {"now": "2026-12-05T18:42:10+09:00", "timezone": "Asia/Tokyo", "weekday": "Saturday"},
            "It is 18:42 on Saturday, 5 December in Tokyo (Asia/Tokyo).",
        ),
        (
            "escalate_to_human",
            {"ticket_id": "T-1", "status": "open", "message": "a human agent will take over"},
            "I have opened ticket T-1 for you: a human agent will take over.",
        ),
        (
            "order_status",
            {"error": 'order_status answered HTTP 404: {"error": "no order \'Z9\'"}'},
            "I'm sorry, I could not complete that: no order 'Z9'.",
        ),
        (
            "weather",
            {"temperature": 21.5, "sky": "clear", "wind": {"speed": 3}},
            "Here is what the weather tool returned: temperature 21.5 and sky clear.",
        ),
        ("weather", "Sunny all day. Windy at night.", "The weather tool says: Sunny all day."),
    ],
)
def test_other_results_are_told_in_whole_sentences(name: str, result: Any, start: str) -> None:
    assert _answer_to(name, result).startswith(start + " ")


@pytest.mark.parametrize("reply_tokens", [1, 2, 5, 13, 40, 41, 100, 257])
def test_replies_end_on_a_whole_sentence_within_the_budget(reply_tokens: int) -> None:
    for message in ("Where is my parcel?", "Can you help me with my bill?", "x" * 300):
        reply = answer(
            "m",
            message,
            tools=(),
            choice="auto",
            forced=None,
            outputs=(),
            reply_tokens=reply_tokens,
            max_tokens=None,
        ).reply
        assert reply is not None and not reply.truncated
        assert reply_tokens - 3 <= reply.completion_tokens <= reply_tokens
        assert count_tokens(reply.text) == reply.completion_tokens
        if reply_tokens > 1:  # one token is too short for any sentence
            assert reply.text.endswith((".", "!", "?")), reply.text


def test_only_max_tokens_cuts_a_sentence_and_then_the_reply_says_so() -> None:
    whole = _answer_to("order_status", find_order("A12345", date(2026, 12, 5)), 40)
    cut = answer(
        "m",
        "Where is my order A12345?",
        tools=DEMO_TOOLS,
        choice="auto",
        forced=None,
        outputs=[ToolOutput("order_status", json.dumps(find_order("A12345", date(2026, 12, 5))))],
        reply_tokens=40,
        max_tokens=7,
    ).reply
    assert cut is not None and cut.truncated and cut.completion_tokens == 7
    assert whole.startswith(cut.text)


@pytest.mark.parametrize("message", ["hello", "Hi there!", "good morning", "Hey team.", "Hello?"])
def test_a_greeting_alone_gets_a_short_greeting_back_not_filler(message: str) -> None:
    result = answer(
        "m",
        message,
        tools=DEMO_TOOLS,
        choice="auto",
        forced=None,
        outputs=[],
        reply_tokens=120,
        max_tokens=None,
    )
    assert result.reply is not None and not result.calls
    assert result.reply.text == GREETING_REPLY
    assert result.reply.completion_tokens == count_tokens(GREETING_REPLY)


@pytest.mark.parametrize(
    "message", ["hello, my order A12345 is late", "hi, I need help with my bill", "hello world"]
)
def test_a_greeting_with_a_request_is_answered_as_the_request(message: str) -> None:
    assert not is_greeting(message)
    result = answer(
        "m",
        message,
        tools=DEMO_TOOLS,
        choice="auto",
        forced=None,
        outputs=[],
        reply_tokens=120,
        max_tokens=None,
    )
    assert result.reply is None or result.reply.text != GREETING_REPLY
