import asyncio
import json
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from aiohttp import web

from switchboard.demo_orders.app import create_app
from switchboard.orchestrator.tools import (
    FAILED,
    SUCCEEDED,
    HttpToolClient,
    HttpToolDefinition,
    Tool,
    ToolContext,
    ToolRegistry,
    ToolResult,
    build_registry,
    current_time_tool,
    escalate_to_human_tool,
    host_allowed,
)
from switchboard.v1.events_pb2 import ToolCall

CONTEXT = ToolContext("demo", "c1", "r1", "u1")


def call(name: str, arguments: Any, call_id: str = "call-1") -> ToolCall:
    text = arguments if isinstance(arguments, str) else json.dumps(arguments)
    return ToolCall(id=call_id, name=name, arguments_json=text)


def sleeper(name: str, seconds: float, timeout_s: float = 5.0) -> Tool:
    async def run(arguments: dict[str, Any], context: ToolContext) -> ToolResult:
        await asyncio.sleep(seconds)
        return ToolResult({"slept": seconds})

    return Tool(name, "sleeps", {"type": "object"}, run, timeout_s)


class Tickets:
    def __init__(self) -> None:
        self.opened: list[tuple[str, str, str]] = []

    async def open_ticket(self, context: ToolContext, reason: str, priority: str) -> str:
        self.opened.append((context.request_id, reason, priority))
        return "T-1"


async def test_arguments_are_validated_before_the_tool_runs() -> None:
    ran: list[dict[str, Any]] = []

    async def run(arguments: dict[str, Any], context: ToolContext) -> ToolResult:
        ran.append(arguments)
        return ToolResult("ok")

    schema = {
        "type": "object",
        "properties": {"order_id": {"type": "string", "pattern": "^[0-9]+$"}},
        "required": ["order_id"],
        "additionalProperties": False,
    }
    registry = ToolRegistry([Tool("lookup", "d", schema, run, 1.0)])
    cases = [
        ({"order_id": "abc"}, "order_id"),
        ({}, "'order_id' is a required property"),
        ({"order_id": "1", "x": 1}, "Additional properties"),
        ("not json", "not valid JSON"),
        ("[1, 2]", "must be a JSON object"),
    ]
    for arguments, problem in cases:
        outcome = await registry.call(call("lookup", arguments), CONTEXT)
        assert outcome.status == FAILED and problem in outcome.result, outcome
    assert ran == []
    ok = await registry.call(call("lookup", {"order_id": "42"}), CONTEXT)
    assert (ok.status, ok.result) == (SUCCEEDED, "ok") and ran == [{"order_id": "42"}]


async def test_unknown_tools_fail_with_the_list_of_tools() -> None:
    outcome = await ToolRegistry([sleeper("a", 0)]).call(call("nope", {}), CONTEXT)
    assert outcome.status == FAILED and "unknown tool 'nope'" in outcome.result


async def test_each_tool_has_its_timeout_and_calls_run_concurrently() -> None:
    registry = ToolRegistry([sleeper("slow", 5.0, timeout_s=0.05), sleeper("quick", 0.1)])
    started = time.monotonic()
    outcomes = await registry.call_all(
        [call("quick", {}, "1"), call("quick", {}, "2"), call("slow", {}, "3")], CONTEXT
    )
    elapsed = time.monotonic() - started
    assert [o.status for o in outcomes] == [SUCCEEDED, SUCCEEDED, FAILED]
    assert "timed out after 0.05s" in outcomes[2].result
    assert [o.call.id for o in outcomes] == ["1", "2", "3"]
    # Sequential calls would take 0.2 s at least; a generous bound keeps this robust.
    assert elapsed < 1.0


async def test_a_crashing_tool_becomes_a_failed_result() -> None:
    async def run(arguments: dict[str, Any], context: ToolContext) -> ToolResult:
        raise RuntimeError("bug")

    outcome = await ToolRegistry([Tool("bad", "d", {"type": "object"}, run, 1)]).call(
        call("bad", {}), CONTEXT
    )
    assert outcome.status == FAILED and "RuntimeError" in outcome.result


async def test_long_results_are_truncated() -> None:
    async def run(arguments: dict[str, Any], context: ToolContext) -> ToolResult:
        return ToolResult("x" * 100)

    registry = ToolRegistry([Tool("big", "d", {"type": "object"}, run, 1)], max_result_chars=10)
    outcome = await registry.call(call("big", {}), CONTEXT)
    assert outcome.result == "x" * 10 + "…[truncated]"


async def test_escalate_to_human_opens_a_ticket_and_asks_for_a_handoff() -> None:
    tickets = Tickets()
    registry = ToolRegistry([escalate_to_human_tool(tickets, 1.0)])
    outcome = await registry.call(
        call("escalate_to_human", {"reason": "wants a refund", "priority": "high"}), CONTEXT
    )
    assert outcome.status == SUCCEEDED
    assert outcome.handoff is not None and outcome.handoff.ticket_id == "T-1"
    assert json.loads(outcome.result)["ticket_id"] == "T-1"
    assert tickets.opened == [("r1", "wants a refund", "high")]
    bad = await registry.call(call("escalate_to_human", {"priority": "urgent"}), CONTEXT)
    assert bad.status == FAILED and tickets.opened[1:] == []


async def test_current_time_in_a_time_zone() -> None:
    fixed = datetime(2026, 1, 2, 12, 0, tzinfo=UTC)
    registry = ToolRegistry([current_time_tool(1.0, clock=lambda: fixed)])
    outcome = await registry.call(call("current_time", {"timezone": "Europe/Madrid"}), CONTEXT)
    assert json.loads(outcome.result) == {
        "now": "2026-01-02T13:00:00+01:00",
        "timezone": "Europe/Madrid",
        "weekday": "Friday",
    }
    bad = await registry.call(call("current_time", {"timezone": "Mars/Olympus"}), CONTEXT)
    assert bad.status == FAILED and "unknown time zone" in bad.result


@pytest.mark.parametrize(
    ("url", "allowed", "expected"),
    [
        ("http://127.0.0.1:8086/orders/1", ["127.0.0.1:8086"], True),
        ("http://127.0.0.1:9999/orders/1", ["127.0.0.1:8086"], False),
        ("https://api.example.com/x", ["api.example.com"], True),
        ("https://api.example.com.evil.test/x", ["api.example.com"], False),
        ("http://169.254.169.254/latest", ["api.example.com"], False),
    ],
)
def test_host_allow_list(url: str, allowed: list[str], expected: bool) -> None:
    assert host_allowed(url, allowed) is expected


@pytest.fixture
async def orders_url() -> AsyncIterator[str]:
    app = create_app()

    async def redirect(request: web.Request) -> web.Response:
        raise web.HTTPFound("http://169.254.169.254/")

    app.router.add_get("/redirect", redirect)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


def order_status(base_url: str) -> dict[str, Any]:
    return {
        "name": "order_status",
        "description": "Look up an order.",
        "url": base_url + "/orders/{order_id}",
        "parameters": {
            "type": "object",
            "properties": {"order_id": {"type": "string", "pattern": "^[A-Za-z0-9-]{1,32}$"}},
            "required": ["order_id"],
        },
    }


async def test_http_tool_calls_the_demo_order_service(orders_url: str) -> None:
    port = orders_url.rsplit(":", 1)[1]
    http = HttpToolClient([f"127.0.0.1:{port}"], max_response_bytes=65_536)
    try:
        registry = build_registry(
            builtin_names=["current_time"],
            tool_definitions=[order_status(orders_url)],
            tickets=Tickets(),
            http=http,
            builtin_timeout_s=1.0,
            max_result_chars=4_000,
        )
        assert registry.names == ["current_time", "order_status"]
        spec = {s.name: s for s in registry.specs()}["order_status"]
        assert json.loads(spec.parameters_json_schema)["required"] == ["order_id"]
        found = await registry.call(call("order_status", {"order_id": "A12345"}), CONTEXT)
        assert found.status == SUCCEEDED and json.loads(found.result)["carrier"] == "DHL"
        missing = await registry.call(call("order_status", {"order_id": "nope!"}), CONTEXT)
        assert missing.status == FAILED  # the schema refuses it before any request
        unknown = await registry.call(call("order_status", {"order_id": "ZZZ"}), CONTEXT)
        assert unknown.status == FAILED and "HTTP 404" in unknown.result
    finally:
        await http.close()


async def test_http_tools_follow_no_redirect_and_bounded_bodies(orders_url: str) -> None:
    port = orders_url.rsplit(":", 1)[1]
    http = HttpToolClient([f"127.0.0.1:{port}"], max_response_bytes=20)
    try:
        redirect = HttpToolDefinition(name="r", description="d", url=orders_url + "/redirect")
        outcome = await ToolRegistry([http.tool(redirect)]).call(call("r", {}), CONTEXT)
        assert outcome.status == FAILED and "HTTP 302" in outcome.result
        big = HttpToolDefinition(**order_status(orders_url))
        outcome = await ToolRegistry([http.tool(big)]).call(
            call("order_status", {"order_id": "A12345"}), CONTEXT
        )
        assert outcome.status == FAILED and "more than 20 bytes" in outcome.result
    finally:
        await http.close()


def test_invalid_or_disallowed_tenant_tools_are_skipped() -> None:
    http = HttpToolClient(["127.0.0.1:8086"], max_response_bytes=1_000)
    registry = build_registry(
        builtin_names=[],
        tool_definitions=[
            order_status("http://127.0.0.1:8086"),
            order_status("http://evil.test"),
            {"name": "bad schema", "description": "d", "url": "http://127.0.0.1:8086/"},
            {**order_status("http://127.0.0.1:8086"), "name": "current_time"},
            {**order_status("http://127.0.0.1:8086"), "parameters": {"type": "nonsense"}},
        ],
        tickets=Tickets(),
        http=http,
        builtin_timeout_s=1,
        max_result_chars=100,
    )
    assert registry.names == ["order_status"]
