"""Streams across resets (http_stream.py): a client that only concatenates
`choices[0].delta.content` (or `response.output_text.delta`) ends with the final text, or with
an error carrying it; never with a wrong text. Every reset source, over the real HTTP door."""

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient, TestServer

from switchboard.gateway.http_stream import KEEPALIVE, StreamOptions, TextGate
from switchboard.gateway.openai_shapes import Reply
from switchboard.gateway.replies import ReplyRouter
from switchboard.v1.chat_pb2 import (
    ChatEvent,
    Delta,
    Done,
    Handoff,
    Provisional,
    Reset,
    Started,
    ToolStatus,
    Usage,
)

from .fakes import FakeQuotas, ScriptPublisher, http_edge_app

AUTH = {"Authorization": "Bearer k"}
HELLO = {"model": "auto", "messages": [{"role": "user", "content": "hello"}]}


def delta(text: str) -> ChatEvent:
    return ChatEvent(delta=Delta(text=text))


def tool(status: str) -> ChatEvent:
    return ChatEvent(tool=ToolStatus(name="order_status", status=status))


PROVISIONAL = ChatEvent(provisional=Provisional(tier="cheap"))
WORKER_DIED = ChatEvent(reset=Reset(reason="the generation restarted after a worker failure"))
PROVIDER_FAILED = ChatEvent(reset=Reset(reason="gpt-4o-mini failed (incomplete); retrying"))
CASCADE = ChatEvent(reset=Reset(reason="escalating to a stronger model", cause="cascade"))
HANDOFF = ChatEvent(handoff=Handoff(reason="refund", ticket_id="T-1"))
DONE = ChatEvent(
    done=Done(model="m", tier="cheap", finish_reason="stop", usage=Usage(output_tokens=9))
)

# Scripts whose final text a plain client must end with, by the reset that happens.
RIGHT = {
    "no reset": [delta("Your order "), delta("has shipped."), DONE],
    "redelivered, same text": [
        delta("Your order "),
        delta("has shi"),
        WORKER_DIED,
        delta("Your order has "),
        delta("shipped and arrives Friday."),
        DONE,
    ],
    "provider retry, same text, shorter pieces": [
        delta("Your order has shipped"),
        PROVIDER_FAILED,
        delta("Your "),
        delta("order"),
        delta(" has shipped"),
        delta(" today."),
        DONE,
    ],
    "redelivered before any text": [WORKER_DIED, delta("Hello."), DONE],
    "cascade": [
        PROVISIONAL,
        delta("I'm not "),
        delta("sure."),
        CASCADE,
        delta("Go to Settings "),
        delta("> Plan."),
        DONE,
    ],
    "provisional answer kept": [PROVISIONAL, delta("Go to "), delta("Settings."), DONE],
    "provisional, then a tool and a handoff": [
        PROVISIONAL,
        delta("Let me check. "),
        tool("running"),
        tool("succeeded"),
        HANDOFF,
        delta("A person will take over (ticket T-1)."),
        DONE,
    ],
    "worker died during the provisional answer, then the cascade": [
        PROVISIONAL,
        delta("I'm not"),
        WORKER_DIED,
        delta("I'm not sure."),
        CASCADE,
        tool("running"),
        tool("succeeded"),
        delta("It shipped."),
        DONE,
    ],
    "provider retry after a tool round keeps the round's text": [
        delta("Let me check. "),
        tool("running"),
        tool("succeeded"),
        delta("Your order "),
        PROVIDER_FAILED,
        delta("Your order shipped."),
        DONE,
    ],
}
# Scripts whose retry differs from what the client already has.
DIVERGING = {
    "redelivered, different text": [
        delta("Your order "),
        delta("has shipped"),
        WORKER_DIED,
        delta("Sorry, I cannot see that order."),
        DONE,
    ],
    "provider fallback to another model": [
        delta("Hello from model A"),
        PROVIDER_FAILED,
        delta("Hi, model B here, with more to say."),
        DONE,
    ],
    "redelivered, shorter text": [
        delta("Your order has shipped."),
        WORKER_DIED,
        delta("Your"),
        DONE,
    ],
}


@dataclass
class Edge:
    client: TestClient[Any, Any]
    publisher: ScriptPublisher


async def open_edge(options: StreamOptions | None = None) -> AsyncIterator[Edge]:
    router = ReplyRouter(64)
    publisher = ScriptPublisher(router)
    app = http_edge_app(router, publisher, FakeQuotas(), options)
    async with TestClient(TestServer(app)) as client:
        yield Edge(client, publisher)


@pytest.fixture
async def edge() -> AsyncIterator[Edge]:
    async for opened in open_edge():
        yield opened


def data_of(raw: str) -> list[Any]:
    """The `data:` payloads of an SSE body ("[DONE]" as a string)."""
    out: list[Any] = []
    for block in raw.split("\n\n"):
        for line in block.splitlines():
            if line.startswith("data: "):
                payload = line.removeprefix("data: ")
                out.append(payload if payload == "[DONE]" else json.loads(payload))
    return out


def content_of(payloads: list[Any]) -> str:
    """What a client reading only `choices[0].delta.content` has."""
    return "".join(
        p["choices"][0]["delta"].get("content") or ""
        for p in payloads
        if isinstance(p, dict) and p.get("choices")
    )


async def final_text(edge: Edge, script: list[ChatEvent]) -> str:
    edge.publisher.script = script
    response = await edge.client.post("/v1/chat/completions", json=HELLO, headers=AUTH)
    assert response.status == 200
    return str((await response.json())["choices"][0]["message"]["content"])


async def stream(edge: Edge, script: list[ChatEvent], **headers: str) -> list[Any]:
    edge.publisher.script = script
    response = await edge.client.post(
        "/v1/chat/completions", json={**HELLO, "stream": True}, headers={**AUTH, **headers}
    )
    assert response.status == 200
    return data_of(await response.text())


@pytest.mark.parametrize("name", sorted(RIGHT))
async def test_a_plain_client_ends_with_the_final_text(edge: Edge, name: str) -> None:
    script = RIGHT[name]
    final = await final_text(edge, script)
    payloads = await stream(edge, script)
    assert payloads[-1] == "[DONE]", payloads[-1]
    assert content_of(payloads) == final
    types = [p.get("switchboard", {}).get("type") for p in payloads[:-1]]
    assert "reset" not in types, "a plain client is not told to drop text it never got wrong"
    done = payloads[-2]["switchboard"]
    assert done["type"] == "done" and done["resets"] == sum(e.HasField("reset") for e in script)


async def test_a_cascaded_cheap_answer_never_reaches_a_plain_client(edge: Edge) -> None:
    payloads = await stream(edge, RIGHT["cascade"])
    assert "not sure" not in json.dumps(payloads)
    pieces = [p["choices"][0]["delta"].get("content") for p in payloads if p != "[DONE]"]
    assert [p for p in pieces if p] == ["Go to Settings ", "> Plan."], "frontier streams live"


async def test_held_text_goes_out_at_the_verdict_before_the_tool_status(edge: Edge) -> None:
    payloads = await stream(edge, RIGHT["provisional, then a tool and a handoff"])
    shown = [
        p["choices"][0]["delta"].get("content") or p.get("switchboard", {}).get("type")
        for p in payloads[1:-1]
    ]
    assert shown == [
        "Let me check. ",
        "tool",
        "tool",
        "handoff",
        "A person will take over (ticket T-1).",
        "done",
    ]


@pytest.mark.parametrize("name", sorted(DIVERGING))
async def test_a_diverged_retry_fails_with_the_final_text_never_a_wrong_one(
    edge: Edge, name: str
) -> None:
    script = DIVERGING[name]
    final = await final_text(edge, script)
    payloads = await stream(edge, script)
    assert "[DONE]" not in payloads
    error = payloads[-1]["error"]
    assert (error["code"], error["type"]) == ("reply_diverged", "server_error")
    assert error["switchboard"]["content"] == final
    # What the client shows is a prefix of an abandoned attempt, and the error says so.
    assert not final.startswith(content_of(payloads)) or content_of(payloads) == ""


async def test_a_retry_with_the_request_id_replays_a_diverged_reply_whole(edge: Edge) -> None:
    edge.publisher.script = DIVERGING["redelivered, different text"]
    first = await edge.client.post(
        "/v1/chat/completions", json={**HELLO, "stream": True}, headers=AUTH
    )
    error = data_of(await first.text())[-1]["error"]
    request_id = first.headers["sb-request-id"]
    assert f"Idempotency-Key: {request_id}" in error["message"]
    again = await edge.client.post(
        "/v1/chat/completions",
        json={**HELLO, "stream": True},
        headers={**AUTH, "Idempotency-Key": request_id},
    )
    assert again.headers["sb-idempotency"] == "replayed"
    payloads = data_of(await again.text())
    assert payloads[-1] == "[DONE]"
    assert content_of(payloads) == error["switchboard"]["content"]
    assert len(edge.publisher.turns) == 1


@pytest.mark.parametrize("how", [{"sb-resets": "client"}, {}])
async def test_a_client_that_handles_resets_gets_every_delta_at_once(
    edge: Edge, how: dict[str, str]
) -> None:
    edge.publisher.script = RIGHT["cascade"]
    body: dict[str, Any] = {**HELLO, "stream": True}
    if not how:
        body["stream_options"] = {"switchboard_resets": "client"}
    response = await edge.client.post("/v1/chat/completions", json=body, headers={**AUTH, **how})
    payloads = data_of(await response.text())
    shown = [
        p["choices"][0]["delta"].get("content") or p.get("switchboard", {}).get("type")
        for p in payloads[1:-1]
    ]
    assert shown == ["I'm not ", "sure.", "reset", "Go to Settings ", "> Plan.", "done"]
    assert payloads[-2]["switchboard"]["content"] == "Go to Settings > Plan."


async def test_an_unknown_resets_declaration_is_a_400_naming_it(edge: Edge) -> None:
    response = await edge.client.post(
        "/v1/chat/completions", json=HELLO, headers={**AUTH, "sb-resets": "maybe"}
    )
    assert response.status == 400
    assert (await response.json())["error"]["param"] == "sb-resets"
    response = await edge.client.post(
        "/v1/chat/completions",
        json={**HELLO, "stream_options": {"switchboard_resets": 1}},
        headers=AUTH,
    )
    assert (await response.json())["error"]["param"] == "stream_options.switchboard_resets"


async def responses_stream(edge: Edge, script: list[ChatEvent]) -> list[Any]:
    edge.publisher.script = script
    response = await edge.client.post(
        "/v1/responses", json={"model": "auto", "input": "hello", "stream": True}, headers=AUTH
    )
    return data_of(await response.text())


@pytest.mark.parametrize("name", sorted(RIGHT))
async def test_responses_deltas_add_up_to_the_final_text(edge: Edge, name: str) -> None:
    events = await responses_stream(edge, RIGHT[name])
    kinds = [e["type"] for e in events]
    assert kinds[-1] == "response.completed" and "response.switchboard.reset" not in kinds
    deltas = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
    done = next(e for e in events if e["type"] == "response.output_text.done")
    assert deltas == done["text"] == events[-1]["response"]["output"][0]["content"][0]["text"]
    assert [e["sequence_number"] for e in events] == list(range(len(events)))


@pytest.mark.parametrize("name", sorted(DIVERGING))
async def test_a_diverged_response_fails_with_the_final_text(edge: Edge, name: str) -> None:
    final = await final_text(edge, DIVERGING[name])
    events = await responses_stream(edge, DIVERGING[name])
    assert events[-1]["type"] == "response.failed"
    assert events[-1]["response"]["error"]["code"] == "reply_diverged"
    assert events[-1]["response"]["switchboard"]["content"] == final
    assert "response.output_text.done" not in [e["type"] for e in events]


async def read_until(response: ClientResponse, marker: bytes) -> bytes:
    """The stream's bytes up to and including the first `marker`."""
    seen = b""
    while marker not in seen:
        piece = await response.content.readany()
        assert piece, f"the stream ended before {marker!r}: {seen!r}"
        seen += piece
    return seen


async def test_a_silent_stream_gets_keepalive_comments() -> None:
    async for edge in open_edge(StreamOptions(keepalive_s=0.05)):
        edge.publisher.hold_reply = True
        async with edge.client.post(
            "/v1/chat/completions", json={**HELLO, "stream": True}, headers=AUTH
        ) as response:
            rid = response.headers["sb-request-id"]
            edge.publisher.deliver(rid, [delta("Let me look. "), tool("running")])
            seen = await asyncio.wait_for(read_until(response, KEEPALIVE), 10)
            assert seen.count(b"data: ") == 3  # role, text, tool: then silence
            edge.publisher.deliver(rid, [tool("succeeded"), delta("Found it."), DONE], start=3)
            payloads = data_of(seen.decode() + await response.text())
        assert payloads[-1] == "[DONE]"
        assert content_of(payloads) == "Let me look. Found it."


async def test_a_hold_gives_out_at_its_bound_and_a_later_cascade_then_fails() -> None:
    async for edge in open_edge(StreamOptions(keepalive_s=30, hold_max_s=0.05)):
        edge.publisher.hold_reply = True
        async with edge.client.post(
            "/v1/chat/completions", json={**HELLO, "stream": True}, headers=AUTH
        ) as response:
            rid = response.headers["sb-request-id"]
            edge.publisher.deliver(rid, [PROVISIONAL, delta("A slow cheap answer")])
            # No event follows: the hold's deadline alone sends the held text.
            await asyncio.wait_for(read_until(response, b"A slow cheap answer"), 10)
            edge.publisher.deliver(rid, [CASCADE, delta("The frontier answer"), DONE], start=3)
            payloads = data_of(await response.text())
        assert payloads[-1]["error"]["code"] == "reply_diverged"
        assert payloads[-1]["error"]["switchboard"]["content"] == "The frontier answer"


# ---- the gate alone ----


def gate_for(reply: Reply, options: StreamOptions, **kwargs: Any) -> TextGate:
    reply.apply(ChatEvent(started=Started(conversation_id="c", request_id="r")))
    return TextGate(reply, options, **kwargs)


def run(gate: TextGate, reply: Reply, events: list[ChatEvent]) -> str:
    sent = ""
    for event in events:
        reply.apply(event)
        sent += gate.after(event)
    return sent


def test_a_hold_longer_than_its_character_bound_streams_on() -> None:
    reply = Reply()
    gate = gate_for(reply, StreamOptions(hold_max_chars=10))
    assert run(gate, reply, [PROVISIONAL, delta("12345")]) == ""
    assert run(gate, reply, [delta("678901")]) == "12345678901"
    assert run(gate, reply, [delta("2")]) == "2", "streams live once the hold gave out"
    assert run(gate, reply, [PROVISIONAL, delta("3")]) == "3", "and does not hold again"


def test_a_hold_has_a_deadline_from_its_first_text_only() -> None:
    now = [100.0]
    reply = Reply()
    gate = gate_for(reply, StreamOptions(hold_max_s=5), clock=lambda: now[0])
    run(gate, reply, [PROVISIONAL])
    assert gate.hold_deadline is None, "nothing held yet: no deadline"
    now[0] = 103.0
    run(gate, reply, [delta("Hel")])
    assert gate.hold_deadline == 108.0
    run(gate, reply, [delta("lo")])
    assert gate.hold_deadline == 108.0
    assert gate.give_out() == "Hello" and gate.hold_deadline is None


def test_a_replayed_reply_is_held_whole_and_so_always_right() -> None:
    reply = Reply()
    gate = gate_for(reply, StreamOptions(), hold_whole=True)
    script = DIVERGING["redelivered, different text"]
    assert run(gate, reply, script[:-1]) == ""
    assert run(gate, reply, script[-1:]) == "Sorry, I cannot see that order."
    assert not gate.diverged
