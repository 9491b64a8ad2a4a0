"""Cheap or frontier: the routing policy and its rule-based complexity classifier.

Policy, in order:
1. a tier the client asked for explicitly wins (when the tenant allows it);
2. a tenant whose model policy pins a tier gets that tier;
3. otherwise the complexity classifier decides, and a score at or above the threshold (the
   tenant's operating point, or the service default) goes to frontier.

Two classifiers: the learned one (learned_router.py, a logistic regression over a sentence
embedding and the signals below; the default) and the rules here, which are its features and
its fallback when its artifact is missing or broken. The rules are a handful of precompiled
regular expressions: each signal found in the message (or in the conversation) adds its
weight; a few microseconds per message, deterministic, and the reason lists the signals.
"""

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

CHEAP = "cheap"
FRONTIER = "frontier"


@dataclass(frozen=True)
class Signal:
    """One reason a message looks complex."""

    name: str
    weight: float


@dataclass(frozen=True)
class Complexity:
    """The classifier's verdict on one message."""

    score: float
    signals: tuple[Signal, ...]

    def explain(self, threshold: float) -> str:
        relation = "≥" if self.score >= threshold else "<"
        found = ", ".join(f"{s.name} +{s.weight:.2f}" for s in self.signals) or "no signal"
        return f"complexity {self.score:.2f} {relation} {threshold:.2f} ({found})"


@dataclass(frozen=True)
class Route:
    """The tier a turn runs on and why."""

    tier: str
    reason: str
    score: float = 0.0
    # True when the classifier chose (so a cascade may upgrade it).
    classified: bool = False
    signals: tuple[str, ...] = field(default=())


def _rx(*patterns: str) -> re.Pattern[str]:
    """Case-insensitive alternatives."""
    return re.compile("|".join(f"(?:{p})" for p in patterns), re.IGNORECASE | re.MULTILINE)


def _lx(*patterns: str) -> re.Pattern[str]:
    """Alternatives in lower case, for text the classifier lower-cased once, with one `\\b`
    for those that start with one (`\\b(?:(?:why\\b)|(?:explain\\b)|...)|...`). The same
    matches as `_rx` (for all but a few exotic letters, such as the long s), several times
    faster on a long message: Python's `re` folds the case of every character it compares under
    IGNORECASE, and tries each alternative's `\\b` at every position (issue 20: routing
    p99 <= 5 ms)."""
    boundary = r"\b"
    bounded = [f"(?:{p.removeprefix(boundary)})" for p in patterns if p.startswith(boundary)]
    others = [f"(?:{p})" for p in patterns if not p.startswith(boundary)]
    joined = "|".join(([boundary + f"(?:{'|'.join(bounded)})"] if bounded else []) + others)
    if any(c.isupper() for c in re.sub(r"\\[A-Z]", "", joined)):  # escapes such as \S aside
        raise ValueError(f"not in lower case: {joined}")
    return re.compile(joined, re.MULTILINE)


_REASONING = _lx(
    r"\bwhy\b",
    r"\bexplain\b",
    r"\bhow come\b",
    r"\bpros and cons\b",
    r"\bwalk me through\b",
    r"\bstep[- ]by[- ]step\b",
    r"\bwhat (?:would|will) happen if\b",
    r"\btrade-?offs?\b",
    r"\bwhat are my options\b",
    r"\bhow does (?:that|this|it) work\b",
    r"\b(?:i need|help me|want) to understand\b",
    r"\bshould i\b",
    r"\b(?:por qué|explica|explique|erklären|erkläre|warum|wieso|pourquoi|perché|spiegami"
    r"|porque)\b",
)
_COMPARISON = _lx(
    r"\bcompar(?:e|ed|ing|ison)\b",
    r"\bdifferences? between\b",
    r"\b(?:vs\.?|versus)\b",
    r"\b(?:better|cheaper|best) (?:option|choice|plan|deal|value|for me)\b",
    r"\bis it better\b",
    r"\bwhich (?:is|one is) (?:better|cheaper|best)\b",
    r"\bwhich (?:plan|option|tariff|subscription)\b",
    r"\bor (?:keep|use|stay|switch)\b",
    r"\b(?:comparar|diferencia entre|différence entre|unterschied zwischen|differenza tra"
    r"|me conviene|lohnt sich)\b",
)
_CALCULATION = _lx(
    r"\bcalculat(?:e|ed|ion)\b",
    r"\bcompute\b",
    r"\bwork out\b",
    r"\bhow much (?:would|will|do|does|did|am|is)\b",
    r"\bhow many (?:installments|months|payments)\b",
    r"\bpro-?rat(?:e|ed|a)\b",
    r"\binterest\b",
    r"\bpercent(?:age)?\b",
    r"\d\s*%",
    r"\bsplit (?:the|my) (?:bill|cost|payment)\b",
    r"\binstal(?:l)?ments?\b",
    r"\bwhat (?:exactly )?(?:do|will) i owe\b",
    r"\b(?:we're|i'm|we are|i am) owed\b",
    r"\bin total\b",
    r"\bper (?:year|seat)\b",
    r"\b\d+(?:[.,]\d+)?\s*[x\u00d7*/+]\s*\d+(?:[.,]\d+)?\b",
    r"\b(?:calcular|calculer|berechnen|calcolare)\b",
)
_CODE_OR_LOG = _lx(
    r"\btraceback\b",
    r"(?:exception|error):",  # = \b\w*(?:exception|error): without its backtracking
    r"\bstack ?trace\b",
    r"\berror(?: code)? [a-z]?\d{2,}\b",
    r"\b(?:http|status)(?: code)? [45]\d\d\b",
    r"```",
    r"\{\s*\"",
    r"^\s*at [\w.$]+\(",
    r"\d{4}-\d\d-\d\d[ t]\d\d:\d\d",
    r"\b(?:error|warn|fatal)\b",
    r"\b0x[0-9a-f]{4,}\b",
    r"\b(?:def|function|select|curl|import)\b .*[(=*]",
    # A letter and digits is an error code, unless it names an order, an invoice or a ticket
    # ("Where is my order A12345?" is a simple question). The lookahead first: the
    # lookbehinds are tried only where a code starts, not at every character.
    r"\b(?=[a-z]\d{3})(?<!order )(?<!order #)(?<!order no\. )(?<!invoice )(?<!ticket )"
    r"[a-z]\d{3,}\b",
)
_TRIED = _lx(
    r"\b(?:i(?:'ve| have)?|we(?:'ve| have)?) (?:already |also |even )?(?:tried|restarted"
    r"|rebooted|reinstalled|reset|updated|cleared|unplugged|followed|replaced|checked|changed"
    r"|called|contacted|asked|sent|increased|whitelisted|rotated|retried|removed|power cycled"
    r"|logged out)\b",
    r"\b(?:already|twice|three times|two times|several times|five times|again)\b",
    r"\bfactory reset\b",
    r"\btried (?:another|a different|two different|resetting|restarting)\b",
    r"\bstill (?:not|doesn't|does not|isn't|won't|can't|cannot|no|get|gets|happens|the same"
    r"|drops|nothing)\b",
    r"\b(?:doesn't|does not|didn't|did not|won't) (?:work|help|fix|turn on|start)\b",
    r"\bnot working\b",
    r"\bkeeps? (?:crashing|failing|dropping|happening|disconnecting|billing|charging)\b",
    r"\b(?:ya (?:probé|intenté|reinicié)|reinicié|sigue sin|j'ai déjà|déjà essayé|toujours pas"
    r"|schon|neu gestartet|immer noch nicht|ho già provato|ainda não|já tentei)\b",
)
_STAKES = _lx(
    r"\b(?:lawyer|attorney|solicitor|legal action|lawsuit|sue|suing|court|tribunal)\b",
    r"\b(?:gdpr|data protection|ccpa|privacy complaint|personal data)\b",
    r"\b(?:chargeback|fraud(?:ulent)?|unauthori[sz]ed (?:charge|transaction|payment)s?)\b",
    r"\b(?:dispute|compensat(?:ion|ed)|liab(?:ility|le)|breach of contract|regulator"
    r"|ombudsman|binding|executor|estate|consent)\b",
    r"\b(?:small claims|bankrupt(?:cy)?|discrimination|consumer protection)\b",
    r"\b(?:credit (?:score|check)|financing|loan|debts?)\b",
    r"\b(?:abogado|demanda|denuncia|avocat|plainte|anwalt|klage|avvocato|advogado"
    r"|mahngebühr|reclamación)\b",
)
_MONEY_TROUBLE = _lx(
    r"\b(?:charged|billed|debited|overcharged|overpa(?:id|ying)|double[- ]charged)\b"
    r"[^.?!]{0,60}\b(?:twice|two|three|\d+ times|duplicate|same|full price|without"
    r"|but|only|since|wrong)\b",
    r"\b(?:charge|charges|debit|bill|invoice)s?\b[^.?!]{0,40}\b(?:don't recognise|don't recognize"
    r"|never (?:signed|ordered|bought)|wrong|twice|doubled)\b",
    r"\b(?:refund|money back|reimburse)\w*\b[^.?!]{0,60}\b(?:rejected|denied|never|not arrived"
    r"|all months|difference|for all)\b",
    r"\b(?:cobraron dos veces|cobrado dos veces|facture a[- ]t[- ]elle augmenté)\b",
)
_HISTORY_TROUBLE = _lx(
    r"\bstill\b",
    r"\b(?:won't|can't|doesn't|does not|cannot) (?:connect|start|work|pair|load|open)\b",
    r"\bagain\b",
    r"\b(?:doesn't|didn't|not) (?:work|working|help)\b",
    r"\b(?:human|agent|manager|supervisor|complaint|escalate)\b",
)
_LIST_ITEM = re.compile(r"(?:^\s*(?:\d+[.)]|[-*•])|(?<=\s)\(?\d\))\s+\S", re.MULTILINE)
_SENTENCE_END = re.compile(r"[.!?]+(?:\s|$)")
_QUESTION = re.compile(r"\?+")
_ALSO = _lx(
    r"\b(?:also|another (?:question|thing)|secondly|additionally|and one more)\b",
    r"\b(?:and|or) (?:which|what|how|when|will|who|whether)\b",
    r"\b(?:y cuál|y qué|et quel|et quelle|und welche|und wie|e quale|e qual)\b",
)
_FIGURE = re.compile(r"\d+(?:[.,]\d+)?")


@dataclass(frozen=True)
class RouterConfig:
    """Weights and threshold of the classifier."""

    threshold: float = 0.5
    medium_words: int = 25
    long_words: int = 45
    very_long_words: int = 90
    many_sentences: int = 3
    # Messages (earlier ones and this one) that say it still fails or ask for a human.
    history_turns_for_trouble: int = 2


class Classifier(Protocol):
    """What the routing policy needs from a complexity classifier."""

    @property
    def kind(self) -> str:
        """'rules' or 'learned', for logs and metrics."""
        ...

    def classify(self, message: str, history: Sequence[str] = ()) -> Complexity:
        """The verdict on `message`, given the conversation's earlier user messages."""
        ...

    def threshold_for(
        self, target_recall: float | None = None, target_cheap_share: float | None = None
    ) -> float:
        """The threshold of a tenant's operating point (the default when none is given)."""
        ...


class ComplexityClassifier:
    """Scores a message's complexity from explainable signals."""

    kind = "rules"

    def __init__(self, config: RouterConfig | None = None) -> None:
        self.config = config or RouterConfig()

    def threshold_for(
        self, target_recall: float | None = None, target_cheap_share: float | None = None
    ) -> float:
        """The configured threshold: the rules have no calibration curve, so a tenant's
        target recall or cheap share applies only to the learned router."""
        return self.config.threshold

    def classify(self, message: str, history: Sequence[str] = ()) -> Complexity:
        """Score `message`; `history` holds the conversation's earlier user messages."""
        signals: list[Signal] = []
        words = len(message.split())
        if words >= self.config.very_long_words:
            signals.append(Signal("very long message", 0.5))
        elif words >= self.config.long_words:
            signals.append(Signal("long message", 0.35))
        elif words >= self.config.medium_words:
            signals.append(Signal("detailed message", 0.2))
        if len(_SENTENCE_END.findall(message.strip())) >= self.config.many_sentences:
            signals.append(Signal("several sentences", 0.15))
        questions = len(_QUESTION.findall(message))
        items = len(_LIST_ITEM.findall(message))
        lowered = message.lower()  # the patterns below are in lower case (`_lx`)
        if questions >= 3 or items >= 3:
            signals.append(Signal("several questions", 0.5))
        elif questions >= 2 or items >= 2 or (questions >= 1 and _ALSO.search(lowered)):
            signals.append(Signal("several questions", 0.35))
        attempts = len(_TRIED.findall(lowered))
        for name, pattern, weight in _RULES:
            if attempts if pattern is _TRIED else pattern.search(lowered):
                signals.append(Signal(name, weight))
        if attempts >= 2:
            signals.append(Signal("several attempts described", 0.15))
        if len(_FIGURE.findall(message)) >= 3:
            signals.append(Signal("several figures", 0.15))
        texts = (*(h.lower() for h in history), lowered)
        troubled = sum(1 for text in texts if _HISTORY_TROUBLE.search(text))
        if troubled >= self.config.history_turns_for_trouble:
            signals.append(Signal("earlier escalations or failures", 0.5))
        score = round(sum(s.weight for s in signals), 4)
        return Complexity(score, tuple(signals))


_RULES: tuple[tuple[str, re.Pattern[str], float], ...] = (
    ("reasoning", _REASONING, 0.3),
    ("comparison", _COMPARISON, 0.35),
    ("calculation", _CALCULATION, 0.35),
    ("code or log excerpt", _CODE_OR_LOG, 0.5),
    ("troubleshooting already tried", _TRIED, 0.35),
    ("legal or financial stakes", _STAKES, 0.5),
    ("billing dispute", _MONEY_TROUBLE, 0.3),
)


def choose_route(
    *,
    requested_tier: str,
    tenant_default_tier: str,
    allowed_tiers: Sequence[str],
    message: str,
    history: Sequence[str],
    classifier: Classifier,
    target_recall: float | None = None,
    target_cheap_share: float | None = None,
) -> Route:
    """Apply the routing policy (see the module docstring); the targets pick the tenant's
    operating point on the learned router's calibration curve."""
    allowed = list(allowed_tiers) or [CHEAP]
    if requested_tier and requested_tier != "auto":
        if requested_tier in allowed:
            return Route(requested_tier, f"tier {requested_tier!r} requested by the client")
        fallback = CHEAP if CHEAP in allowed else allowed[0]
        return Route(
            fallback,
            f"tier {requested_tier!r} requested but not allowed for the tenant; using {fallback}",
        )
    if tenant_default_tier != "auto":
        tier = tenant_default_tier if tenant_default_tier in allowed else allowed[0]
        return Route(tier, f"tenant policy pins tier {tier!r}")
    verdict = classifier.classify(message, history)
    threshold = classifier.threshold_for(target_recall, target_cheap_share)
    wanted = FRONTIER if verdict.score >= threshold else CHEAP
    tier = wanted if wanted in allowed else allowed[0]
    reason = verdict.explain(threshold)
    if tier != wanted:
        reason += f"; {wanted} not allowed for the tenant"
    return Route(
        tier,
        reason,
        score=verdict.score,
        classified=True,
        signals=tuple(s.name for s in verdict.signals),
    )


SHORT_ANSWER_SCORE_SHARE = 0.3

_HEDGES = _rx(
    r"\bi(?:'m| am) not (?:sure|certain)\b",
    r"\bi (?:don't|do not) know\b",
    r"\bi(?: can't| cannot| am unable to|'m unable to) (?:help|answer|assist|determine|say)\b",
    r"\b(?:unfortunately,? )?i (?:don't|do not) have (?:enough )?(?:information|access|details)\b",
    r"\bit(?:'s| is) (?:unclear|hard to say|difficult to say)\b",
    r"\bas an ai\b",
    r"\bno (?:lo )?sé\b|\bje ne sais pas\b|\bich weiß (?:es )?nicht\b",
)


def low_confidence(
    answer: str, complexity_score: float, min_words: int = 8, threshold: float = 0.5
) -> str | None:
    """Why a cheap answer looks unreliable enough to re-run on frontier, or None.
    `threshold` is the one the route was decided with."""
    words = len(answer.split())
    if not answer.strip():
        return "empty answer"
    match = _HEDGES.search(answer)
    if match:
        return f"hedging or refusal ({match.group(0)!r})"
    # A question that scored some complexity deserves more than a few words. "Some" is a
    # share of the threshold: for the rules (0.5) any signal (the smallest weighs 0.15); for
    # the learned router a probability well above what it gives to "thanks!".
    if complexity_score >= SHORT_ANSWER_SCORE_SHARE * threshold and words < min_words:
        return f"far too short ({words} words)"
    return None
