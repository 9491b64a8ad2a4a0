"""Text helpers shared by the guardrails: normalisation and compiled alternations."""

import re

from switchboard.common.redaction import normalize as common_normalize


def rx(*patterns: str) -> re.Pattern[str]:
    """One case-insensitive, multi-line pattern out of alternatives."""
    return re.compile("|".join(f"(?:{p})" for p in patterns), re.IGNORECASE | re.MULTILINE)


def normalize(text: str) -> str:
    """NFKC, no invisible characters (zero-width, bidi, tags, soft hyphen), single spaces."""
    return re.sub(r"[ \t]+", " ", common_normalize(text))
