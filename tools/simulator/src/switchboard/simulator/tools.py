"""Deterministic tool use, shared by both wire formats, as pure functions.

The rule (also in the README):
- When the conversation ends with tool results, the model answers in text that quotes them.
- Otherwise, when tools are offered, the model calls every offered tool whose name the last
  user message mentions (case-insensitive, `_`, `-` and spaces alike: `get_order_status`
  is mentioned by "get order status"), in the order they were offered. A forced choice
  (OpenAI `tool_choice` naming a function, Anthropic `{"type": "tool"}`, or the control
  `sim.tool=<name>`) calls that tool; `tool_choice` "none" or `sim.tool=none` calls nothing;
  "required" / "any" calls the first offered tool when none is mentioned.
- Arguments follow the tool's JSON schema (the `required` properties, or all when none is
  required): an `enum` takes its first value; a string whose name contains id, number, code,
  order, account or ref takes the first word with a digit in the message (without `#` and
  punctuation around it); any other string
  takes the start of the message; integers and numbers take the first number in the message
  (else 1); booleans are true; arrays and objects are empty.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .replies import Reply, count_tokens, excerpt, generate_reply, token_pieces

FOLLOWUP_RESULT_CHARS = 200

_SEPARATORS = re.compile(r"[\s_\-]+")
_IDENTIFIER_NAME = re.compile(r"id|number|code|order|account|ref", re.IGNORECASE)
_PUNCTUATION = "#.,;:!?()[]{}\"'"
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]+")


@dataclass(frozen=True, slots=True)
class OfferedTool:
    """A tool the request offers: its name and the JSON schema of its arguments."""

    name: str
    schema: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class PlannedCall:
    """A tool call the simulated model makes."""

    name: str
    arguments: dict[str, Any]

    @property
    def arguments_json(self) -> str:
        """The arguments as the providers send them: compact JSON."""
        return json.dumps(self.arguments, separators=(",", ":"), ensure_ascii=False)


@dataclass(frozen=True, slots=True)
class ToolOutput:
    """The result of a tool call sent back by the client."""

    name: str
    """The called tool's name, when the conversation shows it ("" otherwise)."""
    content: str


NO_CHOICE = "auto"


def _normalize(text: str) -> str:
    return _SEPARATORS.sub(" ", text.lower()).strip()


def mentions(text: str, tool_name: str) -> bool:
    """Whether `text` names the tool, as whole words, ignoring case and separators."""
    name = _normalize(tool_name)
    if not name:
        return False
    return re.search(rf"(?<!\w){re.escape(name)}(?!\w)", _normalize(text)) is not None


def choose_calls(
    user_text: str, tools: Sequence[OfferedTool], choice: str, forced: str | None
) -> list[PlannedCall]:
    """The calls the model makes for the last user message.

    `choice` is "auto", "none", "required" or a tool name (from the request's tool choice);
    `forced` is the `sim.tool` control.
    """
    if not tools or choice == "none" or forced == "none":
        return []
    by_name = {tool.name: tool for tool in tools}
    target = forced or (choice if choice not in ("auto", "required") else None)
    if target is not None:
        tool = by_name.get(target)
        return [] if tool is None else [PlannedCall(tool.name, arguments_for(tool, user_text))]
    called = [tool for tool in tools if mentions(user_text, tool.name)]
    if not called and choice == "required":
        called = [tools[0]]
    return [PlannedCall(tool.name, arguments_for(tool, user_text)) for tool in called]


def arguments_for(tool: OfferedTool, user_text: str) -> dict[str, Any]:
    """Arguments that satisfy the tool's schema, filled from the user's message."""
    properties = tool.schema.get("properties")
    if not isinstance(properties, dict):
        return {}
    required = tool.schema.get("required")
    names = (
        [n for n in required if isinstance(n, str) and n in properties]
        if isinstance(required, list) and required
        else [n for n in properties if isinstance(n, str)]
    )
    return {name: _value(name, properties[name], user_text) for name in names}


def _value(name: str, schema: object, text: str) -> Any:
    schema = schema if isinstance(schema, dict) else {}
    enum = schema.get("enum")
    if isinstance(enum, list) and enum:
        return enum[0]
    kind = schema.get("type")
    if isinstance(kind, list):  # ["string", "null"]
        kind = next((k for k in kind if k != "null"), "string")
    if kind in ("integer", "number"):
        found = _NUMBER.search(text)
        if found is None:
            return 1
        number = float(found.group())
        return int(number) if kind == "integer" else number
    if kind == "boolean":
        return True
    if kind == "array":
        return []
    if kind == "object":
        return {}
    if _IDENTIFIER_NAME.search(name):
        for word in text.split():
            word = word.strip(_PUNCTUATION)
            if any(c.isdigit() for c in word):
                return word
    return excerpt(text) or name


def followup_opening(outputs: Sequence[ToolOutput]) -> str:
    """The first sentence of the answer to tool results: it quotes them."""
    parts = []
    for output in outputs:
        content = _CONTROL_CHARS.sub(" ", output.content).strip()
        if len(content) > FOLLOWUP_RESULT_CHARS:
            content = content[:FOLLOWUP_RESULT_CHARS].rstrip() + "..."
        parts.append(f"{output.name or 'the tool'} returned {content or 'nothing'}")
    return "I checked for you: " + "; ".join(parts) + "."


@dataclass(frozen=True, slots=True)
class Answer:
    """What the simulated model answers: text, or tool calls."""

    reply: Reply | None
    calls: tuple[PlannedCall, ...] = ()

    @property
    def completion_tokens(self) -> int:
        """Tokens generated: the text's, or each call's name and arguments."""
        if self.reply is not None:
            return self.reply.completion_tokens
        return sum(count_tokens(c.name) + count_tokens(c.arguments_json) for c in self.calls)

    def argument_pieces(self) -> list[tuple[str, ...]]:
        """Each call's arguments as streamed, one piece per token."""
        return [token_pieces(call.arguments_json) for call in self.calls]


def answer(
    model: str,
    user_text: str,
    *,
    tools: Sequence[OfferedTool],
    choice: str,
    forced: str | None,
    outputs: Sequence[ToolOutput],
    reply_tokens: int,
    max_tokens: int | None,
) -> Answer:
    """The answer to a request: text quoting tool results, tool calls, or a plain reply."""
    if outputs:
        return Answer(
            generate_reply(
                model,
                user_text,
                reply_tokens=reply_tokens,
                max_tokens=max_tokens,
                opening=followup_opening(outputs),
            )
        )
    calls = choose_calls(user_text, tools, choice, forced)
    if calls:
        return Answer(None, tuple(calls))
    return Answer(
        generate_reply(model, user_text, reply_tokens=reply_tokens, max_tokens=max_tokens)
    )
