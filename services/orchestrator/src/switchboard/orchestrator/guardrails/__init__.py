"""Input guardrails: prompt-injection scoring, blocked topics and escalation triggers.

All rule-based and multilingual (English, Spanish, French, German, Italian, Portuguese,
Dutch). The modules, by job: `injection` (the detector, its decodings) with its rules in
`injection_rules`; `topics` (the tenant's blocked topics); `escalation` (hand-off triggers).
Encoded attacks are scored on decoded variants of the text (base64, hex, rot13, leetspeak,
spaced-out letters, full-width and zero-width tricks).
"""

from switchboard.orchestrator.guardrails._text import normalize
from switchboard.orchestrator.guardrails.escalation import (
    Escalation,
    escalation_trigger,
    frustration_score,
)
from switchboard.orchestrator.guardrails.injection import InjectionDetector, InjectionVerdict
from switchboard.orchestrator.guardrails.topics import blocked_topic

__all__ = [
    "Escalation",
    "InjectionDetector",
    "InjectionVerdict",
    "blocked_topic",
    "escalation_trigger",
    "frustration_score",
    "normalize",
]
