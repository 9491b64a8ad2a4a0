"""Input guardrails: prompt-injection scoring, blocked topics and escalation triggers.

All rule-based and multilingual (English, Spanish, French, German, Italian, Portuguese,
Dutch). Rules rather than a classifier model: no model can be downloaded here at run time,
the checks must cost microseconds on every turn, and each verdict must name its reasons.
Encoded attacks are scored on decoded variants of the text (base64, hex, rot13, leetspeak,
spaced-out letters, full-width and zero-width tricks).
"""

import base64
import binascii
import codecs
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass


def _rx(*patterns: str) -> re.Pattern[str]:
    return re.compile("|".join(f"(?:{p})" for p in patterns), re.IGNORECASE | re.MULTILINE)


# ---- prompt injection -----------------------------------------------------------------

_OWN = re.compile(
    r"\b(?:my|our|mis|mes|nos|meine|meinen|unsere|mie|miei|minhas|meus|mijn|onze)\b", re.I
)
_INSTR = (
    r"(?:instructions?|prompts?|rules?|directions?|guidelines?|guardrails?|constraints?"
    r"|programming|directives?|system prompt|configuration)"
)
_OVERRIDE_VERBS = r"(?:ignore|disregard|forget|skip|bypass|override|overlook|drop|abandon)"
_OVERRIDE_TARGET = re.compile(
    rf"\b{_OVERRIDE_VERBS}\b([^.!?\n]{{0,40}}?)\b(?:previous|prior|above|earlier|preceding|all"
    rf"|any|your|the|system|initial|original|these|those|every)\b[^.!?\n]{{0,20}}?\b{_INSTR}\b",
    re.IGNORECASE,
)
_OVERRIDE_OTHER = re.compile(
    r"\b(?:ignora|olvida|omite|descarta|ignore[sz]?|oublie[sz]?|ignoriere|ignorieren"
    r"|vergiss|vergessen sie|missachte|dimentica|ignori|esqueça|esqueca|desconsidere|negeer"
    r"|vergeet)\b([^.!?\n]{0,40}?)\b(?:instrucciones|reglas|indicaciones|órdenes|instructions"
    r"|règles|consignes|anweisungen|instruktionen|regeln|vorgaben|istruzioni|regole"
    r"|instruções|instrucoes|regras|instructies|regels)\b",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class _Rule:
    name: str
    weight: float
    pattern: re.Pattern[str]


_RULES = (
    _Rule(
        "instruction override",
        0.6,
        _rx(
            r"\b(?:new|updated|real|actual|true) (?:instructions?|rules|system prompt)\s*:",
            r"\bfrom now on,? (?:you (?:will|must|are|shall|have to)|your (?:new )?(?:role|name))",
            r"\b(?:you are|you're) no longer (?:bound|restricted|limited|an? assistant)\b",
            r"\bno longer bound by\b",
            r"\b(?:do not|don't|stop) (?:follow(?:ing)?|obey(?:ing)?) (?:your|the|any) "
            r"(?:rules|instructions|guidelines|programming)\b",
            r"\b(?:a partir de ahora|à partir de maintenant|ab jetzt|von nun an|d'ora in poi"
            r"|a partir de agora)\b[^.\n]{0,30}"
            r"\b(?:eres|serás|tu es|tu seras|du bist|sei|você é)\b",
        ),
    ),
    _Rule(
        "role-play jailbreak",
        0.85,
        _rx(
            r"\bdo anything now\b",
            r"\b(?:jailbreak|jailbroken|god|dan|evil|unrestricted|unfiltered|chaos) mode\b",
            r"\byou are (?:now )?in (?:developer|god|dan|jailbreak) mode\b",
            r"\b(?:enable|activate|enter|switch to) (?:god|dan|jailbreak) mode\b",
            r"\bpretend (?:that )?(?:you are|you're|to be)\b[^.\n]{0,50}\b(?:no|without|free of"
            r"|any) (?:rules|restrictions|filters|limits|guidelines|censorship|morals|ethics)\b",
            r"\b(?:act|behave|respond|roleplay|role-play) (?:as|like) (?:if you were )?(?:an? )?"
            r"(?:unrestricted|unfiltered|uncensored|evil|rogue|jailbroken|amoral)\b",
            r"\byou are (?:now )?(?:an? )?(?:unrestricted|unfiltered|uncensored|jailbroken"
            r"|amoral)\b(?! (?:on|at|during|from|until|between|in the)\b)",
            r"\b(?:an? )?ai (?:with(?:out)?|that has no) (?:any )?(?:rules|restrictions|filters"
            r"|limits)\b",
            r"\b(?:finge|fingir|actúa como|actua como|haz de cuenta|fais semblant|agis comme"
            r"|joue le rôle|tu so als|stell dir vor|verhalte dich wie|fingi|fai finta"
            r"|comportati come|finja|aja como|faça de conta|doe alsof)\b[^.\n]{0,60}\b(?:sin"
            r"|sans|ohne|senza|sem|zonder|keine|aucune|ninguna|nessuna)\b[^.\n]{0,15}\b(?:reglas?"
            r"|restricci(?:ón|ones)|filtros?|límites?|règles?|restrictions?|filtres?|limites?"
            r"|regeln?|einschränkungen|filter|grenzen|regole|restrizion[ei]|filtri|limiti|regras?"
            r"|restriç(?:ão|ões)|regels?|beperkingen)\b",
        ),
    ),
    _Rule(
        "restriction removal",
        0.45,
        _rx(
            r"\b(?:without|ignoring|bypass(?:ing)?|free of) (?:any |all |your )?(?:ethical |safety "
            r"|content )?(?:restrictions|filters|guidelines|limitations|censorship|safeguards)\b",
            r"\bjailbreak\b",
            r"\bstay in character\b",
            r"\b(?:sin restricciones|sans restrictions|ohne einschränkungen|senza restrizioni"
            r"|sem restrições)\b",
        ),
    ),
    _Rule(
        "prompt extraction",
        0.85,
        _rx(
            r"\b(?:reveal|show|print|display|repeat|output|tell me|give me|share|write out|leak"
            r"|dump|list|paste|recite|what(?: is|'s| are| were))\b[^.?!\n]{0,30}\b(?:your|the)\s+"
            r"(?:full |complete |exact |entire |original |initial |hidden |secret |internal )?"
            r"(?:system|initial|hidden|original|developer|secret|internal|pre-?)\s*"
            r"(?:prompt|instructions?|message|rules|configuration)\b",
            r"\brepeat (?:the |all )?(?:text|words|everything|content|instructions) (?:above"
            r"|before)\b",
            r"\beverything (?:above|before) this (?:line|message|point)\b",
            r"\bwhat (?:were|are|was) you (?:told|instructed|programmed)\b",
            r"\byour (?:instructions|prompt|rules) (?:verbatim|word for word)\b",
            r"\b(?:muestra(?:me)?|muéstrame|revela(?:me)?|repite|dime|montre(?:-moi)?|révèle"
            r"|affiche|répète|donne-moi|zeig(?:e)?(?: mir)?|verrate(?: mir)?|gib mir|wiederhole"
            r"|mostra(?:mi)?|rivela(?:mi)?|ripeti|dimmi|mostre|revele|repita|diga|toon|herhaal)\b[^.?!\n]{0,40}"
            r"\b(?:prompt|instrucciones|instructions|anweisungen|systemanweisungen|istruzioni"
            r"|instruções|instructies|system-?prompt|systemprompt)\b",
        ),
    ),
    _Rule(
        "prompt-extraction mention",
        0.3,
        _rx(
            r"\bsystem ?prompt\b",
            r"\bprompt del sistema\b",
            r"\bprompt système\b",
            r"\bsystemanweisung(?:en)?\b",
            r"\bprompt di sistema\b",
            r"\bprompt do sistema\b",
        ),
    ),
    _Rule(
        "fake role markers",
        0.6,
        _rx(
            r"<\|?(?:im_start|im_end|system|endoftext|assistant)\|?>",
            r"\[/?(?:system|inst|sys)\]",
            r"</?(?:system|sys)>",
            r"^\s*#{2,}\s*(?:system|instruction|new instructions)\b",
            r"^\s*system\s*:",
        ),
    ),
    _Rule(
        "encoded payload request",
        0.3,
        _rx(
            r"\b(?:decode|base64|rot13|hex)\b[^.\n]{0,40}\b(?:follow|execute|obey|do what|run|"
            r"carry out)\b",
        ),
    ),
)

_ZERO_WIDTH = re.compile("[\u200b-\u200f\u202a-\u202e\u2060-\u2064\ufeff\u00ad]")
_SPACED = re.compile(r"\b(?:[A-Za-z][ .\-_*]){3,}[A-Za-z]\b")
_LEET = str.maketrans(
    {"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "@": "a", "$": "s", "!": "i"}
)
_BASE64 = re.compile(r"(?<![A-Za-z0-9+/=])[A-Za-z0-9+/]{16,}={0,2}(?![A-Za-z0-9+/=])")
_HEX = re.compile(r"\b(?:[0-9a-fA-F]{2}[ :]?){12,}\b")


@dataclass(frozen=True)
class InjectionVerdict:
    """How much a message looks like a prompt injection, and why."""

    score: float
    signals: tuple[str, ...]


def _decoded_base64(text: str) -> Iterable[str]:
    for m in _BASE64.finditer(text):
        token = m.group()
        try:
            raw = base64.b64decode(token + "=" * (-len(token) % 4), validate=True)
            decoded = raw.decode("utf-8")
        except (binascii.Error, ValueError):
            continue
        if decoded and sum(c.isprintable() or c.isspace() for c in decoded) / len(decoded) > 0.95:
            yield decoded


def _decoded_hex(text: str) -> Iterable[str]:
    for m in _HEX.finditer(text):
        try:
            decoded = bytes.fromhex(re.sub(r"[ :]", "", m.group())).decode("utf-8")
        except ValueError:
            continue
        if decoded.isprintable():
            yield decoded


def normalize(text: str) -> str:
    """NFKC, no zero-width or soft-hyphen characters, single spaces."""
    text = unicodedata.normalize("NFKC", _ZERO_WIDTH.sub("", text))
    return re.sub(r"[ \t]+", " ", text)


class InjectionDetector:
    """Scores prompt-injection and jailbreak attempts in [0, 1]."""

    def score(self, text: str) -> InjectionVerdict:
        base = normalize(text)
        variants: list[tuple[str, str]] = [("", base)]
        # Letters spaced out one by one ("i g n o r e  a l l"): wide gaps separate words.
        despaced = " ".join(
            _SPACED.sub(lambda m: re.sub(r"[ .\-_*]", "", m.group()), part)
            for part in re.split(r"\s{2,}", unicodedata.normalize("NFKC", text))
        )
        despaced = normalize(despaced)
        if despaced != base:
            variants.append(("spaced letters", despaced))
        leet = base.translate(_LEET)
        if leet != base:
            variants.append(("leetspeak", leet))
        variants.extend(("base64", d) for d in _decoded_base64(base))
        variants.extend(("hex", d) for d in _decoded_hex(base))
        variants.append(("rot13", codecs.encode(base, "rot13")))

        best: dict[str, tuple[float, str]] = {}
        for encoding, variant in variants:
            for name, weight in self._rules(variant):
                if encoding and name not in best:
                    # An attack that bothered to hide itself is worth a little more.
                    weight = min(1.0, weight + 0.1)
                if weight > best.get(name, (0.0, ""))[0]:
                    best[name] = (weight, f"{name} ({encoding})" if encoding else name)
        remaining = 1.0
        for weight, _ in best.values():
            remaining *= 1.0 - weight
        return InjectionVerdict(round(1.0 - remaining, 4), tuple(lbl for _, lbl in best.values()))

    @staticmethod
    def _rules(text: str) -> Iterable[tuple[str, float]]:
        for rule in _RULES:
            if rule.pattern.search(text):
                yield rule.name, rule.weight
        for pattern in (_OVERRIDE_TARGET, _OVERRIDE_OTHER):
            for m in pattern.finditer(text):
                # "ignore my previous instructions" is a customer changing their mind.
                if not _OWN.search(m.group(0)):
                    yield "instruction override", 0.9
                    break


# ---- blocked topics -------------------------------------------------------------------


def blocked_topic(text: str, topics: Sequence[str]) -> str | None:
    """The first of the tenant's blocked topics the message mentions, or None.

    A topic is a word or phrase, matched case-insensitively on word boundaries; a topic
    may list alternatives separated by `|` (e.g. "election|elections|voting").
    """
    if not topics:
        return None
    folded = normalize(text).casefold()
    for topic in topics:
        for phrase in topic.split("|"):
            phrase = phrase.strip().casefold()
            if phrase and re.search(rf"(?<!\w){re.escape(phrase)}(?!\w)", folded):
                return topic
    return None


# ---- escalation -----------------------------------------------------------------------

_HUMAN_REQUEST = _rx(
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
        _rx(
            r"\b(?:fuck\w*|shit\w*|wtf|bullshit|crap|damn it|bloody hell|merde|mierda"
            r"|scheiße|scheisse|cazzo|porra)\b"
        ),
    ),
    (
        0.5,
        _rx(
            r"\b(?:ridiculous|unacceptable|useless|worst|furious|fed up|sick (?:and tired )?of"
            r"|absurd|pathetic|disgrace(?:ful)?|outrageous|incompetent|joke of a|waste of "
            r"(?:my )?time|terrible service|scam|rip-?off)\b"
        ),
    ),
    (
        0.5,
        _rx(
            r"\b(?:harto|harta|inaceptable|ridículo|pésimo|vergonzoso|inadmissible|ras le bol"
            r"|scandaleux|lamentable|unverschämt|lächerlich|inakzeptabel|frechheit"
            r"|inaccettabile|vergognoso|ridicolo|absurdo|inaceitável|belachelijk)\b"
        ),
    ),
)
_SHOUTING = re.compile(r"[A-ZÀ-Ý]")
_EXCLAIM = re.compile(r"[!?]{3,}")
_FAILURE = _rx(
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
