"""The HTTP door end to end: the official OpenAI SDK, curl and plain HTTP against the gateway,
through the real pipeline (Kafka, orchestrator, worker, simulator, memory, FerretDB, Redis)."""

import asyncio
import json
import shutil
import subprocess
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import grpc
import openai
import pytest
from openai import AsyncOpenAI

from switchboard.common.tenants import RateLimits, TenantConfig, hash_api_key
from switchboard.v1.chat_pb2 import ChatEvent, ChatRequest
from switchboard.v1.chat_pb2_grpc import ChatServiceStub

from .conftest import WIDGET_KEY, Platform, seed_tenants
from .markers import word_marker

pytestmark = pytest.mark.e2e

STORE_WAIT_S = 20.0


@pytest.fixture
async def client(platform: Platform) -> AsyncIterator[AsyncOpenAI]:
    # No retries: every refusal must reach the test as it is.
    async with AsyncOpenAI(
        base_url=f"{platform.http_url}/v1", api_key=platform.api_key, max_retries=0, timeout=60
    ) as sdk:
        yield sdk


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        yield session


def journal(platform: Platform) -> list[dict[str, Any]]:
    """What the simulator was sent."""
    with urllib.request.urlopen(f"{platform.simulator_url}/_journal", timeout=5) as response:
        entries: list[dict[str, Any]] = json.load(response)["requests"]
        return entries


def sent_with(platform: Platform, marker: str) -> list[str]:
    """The message contents of the last provider request whose last message holds `marker`."""
    for entry in reversed(journal(platform)):
        messages = entry["body"].get("messages", [])
        if messages and marker in str(messages[-1].get("content")):
            return [str(m.get("content")) for m in messages]
    raise AssertionError(f"no provider request ended with {marker!r}")


async def items_of(client: AsyncOpenAI, conversation: str, count: int) -> list[Any]:
    """The conversation's items once memory stored `count` of them (bounded wait)."""
    deadline = time.monotonic() + STORE_WAIT_S
    while True:
        page = await client.conversations.items.list(conversation, order="asc")
        if len(page.data) >= count or time.monotonic() > deadline:
            return list(page.data)
        await asyncio.sleep(0.1)


def text_of_item(item: Any) -> str:
    return "".join(part.text for part in item.content)


async def test_chat_completions_with_the_sdk_streamed_and_not_remember_the_conversation(
    client: AsyncOpenAI, platform: Platform
) -> None:
    marker = word_marker()
    raw = await client.chat.completions.with_raw_response.create(
        model="auto",
        messages=[{"role": "user", "content": f"Hello, my code word is {marker}."}],
        user="sdk-user",
    )
    first = raw.parse()
    conversation = raw.headers["sb-conversation-id"]
    assert raw.headers["sb-idempotency"] == "new"
    assert first.object == "chat.completion" and first.id == f"chatcmpl-{conversation}"
    answer = first.choices[0].message.content
    assert answer and first.choices[0].finish_reason == "stop"
    assert first.usage is not None and first.usage.completion_tokens > 0
    assert [text_of_item(i) for i in await items_of(client, conversation, 2)] == [
        f"Hello, my code word is {marker}.",
        answer,
    ]

    # The second turn continues it (metadata.conversation_id), streamed, with usage at the end.
    stream = await client.chat.completions.create(
        model="frontier",
        messages=[
            {"role": "user", "content": "ignored: the server keeps the history"},
            {"role": "user", "content": f"What was my code word? ({marker}-2)"},
        ],
        metadata={"conversation_id": conversation},
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [c async for c in stream]
    assert {c.id for c in chunks} == {f"chatcmpl-{conversation}"}
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text and chunks[-2].choices[0].finish_reason == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.total_tokens > chunks[-1].usage.completion_tokens > 0
    extensions = [c.model_extra.get("switchboard") for c in chunks if c.model_extra]
    assert extensions[0]["type"] == "started"
    assert extensions[0]["conversation_id"] == conversation
    # The provider saw the first turn: the conversation lives on the server.
    history = sent_with(platform, f"({marker}-2)")
    assert f"Hello, my code word is {marker}." in history and answer in history
    assert "ignored: the server keeps the history" not in history

    models = await client.models.list()
    assert [m.id for m in models.data] == ["switchboard", "auto", "cheap", "frontier"]


async def test_responses_in_a_conversation_across_two_turns_with_the_sdk(
    client: AsyncOpenAI, platform: Platform
) -> None:
    marker = word_marker()
    conversation = await client.conversations.create(metadata={"topic": "e2e"})
    assert conversation.object == "conversation"
    assert (await client.conversations.retrieve(conversation.id)).id == conversation.id

    first = await client.responses.create(
        model="switchboard", conversation=conversation.id, input=f"My cat is called {marker}."
    )
    assert first.status == "completed" and first.output_text
    assert first.usage is not None and first.usage.output_tokens > 0
    await items_of(client, conversation.id, 2)

    seen: list[str] = []
    text = ""
    completed: Any = None
    async with await client.responses.create(
        model="switchboard",
        conversation={"id": conversation.id},
        input=[{"role": "user", "content": f"What is my cat called? ({marker}-2)"}],
        stream=True,
    ) as stream:
        async for event in stream:
            seen.append(event.type)
            if event.type == "response.output_text.delta":
                text += event.delta
            elif event.type == "response.completed":
                completed = event.response
    assert seen[0] == "response.created" and seen[-1] == "response.completed"
    assert "response.output_text.delta" in seen
    assert completed.output_text == text and completed.usage.total_tokens > 0
    history = sent_with(platform, f"({marker}-2)")
    assert f"My cat is called {marker}." in history and first.output_text in history

    items = await items_of(client, conversation.id, 4)
    assert [i.role for i in items] == ["user", "assistant", "user", "assistant"]
    assert text_of_item(items[3]) == text
    newest = await client.conversations.items.list(conversation.id, limit=1)
    assert [text_of_item(i) for i in newest.data] == [text] and newest.has_more

    deleted = await client.conversations.delete(conversation.id)
    assert deleted.deleted
    with pytest.raises(openai.NotFoundError):
        await client.conversations.retrieve(conversation.id)


def error_of(exc: openai.APIStatusError) -> dict[str, Any]:
    body = exc.body
    assert isinstance(body, dict), body
    # The SDK unwraps {"error": {...}}; every field of OpenAI's shape is there.
    assert set(body) >= {"message", "type", "code", "param"}, body
    return body


async def test_every_error_status_in_openais_shape(
    client: AsyncOpenAI, platform: Platform, http: aiohttp.ClientSession
) -> None:
    url = f"{platform.http_url}/v1/chat/completions"
    hello = [{"role": "user", "content": "hello"}]
    wrong = client.with_options(api_key="not-a-key")
    with pytest.raises(openai.AuthenticationError) as unauthorized:
        await wrong.chat.completions.create(model="auto", messages=hello)
    assert unauthorized.value.status_code == 401
    assert error_of(unauthorized.value)["code"] == "invalid_api_key"

    with pytest.raises(openai.BadRequestError) as empty:
        await client.chat.completions.create(model="auto", messages=[])
    assert error_of(empty.value)["param"] == "messages"
    with pytest.raises(openai.BadRequestError) as blank:
        await client.chat.completions.create(
            model="auto", messages=[{"role": "user", "content": "  "}]
        )
    assert error_of(blank.value)["param"] == "messages"
    with pytest.raises(openai.BadRequestError) as temperature:
        await client.chat.completions.create(model="auto", messages=hello, temperature=7)
    assert error_of(temperature.value)["param"] == "temperature"

    with pytest.raises(openai.NotFoundError) as model:
        await client.chat.completions.create(model="gpt-5", messages=hello)
    assert error_of(model.value)["code"] == "model_not_found"
    with pytest.raises(openai.NotFoundError) as missing:
        await client.chat.completions.create(
            model="auto", messages=hello, metadata={"conversation_id": "no-such-conversation"}
        )
    assert "no-such-conversation" in error_of(missing.value)["message"]

    # Malformed JSON and oversized bodies: 400 and 413, never a 500.
    headers = {"Authorization": f"Bearer {platform.api_key}", "Content-Type": "application/json"}
    for body, status, code in (
        (b'{"model": "auto", "messages": [', 400, "invalid_json"),
        (b"[1, 2]", 400, "invalid_json"),
        (b"\xff\xfe", 400, "invalid_json"),
        (b'{"model": "auto", "messages": "' + b"x" * (2 * 1024 * 1024) + b'"}', 413, None),
    ):
        async with http.post(url, data=body, headers=headers) as response:
            assert response.status == status
            assert (await response.json())["error"]["code"] == (code or "request_too_large")

    # 409: a second message while the conversation is still generating its first reply.
    slow = await client.chat.completions.create(
        model="auto", messages=hello, stream=True, metadata={"sim.ttft_ms": "4000"}
    )
    started = await anext(aiter(slow))
    conversation = started.model_extra["switchboard"]["conversation_id"]
    with pytest.raises(openai.ConflictError) as busy:
        await client.chat.completions.create(
            model="auto", messages=hello, metadata={"conversation_id": conversation}
        )
    assert error_of(busy.value)["code"] == "conversation_busy"
    await slow.close()

    # 409: one Idempotency-Key for two different requests.
    key = {"Idempotency-Key": f"e2e-{uuid.uuid4()}"}
    await client.chat.completions.create(model="auto", messages=hello, extra_headers=key)
    with pytest.raises(openai.ConflictError) as reused:
        await client.chat.completions.create(
            model="auto", messages=[{"role": "user", "content": "other"}], extra_headers=key
        )
    assert error_of(reused.value)["code"] == "idempotency_key_reused"

    # 429 with retry-after: a tenant allowed one request a minute.
    limited_key = f"limited-{uuid.uuid4().hex[:8]}"
    await seed_tenants(
        platform.database,
        TenantConfig(
            tenant_id=f"limited-{uuid.uuid4().hex[:6]}",
            api_key_sha256=[hash_api_key(limited_key)],
            rate_limits=RateLimits(requests_per_minute=1, requests_per_minute_per_user=1),
        ),
    )
    limited = client.with_options(api_key=limited_key)
    await limited.chat.completions.create(model="auto", messages=hello)
    with pytest.raises(openai.RateLimitError) as exhausted:
        await limited.chat.completions.create(model="auto", messages=hello)
    assert exhausted.value.status_code == 429
    assert int(exhausted.value.response.headers["retry-after"]) >= 1
    assert error_of(exhausted.value)["code"] == "rate_limit_exceeded"

    async with http.get(f"{platform.http_url}/v1/nothing-here", headers=headers) as response:
        assert response.status == 404
        assert (await response.json())["error"]["code"] == "not_found"


async def test_an_idempotency_key_replays_the_reply(
    client: AsyncOpenAI, platform: Platform
) -> None:
    key = {"Idempotency-Key": f"e2e-{uuid.uuid4()}"}
    hello = [{"role": "user", "content": "Tell me about returns."}]
    first = await client.chat.completions.with_raw_response.create(
        model="auto", messages=hello, extra_headers=key
    )
    again = await client.chat.completions.with_raw_response.create(
        model="auto", messages=hello, extra_headers=key
    )
    assert (first.headers["sb-idempotency"], again.headers["sb-idempotency"]) == (
        "new",
        "replayed",
    )
    assert again.parse().choices[0].message.content == first.parse().choices[0].message.content


async def test_curl_sees_raw_server_sent_events(platform: Platform, tmp_path: Any) -> None:
    curl = shutil.which("curl")
    assert curl, "curl is needed for this test"
    headers = tmp_path / "headers.txt"
    body = json.dumps(
        {"model": "cheap", "stream": True, "messages": [{"role": "user", "content": "Hi there"}]}
    )
    result = await asyncio.to_thread(
        subprocess.run,
        [curl, "-N", "-sS", "--max-time", "60", "-D", str(headers),
         "-H", f"Authorization: Bearer {platform.api_key}",
         "-H", "Content-Type: application/json", "-d", body,
         f"{platform.http_url}/v1/chat/completions"],
        capture_output=True, text=True, check=True, timeout=90,
    )  # fmt: skip
    head = headers.read_text().lower()
    assert "content-type: text/event-stream" in head
    conversation = next(
        line.split(":", 1)[1].strip() for line in head.splitlines() if line.startswith("sb-conv")
    )
    events = [block for block in result.stdout.split("\n\n") if block.strip()]
    assert all(block.startswith("data: ") for block in events), events[:3]
    assert events[-1] == "data: [DONE]"
    chunks = [json.loads(block[6:]) for block in events[:-1]]
    assert {c["id"] for c in chunks} == {f"chatcmpl-{conversation}"}
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


async def grpc_turn(platform: Platform, conversation: str, message: str) -> list[ChatEvent]:
    async with grpc.aio.insecure_channel(platform.gateway_target) as channel:
        call = ChatServiceStub(channel).Chat(
            ChatRequest(conversation_id=conversation, message=message),
            metadata=[("authorization", f"Bearer {platform.api_key}")],
            timeout=60,
        )
        return [event async for event in call]


async def test_an_http_turn_and_a_grpc_turn_of_one_conversation_see_each_other(
    client: AsyncOpenAI, platform: Platform
) -> None:
    marker = word_marker()
    raw = await client.chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": f"Over HTTP: {marker}-http"}]
    )
    conversation = raw.headers["sb-conversation-id"]
    http_answer = raw.parse().choices[0].message.content
    await items_of(client, conversation, 2)

    events = await grpc_turn(platform, conversation, f"Over gRPC: {marker}-grpc")
    assert events[-1].WhichOneof("event") == "done"
    assert events[0].started.conversation_id == conversation
    grpc_answer = "".join(e.delta.text for e in events if e.WhichOneof("event") == "delta")
    assert f"Over HTTP: {marker}-http" in sent_with(platform, f"{marker}-grpc")
    await items_of(client, conversation, 4)

    await client.chat.completions.create(
        model="auto",
        messages=[{"role": "user", "content": f"Back over HTTP: {marker}-back"}],
        extra_headers={"sb-conversation-id": conversation},
    )
    history = sent_with(platform, f"{marker}-back")
    assert f"Over gRPC: {marker}-grpc" in history and grpc_answer in history
    assert http_answer in history


async def test_tenants_are_isolated_over_http(client: AsyncOpenAI, platform: Platform) -> None:
    raw = await client.chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": "Mine alone."}]
    )
    conversation = raw.headers["sb-conversation-id"]
    second = client.with_options(api_key="sb-second-key")  # deploy/local/tenants.yaml
    with pytest.raises(openai.NotFoundError):
        await second.conversations.retrieve(conversation)
    with pytest.raises(openai.NotFoundError):
        await second.chat.completions.create(
            model="auto",
            messages=[{"role": "user", "content": "Let me in."}],
            metadata={"conversation_id": conversation},
        )
    assert (await second.chat.completions.create(model="auto", messages=[
        {"role": "user", "content": "My own conversation."}
    ])).choices[0].message.content  # fmt: skip


async def test_browser_keys_chat_and_read_only_their_own_conversation(
    platform: Platform, http: aiohttp.ClientSession, client: AsyncOpenAI
) -> None:
    origin = platform.http_url
    base = f"{platform.http_url}/v1"
    key = {"Authorization": f"Bearer {WIDGET_KEY}"}

    async def session(headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
        async with http.post(f"{base}/widget/sessions", headers=headers) as response:
            return response.status, await response.json()

    assert (await session({**key, "Origin": "http://evil.example"}))[0] == 403
    assert (await session({**key}))[0] == 403  # no origin: not from a page
    status, alice = await session({**key, "Origin": origin})
    assert status == 201 and alice["user_id"].startswith("web-")
    _, bob = await session({**key, "Origin": origin})
    assert bob["user_id"] != alice["user_id"]
    as_alice = {**key, "Origin": origin, "sb-session": alice["session"]}
    as_bob = {**key, "Origin": origin, "sb-session": bob["session"]}

    body = {"model": "auto", "messages": [{"role": "user", "content": "Hi from a browser"}]}
    async with http.post(f"{base}/chat/completions", json=body, headers=as_alice) as response:
        assert response.status == 200, await response.text()
        assert response.headers["Access-Control-Allow-Origin"] == origin
        conversation = response.headers["sb-conversation-id"]
        reply = await response.json()
    assert reply["choices"][0]["message"]["content"]
    request_id = reply["switchboard"]["request_id"]

    items = f"{base}/conversations/{conversation}/items"
    async with http.get(items, headers=as_alice) as response:
        assert response.status == 200
    async with http.get(items, headers=as_bob) as response:
        assert response.status == 404
    feedback = {"request_id": request_id, "rating": "up"}
    async with http.post(f"{base}/feedback", json=feedback, headers=as_bob) as response:
        assert response.status == 404
    async with http.post(f"{base}/feedback", json=feedback, headers=as_alice) as response:
        assert response.status == 200, await response.text()
    continued = {**body, "metadata": {"conversation_id": conversation}}
    async with http.post(f"{base}/chat/completions", json=continued, headers=as_bob) as response:
        assert response.status == 404
    async with http.delete(f"{base}/conversations/{conversation}", headers=as_alice) as response:
        assert response.status == 403
    async with http.post(
        f"{base}/chat/completions", json=body, headers={**key, "Origin": origin}
    ) as response:
        assert response.status == 401  # no session
    async with http.post(
        f"{base}/chat/completions",
        json=body,
        headers={**as_alice, "Origin": "http://evil.example"},
    ) as response:
        assert response.status == 403

    # A secret key is refused from a browser; the publishable key is no secret key.
    secret = {"Authorization": f"Bearer {platform.api_key}", "Origin": origin}
    async with http.post(f"{base}/chat/completions", json=body, headers=secret) as response:
        assert response.status == 403
        assert (await response.json())["error"]["code"] == "secret_key_in_browser"
    with pytest.raises(openai.AuthenticationError):
        await client.with_options(api_key=WIDGET_KEY).chat.completions.create(
            model="auto", messages=[{"role": "user", "content": "hi"}]
        )
    # The preflight of a cross-origin call.
    async with http.options(
        f"{base}/chat/completions",
        headers={"Origin": origin, "Access-Control-Request-Method": "POST"},
    ) as response:
        assert response.status == 204
        assert "sb-session" in response.headers["Access-Control-Allow-Headers"]
