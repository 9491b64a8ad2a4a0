"""The streaming redactor: the worker runs it on the model's output as it is relayed."""

import re
from collections.abc import Iterable

from switchboard.common.redaction import _patterns as p
from switchboard.common.redaction._detect import Redactor, apply
from switchboard.common.redaction._kinds import ALL_KINDS, Finding, Kind
from switchboard.common.redaction._patterns import PASSWORD_KEYWORDS

# ---- streaming ------------------------------------------------------------------------

# Scripts written without spaces between words (Thai, Lao, Myanmar, Khmer, kana, CJK): their
# text flows without waiting for a word's end, as it has none.
_UNSPACED = (
    "\u0e00-\u0eff\u1000-\u109f\u1780-\u17ff\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff"
    "\uf900-\ufaff\uff66-\uff9f"
)
_UNSPACED_CHAR = re.compile(f"[{_UNSPACED}]")

# Tails of text that may still grow into something to redact; the streaming redactor holds
# them back. Each is searched at the end of the pending text; the longest wins.
_HOLD_RULES = tuple(
    re.compile(r)
    for r in (
        # the word being written, if it is made of characters e-mails, keys and ids use
        # (letters of any script written with spaces: an address may be josé@correo.es)
        rf"(?:(?![{_UNSPACED}])[\w@.%+\-=:/~\u00ad\u200b-\u200f\u2060-\u2064\ufeff])+$",
        # digit groups that may continue: cards, phones, national ids
        r"(?<![A-Za-z0-9])(?:[+(]|[+(]?\d"
        r"[\d \-.()/\u00ad\u200b-\u200f\u2060-\u2064\ufeff\uff0d]*)$",
        # an IBAN in groups
        r"(?<![A-Za-z0-9])[A-Za-z]{2}\d{2}[A-Za-z0-9 \-]*$",
        # a keyword whose value is still being written
        rf"(?i)\b(?:{PASSWORD_KEYWORDS}|bearer|api[_ -]?key|access[_ -]?token|auth[_ -]?token"
        r"|secret(?:[_ -]?key)?|client[_ -]?secret|token|ssn|social security)\b"
        r"[\s:=]*(?:\w{1,7}[\s:=]+)?[\"'“]?\S*$",
        # a UK national insurance number in groups
        r"(?<![A-Za-z0-9])[A-Z]{2} ?(?:\d{1,2} ?){0,3}[A-D]?$",
        # a private key block until its end line
        r"-----BEGIN[A-Z ]*(?:-{1,5}(?:(?!-----END [A-Z ]*PRIVATE KEY-----)[\s\S])*)?$",
    )
)


def _spaced(ch: str) -> bool:
    """Part of a word that ends at a space: ASCII, or a letter of a script written with spaces."""
    return ch.isascii() or (ch.isalnum() and _UNSPACED_CHAR.match(ch) is None)


def _joined(left: str, right: str) -> bool:
    return not (left.isspace() or right.isspace()) and (_spaced(left) or _spaced(right))


def _prefixes(words: str) -> str:
    """An alternation of every beginning of the `|`-separated `words` (longest first)."""
    found = {w[:n] for w in words.split("|") for n in range(1, len(w) + 1)}
    return "|".join(sorted((re.escape(f) for f in found), key=len, reverse=True))


_AT, _DOT = p._AT_WORDS, p._DOT_WORDS
# The words of p.PASSWORD_BEFORE ("use X as the password"), kept in step with it.
_BEFORE_VERBS = r"use|used|using|with|set to|usa|utiliza|utilise|benutze|nutze|gebruik"
_BEFORE_AS = "as|como|comme|als"
_BEFORE_ARTICLES = "my|the|mi|mon|mein|la|le|das|het"
# A separator of a spelled-out address ("at", "(dot)", "punkt"...), or the beginning of one
# at the end of the text.
_SEPARATOR_START = (
    rf"(?:(?:\s+(?:{_prefixes(_AT + '|' + _DOT)})?"
    rf"|\s*[(\[{{<]\s*(?:{_prefixes(_AT + '|' + _DOT)}|@|\.)?\s*[)\]}}>]?\s*|\.))$"
)
_SEPARATOR = rf"(?:{p._SPELLED_AT}|{p._SPELLED_DOT})"
# Findings that can be made of ordinary words: checked on every piece, as the plain text
# before them shows nothing suspicious yet.
_WORD_HOLD_RULES = tuple(
    re.compile(r)
    for r in (
        # an address spelled out: its words wait while a separator may still follow them
        rf"(?i)(?<![\w.%+-])(?:(?![{_UNSPACED}])[\w%+-])+(?:{_SEPARATOR}[\w%+-]+){{0,6}}"
        rf"(?:{_SEPARATOR}$|{_SEPARATOR_START}|$)",
        # "use sunshine as the password": the value comes before its keyword
        rf"(?i)\b(?:{_BEFORE_VERBS})\s+[\"'“]?[^\s\"'”]{{3,64}}[\"'”]?"
        rf"(?:\s+(?:{_prefixes(_BEFORE_AS)})?"
        rf"|\s+(?:{_BEFORE_AS})\s+(?:(?:{_BEFORE_ARTICLES})\s+)?"
        rf"(?:{_prefixes(_BEFORE_ARTICLES + '|' + PASSWORD_KEYWORDS.replace(' ?', ' '))})?)$",
        # a pass phrase runs to the end of its clause (up to eight words)
        r"(?i)\bpass ?phrase\b(?:[^.\n]{0,24}"
        r"|[^.\n]{0,24}?\b(?:is|was|:|=|ist|lautet|es|est|é|è)\s*[:=]?\s*(?:[^\s.,;!?]+ ?){0,8})$",
    )
)


# Text without any of these has nothing to redact: every detector needs one of them.
_SUSPICIOUS = re.compile(
    rf"\d|@|-----BEGIN|[A-Za-z0-9_\-+/=]{{20,}}|(?i:\b(?:{PASSWORD_KEYWORDS}|bearer|api|token"
    r"|secret|ssn|social security|key|national insurance|nino|dot|punto|arroba|arobase"
    r"|cvv|cvc|exp|expiry|bsn|cpf|sin|nir|pan|steuer-?id)\b)"
    # an address spelled out: "at" (or its kin), a word, then a dot
    rf"|(?i:\b(?:{p._AT_WORDS})\b[\s)\]}}>]+[\w-]+(?:\s*[(\[{{<]?\s*(?:{p._DOT_WORDS})\b|\.\w))"
)
_PLAIN_HOLD_RULES = (_HOLD_RULES[0], _HOLD_RULES[1], _HOLD_RULES[4])
# Cheap tests for the word rules: a spelled address has a separator (an "at" or "dot" word,
# a bracket, a dot between words); a password named after it, one of the verbs or
# "passphrase" (each begins a word with one of these, lower-cased).
_SEPARATOR_HINT = re.compile(
    rf"\b(?:{_AT}|{_DOT})\b|[(\[{{<]|\.\w|\s(?:{_prefixes(_AT + '|' + _DOT)})$"
)
_SEPARATOR_ENDS = frozenset("([{<.")
_ASCII_WORD = re.compile(r"[A-Za-z0-9@._%+\-=:/~]+$")
_BEFORE_HINT = re.compile(r"\b(?:us|with|set to|utili|benutze|nutze|gebruik|pass)")


class StreamingRedactor:
    """Redacts text that arrives in pieces, holding back only a possibly-sensitive tail.

    `push` returns the text that is safe to send now; `flush` returns the rest at the end.
    The concatenated output equals `Redactor.redact` of the whole text: what cannot yet be
    judged (the word being written, a run of digits, a keyword's value) waits, everything
    before it goes out at once. The hold is bounded by `max_hold_chars`.
    """

    def __init__(
        self,
        redactor: Redactor | None = None,
        kinds: Iterable[Kind] = ALL_KINDS,
        *,
        max_hold_chars: int = 2_048,
        context_chars: int = 64,
    ) -> None:
        self._redactor = redactor or Redactor()
        self._kinds = frozenset(kinds)
        self._max_hold = max_hold_chars
        self._context_chars = context_chars
        self._pending = ""
        # Raw text already released: detectors look back at it for keywords.
        self._context = ""
        self.findings: list[Kind] = []

    def push(self, text: str) -> str:
        """Take the next piece; returns the redacted text that can be sent now."""
        self._pending += text
        pending = self._pending
        offset = len(self._context)
        window = self._context + pending
        # Rules look at the released context too: a keyword sent already still makes its
        # value wait.
        suspicious = _SUSPICIOUS.search(window) is not None
        hold = max(self._hold_start(window, suspicious) - offset, 0)
        # Never cut inside a run of non-space characters (a detector would see half of
        # it), except between non-ASCII ones: scripts without spaces must still flow.
        while 0 < hold < len(pending) and _joined(pending[hold - 1], pending[hold]):
            hold -= 1
        findings = self._redactor.find(window, self._kinds) if suspicious else []
        # Nor inside something already recognisable as sensitive.
        for finding in reversed(findings):
            if finding.start < offset + hold < finding.end:
                hold = max(finding.start - offset, 0)
        hold = max(hold, len(pending) - self._max_hold)
        return self._release(hold, findings)

    def flush(self) -> str:
        """Everything still held, redacted: call once at the end of the stream."""
        window = self._context + self._pending
        return self._release(len(self._pending), self._redactor.find(window, self._kinds))

    @property
    def held(self) -> int:
        """How many characters are waiting."""
        return len(self._pending)

    def _hold_start(self, pending: str, suspicious: bool) -> int:
        start = len(pending)
        # Ordinary prose (no digit, "@", keyword or long token) needs only the cheap rules.
        rules = list(_HOLD_RULES if suspicious else _PLAIN_HOLD_RULES)
        if pending.isascii():
            rules[0] = _ASCII_WORD  # the same rule, three times cheaper
        # The word rules are the dearest: they run only when their words can be there.
        low = pending.lower()
        spelled, before = _WORD_HOLD_RULES[0], _WORD_HOLD_RULES[1:]
        # (an end that may begin a separator: a space, a bracket, a dot)
        end = pending[-1:]
        if end.isspace() or end in _SEPARATOR_ENDS or _SEPARATOR_HINT.search(low) is not None:
            rules.append(spelled)
        if _BEFORE_HINT.search(low) is not None:
            rules.extend(before)
        for rule in rules:
            m = rule.search(pending, max(0, len(pending) - self._max_hold))
            if m is not None and m.start() < start:
                start = m.start()
        return start

    def _release(self, cut: int, findings: list[Finding]) -> str:
        """Send `pending[:cut]`, redacting the `findings` (positions in context + pending)."""
        if cut <= 0:
            return ""
        segment, self._pending = self._pending[:cut], self._pending[cut:]
        offset = len(self._context)
        released = [f for f in findings if f.end > offset and f.start < offset + cut]
        self.findings.extend(f.kind for f in released)
        window = self._context + segment
        self._context = window[-self._context_chars :]
        return apply(segment, released, offset)
