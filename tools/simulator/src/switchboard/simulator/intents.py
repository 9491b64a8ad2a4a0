"""Which offered tool a message asks for, and the arguments it gives, as pure functions.

The simulated model reads the last user message the way a small model would: it matches the
message's words against each tool's vocabulary (its name, its description and its parameter
names, after light stemming) and fills the arguments the tool's JSON schema asks for from the
message (an id that matches the parameter's `pattern`, a number, an `enum` value it mentions,
a city's IANA time zone ...). tools/simulator/README.md states the rule.
"""

from __future__ import annotations

import functools
import re
import zoneinfo
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

NAME_WEIGHT = 2
"""Points for each distinct word of the tool's name that the message uses."""
OTHER_WEIGHT = 1
"""Points for each distinct word of its parameter names or description."""
CALL_THRESHOLD = 2
"""A tool is called when its points reach this: one name word, or two other words."""

# Words that say nothing about a tool's purpose: grammar, and the verbs every tool has.
_STOPWORD_TEXT = """
    a about above after again all also am an and any are as at be been before being below
    between both but by can cannot could did do does doing don down during e each eg etc
    for from further g had has have having he her here hers him his how i ie if in into is
    it its itself just let me more most my no nor not now of off on once one only or other
    our ours out over own please same she should so some such than that the their them then
    there these they this those through to too under until up very was we were what when
    where which while who whom why will with would you your yours
    check default fetch find get give look lookup make need one set show tell tool use want
    id ids value given string number e.g i.e per via
    """
STOPWORDS = frozenset(_STOPWORD_TEXT.split())

_WORD = re.compile(r"[^\W_]+(?:'[^\W_]+)*")
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_VOWELS = frozenset("aeiouy")


def stem(word: str) -> str:
    """A light English stem: plurals, -ing, -ed, -y and a final -e folded away.

    Hand-written rather than a stemming library: matching tool vocabulary needs only these
    folds ("orders", "ordered", "ordering" -> "order"; "delivery", "delivered" -> "deliver"),
    and the simulator stays free of a dependency for it.
    """
    word = word.lower().removesuffix("'s")
    if len(word) <= 3:
        return word
    if word.endswith("ies") and len(word) > 4:
        word = word[:-3] + "y"
    elif word.endswith("sses"):
        word = word[:-2]
    elif word.endswith("s") and not word.endswith(("ss", "us", "is")):
        word = word[:-1]
    for suffix in ("ing", "ed"):
        base = word.removesuffix(suffix)
        if base != word and len(base) >= 3 and _VOWELS & set(base):
            word = base
            # "shipped" -> "shipp" -> "ship"; "rolled" keeps "roll".
            if len(word) > 3 and word[-1] == word[-2] and word[-1] not in "lsz":
                word = word[:-1]
            break
    if word.endswith("y") and len(word) > 4:
        word = word[:-1]
    if word.endswith("e") and len(word) > 3:
        word = word[:-1]
    return word


_GREETING = re.compile(
    r"(?:hi|hello|hey|hiya|howdy|greetings|good (?:morning|afternoon|evening)|bonjour|hola|hallo)"
    r"(?: there| all| team| everyone)?",
    re.IGNORECASE,
)


def is_greeting(text: str) -> bool:
    """True when `text` is only a greeting ("hello", "Hi there!"): small talk, no request."""
    return _GREETING.fullmatch(text.strip().rstrip("!.,?~ ").strip()) is not None


_CAPABILITIES = re.compile(
    r"\b(?:what (?:else )?can (?:you|u) (?:do|help(?: me)?(?: with)?)"
    r"|how can (?:you|u) help|what do you do|who are you|what are you"
    r"|what can i ask(?: you)?|what (?:kind of )?(?:things|questions) can (?:you|i))\b",
    re.IGNORECASE,
)
_CAPABILITIES_MAX_WORDS = 16


def asks_what_the_assistant_can_do(text: str) -> bool:
    """True for a short "what can you do?" ("Hi! What can you help me with?"), the first
    thing many people type into a new chat."""
    return len(text.split()) <= _CAPABILITIES_MAX_WORDS and _CAPABILITIES.search(text) is not None


def words(text: str) -> list[str]:
    """The words of `text` (letters and digits; camelCase and snake_case split)."""
    return _WORD.findall(_CAMEL.sub(" ", text).replace("_", " ").replace("-", " "))


def stems(text: str) -> frozenset[str]:
    """The stems of the meaningful words of `text`."""
    return frozenset(
        s for w in words(text) if (s := stem(w)) and w.lower() not in STOPWORDS and not w.isdigit()
    )


@dataclass(frozen=True, slots=True)
class Vocabulary:
    """What a tool is about: the stems of its name, parameter names and description."""

    name: frozenset[str]
    parameters: frozenset[str]
    description: frozenset[str]

    def score(self, message: frozenset[str]) -> int:
        """Points for the message: name words weigh more than other words."""
        named = message & self.name
        other = (message & (self.parameters | self.description)) - named
        return NAME_WEIGHT * len(named) + OTHER_WEIGHT * len(other)


def vocabulary(name: str, description: str, schema: Mapping[str, Any]) -> Vocabulary:
    """The vocabulary of a tool (cached: a request offers the same tools again and again)."""
    properties = schema.get("properties")
    names: tuple[str, ...] = ()
    if isinstance(properties, dict):
        names = tuple(p for p in properties if isinstance(p, str))
    return _vocabulary(name, description, names)


@functools.lru_cache(maxsize=1024)
def _vocabulary(name: str, description: str, parameters: tuple[str, ...]) -> Vocabulary:
    named = stems(name)
    params = frozenset().union(*(stems(p) for p in parameters)) - named
    return Vocabulary(named, params, stems(description) - named - params)


def intent_score(message: str, name: str, description: str, schema: Mapping[str, Any]) -> int:
    """How strongly `message` asks for the tool (0 = not at all)."""
    return vocabulary(name, description, schema).score(stems(message))


# ---- arguments --------------------------------------------------------------------------


class Missing:
    """No value for a parameter could be read from the message."""

    def __repr__(self) -> str:
        return "MISSING"


MISSING = Missing()

_ID_NAME = re.compile(r"(?:^|_|\b)(?:id|ids|number|no|code|ref|reference|sku|account)$|id$", re.I)
_ID_WORD = re.compile(r"(?:order|account|invoice|ticket|booking|reference|tracking)", re.I)
_TIME_ZONE_NAME = re.compile(r"time_?zone|^tz$|zone", re.I)
_TIME_ZONE_DESCRIPTION = re.compile(r"time ?zone|\biana\b", re.I)
_NUMBER = re.compile(r"(?<![\w.])-?\d+(?:\.\d+)?(?![\w])")
_TOKEN = re.compile(r"[^\s,;:!?()\[\]{}\"']+")
_EDGE_PUNCTUATION = "#.,;:!?()[]{}\"'"
_SPACE = re.compile(r"\s+")
FREE_TEXT_MAX_CHARS = 200


def is_identifier(name: str, schema: Mapping[str, Any]) -> bool:
    """Whether the parameter holds an identifier (an order id, an account number ...)."""
    return bool(_ID_NAME.search(name)) or bool(_ID_WORD.search(name))


def is_time_zone(name: str, schema: Mapping[str, Any]) -> bool:
    """Whether the parameter holds a time zone."""
    description = schema.get("description")
    return bool(_TIME_ZONE_NAME.search(name)) or (
        isinstance(description, str) and bool(_TIME_ZONE_DESCRIPTION.search(description))
    )


def read_argument(name: str, schema: Mapping[str, Any], message: str) -> Any:
    """The value of one parameter as the message gives it, or `MISSING`."""
    enum = schema.get("enum")
    if isinstance(enum, list) and enum:
        said = {stem(w) for w in words(message)}
        for value in enum:
            if isinstance(value, str) and value and stems(value) and stems(value) <= said:
                return value
            if not isinstance(value, str) and str(value) in message.split():
                return value
        return MISSING
    kind = schema.get("type")
    if isinstance(kind, list):  # ["string", "null"]
        kind = next((k for k in kind if k != "null"), "string")
    if kind in ("integer", "number"):
        return _read_number(schema, message, integer=kind == "integer")
    if kind in ("boolean", "array", "object"):
        return MISSING
    return _read_string(name, schema, message)


def _read_number(schema: Mapping[str, Any], message: str, *, integer: bool) -> Any:
    for found in _NUMBER.finditer(message):
        number = float(found.group())
        if integer and not number.is_integer():
            continue
        low, high = schema.get("minimum"), schema.get("maximum")
        if isinstance(low, int | float) and number < low:
            continue
        if isinstance(high, int | float) and number > high:
            continue
        return int(number) if integer else number
    return MISSING


def _read_string(name: str, schema: Mapping[str, Any], message: str) -> Any:
    if is_time_zone(name, schema):
        zone = time_zone_in(message)
        return MISSING if zone is None else zone
    pattern = schema.get("pattern")
    identifier = is_identifier(name, schema)
    if isinstance(pattern, str) or identifier:
        try:
            compiled = re.compile(pattern) if isinstance(pattern, str) else None
        except re.error:
            compiled = None
        tokens = [raw.strip(_EDGE_PUNCTUATION) for raw in _TOKEN.findall(message)]
        # A value right after the parameter's own words ("order 12345", "order #A-77",
        # "order number 7") is the one meant, wherever else digits appear.
        cues = stems(name) | _NUMBER_WORDS
        candidates: list[tuple[bool, str]] = [
            (index > 0 and _after_cue(tokens, index, cues), word)
            for index, word in enumerate(tokens)
            if word and (compiled is None or compiled.search(word))
        ]
        # An identifier has a digit in it: "Where is my order A12345?" gives A12345, not
        # "Where", although both match a pattern such as ^[A-Za-z0-9-]{1,32}$.
        with_digit = [(cued, w) for cued, w in candidates if any(c.isdigit() for c in w)]
        if with_digit:
            cued = [w for is_cued, w in with_digit if is_cued]
            return _fit_length(cued[0] if cued else with_digit[0][1], schema)
        candidates_words = [w for _, w in candidates]
        if candidates_words and not identifier:
            return _fit_length(candidates_words[0], schema)
        return MISSING
    text = _SPACE.sub(" ", message).strip()
    if not text:
        return MISSING
    return _fit_length(text, schema, FREE_TEXT_MAX_CHARS)


_NUMBER_WORDS = frozenset(("number", "no", "id", "ref", "reference", "code"))


def _after_cue(tokens: list[str], index: int, cues: frozenset[str]) -> bool:
    """Whether one of the two words before `tokens[index]` is a cue (or it follows "#")."""
    before = [stem(w) for w in tokens[max(0, index - 2) : index] if w]
    return any(w in cues for w in before)


def _fit_length(text: str, schema: Mapping[str, Any], default_max: int | None = None) -> str:
    limit = schema.get("maxLength", default_max)
    if not isinstance(limit, int) or len(text) <= limit:
        return text
    cut = text[: max(limit - 3, 1)]
    if " " in cut:
        cut = cut.rsplit(" ", 1)[0]
    return cut.rstrip(" ,;:") + "..." if limit > 3 else text[:limit]


# ---- time zones --------------------------------------------------------------------------

# Places people name that are not the city of an IANA zone name (which are found without
# this table: "Tokyo" -> Asia/Tokyo, "New York" -> America/New_York).
PLACE_ZONES: Mapping[str, str] = {
    "san francisco": "America/Los_Angeles",
    "seattle": "America/Los_Angeles",
    "california": "America/Los_Angeles",
    "boston": "America/New_York",
    "washington": "America/New_York",
    "miami": "America/New_York",
    "atlanta": "America/New_York",
    "dallas": "America/Chicago",
    "houston": "America/Chicago",
    "san diego": "America/Los_Angeles",
    "beijing": "Asia/Shanghai",
    "china": "Asia/Shanghai",
    "delhi": "Asia/Kolkata",
    "new delhi": "Asia/Kolkata",
    "mumbai": "Asia/Kolkata",
    "bangalore": "Asia/Kolkata",
    "bengaluru": "Asia/Kolkata",
    "india": "Asia/Kolkata",
    "osaka": "Asia/Tokyo",
    "kyoto": "Asia/Tokyo",
    "japan": "Asia/Tokyo",
    "munich": "Europe/Berlin",
    "frankfurt": "Europe/Berlin",
    "hamburg": "Europe/Berlin",
    "germany": "Europe/Berlin",
    "barcelona": "Europe/Madrid",
    "spain": "Europe/Madrid",
    "milan": "Europe/Rome",
    "italy": "Europe/Rome",
    "france": "Europe/Paris",
    "lyon": "Europe/Paris",
    "uk": "Europe/London",
    "england": "Europe/London",
    "manchester": "Europe/London",
    "edinburgh": "Europe/London",
    "netherlands": "Europe/Amsterdam",
    "rotterdam": "Europe/Amsterdam",
    "geneva": "Europe/Zurich",
    "rio de janeiro": "America/Sao_Paulo",
    "brazil": "America/Sao_Paulo",
    "melbourne": "Australia/Melbourne",
    "canberra": "Australia/Sydney",
    "seoul": "Asia/Seoul",
    "korea": "Asia/Seoul",
    "south korea": "Asia/Seoul",
    "hong kong": "Asia/Hong_Kong",
    "ho chi minh city": "Asia/Ho_Chi_Minh",
    "vancouver": "America/Vancouver",
    "montreal": "America/Toronto",
    "utc": "UTC",
    "gmt": "UTC",
}
_IANA_NAME = re.compile(r"\b[A-Z][A-Za-z_]+(?:/[A-Z][A-Za-z_+-]+){1,2}\b")


@functools.cache
def _zones() -> frozenset[str]:
    # available_timezones() walks the time zone database's files on every call.
    return frozenset(zoneinfo.available_timezones())


@functools.cache
def _places() -> tuple[tuple[str, str], ...]:
    """Place name -> zone, longest names first (so "New York" wins over "York")."""
    places: dict[str, str] = {}
    for zone in sorted(_zones()):
        area, _, city = zone.rpartition("/")
        # Canonical regional zones only: "Etc/GMT+3", "US/Pacific" are not places.
        if area.split("/")[0] not in _AREAS or not city:
            continue
        places.setdefault(city.replace("_", " ").lower(), zone)
    places.update(PLACE_ZONES)
    return tuple(sorted(places.items(), key=lambda item: (-len(item[0]), item[0])))


_AREAS = frozenset(
    ("Africa", "America", "Antarctica", "Asia", "Atlantic", "Australia", "Europe", "Indian")
) | {"Pacific"}


def time_zone_in(message: str) -> str | None:
    """The IANA time zone the message names: a zone name, a city or a country, or None."""
    for found in _IANA_NAME.findall(message):
        if found in _zones():
            return str(found)
    text = " " + " ".join(w.lower() for w in words(message)) + " "
    for place, zone in _places():
        if f" {place} " in text:
            return zone
    return None
