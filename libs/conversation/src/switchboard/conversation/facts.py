"""Key facts of a conversation, kept apart from the summary so that no summary loses them.

The extractor is deterministic: regular expressions over each stored (already redacted)
message, no model call, so a fact costs nothing, never hallucinates, and a redelivered turn
yields the same facts. It looks for
- `customer_name`: a name the customer gives ("my name is Dana Reyes", "call me Dana");
  user messages only, and only capitalised words, so "my name is not important" is no name;
- `order_number`: "order 12345", "order #A-778", "order number is 99-1"; user or assistant;
- `ticket_number`: "ticket T-42", "case 5521", "reference ABC123", "incident 7";
  user or assistant (the assistant often announces the ticket it opened);
- `goal`: what the customer says they want ("I want to cancel my plan", "I need a refund",
  "I'd like to change my address", "I'm trying to log in"); user messages only.
A number must contain a digit, so "my order is late" names no order. A redaction
placeholder such as "[NAME]" starts with no capital letter and is never taken for a name.
"""

import re
from collections.abc import Sequence
from dataclasses import dataclass

from switchboard.conversation.records import StoredMessage
from switchboard.v1.chat_pb2 import ROLE_USER
from switchboard.v1.memory_pb2 import Fact

CUSTOMER_NAME = "customer_name"
ORDER_NUMBER = "order_number"
TICKET_NUMBER = "ticket_number"
GOAL = "goal"

MAX_FACTS_PER_KIND = 5
MAX_GOAL_CHARS = 160

_NAME = re.compile(
    r"(?i:\b(?:my name is|my name's|name's|call me|i am called|i'm called))"
    r"\s+([A-Z][\w'-]+(?:\s+[A-Z][\w'-]+){0,2})"
)
_IDENTIFIER = (
    r"(?:\s+(?i:number|no\.?|nr\.?|id|#))?(?:\s+(?i:is))?\s*[:#]?\s*"
    r"([A-Za-z0-9][A-Za-z0-9-]{1,31})"
)
_ORDER = re.compile(r"(?i:\border)" + _IDENTIFIER)
_TICKET = re.compile(r"(?i:\b(?:ticket|case|reference|ref\.?|incident))" + _IDENTIFIER)
_APOSTROPHE = "['\u2019]"
_GOAL = re.compile(
    r"(?i:\bi(?:\s+really)?(?:\s+want|\s+need|\s+would\s+like|" + _APOSTROPHE + r"d\s+like"
    r"|\s+wish|\s+hope|(?:\s+am\s+|" + _APOSTROPHE + r"m\s+)(?:trying|looking)))"
    r"\s+((?i:to|for|a|an|my|the)\b[^.!?\n]{2,})"
)


@dataclass(frozen=True)
class ExtractedFact:
    """One fact found in a message."""

    kind: str
    value: str


def _identifiers(pattern: re.Pattern[str], text: str) -> list[str]:
    found = []
    for match in pattern.finditer(text):
        value = match.group(1).strip("-")
        if any(c.isdigit() for c in value) and value not in found:
            found.append(value)
    return found[:MAX_FACTS_PER_KIND]


def extract_facts(role: int, text: str) -> list[ExtractedFact]:
    """The key facts stated in one message, in a fixed order."""
    facts: list[ExtractedFact] = []
    if role == ROLE_USER:
        names = []
        for match in _NAME.finditer(text):
            name = match.group(1).strip()
            if name not in names:
                names.append(name)
        facts.extend(ExtractedFact(CUSTOMER_NAME, n) for n in names[:MAX_FACTS_PER_KIND])
    facts.extend(ExtractedFact(ORDER_NUMBER, v) for v in _identifiers(_ORDER, text))
    facts.extend(ExtractedFact(TICKET_NUMBER, v) for v in _identifiers(_TICKET, text))
    if role == ROLE_USER:
        goals = []
        for match in _GOAL.finditer(text):
            goal = " ".join(match.group(1).split())
            goal = re.sub(r"^(?i:to)\s+", "", goal)[:MAX_GOAL_CHARS].rstrip(" ,;:")
            if goal not in goals:
                goals.append(goal)
        facts.extend(ExtractedFact(GOAL, g) for g in goals[:MAX_FACTS_PER_KIND])
    return facts


def facts_of(messages: Sequence[StoredMessage]) -> list[tuple[Fact, int]]:
    """The facts stated in a turn's messages, each with the position of its message."""
    found: list[tuple[Fact, int]] = []
    seen: set[tuple[str, str]] = set()
    for message in messages:
        for fact in extract_facts(message.role, message.text):
            if (fact.kind, fact.value) not in seen:
                seen.add((fact.kind, fact.value))
                found.append(
                    (
                        Fact(kind=fact.kind, value=fact.value, request_id=message.request_id),
                        message.position,
                    )
                )
    return found
