"""The HTTP door over a real aiohttp server and the real ChatCore, with fakes behind it."""

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from switchboard.gateway.quotas import Refusal
from switchboard.gateway.replies import ReplyRouter
from switchboard.v1.chat_pb2 import ChatEvent, Delta, Done, Provisional, Reset, ToolStatus, Usage

from .fakes import FakeQuotas, ScriptedPublisher, ScriptPublisher, http_edge_app

AUTH = {"Authorization": "Bearer k"}
HELLO = {"model": "auto", "messages": [{"role": "user", "content": "hello"}]}


# A provisional cheap answer, re-run on frontier (the cascade) which calls a tool.
RESET_SCRIPT = [
    ChatEvent(provisional=Provisional(tier="cheap")),
    ChatEvent(delta=Delta(text="Wrong ")),
    ChatEvent(delta=Delta(text="answer")),
    ChatEvent(reset=Reset(reason="escalating to a stronger model", cause="cascade")),
    ChatEvent(tool=ToolStatus(name="order_status", status="running")),
    ChatEvent(delta=Delta(text="Right answer")),
    ChatEvent(
        done=Done(
            model="m",
            tier="frontier",
            finish_reason="stop",
            usage=Usage(input_tokens=5, output_tokens=2),
        )
    ),
]


@dataclass
class Edge:
    client: TestClient[Any, Any]
    publisher: ScriptedPublisher
    quotas: FakeQuotas


@pytest.fixture
async def edge() -> AsyncIterator[Edge]:
    router = ReplyRouter(16)
    publisher = ScriptPublisher(router, RESET_SCRIPT)
    quotas = FakeQuotas()
    async with TestClient(TestServer(http_edge_app(router, publisher, quotas))) as client:
        yield Edge(client, publisher, quotas)


async def test_a_whole_answer_after_a_reset_holds_only_the_final_text(edge: Edge) -> None:
    response = await edge.client.post("/v1/chat/completions", json=HELLO, headers=AUTH)
    assert response.status == 200
    body = await response.json()
    assert body["choices"][0]["message"]["content"] == "Right answer"
    assert body["switchboard"]["resets"] == 1
    assert body["usage"] == {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}


async def test_a_stream_announces_the_reset_to_a_client_that_handles_it(edge: Edge) -> None:
    response = await edge.client.post(
        "/v1/chat/completions",
        json={
            **HELLO,
            "stream": True,
            "stream_options": {"include_usage": True, "switchboard_resets": "client"},
        },
        headers=AUTH,
    )
    raw = await response.text()
    blocks = [b for b in raw.split("\n\n") if b]
    assert blocks[-1] == "data: [DONE]"
    chunks = [json.loads(b.removeprefix("data: ")) for b in blocks[:-1]]
    types = [c.get("switchboard", {}).get("type") for c in chunks]
    assert types == ["started", None, None, "reset", "tool", None, "done", None]
    assert chunks[3]["choices"][0]["delta"] == {}
    assert chunks[6]["switchboard"]["content"] == "Right answer"
    assert chunks[6]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] == 7


async def test_responses_done_events_hold_the_final_text(edge: Edge) -> None:
    response = await edge.client.post(
        "/v1/responses",
        json={"model": "auto", "input": "hello", "stream": True},
        headers={**AUTH, "sb-resets": "client"},
    )
    events = [
        json.loads(line.removeprefix("data: "))
        for line in (await response.text()).splitlines()
        if line.startswith("data: ")
    ]
    kinds = [e["type"] for e in events]
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    assert "response.switchboard.reset" in kinds
    done = next(e for e in events if e["type"] == "response.output_text.done")
    assert done["text"] == "Right answer"
    assert events[-1]["response"]["usage"]["total_tokens"] == 7
    assert [e["sequence_number"] for e in events] == list(range(len(events)))


async def test_kafka_down_is_503_in_openais_shape(edge: Edge) -> None:
    edge.publisher.down = True
    response = await edge.client.post("/v1/chat/completions", json=HELLO, headers=AUTH)
    assert response.status == 503
    error = (await response.json())["error"]
    assert (error["type"], error["code"]) == ("server_error", "service_unavailable")


async def test_a_refusal_is_429_with_retry_after(edge: Edge) -> None:
    edge.quotas.refusal = Refusal("tenant acme is over its rate limit", 2.5)
    response = await edge.client.post("/v1/chat/completions", json=HELLO, headers=AUTH)
    assert response.status == 429
    assert (response.headers["retry-after"], response.headers["retry-after-ms"]) == ("3", "2500")


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        (b"{", 400, None),
        (b'"text"', 400, None),
        (json.dumps({"messages": [{"role": "user", "content": "x"}]}).encode(), 400, "model"),
        (json.dumps({"model": "auto", "messages": []}).encode(), 400, "messages"),
        (
            json.dumps({"model": "auto", "messages": [{"role": "assistant", "content": "x"}]}),
            400,
            "messages[0].role",
        ),
        (json.dumps({**HELLO, "max_tokens": 0}).encode(), 400, "max_tokens"),
        (json.dumps({**HELLO, "max_tokens": 5000}).encode(), 400, "max_tokens"),
        (json.dumps({**HELLO, "metadata": {"a": 1}}).encode(), 400, "metadata"),
        (json.dumps({**HELLO, "model": "gpt-4"}).encode(), 404, "model"),
        (b'{"pad": "' + b"x" * 5000 + b'"}', 413, None),
    ],
)
async def test_bad_requests_name_the_parameter_and_are_never_500(
    edge: Edge, body: bytes | str, status: int, param: str | None
) -> None:
    response = await edge.client.post("/v1/chat/completions", data=body, headers=AUTH)
    assert response.status == status
    error = (await response.json())["error"]
    assert set(error) == {"message", "type", "code", "param"}
    assert error["param"] == param
    assert not edge.publisher.turns


async def test_secret_keys_are_refused_from_browsers(edge: Edge) -> None:
    response = await edge.client.post(
        "/v1/chat/completions", json=HELLO, headers={**AUTH, "Origin": "http://x.example"}
    )
    assert response.status == 403
    assert (await response.json())["error"]["code"] == "secret_key_in_browser"
    response = await edge.client.post("/v1/chat/completions", json=HELLO)
    assert response.status == 401
