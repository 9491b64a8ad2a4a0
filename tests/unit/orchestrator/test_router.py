import json
import re
from pathlib import Path

import pytest

from switchboard.orchestrator.router import (
    CHEAP,
    FRONTIER,
    ComplexityClassifier,
    RouterConfig,
    choose_route,
    low_confidence,
)

CLASSIFIER = ComplexityClassifier()
DATA = Path(__file__).resolve().parents[2] / "data"


def route(message: str, **overrides: object):  # type: ignore[no-untyped-def]
    arguments: dict[str, object] = {
        "requested_tier": "",
        "tenant_default_tier": "auto",
        "allowed_tiers": [CHEAP, FRONTIER],
        "message": message,
        "history": [],
        "classifier": CLASSIFIER,
    }
    arguments.update(overrides)
    return choose_route(**arguments)  # type: ignore[arg-type]


def test_an_explicit_tier_wins_over_the_classifier_and_the_tenant() -> None:
    chosen = route("hi", requested_tier=FRONTIER, tenant_default_tier=CHEAP)
    assert (chosen.tier, chosen.classified) == (FRONTIER, False)
    assert "requested by the client" in chosen.reason


def test_a_tier_the_tenant_does_not_allow_is_refused_with_a_reason() -> None:
    chosen = route("hi", requested_tier=FRONTIER, allowed_tiers=[CHEAP])
    assert chosen.tier == CHEAP and "not allowed" in chosen.reason


def test_tenant_policy_comes_before_the_classifier() -> None:
    chosen = route("Traceback: ValueError: boom", tenant_default_tier=CHEAP)
    assert chosen.tier == CHEAP and "tenant policy" in chosen.reason


@pytest.mark.parametrize(
    "message",
    [
        "Where is my order?",
        "Where is my order A12345?",  # an order number, not an error code
        "What are your opening hours on Saturday?",
        "Can I pay with PayPal?",
        "¿Dónde está mi pedido?",
        "Thanks, bye!",
    ],
)
def test_simple_messages_go_to_cheap(message: str) -> None:
    chosen = route(message)
    assert chosen.tier == CHEAP, chosen.reason
    assert chosen.classified and chosen.reason.startswith("complexity")


@pytest.mark.parametrize(
    ("message", "signal"),
    [
        (
            "The app crashes: Traceback (most recent call last): ValueError: bad int. "
            "I already reinstalled it.",
            "code or log excerpt",
        ),
        ("The display shows E4021 since this morning.", "code or log excerpt"),
        (
            "I will take legal action over the unauthorized charge of 499 USD on my card.",
            "legal or financial stakes",
        ),
        (
            "Can you compare the Basic and Premium plans and which one is better value "
            "for two years?",
            "comparison",
        ),
        (
            "How much would I pay in total if I upgrade mid-cycle, prorated over 12 days "
            "at 34.99 instead of 19.99?",
            "calculation",
        ),
        (
            "I restarted the router, did a factory reset and changed the cable, but it "
            "still drops every 20 minutes.",
            "troubleshooting already tried",
        ),
    ],
)
def test_complex_messages_go_to_frontier_and_the_reason_names_the_signal(
    message: str, signal: str
) -> None:
    chosen = route(message)
    assert chosen.tier == FRONTIER, chosen.reason
    assert signal in chosen.reason and signal in chosen.signals
    assert "≥ 0.50" in chosen.reason


def test_earlier_trouble_in_the_conversation_raises_the_score() -> None:
    history = ["It still logs me out.", "That didn't help either."]
    assert route("Any other idea?").tier == CHEAP
    chosen = route("Any other idea?", history=history)
    assert chosen.tier == FRONTIER and "earlier escalations" in chosen.reason


def test_several_questions_count() -> None:
    verdict = CLASSIFIER.classify("Can I return it? And when will I get my money? Is it free?")
    assert any(s.name == "several questions" for s in verdict.signals)


def test_the_threshold_is_configurable() -> None:
    strict = ComplexityClassifier(RouterConfig(threshold=5.0))
    chosen = route("Traceback: ValueError. I already tried twice.", classifier=strict)
    assert chosen.tier == CHEAP


def test_frontier_not_allowed_keeps_the_reason() -> None:
    chosen = route("I will sue you over this fraud.", allowed_tiers=[CHEAP])
    assert chosen.tier == CHEAP and "frontier not allowed" in chosen.reason


@pytest.mark.parametrize(
    ("answer", "score", "expected"),
    [
        ("I'm not sure what happened with your refund.", 0.0, "hedging"),
        ("I cannot help with that.", 0.0, "hedging"),
        ("", 0.0, "empty"),
        ("Yes.", 0.4, "far too short"),
        ("Yes.", 0.0, None),
        ("Your order shipped yesterday and should arrive on Friday with DHL.", 0.4, None),
    ],
)
def test_low_confidence(answer: str, score: float, expected: str | None) -> None:
    why = low_confidence(answer, score)
    assert (why is None) if expected is None else (why is not None and expected in why)


def test_the_short_answer_check_scales_with_the_threshold() -> None:
    # The learned router decides at a low probability threshold: "some complexity" scales.
    assert low_confidence("Yes.", 0.05, threshold=0.1) is not None
    assert low_confidence("Yes.", 0.01, threshold=0.1) is None
    assert low_confidence("Yes.", 0.15) is not None  # the rules' smallest signal


def test_the_lower_case_patterns_match_as_case_insensitive_ones_would() -> None:
    # The classifier lower-cases a message once and its patterns are written in lower case
    # (faster than IGNORECASE, issue 20): the same matches on every labelled message, as
    # written and in upper case, as the same patterns compiled case-insensitively.
    from switchboard.orchestrator import router

    texts = [
        str(json.loads(line).get("text", ""))
        for name in ("router_train.jsonl", "router_eval.jsonl", "router_holdout.jsonl")
        for line in (DATA / name).read_text().splitlines()
    ]
    texts += ["ERROR 502 at 2024-01-05T10:22", "Order A12345 or CODE E1234", "TypeError: x"]
    patterns = [
        p for p in vars(router).values() if isinstance(p, re.Pattern) and not p.flags & re.I
    ]
    for pattern in patterns:
        anycase = re.compile(pattern.pattern, re.IGNORECASE | re.MULTILINE)
        for text in texts + [t.upper() for t in texts]:
            assert pattern.findall(text.lower()) == [m.lower() for m in anycase.findall(text)]
