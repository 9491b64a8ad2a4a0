"""The streaming redactor: the worker runs it on the model's output as it is relayed."""

import re
from collections.abc import Iterable

from switchboard.common.redaction._detect import Redactor, apply
from switchboard.common.redaction._kinds import ALL_KINDS, Finding, Kind
from switchboard.common.redaction._patterns import PASSWORD_KEYWORDS

# ---- streaming ------------------------------------------------------------------------

# Tails of text that may still grow into something to redact; the streaming redactor holds
# them back. Each is searched at the end of the pending text; the longest wins.
_HOLD_RULES = tuple(
    re.compile(p)
    for p in (
        # the word being written, if it is made of characters e-mails, keys and ids use
        r"[A-Za-z0-9@._%+\-=:/~\u00ad\u200b-\u200f\u2060-\u2064\ufeff]+$",
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


def _joined(left: str, right: str) -> bool:
    return not (left.isspace() or right.isspace()) and (left.isascii() or right.isascii())


# Text without any of these has nothing to redact: every detector needs one of them.
_SUSPICIOUS = re.compile(
    rf"\d|@|-----BEGIN|[A-Za-z0-9_\-+/=]{{20,}}|(?i:\b(?:{PASSWORD_KEYWORDS}|bearer|api|token"
    r"|secret|ssn|social security|key|national insurance|nino|dot|punto|arroba|arobase"
    r"|cvv|cvc|exp|expiry|bsn|cpf|sin|nir|pan|steuer-?id)\b)"
)
_PLAIN_HOLD_RULES = (_HOLD_RULES[0], _HOLD_RULES[1], _HOLD_RULES[4])


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
        for rule in _HOLD_RULES if suspicious else _PLAIN_HOLD_RULES:
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
