"""The first chat of `make run`, through the public gRPC API on the demo tenant: a tool call
answered from the order service's result, the banner's three suggestions doing what they say,
and replies that end on a whole sentence unless the token limit cut them."""

import asyncio
import time
from pathlib import Path

import grpc
import pytest

from switchboard.chat_cli.banner import SUGGESTIONS
from switchboard.v1.chat_pb2 import (
    ROLE_ASSISTANT,
    ROLE_USER,
    ChatEvent,
    ChatOptions,
    ChatRequest,
    Conversation,
    GetConversationRequest,
)
from switchboard.v1.chat_pb2_grpc import ChatServiceStub

from .conftest import Platform
from .test_chat_flow import auth, chat, collect, text_of
from .test_knowledge import run_cli

pytestmark = pytest.mark.e2e
__all__ = ["chat"]  # the fixture, re-used
STORE_WAIT_S = 20.0
SENTENCE_END = (".", "!", "?")


def ends_a_sentence(text: str) -> bool:
    """Whether `text` ends on a whole sentence (a quotation may close after its stop)."""
    return text.rstrip().rstrip('"\u201d)').endswith(SENTENCE_END)


DEMO_KNOWLEDGE = Path(__file__).resolve().parents[2] / "deploy/local/knowledge/demo"


def tool_statuses(events: list[ChatEvent]) -> list[tuple[str, str]]:
    return [(e.tool.name, e.tool.status) for e in events if e.WhichOneof("event") == "tool"]


async def stored_conversation(
    stub: ChatServiceStub, platform: Platform, conversation_id: str, count: int
) -> Conversation:
    """The conversation as the gateway gives it, once memory holds `count` messages."""
    deadline = time.monotonic() + STORE_WAIT_S
    while True:
        try:
            got: Conversation = await stub.GetConversation(
                GetConversationRequest(conversation_id=conversation_id), metadata=auth(platform)
            )
            if len(got.messages) >= count or time.monotonic() > deadline:
                return got
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.NOT_FOUND or time.monotonic() > deadline:
                raise
        await asyncio.sleep(0.2)


async def test_an_order_question_runs_the_tool_and_the_reply_tells_its_result(
    chat: ChatServiceStub, platform: Platform
) -> None:
    events = await collect(chat, ChatRequest(message="Where is my order A12345?"), platform)

    kinds = [e.WhichOneof("event") for e in events]
    assert kinds[0] == "started" and kinds[-1] == "done", kinds
    assert tool_statuses(events) == [("order_status", "running"), ("order_status", "succeeded")]
    last_tool = max(i for i, kind in enumerate(kinds) if kind == "tool")
    assert "delta" in kinds[last_tool:], "the reply streams after the tool ran"
    reply = text_of(events)
    # The demo order service's A12345: shipped with DHL, expected on 2026-11-24.
    assert "Your order A12345 has shipped with DHL and should arrive on 24 November." in reply
    assert ends_a_sentence(reply) and "{" not in reply
    done = events[-1].done
    assert (done.tier, done.finish_reason) == ("cheap", "stop")

    stored = await stored_conversation(chat, platform, events[0].started.conversation_id, 2)
    assert [(m.role, m.text) for m in stored.messages] == [
        (ROLE_USER, "Where is my order A12345?"),
        (ROLE_ASSISTANT, reply),
    ]


async def test_a_city_time_question_runs_current_time_in_its_zone(
    chat: ChatServiceStub, platform: Platform
) -> None:
    events = await collect(chat, ChatRequest(message="What time is it in Tokyo?"), platform)
    assert tool_statuses(events) == [("current_time", "running"), ("current_time", "succeeded")]
    assert " in Tokyo (Asia/Tokyo). " in text_of(events)


async def test_a_message_that_asks_for_no_tool_runs_none(
    chat: ChatServiceStub, platform: Platform
) -> None:
    events = await collect(chat, ChatRequest(message="How do I reset my password?"), platform)
    assert tool_statuses(events) == []
    assert events[-1].WhichOneof("event") == "done"
    assert ends_a_sentence(text_of(events))


async def test_the_banner_suggestions_show_a_tool_call_frontier_a_handoff_and_a_cited_answer(
    chat: ChatServiceStub, platform: Platform
) -> None:
    tool, frontier, handoff, grounded = SUGGESTIONS

    first = await collect(chat, ChatRequest(message=tool.message), platform)
    assert ("order_status", "succeeded") in tool_statuses(first)

    second = await collect(chat, ChatRequest(message=frontier.message), platform)
    assert second[-1].done.tier == "frontier"
    assert ends_a_sentence(text_of(second))

    third = await collect(chat, ChatRequest(message=handoff.message), platform)
    kinds = [e.WhichOneof("event") for e in third]
    assert "handoff" in kinds and third[-1].done.finish_reason == "handoff"
    [event] = [e for e in third if e.WhichOneof("event") == "handoff"]
    assert event.handoff.ticket_id.startswith("T-")

    # The demo knowledge base, loaded as `make up` loads it, and removed again after: other
    # tests of this tenant (tests/e2e/test_knowledge.py) start from an empty knowledge base.
    key = ("--tenant-key", platform.api_key, "--target", platform.gateway_target)
    loaded = await asyncio.to_thread(run_cli, platform, "ingest", str(DEMO_KNOWLEDGE), *key)
    try:
        assert loaded.returncode == 0, loaded.stdout + loaded.stderr
        fourth = await collect(chat, ChatRequest(message=grounded.message), platform)
        assert [c.document_id for c in fourth[-1].done.citations] == ["returns-policy.md"]
        assert "30 days" in text_of(fourth)
    finally:
        for document in sorted(DEMO_KNOWLEDGE.iterdir()):
            await asyncio.to_thread(run_cli, platform, "delete", document.name, *key)


async def test_a_reply_cut_by_the_token_limit_says_so(
    chat: ChatServiceStub, platform: Platform
) -> None:
    whole = await collect(chat, ChatRequest(message="Can you help me with my bill?"), platform)
    assert whole[-1].done.finish_reason == "stop" and ends_a_sentence(text_of(whole))

    cut = await collect(
        chat,
        ChatRequest(
            message="Can you help me with my bill?", options=ChatOptions(max_output_tokens=5)
        ),
        platform,
    )
    assert cut[-1].done.finish_reason == "length"
    assert cut[-1].done.usage.output_tokens == 5
