"""Sentences that tell the customer what a tool returned, built from the result's fields.

A JSON object is read by its field names: an order (`status`, `carrier`,
`expected_delivery`, `delivered_on`, `tracking_code`), a time (`now`, `timezone`), a ticket
(`ticket_id`), an error (`error`), or any other object (its first few plain fields). Other
results are quoted up to a sentence. Every sentence is whole: nothing is cut mid-structure.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from datetime import date, datetime
from typing import Any

MAX_QUOTE_CHARS = 200
"""Longest quote of a plain-text result or an error, cut at a word."""
MAX_FIELDS = 4
"""Fields listed from an object that is not an order, a time, a ticket or an error."""

_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")
_SPACE = re.compile(r"\s+")
_SENTENCE = re.compile(r"(?<=[.!?])\s")
_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_ISO_DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}")

_STATUS_PHRASES = {
    "shipped": "has shipped",
    "dispatched": "has been dispatched",
    "delivered": "was delivered",
    "processing": "is being processed",
    "pending": "is pending",
    "in transit": "is in transit",
    "out for delivery": "is out for delivery",
    "cancelled": "was cancelled",
    "canceled": "was cancelled",
    "returned": "was returned",
    "refunded": "was refunded",
    "on hold": "is on hold",
}
_MOVING = frozenset(("shipped", "dispatched", "in transit", "out for delivery"))
_ORDER_ID_KEYS = ("order_id", "order_number", "id", "number")
_ETA_KEYS = ("expected_delivery", "estimated_delivery", "eta", "delivery_date", "arrives_on")
_DELIVERED_KEYS = ("delivered_on", "delivered_at", "delivery_date")
_TRACKING_KEYS = ("tracking_code", "tracking_number", "tracking_id")


def summarize(name: str, content: str) -> str:
    """One or two sentences about one tool result."""
    text = _CONTROL.sub(" ", content).strip()
    try:
        value = json.loads(text)
    except ValueError:
        value = text
    if isinstance(value, dict):
        return _summarize_object(name, value)
    if isinstance(value, list):
        count = len(value)
        things = "result" if count == 1 else "results"
        first = _plain(value[0]) if value else None
        listed = f", the first being {first}" if first else ""
        return f"{_tool(name)} found {count} {things}{listed}."
    if isinstance(value, str):
        return _quote_text(name, value)
    if value is None:
        return f"{_tool(name)} returned nothing."
    return f"{_tool(name)} returned {_plain(value)}."


def _tool(name: str) -> str:
    return f"The {name.replace('_', ' ')} tool" if name else "The tool"


def _summarize_object(name: str, value: Mapping[str, Any]) -> str:
    if isinstance(value.get("error"), str):
        return f"I'm sorry, I could not complete that: {_error_detail(value['error'])}."
    if isinstance(value.get("status"), str) and (
        any(k in value for k in ("carrier", *_ETA_KEYS, *_DELIVERED_KEYS, *_TRACKING_KEYS))
        or "order" in name.lower()
        or "order_id" in value
    ):
        return _order(value)
    if isinstance(value.get("now"), str) and _ISO_DATETIME.match(value["now"]):
        return _time(value)
    if isinstance(value.get("ticket_id"), str):
        message = value.get("message")
        tail = f": {_clean(message)}" if isinstance(message, str) and message.strip() else ""
        return f"I have opened ticket {value['ticket_id']} for you{tail}."
    fields = [
        f"{key.replace('_', ' ')} {_plain(item)}"
        for key, item in value.items()
        if isinstance(key, str) and _plain(item)
    ][:MAX_FIELDS]
    if not fields:
        return f"{_tool(name)} returned no details."
    return f"Here is what {_tool(name).lower()} returned: {_join(fields)}."


def _order(value: Mapping[str, Any]) -> str:
    status = _SPACE.sub(" ", str(value["status"])).strip().lower()
    order_id = next((str(value[k]) for k in _ORDER_ID_KEYS if _plain(value.get(k))), "")
    carrier = _plain(value.get("carrier"))
    subject = f"Your order {order_id}" if order_id else "Your order"
    sentence = f"{subject} {_STATUS_PHRASES.get(status, f'is {status}')}"
    if status == "delivered":
        if carrier:
            sentence += f" by {carrier}"
        day = next((_day(value[k]) for k in _DELIVERED_KEYS if _day(value.get(k))), "")
        if day:
            sentence += f" on {day}"
        sentence += "."
    else:
        if carrier and status in _MOVING:
            sentence += f" with {carrier}"
        day = next((_day(value[k]) for k in _ETA_KEYS if _day(value.get(k))), "")
        if day:
            sentence += f" and should arrive on {day}"
        sentence += "."
        if carrier and status not in _MOVING:
            sentence += f" It will ship with {carrier}."
    tracking = next((str(value[k]) for k in _TRACKING_KEYS if _plain(value.get(k))), "")
    if tracking:
        sentence += f" The tracking code is {tracking}."
    return sentence


def _time(value: Mapping[str, Any]) -> str:
    try:
        moment = datetime.fromisoformat(str(value["now"]))
    except ValueError:
        return f"The time there is {_clean(str(value['now']))}."
    zone = str(value.get("timezone") or "")
    place = zone.rpartition("/")[2].replace("_", " ") if "/" in zone else ""
    where = f" in {place} ({zone})" if place else f" ({zone})" if zone else ""
    return f"It is {moment:%H:%M} on {moment:%A}, {moment.day} {moment:%B}{where}."


def _day(value: object) -> str:
    """ "24 November" for an ISO date (or date-time); "" otherwise."""
    if not isinstance(value, str) or not (_ISO_DATE.match(value) or _ISO_DATETIME.match(value)):
        return ""
    try:
        day: date = datetime.fromisoformat(value).date()
    except ValueError:
        return ""
    return f"{day.day} {day:%B}"


def _plain(value: object) -> str:
    """A scalar as words ("" for a structure or an empty value)."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int | float):
        return f"{value:g}" if isinstance(value, float) else str(value)
    if isinstance(value, str) and value.strip():
        return _day(value) or _clean(value, 60)
    if isinstance(value, dict):
        named = value.get("name")
        return _clean(named, 60) if isinstance(named, str) and named.strip() else ""
    return ""


def _error_detail(message: str) -> str:
    """The readable part of an error: an embedded JSON body's own error, no braces."""
    brace = message.find("{")
    if brace >= 0:
        try:
            inner = json.loads(message[brace:])
        except ValueError:
            inner = None
        if isinstance(inner, dict) and isinstance(inner.get("error"), str):
            return _clean(inner["error"])
        message = message[:brace].rstrip(" :")
    return _clean(message) or "the tool failed"


def _quote_text(name: str, text: str) -> str:
    if not text:
        return f"{_tool(name)} returned nothing."
    first = _SENTENCE.split(_clean(text, None), 1)[0]
    quoted = _clean(first)
    if not quoted.endswith("..."):
        quoted = quoted.rstrip(".!?") + "."
    return f"{_tool(name)} says: {quoted}"


def _clean(text: str, limit: int | None = MAX_QUOTE_CHARS) -> str:
    """One line, at most `limit` characters, cut at a word (marked with "...")."""
    text = _SPACE.sub(" ", _CONTROL.sub(" ", text)).strip().strip("{}[]")
    if limit is None or len(text) <= limit:
        return text
    cut = text[: limit - 3].rsplit(" ", 1)[0] if " " in text[: limit - 3] else text[: limit - 3]
    return cut.rstrip(" ,;:") + "..."


def _join(parts: Sequence[str]) -> str:
    if len(parts) <= 1:
        return "".join(parts)
    return ", ".join(parts[:-1]) + " and " + parts[-1]
