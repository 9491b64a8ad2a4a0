"""The learned router: data, determinism, explanations, operating points, fallback, retraining."""

import hashlib
import json
import logging
import zlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import REGISTRY

from switchboard.embeddings.local import local_encoder
from switchboard.orchestrator import router_training as rt
from switchboard.orchestrator.learned_router import (
    DEFAULT_ARTIFACT,
    EmbeddingSpec,
    LearnedClassifier,
    RouterModel,
    SentenceEncoder,
    TenantRouters,
    bundled_encoder,
    load_router,
)
from switchboard.orchestrator.router import CHEAP, FRONTIER, ComplexityClassifier, choose_route
from switchboard.orchestrator.router_signals import TurnRecord, label_turns, records_of

DATA = Path(__file__).parents[2] / "data"
# The held-out split is frozen: it was written before any training and is never tuned on.
HOLDOUT_SHA256 = "2dfee4dc14b4e70cf864a12f729d1890527ad74f2d227b455fc4da395f4eb4f3"


class BagOfWords:
    """A fast, deterministic stand-in for the sentence encoder: hashed words, normalised,
    so that texts sharing words are close (enough to test training and retraining)."""

    name = "test:bag-of-words"

    def encode(
        self,
        texts: Sequence[str],
        batch_size: int = 32,
        layers: int | None = None,
        max_tokens: int | None = None,
        weights: str = "float32",
    ) -> np.ndarray:
        out = np.zeros((len(texts), 64), dtype=np.float32)
        for i, text in enumerate(texts):
            for word in text.lower().split():
                out[i, zlib.crc32(word.strip("?!.,").encode()) % 64] += 1.0
        norms = np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
        result: np.ndarray = out / norms
        return result


SPEC = EmbeddingSpec(BagOfWords.name, None, 48)


def examples(*rows: tuple[str, str]) -> list[rt.Example]:
    return [
        rt.Example(id=f"t{i}", text=text, expected=label) for i, (text, label) in enumerate(rows)
    ]


BASE = examples(
    ("Where is my order?", CHEAP),
    ("What are your opening hours?", CHEAP),
    ("How do I reset my password?", CHEAP),
    ("Can I pay by card?", CHEAP),
    ("thanks, bye", CHEAP),
    ("Do you deliver on Sundays?", CHEAP),
    ("How do I update my address?", CHEAP),
    ("Is the shop open today?", CHEAP),
    ("Why was I charged twice for the same order?", FRONTIER),
    ("My router still drops the connection after I restarted it three times", FRONTIER),
    ("Should I fix my mortgage rate or stay on the tracker?", FRONTIER),
    ("Compare the unlimited plan with the 30GB plan over two years", FRONTIER),
    ("I want compensation for the cancelled flight, what are my rights?", FRONTIER),
    ("The API returns error 500 with a traceback since the update", FRONTIER),
)


def counter(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


# ---- data -----------------------------------------------------------------------------


def test_the_held_out_split_is_frozen() -> None:
    digest = hashlib.sha256((DATA / "router_holdout.jsonl").read_bytes()).hexdigest()
    assert digest == HOLDOUT_SHA256, "router_holdout.jsonl changed: it must stay frozen"


def test_the_data_covers_industries_languages_and_hard_cases() -> None:
    pool = rt.load_examples(DATA / "router_train.jsonl")
    holdout = rt.load_examples(DATA / "router_holdout.jsonl")
    for rows in (pool, holdout):
        assert len({e.meta["industry"] for e in rows}) == 7
        assert len({e.meta["language"] for e in rows}) >= 6
        kinds = Counter(e.meta["kind"] for e in rows)
        assert {"short-complex", "long-simple", "multi-question", "followup"} <= set(kinds)
        assert any(e.history for e in rows)
        assert {e.expected for e in rows} == {CHEAP, FRONTIER}
    assert len(pool) + len(holdout) >= 400
    training_texts = {e.text.lower() for e in pool}
    assert not training_texts & {e.text.lower() for e in holdout}


def test_a_malformed_row_is_named(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"_header": "x"}\n{"text": "hi", "expected": "maybe"}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:2: needs 'text' and 'expected'"):
        rt.load_examples(path)


def _write(path: Path, rows: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


# ---- training -------------------------------------------------------------------------


def test_training_is_deterministic() -> None:
    first, oof_first = rt.train(BASE, BagOfWords(), SPEC, l2=1.0)
    second, oof_second = rt.train(BASE, BagOfWords(), SPEC, l2=1.0)
    assert first.to_json() == second.to_json()
    assert np.array_equal(oof_first, oof_second)
    assert first.version.startswith("router-")


def test_the_model_separates_its_training_data_and_calibrates_a_threshold() -> None:
    model, _ = rt.train(BASE, BagOfWords(), SPEC, l2=0.3, target_recall=1.0)
    scores = rt.score(model, BagOfWords(), BASE)
    labels = np.array([e.complex for e in BASE])
    assert scores[labels].min() > scores[~labels].max()
    # The curve runs from "everything frontier" to "everything cheap".
    assert model.curve[0].recall == 1.0 and model.curve[0].cheap_share == 0.0
    assert model.curve[-1].cheap_share >= 0.0
    assert all(p.recall >= 1.0 for p in model.curve if p.threshold <= model.threshold)


def test_an_artifact_round_trips(tmp_path: Path) -> None:
    model, _ = rt.train(BASE, BagOfWords(), SPEC)
    model.save(tmp_path / "router.json")
    loaded = RouterModel.load(tmp_path / "router.json")
    assert loaded.to_json() == model.to_json()
    a = LearnedClassifier(model, BagOfWords()).classify("Why was my card charged twice?")
    b = LearnedClassifier(loaded, BagOfWords()).classify("Why was my card charged twice?")
    assert a == b


def test_an_artifact_names_its_embedding_weights(tmp_path: Path) -> None:
    model, _ = rt.train(BASE, BagOfWords(), SPEC)
    data = model.to_json()
    assert data["embedding"]["weights"] == "float32"
    del data["embedding"]["weights"]  # written before int8 existed: float32
    (tmp_path / "old.json").write_text(json.dumps(data))
    assert RouterModel.load(tmp_path / "old.json").embedding.weights == "float32"
    data["embedding"]["weights"] = "int4"
    (tmp_path / "bad.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match="weights"):
        RouterModel.load(tmp_path / "bad.json")
    assert RouterModel.load(DEFAULT_ARTIFACT).embedding.weights == "int8-all"  # the shipped one


def test_operating_points_follow_the_tenant_targets() -> None:
    model, _ = rt.train(BASE, BagOfWords(), SPEC)
    strict = model.threshold_for(target_recall=1.0)
    loose = model.threshold_for(target_recall=0.5)
    assert strict <= loose
    by_share = model.threshold_for(target_cheap_share=0.3)
    assert next(p for p in model.curve if p.threshold == by_share).cheap_share <= 0.3
    classifier = LearnedClassifier(model, BagOfWords())
    message = "Why was I charged twice for the same order?"
    p = classifier.classify(message).score
    common = {
        "requested_tier": "",
        "tenant_default_tier": "auto",
        "allowed_tiers": [CHEAP, FRONTIER],
        "message": message,
        "history": [],
        "classifier": classifier,
    }
    everything_cheap = choose_route(**common, target_cheap_share=1.0)  # type: ignore[arg-type]
    assert everything_cheap.tier == (FRONTIER if p >= model.threshold_for(None, 1.0) else CHEAP)
    all_recall = choose_route(**common, target_recall=1.0)  # type: ignore[arg-type]
    assert all_recall.tier == FRONTIER
    assert "learned p(complex)" in all_recall.reason


def test_retraining_on_exported_signals_changes_the_decisions_it_should() -> None:
    message = "Where do I send my pension transfer paperwork?"
    base = [
        *BASE,
        *examples(("pension transfer paperwork address", CHEAP), ("send my paperwork", CHEAP)),
    ]
    # The tenant's traffic: such questions were escalated by the cascade or handed off.
    extra = examples(
        ("where do I send the pension transfer paperwork", FRONTIER),
        ("help with the pension transfer paperwork", FRONTIER),
        ("my pension transfer paperwork is stuck", FRONTIER),
        ("pension transfer paperwork question", FRONTIER),
        ("send pension transfer paperwork where", FRONTIER),
    )
    extra = [replace(e, source="acme-traffic.jsonl") for e in extra]
    before, _ = rt.train(base, BagOfWords(), SPEC)
    after, _ = rt.train([*base, *extra], BagOfWords(), SPEC, exemplar_sources=[""])
    assert LearnedClassifier(before, BagOfWords()).classify(message).score < before.threshold
    assert LearnedClassifier(after, BagOfWords()).classify(message).score >= after.threshold
    # The tenant's own messages are learned from but never quoted in a reason.
    assert len(after.exemplar_texts) == len(base)
    assert "pension transfer paperwork is stuck" not in " ".join(after.exemplar_texts)
    # An unrelated simple message stays cheap.
    unrelated = LearnedClassifier(after, BagOfWords()).classify("What are your opening hours?")
    assert unrelated.score < after.threshold


def test_the_cli_refuses_a_model_with_worse_held_out_recall(tmp_path: Path) -> None:
    rows = [{"text": e.text, "expected": e.expected, "id": e.id} for e in BASE]
    holdout = [
        {"id": "h1", "text": "Why did you charge me twice this month?", "expected": FRONTIER},
        {"id": "h2", "text": "Should I switch to the fixed rate mortgage?", "expected": FRONTIER},
        {"id": "h3", "text": "What are your opening hours on Sunday?", "expected": CHEAP},
    ]
    _write(tmp_path / "router_train.jsonl", rows)
    _write(tmp_path / "router_eval.jsonl", [])
    _write(tmp_path / "router_holdout.jsonl", holdout)
    out = tmp_path / "router.json"
    first = ["--data", str(tmp_path), "--out", str(out), "--baseline", str(tmp_path / "none")]
    assert rt.main([*first, "--target-recall", "1"]) == 0
    good = out.read_bytes()
    flipped = [{**r, "expected": CHEAP if r["expected"] == FRONTIER else FRONTIER} for r in rows]
    _write(tmp_path / "flipped.jsonl", flipped)
    _write(tmp_path / "router_train.jsonl", [])
    code = rt.main(
        ["--data", str(tmp_path), "--out", str(out), "--extra", str(tmp_path / "flipped.jsonl")]
    )
    assert code == 1
    assert out.read_bytes() == good
    # A tenant's first model is compared with the service's.
    tenant_out = tmp_path / "models" / "acme.json"
    args = ["--data", str(tmp_path), "--out", str(tenant_out), "--baseline", str(out)]
    assert rt.main([*args, "--extra", str(tmp_path / "flipped.jsonl")]) == 1
    assert not tenant_out.exists()


# ---- the shipped artifact -------------------------------------------------------------


@pytest.fixture(scope="module")
def shipped() -> LearnedClassifier:
    encoder, _ = bundled_encoder()
    return LearnedClassifier(RouterModel.load(DEFAULT_ARTIFACT), encoder)


def test_the_shipped_router_is_deterministic_and_explains_itself(
    shipped: LearnedClassifier,
) -> None:
    message, history = "ok what now?", ["My phone won't receive calls.", "Still nothing."]
    first = shipped.classify(message, history)
    assert all(shipped.classify(message, history) == first for _ in range(3))
    assert 0.0 <= first.score <= 1.0
    reason = first.explain(shipped.threshold)
    assert "learned p(complex)" in reason and "nearest labelled:" in reason


def test_the_shipped_artifact_loads_with_the_bundled_encoder(shipped: LearnedClassifier) -> None:
    loaded = load_router(None, bundled_encoder, ComplexityClassifier())
    assert loaded is not None and loaded.kind == "learned"
    assert REGISTRY.get_sample_value("switchboard_router_model_loaded") == 1
    # The router shares the process's weights with the embedder (one load, nothing cut
    # from them), and the verdicts are unchanged.
    embedder_encoder = local_encoder(runtime="onnx")
    assert loaded.encoder.reference is embedder_encoder.reference  # type: ignore[attr-defined]
    assert len(embedder_encoder.layers) == 6  # type: ignore[attr-defined]
    message = "Can I split the bill into three instalments?"
    assert loaded.classify(message) == shipped.classify(message)


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ("Why was I charged twice?", FRONTIER),
        ("What are your opening hours?", CHEAP),
        ("thank you so much, that's all!", CHEAP),
    ],
)
def test_the_shipped_router_on_plain_cases(
    shipped: LearnedClassifier, message: str, expected: str
) -> None:
    verdict = shipped.classify(message)
    assert (FRONTIER if verdict.score >= shipped.threshold else CHEAP) == expected


# ---- fallback to the rules ------------------------------------------------------------


def _factory() -> tuple[SentenceEncoder, str]:
    return BagOfWords(), BagOfWords.name


def test_a_missing_artifact_falls_back_to_the_rules(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    before = counter("switchboard_router_model_fallbacks_total", why="missing")
    with caplog.at_level(logging.WARNING):
        loaded = load_router(tmp_path / "absent.json", _factory, ComplexityClassifier())
    assert loaded is None
    assert "not found: routing with the rules" in caplog.text
    assert counter("switchboard_router_model_fallbacks_total", why="missing") == before + 1
    assert REGISTRY.get_sample_value("switchboard_router_model_loaded") == 0


@pytest.mark.parametrize(
    "content",
    [
        "not json at all",
        '{"format": 99}',
        '{"format": 1, "version": "x"}',
    ],
)
def test_a_corrupt_artifact_falls_back_to_the_rules(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, content: str
) -> None:
    path = tmp_path / "router.json"
    path.write_text(content)
    before = counter("switchboard_router_model_fallbacks_total", why="corrupt")
    with caplog.at_level(logging.WARNING):
        assert load_router(path, _factory, ComplexityClassifier()) is None
    assert "unusable" in caplog.text and "routing with the rules" in caplog.text
    assert counter("switchboard_router_model_fallbacks_total", why="corrupt") == before + 1


def test_an_int8_router_on_the_numpy_encoder_scores_with_float32(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from switchboard.embeddings.local import BUNDLED_MODEL, local_encoder

    with caplog.at_level(logging.WARNING):
        loaded = load_router(
            None, lambda: (local_encoder(runtime="numpy"), BUNDLED_MODEL), ComplexityClassifier()
        )
    assert loaded is not None and loaded.model.embedding.weights == "float32"
    assert "scoring it with float32" in caplog.text


def test_an_artifact_with_wrong_sizes_or_another_encoder_falls_back(tmp_path: Path) -> None:
    model, _ = rt.train(BASE, BagOfWords(), SPEC)
    data = model.to_json()
    data["weights"] = data["weights"][:-3]
    path = tmp_path / "router.json"
    path.write_text(json.dumps(data))
    assert load_router(path, _factory, ComplexityClassifier()) is None
    model.save(path)
    assert load_router(path, _factory, ComplexityClassifier()) is not None

    def other() -> tuple[SentenceEncoder, str]:
        return BagOfWords(), "another-model"

    assert load_router(path, other, ComplexityClassifier()) is None


# ---- labels from the platform's signals -----------------------------------------------


def _turn(position: int, text: str, tier: str, reason: str, **extra: object) -> TurnRecord:
    fields: dict[str, object] = {
        "conversation_id": "c1",
        "request_id": f"r{position}",
        "position": position,
        "user_text": text,
        "tier": tier,
        "routing_reason": reason,
        "finish_reason": "stop",
        "output_tokens": 120,
        "rating": "",
    }
    fields.update(extra)
    return TurnRecord(**fields)  # type: ignore[arg-type]


def test_signals_become_labels() -> None:
    learned = "learned p(complex) 0.05 < 0.10 (…)"
    turns = [
        _turn(0, "Can I move my appointment?", CHEAP, learned),
        _turn(1, "that didn't help, it still says error", CHEAP, learned, rating="RATING_DOWN"),
        _turn(2, "I want a person", CHEAP, learned),
        _turn(3, "ok", CHEAP, "handoff", finish_reason="handoff"),
        _turn(
            4,
            "What's the fee?",
            FRONTIER,
            "learned p(complex) 0.6 ≥ 0.1 (…)",
            rating="RATING_UP",
            output_tokens=30,
        ),
        _turn(5, "Explain the clause", CHEAP, learned + "; cascaded to frontier: cheap answer"),
        _turn(6, "thanks", CHEAP, "tier 'cheap' requested by the client", rating="RATING_UP"),
        _turn(7, "Where is my order?", CHEAP, learned, rating="RATING_UP"),
    ]
    rows = {r["text"]: r for r in label_turns("acme", reversed(turns))}
    assert rows["Can I move my appointment?"]["expected"] == FRONTIER  # next turn: didn't help
    assert rows["that didn't help, it still says error"]["expected"] == FRONTIER  # rated down
    assert rows["that didn't help, it still says error"]["history"] == [
        "Can I move my appointment?"
    ]
    assert rows["I want a person"]["expected"] == FRONTIER  # followed by a handoff
    assert rows["What's the fee?"]["expected"] == CHEAP  # short frontier answer rated up
    assert rows["Explain the clause"]["expected"] == FRONTIER  # escalated by the cascade
    assert "thanks" not in rows and "ok" not in rows  # pinned tiers and handoffs teach nothing
    assert rows["Where is my order?"]["expected"] == CHEAP
    assert all(r["tenant"] == "acme" and r["id"].startswith("traffic-acme-") for r in rows.values())


def test_stored_messages_pair_into_turn_records() -> None:
    from switchboard.v1.chat_pb2 import ROLE_ASSISTANT, ROLE_USER

    docs = [
        {
            "conversation_id": "c",
            "request_id": "r1",
            "role": ROLE_USER,
            "text": "hi",
            "position": 4,
        },
        {
            "conversation_id": "c",
            "request_id": "r1",
            "role": ROLE_ASSISTANT,
            "tier": "cheap",
            "routing_reason": "complexity 0.00 < 0.50 (no signal)",
            "finish_reason": "stop",
            "output_tokens": 9,
            "feedback": {"rating": "RATING_UP"},
        },
        {"conversation_id": "c", "request_id": "r2", "role": ROLE_USER, "text": "orphan"},
    ]
    (record,) = records_of(docs)
    assert (record.user_text, record.tier, record.rating, record.position) == (
        "hi",
        "cheap",
        "RATING_UP",
        4,
    )
    assert label_turns("t", [record])[0]["expected"] == CHEAP


# ---- a tenant's own router --------------------------------------------------------------


PENSION = "Where do I send my pension transfer paperwork?"


def _tenant_setup(tmp_path: Path) -> TenantRouters:
    base = [*BASE, *examples(("pension transfer paperwork address", CHEAP))]
    extra = [
        replace(e, source="acme.jsonl")
        for e in examples(
            ("where do I send the pension transfer paperwork", FRONTIER),
            ("help with the pension transfer paperwork", FRONTIER),
            ("my pension transfer paperwork is stuck", FRONTIER),
            ("pension transfer paperwork question", FRONTIER),
            ("send pension transfer paperwork where", FRONTIER),
        )
    ]
    default, _ = rt.train(base, BagOfWords(), SPEC)
    acme, _ = rt.train([*base, *extra], BagOfWords(), SPEC, exemplar_sources=[""])
    acme.save(tmp_path / "acme.json")
    return TenantRouters(LearnedClassifier(default, BagOfWords()), tmp_path, max_models=1)


def test_a_tenant_router_is_used_for_its_tenant_only(tmp_path: Path) -> None:
    routers = _tenant_setup(tmp_path)
    default, acme = routers.for_tenant(None), routers.for_tenant("acme")
    assert acme is not default and routers.for_tenant("acme") is acme  # loaded once
    assert default.classify(PENSION).score < default.threshold_for()
    assert acme.classify(PENSION).score >= acme.threshold_for()


@pytest.mark.parametrize("name", ["absent", "../etc/passwd", "bad name"])
def test_an_unusable_tenant_router_falls_back_to_the_default(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, name: str
) -> None:
    routers = _tenant_setup(tmp_path)
    before = counter("switchboard_router_model_fallbacks_total", why="tenant")
    with caplog.at_level(logging.WARNING):
        assert routers.for_tenant(name) is routers.default
    assert "unusable" in caplog.text
    assert counter("switchboard_router_model_fallbacks_total", why="tenant") == before + 1


def test_tenant_routers_are_bounded_and_need_a_learned_default(tmp_path: Path) -> None:
    routers = _tenant_setup(tmp_path)
    routers.for_tenant("acme")
    routers.for_tenant("absent")
    assert list(routers._loaded) == ["absent"]  # max_models=1: the older one was dropped
    rules = TenantRouters(ComplexityClassifier(), tmp_path)
    assert isinstance(rules.for_tenant("acme"), ComplexityClassifier)


async def test_the_engine_routes_a_tenant_with_its_own_router(tmp_path: Path) -> None:
    from switchboard.common.tenants import ModelPolicy, TenantConfig

    from .test_turns import World, request

    routers = _tenant_setup(tmp_path)
    for name, tier in ((None, CHEAP), ("acme", FRONTIER)):
        world = World(
            TenantConfig(tenant_id="demo", name="Demo", model_policy=ModelPolicy(router_model=name))
        )
        world.engine._classifier_for = routers.for_tenant
        await world.engine.on_request(request(PENSION))
        (task,) = world.outbox.tasks
        assert task.tier == tier
