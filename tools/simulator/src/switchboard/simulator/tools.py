"""Deterministic tool use, shared by both wire formats, as pure functions.

The rule (also in the README):
- When the conversation ends with tool results, the model answers in text that tells what
  they say, in sentences built from the results' fields (`summaries.py`).
- Otherwise, when tools are offered, the model calls every offered tool the last user message
  asks for (`intents.py`): its words, lightly stemmed, score 2 points for each word of the
  tool's name and 1 for each word of its parameter names or description, and a tool with 2
  points or more is called, in the order offered. The arguments come from the message; a
  tool whose required identifier, pattern or time zone the message does not give is not
  called: the model asks for it instead.
- A forced choice (OpenAI `tool_choice` naming a function, Anthropic `{"type": "tool"}`, or
  the control `sim.tool=<name>`) calls that tool whatever the message says, with stand-in
  arguments where the message gives none; `tool_choice` "none" or `sim.tool=none` calls
  nothing; "required" / "any" calls the first offered tool when the message asks for none.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from . import intents, summaries
from .replies import AFTER_ANSWER, Reply, count_tokens, generate_reply, token_pieces

_SEPARATORS = re.compile(r"[\s_\-]+")


@dataclass(frozen=True, slots=True)
class OfferedTool:
    """A tool the request offers: its name, the JSON schema of its arguments, its purpose."""

    name: str
    schema: Mapping[str, Any]
    description: str = ""


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


def asks_for(user_text: str, tool: OfferedTool, said: frozenset[str] | None = None) -> bool:
    """Whether the message asks for the tool: it names it, or scores enough points.

    `said` is `intents.stems(user_text)`, when the caller has it already.
    """
    if mentions(user_text, tool.name):
        return True
    vocabulary = intents.vocabulary(tool.name, tool.description, tool.schema)
    score = vocabulary.score(intents.stems(user_text) if said is None else said)
    return score >= intents.CALL_THRESHOLD


@dataclass(frozen=True, slots=True)
class Plan:
    """What the model does about the tools: the calls, and what it must ask first."""

    calls: tuple[PlannedCall, ...] = ()
    missing: tuple[str, ...] = ()
    """Parameters (as words, e.g. "order id") of asked-for tools the message did not give."""


def plan_calls(
    user_text: str, tools: Sequence[OfferedTool], choice: str, forced: str | None
) -> Plan:
    """The calls the model makes for the last user message (see the module docstring).

    `choice` is "auto", "none", "required" or a tool name (from the request's tool choice);
    `forced` is the `sim.tool` control.
    """
    if not tools or choice == "none" or forced == "none":
        return Plan()
    by_name = {tool.name: tool for tool in tools}
    target = forced or (choice if choice not in ("auto", "required") else None)
    if target is not None:
        tool = by_name.get(target)
        if tool is None:
            return Plan()
        return Plan((PlannedCall(tool.name, stand_in_arguments(tool, user_text)),))
    calls: list[PlannedCall] = []
    missing: list[str] = []
    said = intents.stems(user_text)
    for tool in tools:
        if not asks_for(user_text, tool, said):
            continue
        arguments, lacking = read_arguments(tool, user_text)
        if lacking:
            missing.extend(p for p in lacking if p not in missing)
        else:
            calls.append(PlannedCall(tool.name, arguments))
    if not calls and not missing and choice == "required":
        calls = [PlannedCall(tools[0].name, stand_in_arguments(tools[0], user_text))]
    return Plan(tuple(calls), () if calls else tuple(missing))


def choose_calls(
    user_text: str, tools: Sequence[OfferedTool], choice: str, forced: str | None
) -> list[PlannedCall]:
    """The calls of `plan_calls`."""
    return list(plan_calls(user_text, tools, choice, forced).calls)


def _parameters(tool: OfferedTool) -> tuple[dict[str, Any], list[str]]:
    properties = tool.schema.get("properties")
    if not isinstance(properties, dict):
        return {}, []
    required = tool.schema.get("required")
    names = (
        [n for n in required if isinstance(n, str) and n in properties]
        if isinstance(required, list)
        else []
    )
    return properties, names


def read_arguments(tool: OfferedTool, user_text: str) -> tuple[dict[str, Any], list[str]]:
    """The arguments the message gives, and the required parameters it gives no value for.

    Optional parameters the message says nothing about are left out (the tool's defaults
    apply). A required one without a value gets a stand-in (an `enum`'s first value, 1,
    true, an empty array or object, the message itself) unless it is an identifier, a
    pattern or a time zone: such a value cannot be made up, so it is reported as missing.
    """
    properties, required = _parameters(tool)
    arguments: dict[str, Any] = {}
    missing: list[str] = []
    for name, raw_schema in properties.items():
        if not isinstance(name, str):
            continue
        schema = raw_schema if isinstance(raw_schema, dict) else {}
        value = intents.read_argument(name, schema, user_text)
        if value is not intents.MISSING:
            arguments[name] = value
        elif name in required:
            if _cannot_stand_in(name, schema):
                missing.append(name.replace("_", " "))
            else:
                arguments[name] = _stand_in(name, schema, user_text)
    return arguments, missing


def stand_in_arguments(tool: OfferedTool, user_text: str) -> dict[str, Any]:
    """Arguments for a forced call: what the message gives, stand-ins for the rest required."""
    properties, required = _parameters(tool)
    arguments, _ = read_arguments(tool, user_text)
    for name in required:
        if name not in arguments:
            schema = properties[name] if isinstance(properties[name], dict) else {}
            arguments[name] = _stand_in(name, schema, user_text)
    return {name: arguments[name] for name in properties if name in arguments}


def arguments_for(tool: OfferedTool, user_text: str) -> dict[str, Any]:
    """The arguments of a call of `tool` for the message (stand-ins where it gives none)."""
    return stand_in_arguments(tool, user_text)


def _cannot_stand_in(name: str, schema: Mapping[str, Any]) -> bool:
    kind = schema.get("type")
    if kind not in (None, "string") and not (isinstance(kind, list) and "string" in kind):
        return False
    if "enum" in schema:
        return False
    return (
        "pattern" in schema
        or intents.is_identifier(name, schema)
        or intents.is_time_zone(name, schema)
    )


def _stand_in(name: str, schema: Mapping[str, Any], user_text: str) -> Any:
    enum = schema.get("enum")
    if isinstance(enum, list) and enum:
        return enum[0]
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "string")
    if kind in ("integer", "number"):
        return 1
    if kind == "boolean":
        return True
    if kind == "array":
        return []
    if kind == "object":
        return {}
    if intents.is_time_zone(name, schema):
        return "UTC"
    return " ".join(user_text.split())[: intents.FREE_TEXT_MAX_CHARS] or name


def followup_opening(outputs: Sequence[ToolOutput]) -> str:
    """The first sentences of the answer to tool results: what each of them says."""
    return " ".join(summaries.summarize(o.name, o.content) for o in outputs)


GREETING_REPLY = "Hello, and thanks for getting in touch! How can I help you today?"
"""The whole answer to a message that is only a greeting, as a chat model would give it."""


_PHRASE_ENDS = (" when ", " (", ". ", ", for ", ", in ")
_PHRASE_MAX_WORDS = 14


def _capability(tool: OfferedTool) -> str:
    """What a tool lets the assistant do, in a few words taken from its description."""
    text = " ".join(tool.description.split()) or tool.name.replace("_", " ")
    for end in _PHRASE_ENDS:
        text = text.split(end, 1)[0]
    text = " ".join(text.rstrip(".").split()[:_PHRASE_MAX_WORDS])
    text = text[:1].lower() + text[1:]
    if text.startswith(("the ", "a ", "an ")):
        text = "give you " + text  # a noun phrase ("The current date ...")
    return text


def capabilities_reply(tools: Sequence[OfferedTool]) -> str:
    """The answer to "what can you do?", from the tools the request offers, as a chat model
    would describe them."""
    if not tools:
        return "I can answer your questions and help you with your account. What do you need?"
    things = [_capability(tool) for tool in tools]
    listed = things[0] if len(things) == 1 else "; ".join(things[:-1]) + "; and " + things[-1]
    return f"I'm the virtual assistant here. I can {listed}. What would you like to do?"


def asking_opening(missing: Sequence[str]) -> str:
    """The answer of a model that needs more before it can call a tool."""
    things = missing[0] if len(missing) == 1 else ", ".join(missing[:-1]) + " and " + missing[-1]
    return f"I can look that up for you. Could you tell me the {things}?"


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
    grounded: str | None = None,
) -> Answer:
    """The answer to a request: text about tool results, tool calls, or a plain reply.

    `grounded` is the opening of an answer from the passages in the prompt (knowledge), used
    when the model neither has tool results to report nor calls a tool."""

    def reply(
        opening: str | None, *, closing: tuple[str, ...] | None = None, fill: bool = True
    ) -> Answer:
        return Answer(
            generate_reply(
                model,
                user_text,
                reply_tokens=reply_tokens,
                max_tokens=max_tokens,
                opening=opening,
                closing=closing,
                fill=fill,
            )
        )

    if outputs:
        return reply(followup_opening(outputs), closing=AFTER_ANSWER)
    plan = plan_calls(user_text, tools, choice, forced)
    if plan.calls:
        return Answer(None, plan.calls)
    if not plan.missing and intents.asks_what_the_assistant_can_do(user_text):
        return reply(capabilities_reply(tools), fill=False)
    if grounded is not None:
        return reply(grounded)
    if not plan.missing and intents.is_greeting(user_text):
        return reply(GREETING_REPLY, fill=False)
    return reply(asking_opening(plan.missing) if plan.missing else None)
