"""The held-out injection splits through the public API, on the demo tenant.

Each held-out message goes through the gateway like a customer's; the test checks that the
platform blocks exactly what the guardrails block offline on the text the orchestrator sees
(the gateway's redaction first; the classifier reads the embedding of the orchestrator's
redaction of it), and records the figures (recall, benign blocked).
"""

import json
from collections.abc import Callable

import grpc
import pytest

from switchboard.common.redaction import ALL_KINDS, Redactor
from switchboard.common.tenants import TenantConfig, load_seed
from switchboard.embeddings.multilingual import MultilingualEmbedder
from switchboard.gateway.redaction import RequestRedactor
from switchboard.orchestrator.guardrails import InjectionDetector, blocked_topic
from switchboard.orchestrator.guardrails.classifier import InjectionClassifier
from switchboard.orchestrator.settings import OrchestratorSettings
from switchboard.v1.chat_pb2 import ChatOptions, ChatRequest
from switchboard.v1.chat_pb2_grpc import ChatServiceStub

from .conftest import API_KEY, ROOT, Platform

pytestmark = pytest.mark.e2e


def _demo_tenant() -> TenantConfig:
    tenants = load_seed(ROOT / "deploy/local/tenants.yaml", {"SWITCHBOARD_DEV_API_KEY": API_KEY})
    return next(t for t in tenants if t.guardrails.prompt_injection == "block")


@pytest.mark.parametrize(
    ("split", "path"),
    [
        ("heldout", "tests/data/injection_public.jsonl"),
        ("heldout2", "tests/data/injection_more.jsonl"),
        ("heldout3", "tests/data/injection_heldout3.jsonl"),
        ("heldout4", "tests/data/injection_heldout4.jsonl"),
        ("heldout5", "tests/data/injection_heldout5.jsonl"),
    ],
)
async def test_the_held_out_split_through_the_api_is_blocked_as_scored_offline(
    platform: Platform, record_property: Callable[[str, object], None], split: str, path: str
) -> None:
    tenant = _demo_tenant()
    # The detector the platform's orchestrator runs: the rules, and the classifier unless
    # SWITCHBOARD_ORCHESTRATOR_INJECTION_CLASSIFIER turns it off (the services share this env).
    with_classifier = OrchestratorSettings().injection_classifier
    redactor = RequestRedactor()
    classifier = InjectionClassifier()
    detector = InjectionDetector(classifier) if with_classifier else InjectionDetector()
    orchestrator_redactor = Redactor(tenant.guardrails.phone_regions)
    embedder = MultilingualEmbedder()
    rows = [
        json.loads(line)
        for line in (ROOT / path).read_text().splitlines()
        if line.strip() and json.loads(line)["split"] == split
    ]
    outcomes: list[tuple[dict[str, str], bool, bool]] = []
    async with grpc.aio.insecure_channel(platform.gateway_target) as channel:
        stub = ChatServiceStub(channel)
        for row in rows:
            request = ChatRequest(message=row["text"], options=ChatOptions(tier="cheap"))
            events = [
                e
                async for e in stub.Chat(
                    request, metadata=[("authorization", f"Bearer {API_KEY}")], timeout=60
                )
            ]
            assert events[-1].WhichOneof("event") == "done", (row["id"], events[-1])
            reply = "".join(e.delta.text for e in events if e.WhichOneof("event") == "delta")
            # A block by the tenant's blocked topics ("elections" ...) is not an injection
            # verdict: told apart by its refusal text, and checked apart.
            topic = reply.strip() == tenant.guardrails.topic_refusal_message.strip()
            blocked = events[-1].done.finish_reason == "blocked" and not topic
            seen = redactor.chat_request(request, tenant).message
            stored = orchestrator_redactor.redact(seen, ALL_KINDS).text
            vector = (
                embedder.embed_sync([stored])[0]
                if with_classifier and classifier.reads(stored)
                else None
            )
            score = detector.score(seen, vector).score
            expected = score >= tenant.guardrails.injection_threshold
            expected_topic = not expected and bool(
                blocked_topic(seen, tenant.guardrails.blocked_topics)
            )
            assert topic == expected_topic, (row["id"], reply)
            outcomes.append((row, blocked, expected))
    attacks = [(r, b) for r, b, _ in outcomes if r["label"] == "attack"]
    benign = [(r, b) for r, b, _ in outcomes if r["label"] == "benign"]
    recall = sum(b for _, b in attacks) / len(attacks)
    false_blocks = sum(b for _, b in benign) / len(benign)
    record_property(f"{split}_api_recall", f"{recall:.3f}")
    record_property(f"{split}_api_benign_blocked", f"{false_blocks:.3f}")
    print(
        f"{split} through the API: attacks blocked {sum(b for _, b in attacks)}/{len(attacks)}"
        f" ({recall:.1%}), benign blocked {sum(b for _, b in benign)}/{len(benign)}"
        f" ({false_blocks:.1%})"
    )
    assert [r["id"] for r, blocked, expected in outcomes if blocked != expected] == []
