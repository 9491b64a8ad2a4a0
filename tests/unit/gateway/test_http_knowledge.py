"""The knowledge base over HTTP: a real aiohttp server and the gateway's real forwarder, in
front of a fake knowledge service on a real gRPC server."""

import base64
import json
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest
from aiohttp.test_utils import TestClient, TestServer

from switchboard.common.tenants import TenantConfig
from switchboard.gateway.auth import TenantAuthenticator
from switchboard.gateway.browser import BrowserSessions
from switchboard.gateway.core import ChatCore
from switchboard.gateway.directory import MemoryBackedDirectory
from switchboard.gateway.http_edge import HttpEdge
from switchboard.gateway.knowledge import KnowledgeClientSettings, KnowledgeForwarder
from switchboard.gateway.openai_shapes import Reply
from switchboard.gateway.replies import ReplyRouter
from switchboard.gateway.validation import ChatLimits
from switchboard.v1 import knowledge_pb2_grpc
from switchboard.v1.chat_pb2 import ChatEvent, Citation, Done
from switchboard.v1.knowledge_pb2 import (
    DeleteDocumentRequest,
    DeleteDocumentResponse,
    DocumentInfo,
    KnowledgeHit,
    ListDocumentsRequest,
    ListDocumentsResponse,
    SearchKnowledgeRequest,
    SearchKnowledgeResponse,
    UpsertDocumentRequest,
    UpsertDocumentResponse,
)

from .fakes import (
    FakeConversationMarkers,
    FakeConversationReader,
    FakeDirectory,
    FakeLocks,
    FakeQuotas,
    MemoryRequestStore,
    ScriptedPublisher,
    SequentialAdmission,
)

AUTH = {"Authorization": "Bearer k"}
DOC = {"title": "Returns", "content": "# Returns\nWithin 30 days.", "content_type": "text/markdown"}


def _tenant(context: grpc.aio.ServicerContext[Any, Any]) -> str:
    for key, value in context.invocation_metadata() or ():
        if key == "sb-tenant-id":
            return str(value)
    return ""


@dataclass
class FakeKnowledge(knowledge_pb2_grpc.KnowledgeServiceServicer):
    """Answers like the knowledge service, refusing what it would refuse; records calls."""

    calls: list[tuple[str, Any]] = field(default_factory=list)

    async def UpsertDocument(
        self, request: UpsertDocumentRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> UpsertDocumentResponse:
        self.calls.append((_tenant(context), request))
        document = request.document
        if document.content == "big":
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                "the document has 9000 bytes, more than the limit of 10",
            )
        if document.content_type == "application/msword":
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                "content_type 'application/msword' is not supported (use text/plain, ...)",
            )
        if document.content_type == "application/pdf" and not document.content_bytes.startswith(
            b"%PDF"
        ):
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, "content_bytes is not a PDF (no %PDF header)"
            )
        return UpsertDocumentResponse(document_id=document.document_id, chunks=2, version=1)

    async def DeleteDocument(
        self, request: DeleteDocumentRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> DeleteDocumentResponse:
        self.calls.append((_tenant(context), request))
        if request.document_id != "known.md":
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no document {request.document_id!r}")
        return DeleteDocumentResponse(document_id=request.document_id)

    async def ListDocuments(
        self, request: ListDocumentsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> ListDocumentsResponse:
        self.calls.append((_tenant(context), request))
        ids = [f"doc-{n}" for n in range(5) if f"doc-{n}" > request.page_token]
        size = request.page_size or 50
        page = [DocumentInfo(document_id=i, title=i.upper(), chunks=1) for i in ids[:size]]
        more = len(ids) > size
        return ListDocumentsResponse(
            documents=page, next_page_token=page[-1].document_id if more else ""
        )

    async def SearchKnowledge(
        self, request: SearchKnowledgeRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> SearchKnowledgeResponse:
        self.calls.append((_tenant(context), request))
        if not request.query.strip():
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "query is empty")
        return SearchKnowledgeResponse(
            hits=[
                KnowledgeHit(
                    document_id="returns.md",
                    title="Returns",
                    snippet="Within 30 days.",
                    score=0.03,
                    similarity=0.61,
                    heading="Returns",
                    chunk_id="c1",
                    text="Within 30 days.",
                )
            ]
        )


@dataclass
class Door:
    client: TestClient[Any, Any]
    knowledge: FakeKnowledge


def _core() -> ChatCore:
    router = ReplyRouter(16)
    requests = MemoryRequestStore()
    directory = MemoryBackedDirectory(
        FakeConversationMarkers(), FakeConversationReader(), timeout_s=1.0
    )
    return ChatCore(
        authenticator=TenantAuthenticator(FakeDirectory({"k": TenantConfig(tenant_id="acme")})),
        limits=ChatLimits(100, 10, 4, 1000),
        admission=SequentialAdmission(FakeQuotas(), requests, FakeLocks(), directory),
        requests=requests,
        owner_alive=_alive,
        publisher=ScriptedPublisher(router),
        conversation_directory=directory,
        router=router,
        reply_topic="chat.replies.test",
        reply_idle_timeout_s=2.0,
    )


async def _alive(_: str) -> bool:
    return True


class NoPublishableKeys:
    async def by_publishable_key(self, key: str) -> TenantConfig | None:
        return None


async def _door(target: str) -> tuple[TestClient[Any, Any], KnowledgeForwarder]:
    forwarder = KnowledgeForwarder(
        TenantAuthenticator(FakeDirectory({})),
        KnowledgeClientSettings(target=target, timeout_s=5, http_max_body_bytes=2048),
    )
    app = HttpEdge(
        core=_core(),
        conversations=None,
        publishable_keys=NoPublishableKeys(),
        sessions=BrowserSessions(None, 60),  # type: ignore[arg-type]  # no browser calls here
        max_body_bytes=1024,
        knowledge=forwarder,
    ).app()
    client: TestClient[Any, Any] = TestClient(TestServer(app))
    await client.start_server()
    return client, forwarder


@pytest.fixture
async def door() -> AsyncIterator[Door]:
    knowledge = FakeKnowledge()
    server = grpc.aio.server()
    knowledge_pb2_grpc.add_KnowledgeServiceServicer_to_server(knowledge, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    client, forwarder = await _door(f"127.0.0.1:{port}")
    try:
        yield Door(client, knowledge)
    finally:
        await client.close()
        await forwarder.close()
        await server.stop(0)


async def _error(response: Any) -> dict[str, Any]:
    body = await response.json()
    assert set(body["error"]) == {"message", "type", "code", "param"}
    error: dict[str, Any] = body["error"]
    return error


async def test_upsert_forwards_the_document_with_the_keys_tenant(door: Door) -> None:
    response = await door.client.put(
        "/v1/knowledge/documents/policies/returns.md",
        json={**DOC, "source_url": "https://example.com/r", "metadata": {"lang": "en"}},
        headers=AUTH,
    )
    assert response.status == 200
    assert await response.json() == {
        "object": "knowledge.document",
        "id": "policies/returns.md",
        "chunks": 2,
        "version": 1,
        "unchanged": False,
        "redacted": [],
    }
    tenant, request = door.knowledge.calls[-1]
    assert tenant == "acme"
    document = request.document
    assert (document.document_id, document.title, document.content_type) == (
        "policies/returns.md",
        "Returns",
        "text/markdown",
    )
    assert document.source_url == "https://example.com/r" and dict(document.metadata) == {
        "lang": "en"
    }


async def test_a_pdf_travels_base64_encoded_with_the_id_in_the_body(door: Door) -> None:
    pdf = b"%PDF-1.4 fake"
    response = await door.client.post(
        "/v1/knowledge/documents",
        json={
            "document_id": "guide.pdf",
            "content_base64": base64.b64encode(pdf).decode(),
            "content_type": "application/pdf",
        },
        headers=AUTH,
    )
    assert response.status == 200
    document = door.knowledge.calls[-1][1].document
    assert (document.document_id, document.content_bytes, document.content) == (
        "guide.pdf",
        pdf,
        "",
    )


@pytest.mark.parametrize(
    ("path", "body", "status", "code", "param"),
    [
        ("/v1/knowledge/documents/a.md", b"{", 400, "invalid_json", None),
        ("/v1/knowledge/documents", json.dumps(DOC), 400, "invalid_value", "document_id"),
        ("/v1/knowledge/documents/a.md", json.dumps({**DOC, "text": "x"}), 400, None, "text"),
        (
            "/v1/knowledge/documents/a.md",
            json.dumps({**DOC, "document_id": "b.md"}),
            400,
            "invalid_value",
            "document_id",
        ),
        (
            "/v1/knowledge/documents/a.md",
            json.dumps({**DOC, "metadata": {"n": 1}}),
            400,
            "invalid_value",
            "metadata",
        ),
        ("/v1/knowledge/documents/a.md", json.dumps({**DOC, "title": 3}), 400, None, "title"),
        (
            "/v1/knowledge/documents/a.pdf",
            json.dumps({"content_base64": "%%%", "content_type": "application/pdf"}),
            400,
            "invalid_value",
            "content_base64",
        ),
        (
            "/v1/knowledge/documents/a.pdf",
            json.dumps(
                {
                    "content_base64": base64.b64encode(b"nope").decode(),
                    "content_type": "application/pdf",
                }
            ),
            400,
            "invalid_value",
            "content_base64",
        ),
        # Refused by the knowledge service: the message's field becomes `param`.
        (
            "/v1/knowledge/documents/a.doc",
            json.dumps({"content": "x", "content_type": "application/msword"}),
            400,
            "invalid_value",
            "content_type",
        ),
        (
            "/v1/knowledge/documents/a.txt",
            json.dumps({"content": "big", "content_type": "text/plain"}),
            413,
            "request_too_large",
            "content",
        ),
        # Over the upload limit of the HTTP door itself (2048 bytes here).
        (
            "/v1/knowledge/documents/a.txt",
            json.dumps({"content": "x" * 3000, "content_type": "text/plain"}),
            413,
            "request_too_large",
            None,
        ),
    ],
)
async def test_bad_documents_get_an_error_naming_the_field(
    door: Door, path: str, body: str | bytes, status: int, code: str | None, param: str | None
) -> None:
    method = door.client.post if path == "/v1/knowledge/documents" else door.client.put
    response = await method(path, data=body, headers=AUTH)
    assert response.status == status
    error = await _error(response)
    assert error["param"] == param
    if code is not None:
        assert error["code"] == code


async def test_documents_larger_than_the_chat_limit_are_accepted_up_to_their_own(
    door: Door,
) -> None:
    # 1024 bytes is the door's body limit for chat, 2048 the upload limit.
    body = {"content": "word " * 300, "content_type": "text/plain"}
    response = await door.client.put("/v1/knowledge/documents/long.txt", json=body, headers=AUTH)
    assert response.status == 200, await response.text()


@pytest.mark.parametrize(
    ("headers", "status", "code"),
    [
        ({}, 401, "invalid_api_key"),
        ({"Authorization": "Bearer nope"}, 401, "invalid_api_key"),
        ({"Authorization": "Bearer pk-demo-widget"}, 403, "publishable_key_not_allowed"),
        ({**AUTH, "Origin": "http://shop.example"}, 403, "secret_key_in_browser"),
    ],
)
async def test_only_secret_keys_from_servers_may_call(
    door: Door, headers: dict[str, str], status: int, code: str
) -> None:
    for response in (
        await door.client.put("/v1/knowledge/documents/a.md", json=DOC, headers=headers),
        await door.client.post("/v1/knowledge/search", json={"query": "q"}, headers=headers),
        await door.client.get("/v1/knowledge/documents", headers=headers),
        await door.client.delete("/v1/knowledge/documents/known.md", headers=headers),
    ):
        assert response.status == status
        assert (await _error(response))["code"] == code
    assert door.knowledge.calls == []


async def test_delete_answers_404_for_a_document_the_tenant_does_not_have(door: Door) -> None:
    response = await door.client.delete("/v1/knowledge/documents/known.md", headers=AUTH)
    assert response.status == 200
    assert await response.json() == {
        "id": "known.md",
        "object": "knowledge.document.deleted",
        "deleted": True,
    }
    response = await door.client.delete("/v1/knowledge/documents/dir/other.md", headers=AUTH)
    assert response.status == 404
    assert (await _error(response))["code"] == "not_found"
    assert door.knowledge.calls[-1] == ("acme", DeleteDocumentRequest(document_id="dir/other.md"))


async def test_list_pages_with_limit_and_after(door: Door) -> None:
    response = await door.client.get("/v1/knowledge/documents?limit=2", headers=AUTH)
    page = await response.json()
    assert [d["id"] for d in page["data"]] == ["doc-0", "doc-1"]
    assert (page["first_id"], page["last_id"], page["has_more"]) == ("doc-0", "doc-1", True)
    assert page["data"][0]["object"] == "knowledge.document"
    response = await door.client.get(
        "/v1/knowledge/documents", params={"limit": "2", "after": page["last_id"]}, headers=AUTH
    )
    page = await response.json()
    assert [d["id"] for d in page["data"]] == ["doc-2", "doc-3"]
    response = await door.client.get("/v1/knowledge/documents?after=doc-3", headers=AUTH)
    page = await response.json()
    assert ([d["id"] for d in page["data"]], page["has_more"]) == (["doc-4"], False)
    for bad in ("0", "-1", "x"):
        response = await door.client.get(f"/v1/knowledge/documents?limit={bad}", headers=AUTH)
        assert response.status == 400
        assert (await _error(response))["param"] == "limit"


async def test_search_returns_hits_and_names_bad_fields(door: Door) -> None:
    response = await door.client.post(
        "/v1/knowledge/search", json={"query": "refund window", "top_k": 2}, headers=AUTH
    )
    assert response.status == 200
    hits = (await response.json())["data"]
    assert hits[0]["document_id"] == "returns.md" and hits[0]["similarity"] == 0.61
    assert set(hits[0]) >= {"title", "source_url", "snippet", "score", "heading", "text"}
    assert door.knowledge.calls[-1] == (
        "acme",
        SearchKnowledgeRequest(query="refund window", top_k=2),
    )
    for body, param in (
        ({}, "query"),
        ({"query": 5}, "query"),
        ({"query": "  "}, "query"),  # refused by the service
        ({"query": "q", "top_k": 0}, "top_k"),
        ({"query": "q", "top_k": "3"}, "top_k"),
    ):
        response = await door.client.post("/v1/knowledge/search", json=body, headers=AUTH)
        assert response.status == 400, body
        assert (await _error(response))["param"] == param


async def test_an_unreachable_knowledge_service_is_503() -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client, forwarder = await _door(f"127.0.0.1:{port}")
    try:
        response = await client.post("/v1/knowledge/search", json={"query": "q"}, headers=AUTH)
        assert response.status == 503
        error = await _error(response)
        assert (error["type"], error["code"]) == ("server_error", "service_unavailable")
    finally:
        await client.close()
        await forwarder.close()


def test_a_reply_carries_the_citations_of_its_done_event() -> None:
    reply = Reply()
    citation = Citation(document_id="returns.md", title="Returns", source_url="", snippet="30 d")
    extension = reply.apply(ChatEvent(done=Done(model="m", citations=[citation])))
    expected = [
        {"document_id": "returns.md", "title": "Returns", "source_url": "", "snippet": "30 d"}
    ]
    assert extension is not None and extension["citations"] == expected
    assert reply.extension()["citations"] == expected
