"""Text helpers shared by the guardrails: normalisation and compiled alternations."""

import re
from dataclasses import dataclass

from switchboard.common.redaction import normalize as common_normalize


def rx(*patterns: str) -> re.Pattern[str]:
    """One case-insensitive, multi-line pattern out of alternatives."""
    return re.compile("|".join(f"(?:{p})" for p in patterns), re.IGNORECASE | re.MULTILINE)


def normalize(text: str) -> str:
    """NFKC, no invisible characters (zero-width, bidi, tags, soft hyphen), single spaces."""
    return re.sub(r"[ \t]+", " ", common_normalize(text))


@dataclass(frozen=True)
class Rule:
    """A named, weighted pattern of the injection rules."""

    name: str
    weight: float
    pattern: re.Pattern[str]
    # Substrings (lower case) one of which the text must hold for the pattern to be tried:
    # a C-speed `in` test spares the long alternations most messages.
    triggers: tuple[str, ...] = ()
