"""The knowledge base end to end, through the gateway's public API: upsert, search by
paraphrase, a chat that cites, an off-topic question that cites nothing, another tenant
that sees nothing, a second replica that converges from Kafka, deletion within seconds,
and bad input refused with nothing written."""

import asyncio
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from switchboard.v1.chat_pb2 import ChatEvent, ChatOptions, ChatRequest
from switchboard.v1.chat_pb2_grpc import ChatServiceStub
from switchboard.v1.knowledge_pb2 import (
    DeleteDocumentRequest,
    KnowledgeDocument,
    ListDocumentsRequest,
    SearchKnowledgeRequest,
    UpsertDocumentRequest,
)
from switchboard.v1.knowledge_pb2_grpc import KnowledgeServiceStub

from .conftest import KNOWLEDGE_MAX_DOCUMENT_BYTES, LOGS, MONGO, PORT_OFFSET, ROOT, Platform
from .test_chat_flow import journal, text_of

pytestmark = pytest.mark.e2e
CONVERGE_S = 10.0

RETURNS = """# Returns and refunds

## Return window
You may return most items within 30 days of delivery for a full refund. Items must be
unused and in their original packaging. Final-sale items cannot be returned.

## How refunds are paid
Refunds go back to the original payment method within 5 business days after the
warehouse receives the parcel.
"""

SHIPPING = """<html><head><title>Shipping policy</title></head><body>
<h1>Shipping policy</h1>
<h2>Delivery times</h2>
<p>Standard delivery takes 3 to 5 business days. Express delivery arrives the next business
day when ordered before 2 pm.</p>
<h2>Costs</h2>
<p>Standard delivery is free on orders over 50 euros; below that it costs 4.95 euros.</p>
</body></html>"""


@pytest.fixture
async def channel(platform: Platform) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(platform.gateway_target) as channel:
        yield channel


def auth(key: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {key}"),)


async def upsert(
    stub: KnowledgeServiceStub, key: str, document: KnowledgeDocument
) -> tuple[int, bool]:
    response = await stub.UpsertDocument(
        UpsertDocumentRequest(document=document), metadata=auth(key), timeout=60
    )
    return response.version, response.unchanged


async def search(stub: KnowledgeServiceStub, metadata: object, query: str) -> list[str]:
    response = await stub.SearchKnowledge(
        SearchKnowledgeRequest(query=query, top_k=3), metadata=metadata, timeout=30
    )
    return [hit.document_id for hit in response.hits]


async def eventually(check, timeout_s: float = CONVERGE_S) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while not await check():
        assert time.monotonic() < deadline, "not converged in time"
        await asyncio.sleep(0.1)


def start_replica(platform: Platform, port: int, log: Path) -> subprocess.Popen[bytes]:
    """Another knowledge service process on the same database and topics."""
    return subprocess.Popen(
        [sys.executable, "-m", "switchboard.knowledge"],
        env={
            **platform.env,
            "SWITCHBOARD_KNOWLEDGE_GRPC_PORT": str(port),
            "SWITCHBOARD_KNOWLEDGE_MONGO_URL": MONGO,
            "SWITCHBOARD_KNOWLEDGE_DATABASE": platform.database,
            "SWITCHBOARD_HEALTH_PORT": "0",
        },
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        cwd=ROOT,
    )


async def chat_cites(chat: ChatServiceStub, metadata: tuple[tuple[str, str], ...]) -> list[str]:
    """The documents a chat answer cites for a returns question (a new one each time: no
    cached answer stands in for the search)."""
    asked = f"How long do I have to return a coat? Ticket {uuid.uuid4().hex[:6]}"
    events = [
        e
        async for e in chat.Chat(
            ChatRequest(message=asked, options=ChatOptions(tier="cheap")),
            metadata=metadata,
            timeout=60,
        )
    ]
    assert events[-1].WhichOneof("event") == "done", events
    return [c.document_id for c in events[-1].done.citations]


async def test_documents_are_found_cited_isolated_replicated_and_deleted(
    platform: Platform, channel: grpc.aio.Channel
) -> None:
    stub = KnowledgeServiceStub(channel)
    run = uuid.uuid4().hex[:6]
    returns_id, shipping_id = f"policies/returns-{run}.md", f"policies/shipping-{run}.html"
    await upsert(
        stub,
        platform.api_key,
        KnowledgeDocument(
            document_id=returns_id,
            title="Returns and refunds",
            content=RETURNS,
            content_type="text/markdown",
            source_url="https://example.com/returns",
        ),
    )
    version, unchanged = await upsert(
        stub,
        platform.api_key,
        KnowledgeDocument(document_id=shipping_id, content=SHIPPING, content_type="text/html"),
    )
    assert not unchanged
    # The same document again changes nothing.
    again, unchanged = await upsert(
        stub,
        platform.api_key,
        KnowledgeDocument(document_id=shipping_id, content=SHIPPING, content_type="text/html"),
    )
    assert (again, unchanged) == (version, True)

    me = auth(platform.api_key)
    # Paraphrases with little word overlap.
    assert (await search(stub, me, "Can I send back a jacket I bought three weeks ago?"))[
        0
    ] == returns_id
    assert (await search(stub, me, "when will my parcel arrive"))[0] == shipping_id
    assert await search(stub, me, "What is the capital of Australia?") == []

    # A second replica, started now, loads MongoDB and follows knowledge.chunks.
    replica_port = 19164 + PORT_OFFSET
    log = LOGS / "knowledge-replica.log"
    replica = start_replica(platform, replica_port, log)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{replica_port}") as replica_channel:
            replica_stub = KnowledgeServiceStub(replica_channel)
            internal = (("sb-tenant-id", "demo"),)
            deadline = time.monotonic() + 60
            while True:
                try:
                    found = await search(replica_stub, internal, "how long is the return window")
                    break
                except grpc.aio.AioRpcError:
                    assert replica.poll() is None, log.read_text()[-2000:]
                    assert time.monotonic() < deadline, log.read_text()[-2000:]
                    await asyncio.sleep(0.2)
            assert found[0] == returns_id  # loaded from MongoDB

            # A change made through the gateway (the first replica) reaches this one by Kafka.
            await upsert(
                stub,
                platform.api_key,
                KnowledgeDocument(
                    document_id=returns_id,
                    title="Returns and refunds",
                    content=RETURNS.replace("30 days", "60 days")
                    + "\n## Gift cards\nGift cards are non-refundable and never expire.\n",
                    content_type="text/markdown",
                ),
            )

            async def replica_has_gift_cards() -> bool:
                return returns_id in await search(replica_stub, internal, "do gift cards expire")

            await eventually(replica_has_gift_cards)

            # The other tenant sees none of it.
            other = auth(platform.other_api_key)
            assert await search(stub, other, "how long is the return window") == []
            listed = await stub.ListDocuments(ListDocumentsRequest(), metadata=other, timeout=30)
            assert not [d for d in listed.documents if d.document_id in (returns_id, shipping_id)]
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.DeleteDocument(
                    DeleteDocumentRequest(document_id=returns_id), metadata=other, timeout=30
                )
            assert refused.value.code() == grpc.StatusCode.NOT_FOUND

            # A chat about it cites the document, and the prompt carried the passages as data.
            chat = ChatServiceStub(channel)
            events: list[ChatEvent] = [
                e
                async for e in chat.Chat(
                    ChatRequest(
                        message="Can I still send back shoes that I bought seven weeks ago?",
                        user_id="u-knowledge",
                        options=ChatOptions(tier="cheap"),
                    ),
                    metadata=me,
                    timeout=60,
                )
            ]
            done = events[-1]
            assert done.WhichOneof("event") == "done", events
            assert [c.document_id for c in done.done.citations][:1] == [returns_id]
            assert done.done.citations[0].title == "Returns and refunds"
            assert "Returns and refunds" in text_of(events)
            last = [r for r in journal(platform) if r["path"].endswith("/chat/completions")][-1]
            prompt = str(last["body"])
            assert '<passage id="K1"' in prompt and "not instructions" in prompt

            # The other tenant's chat finds nothing of it either (the orchestrator searches
            # its own replica of the indexes).
            others = [
                e
                async for e in chat.Chat(
                    ChatRequest(
                        message="Can I still send back shoes that I bought seven weeks ago?",
                        options=ChatOptions(tier="cheap"),
                    ),
                    metadata=other,
                    timeout=60,
                )
            ]
            assert others[-1].WhichOneof("event") == "done", others
            assert list(others[-1].done.citations) == []

            # Off-topic: nothing cited.
            events = [
                e
                async for e in chat.Chat(
                    ChatRequest(
                        message="Who painted the Mona Lisa?", options=ChatOptions(tier="cheap")
                    ),
                    metadata=me,
                    timeout=60,
                )
            ]
            assert events[-1].WhichOneof("event") == "done"
            assert list(events[-1].done.citations) == []

            # Deleted: gone from both replicas and from the chat within seconds.
            assert returns_id in await chat_cites(chat, me)
            await stub.DeleteDocument(
                DeleteDocumentRequest(document_id=returns_id), metadata=me, timeout=30
            )
            assert returns_id not in await search(stub, me, "how long is the return window")

            async def replica_forgot() -> bool:
                return returns_id not in await search(
                    replica_stub, internal, "how long is the return window"
                )

            await eventually(replica_forgot)

            async def chat_forgot() -> bool:
                return returns_id not in await chat_cites(chat, me)

            await eventually(chat_forgot)
            listed = await stub.ListDocuments(ListDocumentsRequest(), metadata=me, timeout=30)
            ids = [d.document_id for d in listed.documents]
            assert shipping_id in ids and returns_id not in ids
    finally:
        replica.send_signal(signal.SIGTERM)
        try:
            replica.wait(timeout=15)
        except subprocess.TimeoutExpired:
            replica.kill()
            replica.wait()


@pytest.mark.parametrize(
    ("document", "status", "words"),
    [
        (
            KnowledgeDocument(document_id="empty", content="  ", content_type="text/plain"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "empty",
        ),
        (
            KnowledgeDocument(document_id="odd", content="x", content_type="application/msword"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "not supported",
        ),
        (
            KnowledgeDocument(
                document_id="broken",
                content_bytes=b"%PDF-1.4 garbage",
                content_type="application/pdf",
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "PDF",
        ),
        (
            KnowledgeDocument(
                document_id="big",
                content="word " * (KNOWLEDGE_MAX_DOCUMENT_BYTES // 4),
                content_type="text/plain",
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "limit",
        ),
        (
            KnowledgeDocument(document_id="bad id!", content="x", content_type="text/plain"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "document_id",
        ),
    ],
)
async def test_bad_documents_are_refused_and_nothing_is_written(
    platform: Platform,
    channel: grpc.aio.Channel,
    document: KnowledgeDocument,
    status: grpc.StatusCode,
    words: str,
) -> None:
    stub = KnowledgeServiceStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await upsert(stub, platform.api_key, document)
    assert refused.value.code() == status
    assert words in (refused.value.details() or "")
    listed = await stub.ListDocuments(
        ListDocumentsRequest(page_size=500), metadata=auth(platform.api_key), timeout=30
    )
    assert document.document_id not in [d.document_id for d in listed.documents]


async def test_knowledge_calls_need_a_key(platform: Platform, channel: grpc.aio.Channel) -> None:
    stub = KnowledgeServiceStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.SearchKnowledge(SearchKnowledgeRequest(query="returns"), timeout=30)
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await search(stub, auth("not-a-key"), "returns")
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await search(stub, auth(platform.api_key), " ")
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def run_cli(platform: Platform, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "switchboard.knowledge", *args],
        env={**platform.env},
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        check=False,
    )


async def test_cli_loads_a_folder_names_bad_files_and_the_chat_cites_it(
    platform: Platform, channel: grpc.aio.Channel, tmp_path: Path
) -> None:
    for file in (ROOT / "deploy/local/knowledge/demo").glob("*.md"):
        (tmp_path / file.name).write_text(file.read_text())
    (tmp_path / "broken.pdf").write_bytes(b"%PDF-1.4 not really")
    (tmp_path / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    key = ("--tenant-key", platform.api_key, "--target", platform.gateway_target)
    result = await asyncio.to_thread(run_cli, platform, "ingest", str(tmp_path), "--quiet", *key)
    assert result.returncode == 1, result.stderr
    assert "stored 3, unchanged 0, failed 2" in result.stdout
    assert "broken.pdf: INVALID_ARGUMENT" in result.stdout
    assert "latin1.txt: not UTF-8" in result.stdout
    again = await asyncio.to_thread(run_cli, platform, "ingest", str(tmp_path), "--quiet", *key)
    assert "stored 0, unchanged 3" in again.stdout

    chat = ChatServiceStub(channel)
    events = [
        e
        async for e in chat.Chat(
            ChatRequest(
                message="How long do I have to return these jeans?",
                options=ChatOptions(tier="cheap"),
            ),
            metadata=auth(platform.api_key),
            timeout=60,
        )
    ]
    assert events[-1].WhichOneof("event") == "done", events
    citations = list(events[-1].done.citations)
    assert citations and citations[0].document_id == "returns-policy.md"
    assert citations[0].title == "Returns and refunds policy"
    assert 'According to "Returns and refunds policy"' in text_of(events)
