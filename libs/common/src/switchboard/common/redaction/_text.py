"""Normalisation before detection: NFKC, no invisible characters, one kind of dash.

Detectors run on the normalised text; `Normalised.span` maps what they find back to the
original, so that the redacted text is the caller's own, with only the findings replaced.
"""

import unicodedata
from dataclasses import dataclass

# Dashes and minus signs NFKC leaves alone but people (and copy-paste) put between digits.
_DASHES = dict.fromkeys(map(ord, "\u2010\u2011\u2012\u2013\u2014\u2015\u2212\ufe58\ufe63"), "-")


def _invisible(ch: str) -> bool:
    # Format characters (zero-width space/joiners, soft hyphen, bidi controls, tag
    # characters, BOM) and variation selectors: invisible, so a split that hides a card.
    return unicodedata.category(ch) == "Cf" or "\ufe00" <= ch <= "\ufe0f"


@dataclass(frozen=True)
class Normalised:
    """A normalised text and, when it differs, each of its characters' original index."""

    text: str
    origin: tuple[int, ...] | None
    original_length: int

    def span(self, start: int, end: int) -> tuple[int, int]:
        """The original span of `text[start:end]`."""
        if self.origin is None:
            return start, end
        if start >= len(self.origin):
            return self.original_length, self.original_length
        return self.origin[start], self.origin[max(end - 1, start)] + 1


def normalise(text: str) -> Normalised:
    """NFKC per character (full-width digits become ASCII), invisible characters dropped,
    dashes unified. ASCII text is returned as it is (NFKC cannot change it)."""
    if text.isascii():
        return Normalised(text, None, len(text))
    out: list[str] = []
    origin: list[int] = []
    for index, ch in enumerate(text):
        if ch.isascii():
            out.append(ch)
            origin.append(index)
            continue
        if _invisible(ch):
            continue
        for piece in unicodedata.normalize("NFKC", ch).translate(_DASHES):
            out.append(piece)
            origin.append(index)
    return Normalised("".join(out), tuple(origin), len(text))


def normalize(text: str) -> str:
    """The normalised text alone (for scorers that need no mapping back)."""
    return normalise(text).text
