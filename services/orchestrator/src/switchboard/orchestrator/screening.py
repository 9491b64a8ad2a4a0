"""The input guardrails of a new turn, before any model sees it.

In order: the message's size, its redaction (what is stored and what the provider sees),
prompt injection in every channel the system prompt quotes, and blocked topics. Escalation
needs the conversation's history, so the engine checks it once the context has arrived.
A tool result is screened for instructions before the model reads it (`withhold_instructions`).
"""

import json
import logging
from dataclasses import dataclass

from opentelemetry import trace

from switchboard.common.redaction import ALL_KINDS, SECRET_KINDS, Kind, Redaction, redactor_for
from switchboard.common.tenants import GuardrailPolicy
from switchboard.orchestrator.guardrails import InjectionDetector, blocked_topic
from switchboard.v1.events_pb2 import TurnRequest

log = logging.getLogger(__name__)

WITHHELD_TOOL_RESULT = json.dumps(
    {"error": "the tool result was withheld: it contained instructions"}
)


@dataclass(frozen=True)
class Redacted:
    """A user message as stored (redacted of everything) and as sent to the provider."""

    stored: Redaction
    to_provider: str


@dataclass(frozen=True)
class Refusal:
    """A turn the guardrails end with the tenant's refusal message instead of a model."""

    message: str
    reason: str


def input_problem(text: str, max_chars: int) -> str | None:
    """What is wrong with a user message on its face (empty, too long), or None."""
    if not text.strip():
        return "the message is empty"
    if len(text) > max_chars:
        return f"the message is longer than {max_chars} characters"
    return None


def redact_message(text: str, policy: GuardrailPolicy) -> Redacted:
    """Redact everything for storage; for the provider, PII only if the tenant asks."""
    redactor = redactor_for(tuple(policy.phone_regions))
    stored = redactor.redact(text, ALL_KINDS)
    to_provider = stored.text if policy.redact_pii else redactor.redact(text, SECRET_KINDS).text
    return Redacted(stored, to_provider)


async def screen_request(
    turn: TurnRequest,
    redacted: Redacted,
    policy: GuardrailPolicy,
    injection: InjectionDetector,
    flags: list[str],
    span: trace.Span,
) -> Refusal | None:
    """Injection and blocked topics: the refusal that ends the turn, or None to go on.

    Appends what it noticed (flagged, blocked) to `flags`.
    """
    text = turn.message
    if policy.prompt_injection != "off":
        # Every channel that reaches the model: the message, and the metadata and user id
        # that the system prompt quotes.
        verdict = await injection.assess(
            {
                "message": text,
                "user_id": turn.user_id,
                **{f"metadata.{k}": v for k, v in turn.options.metadata.items()},
            },
            embed_text=redacted.stored.text,
        )
        span.set_attribute("switchboard.guardrails.injection_score", verdict.score)
        if verdict.score >= policy.injection_threshold:
            signals = ", ".join(verdict.signals)
            if policy.prompt_injection == "block":
                flags.append(f"injection-blocked:{verdict.score:.2f}")
                log.info("turn %s blocked: injection %s", turn.request_id, signals)
                return Refusal(
                    policy.refusal_message,
                    f"blocked: prompt injection score {verdict.score:.2f} ({signals})",
                )
            flags.append(f"injection-flagged:{verdict.score:.2f}")

    topic = blocked_topic(text, policy.blocked_topics)
    if topic is not None:
        flags.append(f"topic-blocked:{topic}")
        return Refusal(
            policy.topic_refusal_message, f"blocked: topic {topic!r} is blocked for the tenant"
        )
    return None


def withhold_instructions(
    result_text: str,
    tool_name: str,
    policy: GuardrailPolicy,
    injection: InjectionDetector,
    flags: list[str],
) -> str:
    """Indirect injection: a tool result (an order note, a web page, an e-mail) that gives
    the model instructions is replaced by an error the model can read."""
    if policy.prompt_injection == "off":
        return result_text
    verdict = injection.score(result_text)
    if verdict.score < policy.injection_threshold:
        return result_text
    flags.append(f"tool-injection:{verdict.score:.2f}")
    log.info("tool result of %s withheld: injection %s", tool_name, ", ".join(verdict.signals))
    return WITHHELD_TOOL_RESULT


def provider_kinds(policy: GuardrailPolicy) -> frozenset[Kind]:
    """The kinds redacted from what the provider sees (all of them if the tenant asks)."""
    return ALL_KINDS if policy.redact_pii else SECRET_KINDS
