"""The knowledge base over the HTTP door, end to end: a fresh tenant uploads documents (text
and a PDF), finds them by paraphrase, a chat over HTTP cites them, another tenant sees none of
them, a deleted one is gone; bad input and wrong keys are refused in OpenAI's error shape with
nothing written; a gateway whose knowledge service is down answers 503."""

import base64
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest
from openai import AsyncOpenAI

from switchboard.common.tenants import TenantConfig, hash_api_key

from .conftest import (
    E2E_RATE_LIMITS,
    KNOWLEDGE_MAX_DOCUMENT_BYTES,
    LOGS,
    MEMORY_PORT,
    MONGO,
    ROOT,
    WIDGET_KEY,
    Platform,
    _wait_ready,
    seed_tenants,
)
from .private_stack import free_port

pytestmark = pytest.mark.e2e

SECOND_KEY = "sb-second-key"  # the `second` tenant of deploy/local/tenants.yaml

WARRANTY = """# Warranty

## Repairs
Every bicycle frame we sell carries a ten-year guarantee against cracks and breakage. Bring
the frame to any partner workshop; the repair or a replacement frame costs you nothing.

## Exclusions
Damage from racing, crashes or rust is not covered.
"""


def _pdf_with_text(text: str) -> bytes:
    """A minimal one-page PDF with `text` in Helvetica (offsets computed, so it is valid)."""
    stream = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = b"%PDF-1.4\n"
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        xref,
    )
    return out


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=90)) as session:
        yield session


@pytest.fixture
async def fresh_key(platform: Platform) -> str:
    """The key of a tenant made for this test, whose knowledge base starts empty."""
    run = uuid.uuid4().hex[:8]
    key = f"kb-http-{run}-key"
    await seed_tenants(
        platform.database,
        TenantConfig(
            tenant_id=f"kb-http-{run}",
            name="Velo Parts",
            api_key_sha256=[hash_api_key(key)],
            rate_limits=E2E_RATE_LIMITS,
        ),
    )
    return key


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def call(
    http: aiohttp.ClientSession, method: str, url: str, key: str | None, **kwargs: Any
) -> tuple[int, dict[str, Any]]:
    headers = {**(bearer(key) if key else {}), **kwargs.pop("headers", {})}
    async with http.request(method, url, headers=headers, **kwargs) as response:
        return response.status, await response.json()


async def search_ids(http: aiohttp.ClientSession, base: str, key: str, query: str) -> list[str]:
    status, body = await call(
        http, "POST", f"{base}/v1/knowledge/search", key, json={"query": query, "top_k": 3}
    )
    assert status == 200, body
    return [hit["document_id"] for hit in body["data"]]


async def listed_ids(http: aiohttp.ClientSession, base: str, key: str) -> list[str]:
    ids: list[str] = []
    after = ""
    while True:
        params = {"limit": "2", **({"after": after} if after else {})}
        status, page = await call(http, "GET", f"{base}/v1/knowledge/documents", key, params=params)
        assert status == 200, page
        ids += [d["id"] for d in page["data"]]
        if not page["has_more"]:
            return ids
        after = page["last_id"]


async def test_upload_search_cite_isolate_and_delete_over_http(
    platform: Platform, http: aiohttp.ClientSession, fresh_key: str
) -> None:
    base = platform.http_url
    warranty_id = "policies/warranty.md"
    status, stored = await call(
        http,
        "PUT",
        f"{base}/v1/knowledge/documents/{warranty_id}",
        fresh_key,
        json={
            "title": "Frame warranty",
            "content": WARRANTY,
            "content_type": "text/markdown",
            "source_url": "https://velo.example/warranty",
            "metadata": {"team": "support"},
        },
    )
    assert status == 200, stored
    assert stored["id"] == warranty_id and stored["chunks"] >= 1 and not stored["unchanged"]
    # The same document again changes nothing.
    status, again = await call(
        http,
        "PUT",
        f"{base}/v1/knowledge/documents/{warranty_id}",
        fresh_key,
        json={
            "title": "Frame warranty",
            "content": WARRANTY,
            "content_type": "text/markdown",
            "source_url": "https://velo.example/warranty",
            "metadata": {"team": "support"},
        },
    )
    assert (status, again["unchanged"], again["version"]) == (200, True, stored["version"])
    # A PDF, base64-encoded, with its id in the body.
    pdf = _pdf_with_text("Tyres are shipped within two working days from our Lyon depot.")
    status, body = await call(
        http,
        "POST",
        f"{base}/v1/knowledge/documents",
        fresh_key,
        json={
            "document_id": "tyres.pdf",
            "title": "Tyre shipping",
            "content_base64": base64.b64encode(pdf).decode(),
            "content_type": "application/pdf",
        },
    )
    assert status == 200, body

    assert await listed_ids(http, base, fresh_key) == [warranty_id, "tyres.pdf"]
    # Paraphrases with little word overlap.
    assert (await search_ids(http, base, fresh_key, "my bike frame snapped, do I pay to fix it?"))[
        0
    ] == warranty_id
    assert (await search_ids(http, base, fresh_key, "how quickly do tires get sent out"))[
        0
    ] == "tyres.pdf"
    assert await search_ids(http, base, fresh_key, "Who painted the Mona Lisa?") == []

    # A chat over HTTP cites the document.
    async with AsyncOpenAI(
        base_url=f"{base}/v1", api_key=fresh_key, max_retries=0, timeout=60
    ) as client:
        reply = await client.chat.completions.create(
            model="cheap",
            messages=[{"role": "user", "content": "My bicycle frame cracked. Is the repair free?"}],
        )
        extension = (reply.model_extra or {})["switchboard"]
        assert [c["document_id"] for c in extension["citations"]][:1] == [warranty_id]
        assert extension["citations"][0]["title"] == "Frame warranty"
        assert extension["citations"][0]["source_url"] == "https://velo.example/warranty"
        assert 'According to "Frame warranty"' in (reply.choices[0].message.content or "")

        # The second tenant sees none of it, and cannot delete it.
        assert (
            await search_ids(http, base, SECOND_KEY, "is a cracked frame repaired for free") == []
        )
        assert warranty_id not in await listed_ids(http, base, SECOND_KEY)
        status, error = await call(
            http, "DELETE", f"{base}/v1/knowledge/documents/{warranty_id}", SECOND_KEY
        )
        assert (status, error["error"]["code"]) == (404, "not_found")

        # Deleted: gone from search, the list and the next chat's citations.
        status, deleted = await call(
            http, "DELETE", f"{base}/v1/knowledge/documents/{warranty_id}", fresh_key
        )
        assert (status, deleted) == (
            200,
            {"id": warranty_id, "object": "knowledge.document.deleted", "deleted": True},
        )
        assert warranty_id not in await search_ids(
            http, base, fresh_key, "is a cracked frame repaired for free"
        )
        assert await listed_ids(http, base, fresh_key) == ["tyres.pdf"]
        reply = await client.chat.completions.create(
            model="cheap",
            messages=[{"role": "user", "content": "My bike frame broke. Do you repair it free?"}],
        )
        cited = [c["document_id"] for c in (reply.model_extra or {})["switchboard"]["citations"]]
        assert warranty_id not in cited
        status, error = await call(
            http, "DELETE", f"{base}/v1/knowledge/documents/{warranty_id}", fresh_key
        )
        assert status == 404


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status", "code", "param"),
    [
        ("PUT", "/documents/bad-json.md", {"data": b'{"content": '}, 400, "invalid_json", None),
        (
            "POST",
            "/documents",
            {"json": {"content": "no id", "content_type": "text/plain"}},
            400,
            "invalid_value",
            "document_id",
        ),
        ("POST", "/search", {"json": {"top_k": 3}}, 400, "invalid_value", "query"),
        (
            "PUT",
            "/documents/empty.txt",
            {"json": {"content": "  ", "content_type": "text/plain"}},
            400,
            "invalid_value",
            "content",
        ),
        (
            "PUT",
            "/documents/big.txt",
            {
                "json": {
                    "content": "word " * (KNOWLEDGE_MAX_DOCUMENT_BYTES // 4),
                    "content_type": "text/plain",
                }
            },
            413,
            "request_too_large",
            "content",
        ),
        (
            "PUT",
            "/documents/odd.doc",
            {"json": {"content": "x", "content_type": "application/msword"}},
            400,
            "invalid_value",
            "content_type",
        ),
        (
            "PUT",
            "/documents/broken.pdf",
            {
                "json": {
                    "content_base64": base64.b64encode(b"%PDF-1.4 garbage").decode(),
                    "content_type": "application/pdf",
                }
            },
            400,
            "invalid_value",
            "content_base64",
        ),
        (
            "PUT",
            "/documents/bad id!",
            {"json": {"content": "x", "content_type": "text/plain"}},
            400,
            "invalid_value",
            "document_id",
        ),
        ("GET", "/documents?limit=0", {}, 400, "invalid_value", "limit"),
        ("DELETE", "/documents/never-stored.md", {}, 404, "not_found", None),
    ],
)
async def test_bad_requests_are_refused_naming_the_field_and_nothing_is_written(
    platform: Platform,
    http: aiohttp.ClientSession,
    fresh_key: str,
    method: str,
    path: str,
    kwargs: dict[str, Any],
    status: int,
    code: str,
    param: str | None,
) -> None:
    answer, body = await call(
        http, method, f"{platform.http_url}/v1/knowledge{path}", fresh_key, **kwargs
    )
    assert answer == status, body
    assert set(body["error"]) == {"message", "type", "code", "param"}
    assert (body["error"]["code"], body["error"]["param"]) == (code, param)
    assert await listed_ids(http, platform.http_url, fresh_key) == []


async def test_only_a_servers_secret_key_may_use_the_knowledge_base(
    platform: Platform, http: aiohttp.ClientSession
) -> None:
    url = f"{platform.http_url}/v1/knowledge/search"
    for key, headers, status, code in (
        (None, {}, 401, "invalid_api_key"),
        ("not-a-key", {}, 401, "invalid_api_key"),
        (WIDGET_KEY, {"Origin": platform.http_url}, 403, "publishable_key_not_allowed"),
        (WIDGET_KEY, {}, 403, "publishable_key_not_allowed"),
        (platform.api_key, {"Origin": platform.http_url}, 403, "secret_key_in_browser"),
    ):
        answer, body = await call(
            http, "POST", url, key, json={"query": "returns"}, headers=headers
        )
        assert (answer, body["error"]["code"]) == (status, code), (key, headers)


@pytest.fixture
def gateway_without_knowledge(platform: Platform) -> Iterator[str]:
    """A second gateway replica pointed at a knowledge service that does not run; its URL."""
    http_port, health_port = free_port(), free_port()
    log = LOGS / "gateway-no-knowledge.log"
    process = subprocess.Popen(
        [sys.executable, "-m", "switchboard.gateway"],
        env={
            **platform.env,
            "SWITCHBOARD_GATEWAY_GRPC_PORT": str(free_port()),
            "SWITCHBOARD_GATEWAY_HTTP_PORT": str(http_port),
            "SWITCHBOARD_GATEWAY_INSTANCE_ID": f"e2e-{platform.run_id}-no-knowledge",
            "SWITCHBOARD_GATEWAY_MEMORY_TARGET": f"127.0.0.1:{MEMORY_PORT}",
            "SWITCHBOARD_GATEWAY_KNOWLEDGE_TARGET": f"127.0.0.1:{free_port()}",
            "SWITCHBOARD_MONGO_URL": MONGO,
            "SWITCHBOARD_MONGO_DATABASE": platform.database,
            "SWITCHBOARD_HEALTH_PORT": str(health_port),
        },
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        cwd=ROOT,
    )
    try:
        _wait_ready("gateway", f"http://127.0.0.1:{health_port}/readyz", process, log)
        yield f"http://127.0.0.1:{http_port}"
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


async def test_a_gateway_whose_knowledge_service_is_down_answers_503(
    platform: Platform, http: aiohttp.ClientSession, gateway_without_knowledge: str
) -> None:
    for method, path, body in (
        ("POST", "/v1/knowledge/search", {"query": "returns"}),
        ("GET", "/v1/knowledge/documents", None),
        ("PUT", "/v1/knowledge/documents/a.md", {"content": "x", "content_type": "text/plain"}),
    ):
        status, error = await call(
            http, method, gateway_without_knowledge + path, platform.api_key, json=body
        )
        assert status == 503, error
        assert (error["error"]["type"], error["error"]["code"]) == (
            "server_error",
            "service_unavailable",
        )
