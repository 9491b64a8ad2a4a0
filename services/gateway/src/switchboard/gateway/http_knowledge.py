"""`/v1/knowledge/...`: the knowledge base over HTTP, the same four calls as gRPC
`switchboard.v1.KnowledgeService`, through the gateway's own forwarder (knowledge.py).

Secret keys only (a publishable widget key is refused: a browser must not edit or read the
knowledge base); the tenant comes from the key. The knowledge service validates, exactly as for
gRPC; this module only checks JSON types and translates its statuses to OpenAI-shaped errors:
a 400 names the field, a document over the size limit is a 413, an unreachable service a 503.
"""

import base64
import binascii
from typing import Any

import grpc
from aiohttp import web

from switchboard.gateway.http_auth import HttpAuth
from switchboard.gateway.http_common import parse_json_object, read_json
from switchboard.gateway.knowledge import KnowledgeCallError, KnowledgeForwarder
from switchboard.gateway.openai_shapes import ApiError, api_error, invalid
from switchboard.v1.knowledge_pb2 import (
    DeleteDocumentRequest,
    DocumentInfo,
    KnowledgeDocument,
    KnowledgeHit,
    ListDocumentsRequest,
    SearchKnowledgeRequest,
    UpsertDocumentRequest,
)

# The fields of a document body; anything else is refused (a typo such as "text" would
# otherwise read as an empty document).
DOCUMENT_FIELDS = frozenset(
    ("document_id", "title", "content", "content_base64", "content_type", "source_url", "metadata")
)
# The knowledge service's INVALID_ARGUMENT messages begin with the field they are about
# (knowledge/documents.py, ingest.py); those about the content name no field.
_MESSAGE_FIELDS = (
    ("document_id", "document_id"),
    ("title", "title"),
    ("source_url", "source_url"),
    ("metadata", "metadata"),
    ("content_type", "content_type"),
    ("query", "query"),
    ("page_token", "after"),
)
# How the service words a size limit ("more than the limit of N"): that is a 413.
_OVER_LIMIT = "more than the limit"


def knowledge_error(exc: KnowledgeCallError, content_param: str = "content") -> ApiError:
    """The knowledge service's refusal as an HTTP error naming the field."""
    if exc.code != grpc.StatusCode.INVALID_ARGUMENT:
        return api_error(exc.code, exc.message)
    if _OVER_LIMIT in exc.message:
        return ApiError(413, exc.message, code="request_too_large", param=content_param)
    for prefix, param in _MESSAGE_FIELDS:
        if exc.message.startswith(prefix):
            return invalid(param, exc.message)
    return invalid(content_param, exc.message)


def _string(body: dict[str, Any], name: str) -> str:
    value = body.get(name, "")
    if value is None:
        return ""
    if not isinstance(value, str):
        raise invalid(name, f"{name} must be a string")
    return value


def document_of(body: dict[str, Any], document_id: str | None) -> KnowledgeDocument:
    """A document body as the gRPC message; `document_id` from the path, if there."""
    unknown = sorted(set(body) - DOCUMENT_FIELDS)
    if unknown:
        raise invalid(
            unknown[0],
            f"unknown field {unknown[0]!r}; a document has {', '.join(sorted(DOCUMENT_FIELDS))}",
        )
    in_body = _string(body, "document_id")
    if document_id is None:
        if not in_body:
            raise invalid("document_id", "document_id is required")
        document_id = in_body
    elif in_body and in_body != document_id:
        raise invalid("document_id", "document_id in the body differs from the one in the path")
    metadata = body.get("metadata") or {}
    if not isinstance(metadata, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
    ):
        raise invalid("metadata", "metadata must be an object of string values")
    content = _string(body, "content")
    encoded = _string(body, "content_base64")
    if content and encoded:
        raise invalid("content_base64", "send content (text) or content_base64 (a PDF), not both")
    try:
        data = base64.b64decode(encoded, validate=True) if encoded else b""
    except (binascii.Error, ValueError):
        raise invalid("content_base64", "content_base64 is not valid base64") from None
    return KnowledgeDocument(
        document_id=document_id,
        title=_string(body, "title"),
        content=content,
        content_bytes=data,
        content_type=_string(body, "content_type"),
        source_url=_string(body, "source_url"),
        metadata=metadata,
    )


def _document_object(info: DocumentInfo) -> dict[str, Any]:
    return {
        "object": "knowledge.document",
        "id": info.document_id,
        "title": info.title,
        "source_url": info.source_url,
        "content_type": info.content_type,
        "metadata": dict(info.metadata),
        "chunks": info.chunks,
        "version": info.version,
        "updated_at": info.updated_at.seconds,
    }


def _hit_object(hit: KnowledgeHit) -> dict[str, Any]:
    return {
        "object": "knowledge.hit",
        "document_id": hit.document_id,
        "title": hit.title,
        "source_url": hit.source_url,
        "heading": hit.heading,
        "snippet": hit.snippet,
        "text": hit.text,
        "score": hit.score,
        "similarity": hit.similarity,
        "chunk_id": hit.chunk_id,
    }


def _positive_int(value: Any, name: str) -> int:
    """A count the service cuts to its own maximum (so only the uint32 range matters here)."""
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise invalid(name, f"{name} must be a positive integer")
    return min(value, 2**32 - 1)


class KnowledgeRoutes:
    """Upsert, delete, list and search the caller's knowledge base."""

    def __init__(self, auth: HttpAuth, knowledge: KnowledgeForwarder) -> None:
        self._auth = auth
        self._knowledge = knowledge
        self._max_body_bytes = knowledge.settings.http_max_body_bytes

    def add_routes(self, router: web.UrlDispatcher) -> None:
        # Document ids may hold slashes ("policies/returns.md"): the id is the rest of the path.
        router.add_put("/v1/knowledge/documents/{document_id:.+}", self._upsert)
        router.add_post("/v1/knowledge/documents", self._upsert)
        router.add_delete("/v1/knowledge/documents/{document_id:.+}", self._delete)
        router.add_get("/v1/knowledge/documents", self._list)
        router.add_post("/v1/knowledge/search", self._search)

    async def _tenant_id(self, request: web.Request) -> str:
        caller = await self._auth.caller(request, browser_ok=False)
        return caller.tenant.tenant_id

    async def _document_body(self, request: web.Request) -> dict[str, Any]:
        """The body under the upload limit, which is larger than the rest of the API's: the
        app's `client_max_size` only bounds `request.read()`, so the stream is read here."""
        too_large = ApiError(
            413,
            f"the request body is larger than {self._max_body_bytes} bytes",
            code="request_too_large",
        )
        if (request.content_length or 0) > self._max_body_bytes:
            raise too_large
        raw = bytearray()
        async for data in request.content.iter_chunked(64 * 1024):
            raw += data
            if len(raw) > self._max_body_bytes:
                raise too_large
        return parse_json_object(bytes(raw))

    async def _upsert(self, request: web.Request) -> web.Response:
        tenant_id = await self._tenant_id(request)
        body = await self._document_body(request)
        document = document_of(body, request.match_info.get("document_id"))
        content_param = "content_base64" if document.content_bytes else "content"
        try:
            outcome = await self._knowledge.upsert_document(
                tenant_id, UpsertDocumentRequest(document=document)
            )
        except KnowledgeCallError as exc:
            raise knowledge_error(exc, content_param) from None
        return web.json_response(
            {
                "object": "knowledge.document",
                "id": outcome.document_id,
                "chunks": outcome.chunks,
                "version": outcome.version,
                "unchanged": outcome.unchanged,
                "redacted": list(outcome.redacted),
            }
        )

    async def _delete(self, request: web.Request) -> web.Response:
        tenant_id = await self._tenant_id(request)
        document_id = request.match_info["document_id"]
        try:
            await self._knowledge.delete_document(
                tenant_id, DeleteDocumentRequest(document_id=document_id)
            )
        except KnowledgeCallError as exc:
            raise knowledge_error(exc) from None
        return web.json_response(
            {"id": document_id, "object": "knowledge.document.deleted", "deleted": True}
        )

    async def _list(self, request: web.Request) -> web.Response:
        tenant_id = await self._tenant_id(request)
        limit = 0  # the service's default page size
        if "limit" in request.query:
            try:
                limit = _positive_int(int(request.query["limit"]), "limit")
            except ValueError:
                raise invalid("limit", "limit must be a positive integer") from None
        after = request.query.get("after", "")
        try:
            page = await self._knowledge.list_documents(
                tenant_id, ListDocumentsRequest(page_size=limit, page_token=after)
            )
        except KnowledgeCallError as exc:
            raise knowledge_error(exc) from None
        data = [_document_object(info) for info in page.documents]
        return web.json_response(
            {
                "object": "list",
                "data": data,
                "first_id": data[0]["id"] if data else None,
                "last_id": data[-1]["id"] if data else None,
                "has_more": bool(page.next_page_token),
            }
        )

    async def _search(self, request: web.Request) -> web.Response:
        tenant_id = await self._tenant_id(request)
        body = await read_json(request)
        query = body.get("query")
        if not isinstance(query, str):
            raise invalid("query", "query is required: the question to search for")
        top_k = body.get("top_k")
        search = SearchKnowledgeRequest(
            query=query, top_k=0 if top_k is None else _positive_int(top_k, "top_k")
        )
        try:
            found = await self._knowledge.search(tenant_id, search)
        except KnowledgeCallError as exc:
            raise knowledge_error(exc) from None
        return web.json_response({"object": "list", "data": [_hit_object(h) for h in found.hits]})
