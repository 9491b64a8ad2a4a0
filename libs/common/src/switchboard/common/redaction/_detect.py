"""The one-shot redactor: normalise, run the detectors, map findings back, replace."""

import base64
import binascii
import functools
import itertools
import math
import re
import string
from collections import Counter
from collections.abc import Iterable, Sequence

import phonenumbers
from stdnum import iban as stdnum_iban
from stdnum import luhn
from stdnum.br import cpf as br_cpf
from stdnum.ca import sin as ca_sin
from stdnum.de import idnr as de_idnr
from stdnum.es import dni as es_dni
from stdnum.es import nie as es_nie
from stdnum.fr import nir as fr_nir
from stdnum.in_ import pan as in_pan
from stdnum.it import codicefiscale as it_codicefiscale
from stdnum.nl import bsn as nl_bsn
from stdnum.us import ssn as us_ssn

from switchboard.common.redaction import _patterns as p
from switchboard.common.redaction._kinds import ALL_KINDS, Finding, Kind, Redaction
from switchboard.common.redaction._text import normalise

DEFAULT_PHONE_REGIONS = ("US", "GB", "DE", "FR", "ES", "IT", "NL")

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
_PROVIDER_TOKENS = p.provider_token_patterns()
# How far before an id its keyword may stand ("my social insurance number is ...").
_CONTEXT_CHARS = 48


def _luhn_card(digits: str) -> bool:
    if not 13 <= len(digits) <= 19 or len(set(digits)) == 1:
        return False
    if digits[0] not in "23456":
        return False
    if digits[0] == "2" and not 2221 <= int(digits[:4]) <= 2720:
        return False
    return bool(luhn.is_valid(digits))


def _card_end(candidate: str) -> int | None:
    """Where the card number in a run of digit groups ends, or None when it holds none.

    The run may go on past the card ("4111 1111 1111 1111 09 27"): the longest prefix of
    whole groups grouped as cards are (4-4-4-4, 4-6-5, ...; or one block) is tried first.
    """
    groups = list(re.finditer(r"\d+", candidate))
    separators = {candidate[a.end() : b.start()] for a, b in itertools.pairwise(groups)}
    if len(separators) > 1:
        return None  # one separator throughout, as people write cards
    for count in range(len(groups), 0, -1):
        lengths = tuple(len(g.group()) for g in groups[:count])
        if count > 1 and lengths not in p.CARD_GROUPINGS:
            continue  # e.g. the digits of an IBAN, or a list of numbers
        if _luhn_card("".join(g.group() for g in groups[:count])):
            return groups[count - 1].end()
    return None


def _entropy(token: str) -> float:
    counts = Counter(token)
    return -sum(n / len(token) * math.log2(n / len(token)) for n in counts.values())


def _decoded_words(token: str) -> str | None:
    """The text a base64 or hex token encodes, when it is words (three or more, printable,
    spaced); None for anything else."""
    raw: bytes | None = None
    if len(token) % 2 == 0 and all(c in string.hexdigits for c in token):
        raw = bytes.fromhex(token)
    else:
        body = token.rstrip("=")
        altchars = b"-_" if ("-" in body or "_" in body) else None
        try:
            raw = base64.b64decode(body + "=" * (-len(body) % 4), altchars=altchars, validate=True)
        except (binascii.Error, ValueError):
            return None
    try:
        decoded = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if not decoded or sum(c.isprintable() or c.isspace() for c in decoded) / len(decoded) < 0.95:
        return None
    if decoded.count(" ") < 2 or len(re.findall(r"[^\W\d_]{2,}", decoded)) < 3:
        return None
    return decoded


def _before(text: str, start: int) -> str:
    return text[max(0, start - _CONTEXT_CHARS) : start]


class Redactor:
    """Finds PII and secrets in text and replaces them with `[KIND]` placeholders.

    Text is normalised first (NFKC, every decimal digit as ASCII, invisible characters
    dropped, a word break where digits meet a script written without spaces), so cards in
    full-width or other Unicode digits, inside Japanese or Thai text, or split by zero-width
    characters are found; positions refer to the original text.
    """

    def __init__(self, phone_regions: Sequence[str] = DEFAULT_PHONE_REGIONS) -> None:
        self._phone_regions = tuple(phone_regions)

    @property
    def phone_regions(self) -> tuple[str, ...]:
        return self._phone_regions

    def find(self, text: str, kinds: Iterable[Kind] = ALL_KINDS) -> list[Finding]:
        """Non-overlapping findings of the given kinds, in text order (original positions)."""
        normal = normalise(text, break_unspaced=True)
        found = self._find(normal.text, frozenset(kinds))
        if normal.origin is None:
            return found
        mapped = [Finding(*normal.span(f.start, f.end), f.kind) for f in found]
        return _without_overlaps(mapped)

    def redact(self, text: str, kinds: Iterable[Kind] = ALL_KINDS) -> Redaction:
        """`text` with every finding replaced by its placeholder."""
        findings = self.find(text, kinds)
        return Redaction(apply(text, findings, 0), tuple(findings))

    def _find(self, text: str, wanted: frozenset[Kind]) -> list[Finding]:
        found: list[Finding] = []
        if Kind.SECRET in wanted:
            found.extend(self._secrets(text))
        if Kind.PASSWORD in wanted:
            found.extend(self._passwords(text))
        digits = sum(c.isdigit() for c in text)
        if Kind.IBAN in wanted and digits >= 2:
            found.extend(self._ibans(text))
        if Kind.CARD in wanted and digits >= 3:
            found.extend(self._cards(text))
        if Kind.EMAIL in wanted:
            if "@" in text:
                found.extend(
                    Finding(m.start(), m.end(), Kind.EMAIL) for m in p.EMAIL.finditer(text)
                )
            found.extend(
                Finding(m.start(), m.end(), Kind.EMAIL) for m in p.SPELLED_EMAIL.finditer(text)
            )
        if Kind.NATIONAL_ID in wanted:
            found.extend(self._national_ids(text, digits))
        if Kind.PHONE in wanted and digits >= 7:
            found.extend(self._phones(text))
        return _without_overlaps(found)

    # ---- detectors ----

    def _secrets(self, text: str) -> Iterable[Finding]:
        for pattern in _PROVIDER_TOKENS:
            for m in pattern.finditer(text):
                yield Finding(m.start(), m.end(), Kind.SECRET)
        for pattern in (p.SECRET_ASSIGNMENT, p.URL_CREDENTIALS, p.QUERY_SECRET):
            for m in pattern.finditer(text):
                yield Finding(m.start(1), m.end(1), Kind.SECRET)
        for m in p.LONG_TOKEN.finditer(text):
            token = m.group()
            if (
                any(c.islower() for c in token)
                and any(c.isupper() for c in token)
                and any(c.isdigit() for c in token)
                and _entropy(token) >= 3.5
                and not self._harmless_encoded_text(token)
            ):
                yield Finding(m.start(), m.end(), Kind.SECRET)
        for m in p.HEX_TOKEN.finditer(text):
            token = m.group()
            if (
                any(c.isdigit() for c in token)
                and any(c.isalpha() for c in token)
                and not self._harmless_encoded_text(token)
            ):
                yield Finding(m.start(), m.end(), Kind.SECRET)

    def _harmless_encoded_text(self, token: str) -> bool:
        """Base64 or hex that decodes to words is encoded text, not a key (a key decodes to
        noise): it stays, so that the injection check downstream can read it, unless the
        words themselves hold a secret, a password or a card."""
        decoded = _decoded_words(token)
        if decoded is None:
            return False
        return not any(
            itertools.chain(self._secrets(decoded), self._passwords(decoded), self._cards(decoded))
        )

    def _passwords(self, text: str) -> Iterable[Finding]:
        for m in p.PASSWORD.finditer(text):
            group = 1 if m.group(1) is not None else 2
            value = m.group(group)
            if value is None or value.lower().strip(".,!?") in p.NOT_A_PASSWORD:
                continue
            yield Finding(m.start(group), m.end(group), Kind.PASSWORD)
        for pattern in (p.PASSPHRASE, p.PASSWORD_BEFORE, p.CONNECTION_PASSWORD):
            for m in pattern.finditer(text):
                value = m.group(1).strip()
                if value.lower() in p.NOT_A_PASSWORD:
                    continue
                yield Finding(m.start(1), m.start(1) + len(value), Kind.PASSWORD)

    def _cards(self, text: str) -> Iterable[Finding]:
        for m in p.CARD.finditer(text):
            end = _card_end(m.group())
            if end is None:
                continue
            yield Finding(m.start(), m.start() + end, Kind.CARD)
            # The expiry date and code typed right after the number belong to it.
            position = m.start() + end
            for _ in range(2):
                after = p.AFTER_CARD.match(text[position : position + 16])
                if after is None:
                    break
                group = 1 if after.group(1) is not None else 2
                yield Finding(position + after.start(group), position + after.end(group), Kind.CARD)
                position += after.end()
        for pattern in (p.CARD_CODE, p.CARD_EXPIRY):
            for m in pattern.finditer(text):
                yield Finding(m.start(1), m.end(1), Kind.CARD)

    def _ibans(self, text: str) -> Iterable[Finding]:
        for m in p.IBAN_START.finditer(text):
            # Grow the candidate group by group and keep the longest valid IBAN, so that
            # a following word is never swallowed and a short prefix never wins.
            compact = m.group().upper()
            best = None
            position = m.end()
            while position < len(text) and len(compact) <= 34:
                piece = p.IBAN_TAIL.match(text, position)
                if piece is None:
                    break
                token = piece.group()
                if token in " -":
                    position = piece.end()
                    continue
                compact += token.upper()
                position = piece.end()
                if len(compact) >= 15 and stdnum_iban.is_valid(compact):
                    best = position
            if best is not None:
                yield Finding(m.start(), best, Kind.IBAN)

    def _national_ids(self, text: str, digits: int) -> Iterable[Finding]:
        if digits >= 6:
            yield from self._numeric_ids(text)
        for m in p.DNI.finditer(text):
            value = m.group().upper()
            if es_dni.is_valid(value) or es_nie.is_valid(value):
                yield Finding(m.start(), m.end(), Kind.NATIONAL_ID)
        for m in p.CODICE_FISCALE.finditer(text):
            if it_codicefiscale.is_valid(m.group().upper()):
                yield Finding(m.start(), m.end(), Kind.NATIONAL_ID)
        for m in p.NINO.finditer(text):
            if p.NINO_CONTEXT.search(_before(text, m.start())):
                yield Finding(m.start(), m.end(), Kind.NATIONAL_ID)
        for m in p.PAN.finditer(text):
            if in_pan.is_valid(m.group()):
                yield Finding(m.start(), m.end(), Kind.NATIONAL_ID)
        for m in p.PAN_ANY_CASE.finditer(text):
            if p.PAN_CONTEXT.search(_before(text, m.start())) and in_pan.is_valid(
                m.group().upper()
            ):
                yield Finding(m.start(), m.end(), Kind.NATIONAL_ID)

    def _numeric_ids(self, text: str) -> Iterable[Finding]:
        # Strong formats stand alone: a US SSN written 3-2-4, a French NIR with its key,
        # a Brazilian CPF written 3.3.3-2. Plain digit runs need their keyword nearby.
        for m in p.SSN.finditer(text):
            if us_ssn.is_valid(m.group()):
                yield Finding(m.start(), m.end(), Kind.NATIONAL_ID)
        for m in p.NIR.finditer(text):
            if fr_nir.is_valid(m.group().replace(" ", "")):
                yield Finding(m.start(), m.end(), Kind.NATIONAL_ID)
        for m in p.CPF_FORMATTED.finditer(text):
            if br_cpf.is_valid(m.group()):
                yield Finding(m.start(), m.end(), Kind.NATIONAL_ID)
        keyed = (
            (p.NINE_DIGITS, p.SSN_CONTEXT, us_ssn.is_valid),
            (p.STEUER_ID, p.STEUER_CONTEXT, de_idnr.is_valid),
            (p.BSN, p.BSN_CONTEXT, nl_bsn.is_valid),
            (p.CPF_PLAIN, p.CPF_CONTEXT, br_cpf.is_valid),
            (p.SIN, p.SIN_CONTEXT, ca_sin.is_valid),
        )
        for pattern, context, valid in keyed:
            for m in pattern.finditer(text):
                if context.search(_before(text, m.start())) and valid(m.group()):
                    yield Finding(m.start(), m.end(), Kind.NATIONAL_ID)

    def _phones(self, text: str) -> Iterable[Finding]:
        for m in p.PHONE_CANDIDATE.finditer(text):
            raw = m.group().rstrip(" .-/")
            digits = re.sub(r"\D", "", raw)
            if not 7 <= len(digits) <= 15 or p.DATE_LIKE.match(raw):
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
        if p.NOT_PHONE_CONTEXT.search(before):
            return False
        if raw.startswith(("+", "00")):
            return True
        return bool(p.PHONE_FORMATTED.match(raw) or p.PHONE_CONTEXT.search(before))


def _without_overlaps(findings: list[Finding]) -> list[Finding]:
    ordered = sorted(findings, key=lambda f: (f.start, -(f.end - f.start), _PRIORITY[f.kind]))
    kept: list[Finding] = []
    for finding in ordered:
        if finding.end <= finding.start:
            continue
        if kept and finding.start < kept[-1].end:
            continue
        kept.append(finding)
    return kept


def apply(text: str, findings: Sequence[Finding], offset: int) -> str:
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


@functools.lru_cache(maxsize=256)
def redactor_for(phone_regions: tuple[str, ...]) -> Redactor:
    """The shared `Redactor` of a set of phone regions: built once per set (its patterns and
    number matchers), and safe to share, as it keeps no state between calls."""
    return Redactor(phone_regions)
