"""Escalation triggers: the customer asks for a human, is strongly frustrated, or keeps
saying that the problem persists."""

import re
from collections.abc import Sequence
from dataclasses import dataclass

from switchboard.orchestrator.guardrails._text import normalize, rx

_HUMAN_REQUEST = rx(
    r"\b(?:speak|talk|chat)\s+(?:to|with)\s+(?:a|an|some|your|one of your)?\s*(?:real |actual "
    r"|live )?(?:human(?: being)?|person|agent|representative|rep|operator|supervisor|manager"
    r"|somebody|someone)(?! (?:at|from) (?:the )?(?:bank|post office|courier))\b",
    r"\b(?:connect|transfer|put)\s+me\s+(?:to|through to|with)\s+(?:a|an|your)?\s*(?:real |live "
    r")?(?:human|person|agent|representative|operator|supervisor|manager|someone)\b",
    r"\b(?:i want|i need|get me|give me|can i have|can i get)\s+(?:a|an|to)?\s*(?:real |actual "
    r"|live )?(?:human|person|agent|representative|operator)\b",
    r"^\s*(?:agent|human|representative|operator|real person|live agent)\s*(?:please)?[.!]*\s*$",
    r"\bhablar con (?:un|una|algún|alguna)? ?(?:humano|persona|agente|operador|asesor|supervisor)",
    r"\bparler (?:à|a|avec) (?:un|une|quelqu'un|un vrai)? ?(?:humain|conseiller|conseillère"
    r"|agent|personne|opérateur|vrai)",
    r"\bmit (?:einem|einer) (?:echten )?(?:menschen|mitarbeiter|mitarbeiterin|berater|person"
    r"|beraterin)\b",
    r"\bparlare con (?:un|una) (?:operatore|persona|umano|agente|consulente)\b",
    r"\bfalar com (?:um|uma|algum) (?:atendente|humano|pessoa|agente|operador)\b",
    r"\b(?:spreken|praten) met een (?:medewerker|mens|persoon)\b",
)
_FRUSTRATION = (
    (
        0.6,
        rx(
            r"\b(?:fuck\w*|shit\w*|wtf|bullshit|crap|damn it|bloody hell|merde|mierda"
            r"|scheiße|scheisse|cazzo|porra)\b"
        ),
    ),
    (
        0.5,
        rx(
            r"\b(?:ridiculous|unacceptable|useless|worst|furious|fed up|sick (?:and tired )?of"
            r"|absurd|pathetic|disgrace(?:ful)?|outrageous|incompetent|joke of a|waste of "
            r"(?:my )?time|terrible service|scam|rip-?off)\b"
        ),
    ),
    (
        0.5,
        rx(
            r"\b(?:harto|harta|inaceptable|ridículo|pésimo|vergonzoso|inadmissible|ras le bol"
            r"|scandaleux|lamentable|unverschämt|lächerlich|inakzeptabel|frechheit"
            r"|inaccettabile|vergognoso|ridicolo|absurdo|inaceitável|belachelijk)\b"
        ),
    ),
)
_SHOUTING = re.compile(r"[A-ZÀ-Ý]")
_EXCLAIM = re.compile(r"[!?]{3,}")
_FAILURE = rx(
    r"\bstill (?:not|doesn't|does not|isn't|won't|can't|cannot|no|broken|waiting)\b",
    r"\b(?:doesn't|does not|didn't|did not) (?:work|help|fix|solve)\b",
    r"\bnot working\b",
    r"\bsame (?:problem|issue|error)\b",
    r"\b(?:again|third time|once more)\b",
    r"\b(?:sigue sin|no funciona|toujours pas|ne marche pas|immer noch nicht|funktioniert nicht"
    r"|ancora non|non funziona|ainda não|não funciona|werkt nog steeds niet)\b",
)


@dataclass(frozen=True)
class Escalation:
    """Why a conversation should go to a human."""

    reason: str


def frustration_score(text: str) -> float:
    """Strength of the frustration a message expresses (0 = none; ~1 = strong)."""
    score = sum(weight for weight, pattern in _FRUSTRATION if pattern.search(text))
    letters = [c for c in text if c.isalpha()]
    if len(letters) >= 12 and len(_SHOUTING.findall(text)) / len(letters) > 0.7:
        score += 0.4
    if _EXCLAIM.search(text):
        score += 0.3
    return round(score, 2)


def escalation_trigger(
    message: str,
    history: Sequence[str],
    *,
    frustration_threshold: float,
    failure_turns: int,
) -> Escalation | None:
    """Whether this turn should be handed to a human, and why.

    Triggers: the user asks for a human; the frustration score reaches the threshold; or
    `failure_turns` user messages (this one included) say the problem persists.
    """
    match = _HUMAN_REQUEST.search(normalize(message))
    if match:
        return Escalation(f"the customer asked for a human ({match.group(0).strip()!r})")
    frustration = frustration_score(message)
    if frustration >= frustration_threshold:
        return Escalation(f"strong frustration (score {frustration:.2f})")
    if _FAILURE.search(message):
        failures = 1 + sum(1 for text in history if _FAILURE.search(text))
        if failures >= failure_turns:
            return Escalation(f"repeated failure ({failures} messages say it still fails)")
    return None
