"""PII and secret redaction: detectors, a one-shot redactor and a streaming one.

Checksums and phone grammars come from well-kept libraries (python-stdnum: Luhn, IBAN
mod-97, national ids; phonenumbers: Google's libphonenumber). Microsoft Presidio is not used:
its analyzer needs a spaCy model that is not published on PyPI and pulls in spaCy and
tldextract (which fetches the public suffix list at run time), while its pattern recognizers
add nothing over these two libraries. The candidate-finding regular expressions are ours.

Cards, IBANs, keys and passwords are *secrets*: always redacted. E-mail addresses, phone
numbers and national ids are *personal data*: redacted before storage always, and before the
provider when the tenant's policy says so.
"""

import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum

import phonenumbers
from stdnum import iban as stdnum_iban
from stdnum import luhn
from stdnum.es import dni as es_dni
from stdnum.es import nie as es_nie
from stdnum.it import codicefiscale as it_codicefiscale
from stdnum.us import ssn as us_ssn


class Kind(StrEnum):
    """What a finding is; the value is the placeholder's name."""

    CARD = "CARD"
    IBAN = "IBAN"
    SECRET = "SECRET"
    PASSWORD = "PASSWORD"
    NATIONAL_ID = "NATIONAL_ID"
    EMAIL = "EMAIL"
    PHONE = "PHONE"

    @property
    def placeholder(self) -> str:
        return f"[{self.value}]"


SECRET_KINDS = frozenset({Kind.CARD, Kind.IBAN, Kind.SECRET, Kind.PASSWORD})
PERSONAL_KINDS = frozenset({Kind.NATIONAL_ID, Kind.EMAIL, Kind.PHONE})
ALL_KINDS = SECRET_KINDS | PERSONAL_KINDS

# When two findings overlap, the more specific kind wins.
_PRIORITY = {
    Kind.SECRET: 0,
    Kind.PASSWORD: 1,
    Kind.IBAN: 2,
    Kind.CARD: 3,
    Kind.EMAIL: 4,
    Kind.NATIONAL_ID: 5,
    Kind.PHONE: 6,
}

DEFAULT_PHONE_REGIONS = ("US", "GB", "DE", "FR", "ES", "IT", "NL")


@dataclass(frozen=True, order=True)
class Finding:
    """One piece of sensitive text: `text[start:end]`."""

    start: int
    end: int
    kind: Kind


@dataclass(frozen=True)
class Redaction:
    """A redacted text and what was found in the original."""

    text: str
    findings: tuple[Finding, ...]

    @property
    def kinds(self) -> frozenset[Kind]:
        return frozenset(f.kind for f in self.findings)


# ---- candidate patterns ---------------------------------------------------------------

_CARD = re.compile(r"(?<![\w.-])(?:\d[ -]?){12,18}\d(?![\w-]|\.\d)")
# How people group card digits: 4-4-4-4 (most), 4-4-4-4-3 (19 digits), 4-6-5 and 4-6-4 (Amex,
# Diners).
_CARD_GROUPINGS = frozenset({(4, 4, 4, 4), (4, 4, 4, 4, 3), (4, 6, 5), (4, 6, 4)})
_IBAN_START = re.compile(r"(?<![A-Za-z0-9])[A-Za-z]{2}\d{2}(?=[ -]?[A-Za-z0-9])")
_IBAN_TAIL = re.compile(r"[A-Za-z0-9]+|[ -]")
_SSN = re.compile(r"(?<![\d-])\d{3}([- ])\d{2}\1\d{4}(?![\d-])")
_NINE_DIGITS = re.compile(r"(?<!\d)\d{9}(?!\d)")
_SSN_CONTEXT = re.compile(
    r"(?i)\b(?:ssn|social security(?: number| no\.?)?|seguro social|sécurité sociale)\b"
)
_DNI = re.compile(r"(?<![A-Za-z0-9])(?:\d{8}-?[A-Za-z]|[XYZxyz]-?\d{7}-?[A-Za-z])(?![A-Za-z0-9])")
_CODICE_FISCALE = re.compile(
    r"(?<![A-Za-z0-9])[A-Za-z]{6}\d{2}[A-Za-z]\d{2}[A-Za-z]\d{3}[A-Za-z](?![A-Za-z0-9])"
)
_NINO = re.compile(
    r"(?<![A-Za-z0-9])[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z] ?\d{2} ?\d{2} ?\d{2} ?[A-D]"
    r"(?![A-Za-z0-9])"
)
_NINO_CONTEXT = re.compile(r"(?i)\b(?:national insurance|ni number|nino)\b")
_EMAIL = re.compile(
    r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}"
    r"(?![A-Za-z0-9-])"
)

_SECRET_PATTERNS = tuple(
    re.compile(p)
    for p in (
        r"(?<![A-Za-z0-9])sk-(?:proj-|ant-(?:api\d\d-)?)?[A-Za-z0-9_\-]{20,}",
        r"(?<![A-Za-z0-9])(?:AKIA|ASIA)[0-9A-Z]{16}(?![A-Za-z0-9])",
        r"(?<![A-Za-z0-9])gh[pousr]_[A-Za-z0-9]{30,}",
        r"(?<![A-Za-z0-9])github_pat_[A-Za-z0-9_]{22,}",
        r"(?<![A-Za-z0-9])xox[abprs]-[A-Za-z0-9-]{10,}",
        r"(?<![A-Za-z0-9])AIza[0-9A-Za-z_\-]{35}",
        r"(?<![A-Za-z0-9])(?:sk|rk)_(?:live|test)_[0-9A-Za-z]{16,}",
        r"(?<![A-Za-z0-9])glpat-[0-9A-Za-z_\-]{20,}",
        r"(?<![A-Za-z0-9])eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}",
        r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?-----END [A-Z ]*PRIVATE KEY-----",
    )
)
# Only the value after the keyword is secret.
_SECRET_ASSIGNMENT = re.compile(
    r"(?i)\b(?:bearer|api[_ -]?key|access[_ -]?token|auth[_ -]?token|refresh[_ -]?token"
    r"|secret(?:[_ -]?key)?|client[_ -]?secret|token)\b(?:\s*(?:is|:|=|:=)\s*|\s+)"
    r"[\"']?([A-Za-z0-9._~+/=\-]{12,})"
)
_LONG_TOKEN = re.compile(r"(?<![A-Za-z0-9_\-+/=])[A-Za-z0-9_\-+/=]{32,}(?![A-Za-z0-9_\-+/=])")

_PASSWORD_KEYWORDS = (
    r"password|passwd|pwd|passcode|pass ?phrase|pin(?: code| number)?|contraseña|clave"
    r"|mot de passe|mdp|passwort|kennwort|senha|wachtwoord|hasło"
)
_PASSWORD_CONNECTORS = r"is|was|is now|=|:|:=|ist|lautet|es|est|era|é|è|to"
_PASSWORD = re.compile(
    rf"(?i)\b(?:{_PASSWORD_KEYWORDS})\b\s*(?:(?:{_PASSWORD_CONNECTORS})(?![\w])\s*[:=]?|[:=])\s*"
    r"(?:[\"'“]([^\"'”\n]{1,64})[\"'”]|(\S{1,64}?))(?=[.,;!?)]*(?:\s|$))"
)
# Words that follow "password is" without being a password.
_NOT_A_PASSWORD = frozenset(
    [
        "wrong",
        "incorrect",
        "invalid",
        "not",
        "correct",
        "expired",
        "too",
        "the",
        "my",
        "a",
        "an",
        "still",
        "being",
        "reset",
        "required",
        "missing",
        "forgotten",
        "lost",
        "blocked",
        "locked",
        "empty",
        "different",
        "same",
        "weak",
        "strong",
        "ok",
        "fine",
        "working",
        "changed",
        "new",
        "old",
        "falsch",
        "incorrecta",
        "incorrecto",
        "incorrect",
        "faux",
        "errada",
        "sbagliata",
    ]
)

_PHONE_CONTEXT = re.compile(
    r"(?i)\b(?:phone|call|tel|telephone|mobile|cell|whatsapp|sms|text me|fax|number|numero"
    r"|número|teléfono|telefono|móvil|cellulare|téléphone|portable|telefon|handy|rufnummer"
    r"|telefoon|mobiel)\b"
)
_NOT_PHONE_CONTEXT = re.compile(
    r"(?i)(?:order|invoice|ref|reference|tracking|sku|model|serial|case|ticket|account"
    r"|contract|customer|meter|pedido|commande|bestellung|rechnung|factura|ordine|#)"
    r"(?:\b|(?<=#))[^\d\n]{0,14}$"
)
_PHONE_CANDIDATE = re.compile(r"(?<![\w+])(?:\+|\b)\(?\d[\d \t().\-/]{5,}\d(?![\w-])")
_DATE_LIKE = re.compile(r"^(?:\d{1,2}[./-]\d{1,2}[./-]\d{2,4}|\d{4}[./-]\d{1,2}[./-]\d{1,2})$")
_PHONE_FORMATTED = re.compile(r"^\(?\d+\)?(?:[ .\-/]\(?\d+\)?)+$")


def _luhn_card(digits: str) -> bool:
    if not 13 <= len(digits) <= 19 or len(set(digits)) == 1:
        return False
    if digits[0] not in "23456":
        return False
    if digits[0] == "2" and not 2221 <= int(digits[:4]) <= 2720:
        return False
    return bool(luhn.is_valid(digits))


def _entropy(token: str) -> float:
    counts = Counter(token)
    return -sum(n / len(token) * math.log2(n / len(token)) for n in counts.values())


class Redactor:
    """Finds PII and secrets in text and replaces them with `[KIND]` placeholders."""

    def __init__(self, phone_regions: Sequence[str] = DEFAULT_PHONE_REGIONS) -> None:
        self._phone_regions = tuple(phone_regions)

    def find(self, text: str, kinds: Iterable[Kind] = ALL_KINDS) -> list[Finding]:
        """Non-overlapping findings of the given kinds, in text order."""
        wanted = frozenset(kinds)
        found: list[Finding] = []
        if wanted & {Kind.SECRET}:
            found.extend(self._secrets(text))
        if Kind.PASSWORD in wanted:
            found.extend(self._passwords(text))
        digits = sum(c.isdigit() for c in text)
        if Kind.IBAN in wanted and digits >= 2:
            found.extend(self._ibans(text))
        if Kind.CARD in wanted and digits >= 13:
            found.extend(self._cards(text))
        if Kind.EMAIL in wanted and "@" in text:
            found.extend(Finding(m.start(), m.end(), Kind.EMAIL) for m in _EMAIL.finditer(text))
        if Kind.NATIONAL_ID in wanted and digits >= 6:
            found.extend(self._national_ids(text))
        if Kind.PHONE in wanted and digits >= 7:
            found.extend(self._phones(text))
        return _without_overlaps(found)

    def redact(self, text: str, kinds: Iterable[Kind] = ALL_KINDS) -> Redaction:
        """`text` with every finding replaced by its placeholder."""
        findings = self.find(text, kinds)
        return Redaction(_apply(text, findings, 0), tuple(findings))

    # ---- detectors ----

    def _secrets(self, text: str) -> Iterable[Finding]:
        for pattern in _SECRET_PATTERNS:
            for m in pattern.finditer(text):
                yield Finding(m.start(), m.end(), Kind.SECRET)
        for m in _SECRET_ASSIGNMENT.finditer(text):
            yield Finding(m.start(1), m.end(1), Kind.SECRET)
        for m in _LONG_TOKEN.finditer(text):
            token = m.group()
            if (
                any(c.islower() for c in token)
                and any(c.isupper() for c in token)
                and any(c.isdigit() for c in token)
                and _entropy(token) >= 3.5
            ):
                yield Finding(m.start(), m.end(), Kind.SECRET)

    def _passwords(self, text: str) -> Iterable[Finding]:
        for m in _PASSWORD.finditer(text):
            group = 1 if m.group(1) is not None else 2
            value = m.group(group)
            if value is None or value.lower().strip(".,!?") in _NOT_A_PASSWORD:
                continue
            yield Finding(m.start(group), m.end(group), Kind.PASSWORD)

    def _cards(self, text: str) -> Iterable[Finding]:
        for m in _CARD.finditer(text):
            groups = tuple(len(g) for g in re.split(r"[ -]", m.group()))
            if len(groups) > 1 and groups not in _CARD_GROUPINGS:
                continue  # e.g. the digits of an IBAN, or a list of numbers
            if _luhn_card(re.sub(r"\D", "", m.group())):
                yield Finding(m.start(), m.end(), Kind.CARD)

    def _ibans(self, text: str) -> Iterable[Finding]:
        for m in _IBAN_START.finditer(text):
            # Grow the candidate group by group and keep the longest valid IBAN, so that
            # a following word is never swallowed and a short prefix never wins.
            compact = m.group().upper()
            end = m.end()
            best = None
            position = m.end()
            while position < len(text) and len(compact) <= 34:
                piece = _IBAN_TAIL.match(text, position)
                if piece is None:
                    break
                token = piece.group()
                if token in " -":
                    position = piece.end()
                    continue
                compact += token.upper()
                end = position = piece.end()
                if len(compact) >= 15 and stdnum_iban.is_valid(compact):
                    best = end
            if best is not None:
                yield Finding(m.start(), best, Kind.IBAN)

    def _national_ids(self, text: str) -> Iterable[Finding]:
        for m in _SSN.finditer(text):
            if us_ssn.is_valid(m.group()):
                yield Finding(m.start(), m.end(), Kind.NATIONAL_ID)
        for m in _NINE_DIGITS.finditer(text):
            before = text[max(0, m.start() - 40) : m.start()]
            if _SSN_CONTEXT.search(before) and us_ssn.is_valid(m.group()):
                yield Finding(m.start(), m.end(), Kind.NATIONAL_ID)
        for m in _DNI.finditer(text):
            value = m.group().upper()
            if es_dni.is_valid(value) or es_nie.is_valid(value):
                yield Finding(m.start(), m.end(), Kind.NATIONAL_ID)
        for m in _CODICE_FISCALE.finditer(text):
            if it_codicefiscale.is_valid(m.group().upper()):
                yield Finding(m.start(), m.end(), Kind.NATIONAL_ID)
        for m in _NINO.finditer(text):
            if _NINO_CONTEXT.search(text[max(0, m.start() - 40) : m.start()]):
                yield Finding(m.start(), m.end(), Kind.NATIONAL_ID)

    def _phones(self, text: str) -> Iterable[Finding]:
        for m in _PHONE_CANDIDATE.finditer(text):
            raw = m.group().rstrip(" .-/")
            digits = re.sub(r"\D", "", raw)
            if not 7 <= len(digits) <= 15 or _DATE_LIKE.match(raw):
                continue
            if self._looks_like_phone(text, m.start(), raw) and self._valid_phone(raw):
                yield Finding(m.start(), m.start() + len(raw), Kind.PHONE)

    def _valid_phone(self, raw: str) -> bool:
        if raw.startswith("00"):
            raw = "+" + raw[2:]
        regions: Sequence[str | None] = (None,) if raw.startswith("+") else self._phone_regions
        for region in regions:
            try:
                number = phonenumbers.parse(raw, region)
            except phonenumbers.NumberParseException:
                continue
            if phonenumbers.is_valid_number(number):
                return True
        return False

    @staticmethod
    def _looks_like_phone(text: str, start: int, raw: str) -> bool:
        if start > 0 and (text[start - 1].isalnum() or text[start - 1] in "-_/#"):
            return False  # glued to a code such as INV-2024-000123
        before = text[max(0, start - 32) : start]
        if _NOT_PHONE_CONTEXT.search(before):
            return False
        if raw.startswith(("+", "00")):
            return True
        return bool(_PHONE_FORMATTED.match(raw) or _PHONE_CONTEXT.search(before))


def _without_overlaps(findings: list[Finding]) -> list[Finding]:
    ordered = sorted(findings, key=lambda f: (f.start, -(f.end - f.start), _PRIORITY[f.kind]))
    kept: list[Finding] = []
    for finding in ordered:
        if kept and finding.start < kept[-1].end:
            continue
        kept.append(finding)
    return kept


def _apply(text: str, findings: Sequence[Finding], offset: int) -> str:
    """Replace `findings` (relative to `offset`) inside `text`."""
    parts: list[str] = []
    position = 0
    for finding in findings:
        start, end = max(finding.start - offset, 0), finding.end - offset
        if end <= position:
            continue
        parts.append(text[position:start])
        parts.append(finding.kind.placeholder)
        position = end
    parts.append(text[position:])
    return "".join(parts)


# ---- streaming ------------------------------------------------------------------------

# Tails of text that may still grow into something to redact; the streaming redactor holds
# them back. Each is searched at the end of the pending text; the longest wins.
_HOLD_RULES = tuple(
    re.compile(p)
    for p in (
        # the word being written, if it is made of characters e-mails, keys and ids use
        r"[A-Za-z0-9@._%+\-=:/~]+$",
        # digit groups that may continue: cards, phones, national ids
        r"(?<![A-Za-z0-9])(?:[+(]|[+(]?\d[\d \-.()/]*)$",
        # an IBAN in groups
        r"(?<![A-Za-z0-9])[A-Za-z]{2}\d{2}[A-Za-z0-9 \-]*$",
        # a keyword whose value is still being written
        rf"(?i)\b(?:{_PASSWORD_KEYWORDS}|bearer|api[_ -]?key|access[_ -]?token|auth[_ -]?token"
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
    rf"\d|@|-----BEGIN|[A-Za-z0-9_\-+/=]{{20,}}|(?i:\b(?:{_PASSWORD_KEYWORDS}|bearer|api|token"
    r"|secret|ssn|social security|key|national insurance|nino)\b)"
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
        return _apply(segment, released, offset)
