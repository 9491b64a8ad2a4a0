"""The guardrails' cost per turn, measured in-process on the bench's messages.

What the platform runs for each turn: the gateway's redaction of what may rest, the
orchestrator's redaction for storage, and the injection check (rules and classifier) of the
message and the user id; the message's embedding for the classifier apart (one forward pass
per turn, in the embedder's thread). Thread CPU time: wall time on a shared machine measures the
neighbours too.
"""

import time
from collections.abc import Callable, Sequence
from typing import Any

from switchboard.common.redaction import ALL_KINDS, AT_REST_KINDS, Redactor
from switchboard.embeddings.multilingual import MultilingualEmbedder
from switchboard.orchestrator.guardrails import InjectionDetector
from switchboard.orchestrator.guardrails.classifier import InjectionClassifier


def _percentiles_us(
    fn: Callable[[str], object], texts: Sequence[str], rounds: int
) -> dict[int, float]:
    samples = []
    for _ in range(rounds):
        for text in texts:
            start = time.thread_time()
            fn(text)
            samples.append((time.thread_time() - start) * 1e6)
    samples.sort()
    return {q: samples[min(len(samples) - 1, int(len(samples) * q / 100))] for q in (50, 99)}


def guardrails_cost(messages: Sequence[str], rounds: int = 200) -> dict[str, Any]:
    """p50/p99 (µs) of the guardrails per turn and of the message embedding."""
    redactor, embedder = Redactor(), MultilingualEmbedder()
    detector = InjectionDetector(InjectionClassifier())
    vectors = {m: embedder.embed_sync([redactor.redact(m, ALL_KINDS).text])[0] for m in messages}

    def turn(message: str) -> None:
        seen = redactor.redact(message, AT_REST_KINDS).text
        redactor.redact(seen, ALL_KINDS)
        detector.score_channels({"message": seen, "user_id": "bench-user"}, vectors[message])

    return {
        "per_turn_us": _percentiles_us(turn, messages, rounds),
        "embedding_us": _percentiles_us(lambda m: embedder.embed_sync([m]), messages, 20),
        "messages": len(messages),
    }


def lines(cost: dict[str, Any]) -> list[str]:
    """The report's lines for `cost`."""
    turn, embedding = cost["per_turn_us"], cost["embedding_us"]
    return [
        f"guardrails per turn (in-process, thread CPU, {cost['messages']} bench messages): "
        f"p50 {turn[50] / 1000:.3f} ms, p99 {turn[99] / 1000:.3f} ms "
        "(redaction at the gateway and the orchestrator, injection rules and classifier)",
        f"  + the message embedding for the classifier (multilingual), once per turn: "
        f"p50 {embedding[50] / 1000:.2f} ms, p99 {embedding[99] / 1000:.2f} ms",
    ]
