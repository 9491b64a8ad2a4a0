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
import urllib.parse
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from switchboard.common.redaction import normalize as common_normalize


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


_DISCLOSE = (
    r"\b(?:reveal|show|print|display|repeat|output|dump|echo|recite|quote|cite|restate|recap"
    r"|mirror|emit|return|list|leak|expose|tell me|give me|share|write out|paste|spell out"
    r"|translate|summari[sz]e|diff|describe|read)\b"
    r"|\b(?:muestra|muéstrame|revela|repite|affiche|révèle|répète|montre|zeige|zeig|gib"
    r"|wiederhole|mostra|rivela|ripeti|mostre|revele|repita|toon|herhaal|покажи|выведи"
    r"|раскрой|pokaż|pokaz|ukaž|ukaz|arată|arata|prikaži|prikazi)\b"
    r"|显示|输出|告诉我|展示|表示|出力|공개|출력|보여|اكشف|أظهر|اعرض"
)
_DISCLOSE_AFTER = (
    r"\b(?:verbatim|word for word|in full|aloud|line by line|without omitting|exactly)\b"
    r"|\bwhat would (?:they|it) say\b"
)
_SELF_CONFIG = (
    r"\bsystem[ -]?(?:prompt|message|card|instructions?)\b|\bsys(?:tem)? ?prompt\b"
    r"|\b(?:initial|original|hidden|secret|internal|developer|first|very first|meta)[ -]?"
    r"(?:prompt|instructions?|message|prefix|rules|configuration)\b"
    r"|\bpre-?amble\b|\binitiali[sz]ation\b|\binit(?:ial)? config(?:uration)?\b"
    r"|\bbootstrap config(?:uration)?\b|\boperating rules\b|\bmeta-?prompt\b"
    r"|<<\s*SYS\s*>>|\bmessages\[0\]|\brole\s*=\s*system\b|\binstruction (?:text|fields)\b"
    r"|\bconstraints you were given\b|\brules? that shapes? your (?:replies|answers)\b"
    r"|\byour (?:current )?(?:policy|programming|instructions|rules|configuration|guidelines"
    r"|prompt|directives)\b|\b(?:text|words|everything) (?:above|before)\b"
    r"|\bbefore any (?:dialogue|user turns?|conversation)\b|\bturn zero\b"
    r"|\bimmutable contract\b|\bprompt (?:del sistema|système|systeme|di sistema|do sistema"
    r"|systemowy|de sistem|sistem)\b|\bpromptul de sistem\b|\bsysteemprompt\b"
    r"|\bsistemski prompt\b|\bsystemov[yý] prompt\b|\bsystem-?prompt\b"
    r"|\bсистемн\w+ промпт\w*|\bсистемн\w+ инструкц\w+"  # noqa: RUF001
    r"|系统提示|提示词|内部指令|系统设置|システムプロンプト|시스템 프롬프트|موجه النظام"
)
_DISREGARD = (
    r"\b(?:ignore|disregard|forget|skip|bypass|override|overlook|abandon)\b"
    r"|\b(?:ignora|olvida|omite|descarta|oublie|ignoriere|vergiss|missachte|dimentica"
    r"|esqueça|esqueca|desconsidere|negeer|vergeet|zignoruj|ignoruj|ignorisi|ignorați"
    r"|игнорируй|игнорируйте|забудь|забудьте)\b"
    r"|忽略|无视|無視|忘记|忘掉|무시|تجاهل|अनदेखा"
)
_PRIOR_THINGS = (
    r"\b(?:instructions?|rules|guidelines|directives|prompts?|text before|everything before"
    r"|everything above|all text|settings)\b"
    r"|\b(?:instrucciones|reglas|indicaciones|consignes|règles|anweisungen|instruktionen"
    r"|regeln|istruzioni|regole|instruções|instrucoes|regras|instructies|regels|instrukcje"
    r"|instrukce|instructiunile|instrucțiunile|uputstva)\b"
    r"|инструкци\w*|правил\w*|указани\w*"
    r"|指令|指示|设定|設定|规则|規則|지침|지시|التعليمات|निर्देशों"
)


# A verb of disregard and the instructions/rules it targets, in scripts without word
# boundaries too.
_OVERRIDE_ANY_SCRIPT = re.compile(
    rf"(?:{_DISREGARD})[^.!?\n\u3002\uff01\uff1f]{{0,40}}?(?:{_PRIOR_THINGS})", re.IGNORECASE
)
_OWN_AFTER = re.compile(
    r"\s*(?:that |which )?(?:i|we|ich|je|yo|io|eu|ik)\s+(?:gave|sent|wrote|made|left|gab"
    r"|habe|ai|di|ho|dei|heb)\b",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class _Rule:
    name: str
    weight: float
    pattern: re.Pattern[str]
    # Substrings (lower case) one of which the text must hold for the pattern to be tried:
    # a C-speed `in` test spares the long alternations most messages.
    triggers: tuple[str, ...] = ()


# Every _SELF_CONFIG alternative holds one of these.
_SELF_CONFIG_TRIGGERS = (
    "system", "sys", "prompt", "instruction", "message", "prefix", "rule", "configuration",
    "amble", "initiali", "config", "meta", "messages[", "role", "constraints", "polic",
    "programming", "guideline", "directive", "above", "before", "turn zero", "contract",
    "sistem", "promptul", "систем", "提示", "指令", "设置", "システム", "프롬프트", "موجه",
)  # fmt: skip


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
        # Semantic: a verb of disclosure aimed at the assistant's own configuration, in
        # whatever words ("dump the preamble", "echo the <<SYS>> block", "recap every rule
        # that shapes your replies").
        "prompt extraction (concept)",
        0.85,
        re.compile(
            rf"(?:{_DISCLOSE})[^.?!\n]{{0,60}}?(?:{_SELF_CONFIG})"
            rf"|(?:{_SELF_CONFIG})[^.?!\n]{{0,40}}?(?:{_DISCLOSE_AFTER})",
            re.IGNORECASE,
        ),
        _SELF_CONFIG_TRIGGERS,
    ),
    _Rule(
        "self-configuration mention",
        0.3,
        re.compile(rf"(?:{_SELF_CONFIG})", re.IGNORECASE),
        _SELF_CONFIG_TRIGGERS,
    ),
    _Rule(
        "new instructions",
        0.6,
        re.compile(r"新的?(?:设定|設定|指令|规则|規則|操作指南)|新しい指示|새로운 지침"),
    ),
    _Rule(
        # Alone it is a compliment or a question ("you are now my favourite shop").
        "persona switch",
        0.35,
        _rx(
            r"\b(?:you are now|you're now|from now on you are|du bist jetzt|jetzt bist du"
            r"|ahora eres|tu es maintenant|ora sei|agora você é|je bent nu)\b",
            r"\bimagine (?:that )?you are (?:a|an|the) (?:developer|admin|administrator|system"
            r"|root|hacker)\b",
            r"\bdeveloper mode\b",
        ),
    ),
    _Rule(
        "jailbreak framing",
        0.55,
        _rx(
            r"\b(?:simulate|pretend to be in|stay in)\b[^.\n]{0,20}\bdeveloper mode\b",
            r"\bdeveloper mode (?:output|responses?)\b",
            r"\bno (?:special )?(?:filtering|filters|content polic(?:y|ies))\b",
            r"\bignoring [^.\n]{0,20}\b(?:content )?polic(?:y|ies)\b",
            r"\byou have a (?:condition|disorder|ability)\b",
            r"\b(?:disclose|leak|reveal)\b[^.\n]{0,20}\b(?:tokens?|api keys?|credentials"
            r"|passwords?|user data)\b",
            r"不受(?:任何)?限制|没有(?:任何)?限制|越狱|无限制模式",
            r"\bdump the database\b",
        ),
    ),
    _Rule(
        # Alone it is a product question ("turn off the safety lock on the dishwasher").
        "safety switch-off",
        0.35,
        _rx(
            r"\b(?:disable|turn off|remove|deactivate|switch off)\b[^.\n]{0,20}\b(?:content "
            r"|safety )?(?:filters?|safety|guardrails|restrictions|moderation|safeguards)\b",
        ),
    ),
    _Rule(
        # Indirect injection: instructions about the assistant's reply, the mark of a
        # pasted e-mail, document or tool result that talks to the model.
        "directive about the reply",
        0.45,
        _rx(
            r"\b(?:add|include|integrate|insert|append|modify|change|rewrite|encode|suggest"
            r"|promote|mention|spread|enhance|augment)\b[^.\n]{0,60}\b(?:to|in|into|of)?\s*"
            r"your (?:response|reply|answer|output)\b",
            r"\b(?:in|to) your (?:response|reply|answer|output)\b,?\s*(?:add|include|suggest"
            r"|promote|mention|say|tell|write|state)\b",
            r"\b(?:treat|use) (?:it|this|the \w+) as (?:your )?(?:next|new) (?:user )?instruction",
            r"\b(?:only|just) (?:respond|reply|answer|say) (?:with )?[\"']",
            r"\bdon'?t (?:say|do) anything (?:other than|else except)\b",
        ),
    ),
    _Rule(
        # A pasted e-mail, forwarded message, quote block or JSON: harmless alone, but it
        # makes a directive about the reply an indirect injection.
        "pasted content",
        0.15,
        _rx(
            r"^\s*(?:from|subject|to|body|von|betreff|de|objet|asunto|da|oggetto)\s*:",
            r"^\s*>",
            r"\bforwarded message\b",
            r"^\s*(?:-{3,}|\"\"\"|```)",
            r"^\s*\{\s*\"",
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

_COLLAPSE = re.compile(r'(?:[\s|"{}\[\],:_`#>*]|\\n)+')
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
    """NFKC, no invisible characters (zero-width, bidi, tags, soft hyphen), single spaces."""
    return re.sub(r"[ \t]+", " ", common_normalize(text))


# Cyrillic and Greek letters that look Latin ("ignore" spelt with Cyrillic i, o, e): mapped back
# when they sit among Latin letters. Hand-kept because the confusables packages on PyPI
# detect mixed scripts but do not map them, and these two dozen are the ones that matter.
_CONFUSABLES = str.maketrans(
    "аеорсхуіјѕԁһкмтвнАЕОРСХУІЈЅКМТВНαοερτυνкΑΕΟΡΤΥΝΚΙΒΗΜΖ",
    "aeopcxyijsdhkmtbhAEOPCXYIJSKMTBHaoeptuvkAEOPTYNKIBHMZ",
)
_LATIN = re.compile(r"[A-Za-z]")
_LEET_MARK = re.compile(r"[A-Za-z][0134579@$!]|[0134579@$][A-Za-z]")
# The words attacks are made of, as rot13 and reversed text show them.
_ATTACK_WORDS = ("ignore", "instruction", "prompt", "system", "previous", "reveal", "rules")
_ROT13_MARK = re.compile("|".join(codecs.encode(w, "rot13") for w in _ATTACK_WORDS), re.I)
_REVERSED_MARK = re.compile("|".join(w[::-1] for w in _ATTACK_WORDS), re.I)
_SPLIT_MARK = re.compile(r'[|{}\[\]_`"]|\n')
_LOOKALIKE = re.compile("[аеорсхуіјѕԁһкмтвнАЕОРСХУІЈЅКМТВНαοερτυνΑΕΟΡΤΥΝΚΙΒΗΜΖ]")


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
        if _LOOKALIKE.search(base) and _LATIN.search(base):
            variants.append(("confusable letters", base.translate(_CONFUSABLES)))
        # Each decoding runs only when the text shows its mark (digits inside words, the
        # key words of attacks rot13-encoded or reversed, JSON or table punctuation): the
        # rules then run on two or three variants, not ten.
        if _LEET_MARK.search(base):
            variants.append(("leetspeak", base.translate(_LEET)))
        variants.extend(("base64", d) for d in _decoded_base64(base))
        variants.extend(("hex", d) for d in _decoded_hex(base))
        if _ROT13_MARK.search(base):
            variants.append(("rot13", codecs.encode(base, "rot13")))
        if base.count("%") >= 3:
            variants.append(("percent-encoding", normalize(urllib.parse.unquote(base))))
        if _SPLIT_MARK.search(base):
            # Payload splitting: the pieces of a JSON object, a markdown table, code or an
            # identifier_with_underscores read as one sentence.
            variants.append(("split payload", _COLLAPSE.sub(" ", base).strip()))
        if _REVERSED_MARK.search(base):
            variants.append(("reversed", base[::-1]))

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

    def score_channels(self, channels: Mapping[str, str]) -> InjectionVerdict:
        """The worst verdict over the texts that reach the model (message, metadata, user id,
        tool results, retrieved passages); signals name the channel unless it is "message"."""
        best = InjectionVerdict(0.0, ())
        for channel, text in channels.items():
            if not text:
                continue
            verdict = self.score(text)
            if verdict.score > best.score:
                signals = verdict.signals
                if channel != "message":
                    signals = tuple(f"{channel}: {signal}" for signal in signals)
                best = InjectionVerdict(verdict.score, signals)
        return best

    @staticmethod
    def _rules(text: str) -> Iterable[tuple[str, float]]:
        folded = text.lower()
        for rule in _RULES:
            if rule.triggers and not any(t in folded for t in rule.triggers):
                continue
            if rule.pattern.search(text):
                yield rule.name, rule.weight
        for pattern in (_OVERRIDE_TARGET, _OVERRIDE_OTHER, _OVERRIDE_ANY_SCRIPT):
            for m in pattern.finditer(text):
                # "ignore my previous instructions", "the instructions I gave the
                # technician": a customer changing their mind.
                if _OWN.search(m.group(0)) or _OWN_AFTER.match(text, m.end()):
                    continue
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
