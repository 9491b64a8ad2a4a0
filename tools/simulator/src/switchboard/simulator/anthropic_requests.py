"""Reading and validating an Anthropic Messages request, with the error messages
api.anthropic.com gives for each problem."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from .replies import count_prompt_tokens
from .tools import OfferedTool, ToolOutput
from .wire import (
    UNPARSABLE,
    InvalidRequest,
    dumps,
    is_int,
)

UNPARSABLE_MESSAGE = "There was an error parsing the body of your request: it is not valid JSON."


@dataclass(frozen=True, slots=True)
class MessagesRequest:
    """The parts of a valid Messages request that shape the reply."""

    model: str
    stream: bool
    max_tokens: int
    input_tokens: int
    user_text: str
    """Text of the last user message: it seeds the reply."""
    tools: tuple[OfferedTool, ...] = ()
    tool_choice: str = "auto"
    """"auto", "none", "required" (Anthropic's "any") or the name of the tool to call."""
    tool_outputs: tuple[ToolOutput, ...] = ()
    """The tool results of the last user message, if it carries any."""


def parse_messages_request(body: object, *, context_window: int) -> MessagesRequest:
    """Validate a Messages request body as Anthropic does; raise `InvalidRequest`."""
    if body is UNPARSABLE:
        raise InvalidRequest(UNPARSABLE_MESSAGE)
    if not isinstance(body, dict):
        raise InvalidRequest("Input should be a valid dictionary")
    model = _required(body, "model")
    if not isinstance(model, str):
        raise _invalid("model", "Input should be a valid string")
    max_tokens = _required(body, "max_tokens")
    if not is_int(max_tokens):
        raise _invalid("max_tokens", "Input should be a valid integer")
    assert isinstance(max_tokens, int)
    if max_tokens < 1:
        raise _invalid("max_tokens", "Input should be greater than or equal to 1")
    messages = _required(body, "messages")
    if not isinstance(messages, list):
        raise _invalid("messages", "Input should be a valid list")
    if not messages:
        raise _invalid("messages", "at least one message is required")

    prompt: list[list[str]] = []
    system = body.get("system")
    if system is not None:
        if isinstance(system, str):
            prompt.append([system])
        elif isinstance(system, list):
            prompt.append(_blocks_text("system", system))
        else:
            raise _invalid("system", "Input should be a valid string or a list of text blocks")
    user_text = ""
    for index, message in enumerate(messages):
        role, texts = _parse_message(index, message)
        prompt.append([role, *texts])
        if role == "user" and not _tool_results(message):
            user_text = "\n".join(texts)
    tools = _parse_tools(body.get("tools"))
    tool_choice = _parse_tool_choice(body.get("tool_choice"), tools)
    if tools:
        prompt.append([dumps(body["tools"])])

    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise _invalid("stream", "Input should be a valid boolean")

    try:
        input_tokens = count_prompt_tokens(prompt)
    except ValueError:  # a text too long for the tokenizer
        input_tokens = context_window + 1
    if input_tokens > context_window:
        raise InvalidRequest(
            f"prompt is too long: {input_tokens} tokens > {context_window} maximum"
        )
    return MessagesRequest(
        model=model,
        stream=bool(stream),
        max_tokens=max_tokens,
        input_tokens=input_tokens,
        user_text=user_text,
        tools=tools,
        tool_choice=tool_choice,
        tool_outputs=_tool_outputs(messages),
    )


_TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,128}$")


def _parse_tools(tools: object) -> tuple[OfferedTool, ...]:
    if tools is None:
        return ()
    if not isinstance(tools, list):
        raise _invalid("tools", "Input should be a valid list")
    offered = []
    for index, tool in enumerate(tools):
        where = f"tools.{index}"
        if not isinstance(tool, dict):
            raise _invalid(where, "Input should be a valid dictionary")
        if tool.get("type") not in (None, "custom"):
            continue  # server tools (web search ...) are accepted and never called
        name = _required(tool, "name", where=f"{where}.")
        if not isinstance(name, str) or not _TOOL_NAME.match(name):
            raise _invalid(f"{where}.name", "String should match pattern '^[a-zA-Z0-9_-]{1,128}$'")
        schema = _required(tool, "input_schema", where=f"{where}.")
        if not isinstance(schema, dict):
            raise _invalid(f"{where}.input_schema", "Input should be a valid dictionary")
        description = tool.get("description")
        offered.append(
            OfferedTool(name, schema, description if isinstance(description, str) else "")
        )
    return tuple(offered)


def _parse_tool_choice(choice: object, tools: tuple[OfferedTool, ...]) -> str:
    if choice is None:
        return "auto"
    kind = choice.get("type") if isinstance(choice, dict) else None
    if kind in ("auto", "none"):
        assert isinstance(kind, str)
        return kind
    if kind == "any":
        return "required"
    if kind == "tool":
        assert isinstance(choice, dict)
        name = choice.get("name")
        if not isinstance(name, str):
            raise _invalid("tool_choice.tool.name", "Field required")
        if name not in {tool.name for tool in tools}:
            raise InvalidRequest(f"tool_choice: tool {name!r} is not among the tools")
        return name
    raise _invalid(
        "tool_choice", "Input tag should be one of 'auto', 'any', 'tool', 'none' (field 'type')"
    )


def _tool_results(message: object) -> list[dict[str, Any]]:
    """The `tool_result` blocks of a message."""
    content = message.get("content") if isinstance(message, dict) else None
    if not isinstance(content, list):
        return []
    return [b for b in content if isinstance(b, dict) and b.get("type") == "tool_result"]


def _tool_outputs(messages: list[Any]) -> tuple[ToolOutput, ...]:
    """The tool results of the last message, named after the calls they answer."""
    results = _tool_results(messages[-1])
    if not results:
        return ()
    names: dict[str, str] = {}
    if len(messages) > 1 and isinstance(content := messages[-2].get("content"), list):
        for block in content:
            if isinstance(block, dict) and block.get("type") == "tool_use":
                names[str(block.get("id"))] = str(block.get("name") or "")
    outputs = []
    for result in results:
        content = result.get("content")
        if isinstance(content, list):
            content = " ".join(
                str(block.get("text", "")) for block in content if isinstance(block, dict)
            )
        text = "" if content is None else str(content)
        outputs.append(ToolOutput(names.get(str(result.get("tool_use_id")), ""), text))
    return tuple(outputs)


def _parse_message(index: int, message: object) -> tuple[str, list[str]]:
    """Role and the texts of a message's content."""
    where = f"messages.{index}"
    if not isinstance(message, dict):
        raise _invalid(where, "Input should be a valid dictionary")
    role = _required(message, "role", where=f"{where}.")
    if role == "system":
        raise _invalid(
            f"{where}.role",
            'Unexpected role "system". The Messages API accepts a top-level `system` '
            'parameter, not "system" as an input message role.',
        )
    if role not in ("user", "assistant"):
        raise _invalid(f"{where}.role", "Input should be 'user' or 'assistant'")
    assert isinstance(role, str)
    content = _required(message, "content", where=f"{where}.")
    if isinstance(content, str):
        return role, [content]
    if isinstance(content, list):
        return role, _blocks_text(f"{where}.content", content)
    raise _invalid(f"{where}.content", "Input should be a valid string or a list of blocks")


def _blocks_text(where: str, blocks: list[Any]) -> list[str]:
    """The texts carried by content blocks (text, tool use and tool results)."""
    texts: list[str] = []
    for index, block in enumerate(blocks):
        at = f"{where}.{index}"
        if not isinstance(block, dict):
            raise _invalid(at, "Input should be a valid dictionary")
        kind = _required(block, "type", where=f"{at}.")
        if kind == "text":
            text = _required(block, "text", where=f"{at}.")
            if not isinstance(text, str):
                raise _invalid(f"{at}.text", "Input should be a valid string")
            texts.append(text)
        elif kind == "tool_use":
            name = block.get("name")
            if isinstance(name, str):
                texts.append(name)
            if "input" in block:
                texts.append(json.dumps(block["input"]))
        elif kind == "tool_result":
            result = block.get("content")
            if isinstance(result, str):
                texts.append(result)
            elif isinstance(result, list):
                texts.extend(_blocks_text(f"{at}.content", result))
        # images, documents, thinking: accepted, not counted
    return texts


def _required(body: dict[str, Any], key: str, *, where: str = "") -> object:
    value = body.get(key)
    if value is None:
        raise _invalid(where + key, "Field required")
    return value


def _invalid(field: str, problem: str) -> InvalidRequest:
    return InvalidRequest(f"{field}: {problem}", param=field)
