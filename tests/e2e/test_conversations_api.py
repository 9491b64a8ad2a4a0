"""The gateway's conversation methods, end to end: client → gateway → memory → FerretDB."""

import uuid
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from redis.asyncio import Redis

from switchboard.v1.chat_pb2 import (
    RATING_DOWN,
    RATING_UP,
    ChatEvent,
    ChatRequest,
    Conversation,
    DeleteConversationRequest,
    GetConversationRequest,
    ListConversationsRequest,
    SubmitFeedbackRequest,
)
from switchboard.v1.chat_pb2_grpc import ChatServiceStub

from .conftest import REDIS, Platform
from .memory_support import Mongo, eventually, make_turns, publish_turns, stored

pytestmark = pytest.mark.e2e


@pytest.fixture
async def chat(platform: Platform) -> AsyncIterator[ChatServiceStub]:
    async with grpc.aio.insecure_channel(platform.gateway_target) as channel:
        yield ChatServiceStub(channel)


def auth(platform: Platform) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {platform.api_key}")]


async def say(
    chat: ChatServiceStub, platform: Platform, message: str, user: str, conversation: str = ""
) -> list[ChatEvent]:
    request = ChatRequest(conversation_id=conversation, message=message, user_id=user)
    events = [e async for e in chat.Chat(request, metadata=auth(platform), timeout=60)]
    assert events[-1].WhichOneof("event") == "done", events[-1]
    return events


async def conversation_or_none(
    chat: ChatServiceStub, platform: Platform, conversation: str
) -> Conversation | None:
    """The conversation through the gateway, or None while it is not found."""
    try:
        got: Conversation = await chat.GetConversation(
            GetConversationRequest(conversation_id=conversation), metadata=auth(platform)
        )
    except grpc.aio.AioRpcError as exc:
        if exc.code() != grpc.StatusCode.NOT_FOUND:
            raise
        return None
    return got


async def refused_chat(
    chat: ChatServiceStub, platform: Platform, conversation: str
) -> grpc.aio.AioRpcError:
    """The status of a Chat on `conversation`, which must fail."""
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await say(chat, platform, "Are you still there? 42", "prober", conversation)
    return failure.value


def text_of(events: list[ChatEvent]) -> str:
    return "".join(e.delta.text for e in events if e.WhichOneof("event") == "delta")


async def expect_status(call: Any, code: grpc.StatusCode, names: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await call
    assert failure.value.code() == code, failure.value.details()
    assert names in (failure.value.details() or "")


async def test_a_chat_can_be_read_listed_rated_and_deleted(
    chat: ChatServiceStub, platform: Platform, mongo: Mongo
) -> None:
    user = f"user-{uuid.uuid4().hex[:8]}"
    first = await say(chat, platform, "Hi, my order 31337 has not arrived.", user)
    conversation = first[0].started.conversation_id
    # Rated at once, before memory may have stored the turn: the rating waits for it.
    await chat.SubmitFeedback(
        SubmitFeedbackRequest(request_id=first[0].request_id, rating=RATING_UP, comment="quick"),
        metadata=auth(platform),
    )
    second = await say(chat, platform, "Can you check again?", user, conversation)
    other = await say(chat, platform, "A separate question.", user)
    await stored(mongo, platform.database, "demo", conversation, 4)
    await stored(mongo, platform.database, "demo", other[0].started.conversation_id, 2)

    got = await chat.GetConversation(
        GetConversationRequest(conversation_id=conversation), metadata=auth(platform)
    )
    assert got.conversation_id == conversation and got.user_id == user
    assert [m.text for m in got.messages] == [
        "Hi, my order 31337 has not arrived.",
        text_of(first),
        "Can you check again?",
        text_of(second),
    ]
    assert [m.request_id for m in got.messages] == [first[0].request_id] * 2 + [
        second[0].request_id
    ] * 2
    assert got.messages[1].model == first[-1].done.model  # the router picks the tier
    assert got.created_at.seconds > 0 and got.updated_at.ToDatetime() >= got.created_at.ToDatetime()

    # Newest activity first, one per page, to the end.
    seen, token = [], ""
    for _ in range(5):
        page = await chat.ListConversations(
            ListConversationsRequest(user_id=user, page_size=1, page_token=token),
            metadata=auth(platform),
        )
        seen.extend((c.conversation_id, c.message_count) for c in page.conversations)
        token = page.next_page_token
        if not token:
            break
    assert seen == [(other[0].started.conversation_id, 2), (conversation, 4)]

    # The rating is stored on the reply it rates; a second rating replaces it.
    await chat.SubmitFeedback(
        SubmitFeedbackRequest(request_id=first[0].request_id, rating=RATING_DOWN, comment="wrong"),
        metadata=auth(platform),
    )
    rated = await mongo[platform.database]["messages"].find_one(
        {"tenant_id": "demo", "request_id": first[0].request_id, "role": 3}
    )
    assert rated is not None
    assert (rated["feedback"]["rating"], rated["feedback"]["comment"]) == ("RATING_DOWN", "wrong")

    await chat.DeleteConversation(
        DeleteConversationRequest(conversation_id=conversation), metadata=auth(platform)
    )
    await expect_status(
        chat.GetConversation(
            GetConversationRequest(conversation_id=conversation), metadata=auth(platform)
        ),
        grpc.StatusCode.NOT_FOUND,
        conversation,
    )
    await expect_status(
        chat.DeleteConversation(
            DeleteConversationRequest(conversation_id=conversation), metadata=auth(platform)
        ),
        grpc.StatusCode.NOT_FOUND,
        conversation,
    )
    # A deleted conversation takes no new message (it is not silently started again).
    refused = await refused_chat(chat, platform, conversation)
    assert refused.code() == grpc.StatusCode.NOT_FOUND
    assert f"conversation {conversation!r} not found" in (refused.details() or "")
    db = mongo[platform.database]
    scope = {"tenant_id": "demo", "conversation_id": conversation}
    for collection in ("conversations", "messages", "summaries", "facts"):
        assert await db[collection].count_documents(scope) == 0, collection
    page = await chat.ListConversations(
        ListConversationsRequest(user_id=user), metadata=auth(platform)
    )
    assert [c.conversation_id for c in page.conversations] == [other[0].started.conversation_id]


async def test_another_tenants_conversation_is_not_found_and_untouched(
    chat: ChatServiceStub, platform: Platform, mongo: Mongo
) -> None:
    conversation = f"foreign-{uuid.uuid4().hex[:8]}"
    turns = make_turns("globex", conversation, [("globex private", "reply")], user_id="g-user")
    await publish_turns(platform.topic("chat.turns"), turns)
    await stored(mongo, platform.database, "globex", conversation, 2)

    unknown = f"never-{uuid.uuid4().hex[:8]}"
    for target in (conversation, unknown):
        get = chat.GetConversation(
            GetConversationRequest(conversation_id=target), metadata=auth(platform)
        )
        await expect_status(get, grpc.StatusCode.NOT_FOUND, f"conversation {target!r} not found")
        delete = chat.DeleteConversation(
            DeleteConversationRequest(conversation_id=target), metadata=auth(platform)
        )
        await expect_status(delete, grpc.StatusCode.NOT_FOUND, f"conversation {target!r} not found")
        refused = await refused_chat(chat, platform, target)
        assert refused.code() == grpc.StatusCode.NOT_FOUND
        assert f"conversation {target!r} not found" in (refused.details() or "")
    await expect_status(
        chat.SubmitFeedback(
            SubmitFeedbackRequest(request_id=turns[0].request_id, rating=RATING_UP),
            metadata=auth(platform),
        ),
        grpc.StatusCode.NOT_FOUND,
        "request_id",
    )
    listing = await chat.ListConversations(
        ListConversationsRequest(user_id="g-user"), metadata=auth(platform)
    )
    assert list(listing.conversations) == []
    assert (
        await mongo[platform.database]["messages"].count_documents(
            {"tenant_id": "globex", "conversation_id": conversation}
        )
        == 2
    )
    foreign = await mongo[platform.database]["messages"].find_one(
        {"tenant_id": "globex", "request_id": turns[0].request_id, "role": 3}
    )
    assert foreign is not None and "feedback" not in foreign


@pytest.mark.parametrize(
    ("method", "request_", "code", "names"),
    [
        (
            "GetConversation",
            GetConversationRequest(),
            grpc.StatusCode.INVALID_ARGUMENT,
            "conversation_id",
        ),
        (
            "ListConversations",
            ListConversationsRequest(page_size=5_000),
            grpc.StatusCode.INVALID_ARGUMENT,
            "page_size",
        ),
        (
            "ListConversations",
            ListConversationsRequest(page_token="bm90IGEgdG9rZW4"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "page_token",
        ),
        (
            "SubmitFeedback",
            SubmitFeedbackRequest(request_id="r", rating=RATING_UP, comment="x" * 2_001),
            grpc.StatusCode.INVALID_ARGUMENT,
            "comment",
        ),
        (
            "SubmitFeedback",
            SubmitFeedbackRequest(request_id="r"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "rating",
        ),
    ],
)
async def test_bad_requests_name_the_field(
    chat: ChatServiceStub, platform: Platform, method: str, request_: Any, code: Any, names: str
) -> None:
    await expect_status(getattr(chat, method)(request_, metadata=auth(platform)), code, names)


async def test_a_page_token_of_another_user_is_refused(
    chat: ChatServiceStub, platform: Platform, mongo: Mongo
) -> None:
    user = f"pager-{uuid.uuid4().hex[:8]}"
    for n in range(2):
        turns = make_turns("demo", f"page-{uuid.uuid4().hex[:8]}", [(f"q{n}", "a")], user_id=user)
        await publish_turns(platform.topic("chat.turns"), turns)
        await stored(mongo, platform.database, "demo", turns[0].conversation_id, 2)
    page = await chat.ListConversations(
        ListConversationsRequest(user_id=user, page_size=1), metadata=auth(platform)
    )
    assert page.next_page_token
    await expect_status(
        chat.ListConversations(
            ListConversationsRequest(user_id="someone-else", page_token=page.next_page_token),
            metadata=auth(platform),
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "page_token",
    )


@pytest.mark.parametrize("metadata", [[], [("authorization", "Bearer wrong")]])
async def test_unauthenticated_callers_are_refused(
    chat: ChatServiceStub, metadata: list[tuple[str, str]]
) -> None:
    await expect_status(
        chat.ListConversations(ListConversationsRequest(), metadata=metadata),
        grpc.StatusCode.UNAUTHENTICATED,
        "API key",
    )


async def test_a_conversation_memory_has_is_accepted_without_a_marker(
    chat: ChatServiceStub, platform: Platform, mongo: Mongo
) -> None:
    """An old conversation whose marker expired (here: one the gateway never saw start)."""
    conversation = f"old-{uuid.uuid4().hex[:8]}"
    user = f"user-{uuid.uuid4().hex[:8]}"
    turns = make_turns("demo", conversation, [("My order is 4711.", "Noted.")], user_id=user)
    await publish_turns(platform.topic("chat.turns"), turns)
    await stored(mongo, platform.database, "demo", conversation, 2)
    # Memory writes the messages before the conversation: wait until it answers for it.
    await eventually(
        lambda: conversation_or_none(chat, platform, conversation),
        lambda got: got is not None,
    )
    marker = f"sb:demo:conversation:{conversation}:known"
    redis = Redis.from_url(REDIS)
    try:
        assert not await redis.exists(marker)
        events = await say(chat, platform, "Any news on my order?", user, conversation)
        assert events[0].started.conversation_id == conversation
        assert await redis.ttl(marker) > 0, "memory knew it: the gateway marked it again"
    finally:
        await redis.delete(marker)
        await redis.aclose()
    await stored(mongo, platform.database, "demo", conversation, 4)
