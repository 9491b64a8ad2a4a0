"""Normalisation before detection: NFKC, every decimal digit as ASCII, no invisible
characters, one kind of dash, and (for the detectors) a word break where digits or Latin
letters meet a script written without spaces.

Detectors run on the normalised text; `Normalised.span` maps what they find back to the
original, so that the redacted text is the caller's own, with only the findings replaced.
"""

import re
import unicodedata
from dataclasses import dataclass

# Dashes and minus signs NFKC leaves alone but people (and copy-paste) put between digits.
_DASHES = dict.fromkeys(map(ord, "\u2010\u2011\u2012\u2013\u2014\u2015\u2212\ufe58\ufe63"), "-")
# Scripts written without spaces between words (Han, kana, Hangul's particles, Thai, Lao,
# Khmer, Myanmar): "番号は4111 1111 ..." has no word boundary before the card for `\w`-based
# detectors, so one is put there.
_UNSPACED = re.compile(
    "[\u0e00-\u0eff\u1000-\u109f\u1100-\u11ff\u1780-\u17ff\u3040-\u30ff\u3130-\u318f"
    "\u31f0-\u31ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]"
)


def _invisible(ch: str) -> bool:
    # Format characters (zero-width space/joiners, soft hyphen, bidi controls, tag
    # characters, BOM) and variation selectors: invisible, so a split that hides a card.
    return unicodedata.category(ch) == "Cf" or "\ufe00" <= ch <= "\ufe0f"


def _folded(ch: str) -> str:
    """NFKC of one character, with any decimal digit (full-width, mathematical, Arabic-Indic,
    Devanagari, Thai ...: NFKC maps only the first two) as its ASCII digit."""
    out = unicodedata.normalize("NFKC", ch).translate(_DASHES)
    if any(not c.isascii() and unicodedata.decimal(c, None) is not None for c in out):
        out = "".join(
            str(unicodedata.decimal(c)) if unicodedata.decimal(c, None) is not None else c
            for c in out
        )
    return out


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


def _alnum(ch: str) -> bool:
    return ch.isascii() and ch.isalnum()


def normalise(text: str, *, break_unspaced: bool = False) -> Normalised:
    """NFKC per character, every decimal digit as ASCII, invisible characters dropped, dashes
    unified. With `break_unspaced`, a space is put where an ASCII letter or digit meets a
    script written without spaces (its origin is the character on the ASCII side, so a
    finding that takes the space in maps to no neighbouring character). ASCII text is
    returned as it is (nothing here can change it)."""
    if text.isascii():
        return Normalised(text, None, len(text))
    out: list[str] = []
    origin: list[int] = []
    for index, ch in enumerate(text):
        pieces = ch if ch.isascii() else ("" if _invisible(ch) else _folded(ch))
        for piece in pieces:
            if break_unspaced and out:
                before = out[-1]
                if _alnum(piece) and _UNSPACED.match(before):
                    out.append(" ")
                    origin.append(index)
                elif _alnum(before) and _UNSPACED.match(piece):
                    out.append(" ")
                    origin.append(origin[-1])
            out.append(piece)
            origin.append(index)
    return Normalised("".join(out), tuple(origin), len(text))


def normalize(text: str) -> str:
    """The normalised text alone (for scorers that need no mapping back)."""
    return normalise(text).text
