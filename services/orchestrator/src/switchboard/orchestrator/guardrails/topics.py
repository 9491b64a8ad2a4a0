"""Blocked topics: the tenant's list of words and phrases a message may not touch."""

import re
from collections.abc import Sequence

from switchboard.orchestrator.guardrails._text import normalize


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
