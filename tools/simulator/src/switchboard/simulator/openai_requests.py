"""Reading and validating an OpenAI Chat Completions request, with the error messages and
parameter names api.openai.com gives for each problem."""

from __future__ import annotations

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
    json_type_name,
)

_ROLES = ("system", "assistant", "user", "function", "tool", "developer")
_ROLES_TEXT = "'system', 'assistant', 'user', 'function', 'tool', and 'developer'"
# Roles whose messages may omit `content` (a tool call carries no text).
_CONTENT_OPTIONAL = ("assistant", "function")

UNPARSABLE_MESSAGE = (
    "We could not parse the JSON body of your request. (HINT: This likely means you aren't "
    "using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was "
    "sent was not valid JSON. If you have trouble figuring out how to fix this, please contact "
    "us through our help center at help.openai.com.)"
)


@dataclass(frozen=True, slots=True)
class ChatRequest:
    """The parts of a valid chat completion request that shape the reply."""

    model: str
    stream: bool
    include_usage: bool
    max_tokens: int | None
    prompt_tokens: int
    user_text: str
    """Text of the last user message: it seeds the reply."""
    tools: tuple[OfferedTool, ...] = ()
    tool_choice: str = "auto"
    """"auto", "none", "required" or the name of the function to call."""
    tool_outputs: tuple[ToolOutput, ...] = ()
    """The tool results the conversation ends with, if it does."""


def parse_chat_request(body: object, *, context_window: int) -> ChatRequest:
    """Validate a chat completion request body as OpenAI does; raise `InvalidRequest`."""
    if body is UNPARSABLE:
        raise InvalidRequest(UNPARSABLE_MESSAGE)
    if not isinstance(body, dict):
        raise _invalid_type("body", "an object", body)
    model = body.get("model")
    if model is None or model == "":
        raise InvalidRequest("you must provide a model parameter")
    if not isinstance(model, str):
        raise _invalid_type("model", "a string", model)
    messages = body.get("messages")
    if messages is None:
        raise _missing("messages")
    if not isinstance(messages, list):
        raise _invalid_type("messages", "an array", messages)
    if not messages:
        raise InvalidRequest(
            "Invalid 'messages': empty array. Expected an array with minimum length 1, "
            "but got an empty array instead.",
            param="messages",
            code="empty_array",
        )

    prompt: list[list[str]] = []
    named = 0
    user_text = ""
    for index, message in enumerate(messages):
        role, strings, texts, has_name = _parse_message(index, message)
        prompt.append(strings)
        named += has_name
        if role == "user":
            user_text = "\n".join(texts)
    tools = _parse_tools(body.get("tools"))
    tool_choice = _parse_tool_choice(body.get("tool_choice"), tools)
    if tools:
        prompt.append([dumps(body["tools"])])

    stream = _optional_bool(body, "stream")
    include_usage = False
    options = body.get("stream_options")
    if options is not None:
        if not stream:
            raise InvalidRequest(
                "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
                param="stream_options",
            )
        if not isinstance(options, dict):
            raise _invalid_type("stream_options", "an object", options)
        include_usage = _optional_bool(options, "include_usage", where="stream_options.")

    # `max_tokens` is the older name of `max_completion_tokens`; the newer one wins.
    max_tokens = _optional_positive_int(body, "max_completion_tokens")
    if max_tokens is None:
        max_tokens = _optional_positive_int(body, "max_tokens")
    n = _optional_positive_int(body, "n")
    if n is not None and n != 1:
        raise InvalidRequest(
            f"Invalid 'n': the simulator generates one choice, but got {n}.",
            param="n",
            code="unsupported_value",
        )

    try:
        prompt_tokens = count_prompt_tokens(prompt, named=named)
    except ValueError:  # a text too long for the tokenizer
        prompt_tokens = context_window + 1
    if prompt_tokens > context_window:
        raise InvalidRequest(
            f"This model's maximum context length is {context_window} tokens. However, your "
            f"messages resulted in {prompt_tokens} tokens. Please reduce the length of the "
            "messages.",
            param="messages",
            code="context_length_exceeded",
        )
    return ChatRequest(
        model=model,
        stream=stream,
        include_usage=include_usage,
        max_tokens=max_tokens,
        prompt_tokens=prompt_tokens,
        user_text=user_text,
        tools=tools,
        tool_choice=tool_choice,
        tool_outputs=_trailing_tool_outputs(messages),
    )


_FUNCTION_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")


def _parse_tools(tools: object) -> tuple[OfferedTool, ...]:
    if tools is None:
        return ()
    if not isinstance(tools, list):
        raise _invalid_type("tools", "an array", tools)
    offered = []
    for index, tool in enumerate(tools):
        where = f"tools[{index}]"
        if not isinstance(tool, dict):
            raise _invalid_type(where, "an object", tool)
        if tool.get("type") != "function":
            raise InvalidRequest(
                f"Invalid value for '{where}.type': expected 'function', got {tool.get('type')!r}.",
                param=f"{where}.type",
                code="invalid_value",
            )
        function = tool.get("function")
        if not isinstance(function, dict):
            raise _missing(f"{where}.function")
        name = function.get("name")
        if not isinstance(name, str):
            raise _missing(f"{where}.function.name")
        if not _FUNCTION_NAME.match(name):
            raise InvalidRequest(
                f"Invalid '{where}.function.name': string does not match pattern. Expected a "
                "string that matches the pattern '^[a-zA-Z0-9_-]+$'.",
                param=f"{where}.function.name",
                code="invalid_value",
            )
        parameters = function.get("parameters", {})
        if not isinstance(parameters, dict):
            raise _invalid_type(f"{where}.function.parameters", "an object", parameters)
        description = function.get("description")
        offered.append(
            OfferedTool(name, parameters, description if isinstance(description, str) else "")
        )
    return tuple(offered)


def _parse_tool_choice(choice: object, tools: tuple[OfferedTool, ...]) -> str:
    if choice is None:
        return "auto"
    if not tools:
        raise InvalidRequest(
            "Invalid value for 'tool_choice': 'tool_choice' is only allowed when 'tools' are "
            "specified.",
            param="tool_choice",
        )
    if choice in ("none", "auto", "required"):
        assert isinstance(choice, str)
        return choice
    function = choice.get("function") if isinstance(choice, dict) else None
    name = function.get("name") if isinstance(function, dict) else None
    is_function = isinstance(choice, dict) and choice.get("type") == "function"
    if not (is_function and isinstance(name, str)):
        raise InvalidRequest(
            "Invalid value for 'tool_choice': expected 'none', 'auto', 'required' or "
            '{"type": "function", "function": {"name": ...}}.',
            param="tool_choice",
            code="invalid_value",
        )
    if name not in {tool.name for tool in tools}:
        raise InvalidRequest(
            f"Invalid value for 'tool_choice': no function named {name!r} was specified in "
            "the 'tools' parameter.",
            param="tool_choice",
            code="invalid_value",
        )
    return name


def _trailing_tool_outputs(messages: list[Any]) -> tuple[ToolOutput, ...]:
    """The `tool` messages that end the conversation, named after the calls they answer."""
    trailing: list[dict[str, Any]] = []
    index = len(messages) - 1
    while index >= 0 and messages[index].get("role") == "tool":
        trailing.insert(0, messages[index])
        index -= 1
    if not trailing:
        return ()
    names: dict[str, str] = {}
    if index >= 0 and isinstance(calls := messages[index].get("tool_calls"), list):
        for call in calls:
            function = call.get("function") if isinstance(call, dict) else None
            if isinstance(function, dict) and isinstance(call.get("id"), str):
                names[call["id"]] = str(function.get("name") or "")
    outputs = []
    for message in trailing:
        content = message.get("content")
        if isinstance(content, list):
            content = " ".join(
                str(part.get("text", "")) for part in content if isinstance(part, dict)
            )
        outputs.append(ToolOutput(names.get(message.get("tool_call_id", ""), ""), str(content)))
    return tuple(outputs)


def _parse_message(index: int, message: object) -> tuple[str, list[str], list[str], bool]:
    """Role, strings that count as prompt tokens, text of the content, whether named."""
    where = f"messages[{index}]"
    if not isinstance(message, dict):
        raise _invalid_type(where, "an object", message)
    role = message.get("role")
    if role is None:
        raise _missing(f"{where}.role")
    if role not in _ROLES:
        raise InvalidRequest(
            f"Invalid value for '{where}.role': {role!r}. Supported values are: {_ROLES_TEXT}.",
            param=f"{where}.role",
            code="invalid_value",
        )
    assert isinstance(role, str)
    texts: list[str] = []
    content = message.get("content")
    if content is None:
        if role not in _CONTENT_OPTIONAL:
            raise _missing(f"{where}.content")
    elif isinstance(content, str):
        texts.append(content)
    elif isinstance(content, list):
        for part_index, part in enumerate(content):
            texts.extend(_content_part_text(f"{where}.content[{part_index}]", part))
    else:
        raise _invalid_type(f"{where}.content", "one of a string or array of objects", content)
    if role == "tool" and not isinstance(message.get("tool_call_id"), str):
        raise _missing(f"{where}.tool_call_id")

    strings = [role, *texts]
    name = message.get("name")
    if isinstance(name, str):
        strings.append(name)
    tool_calls = message.get("tool_calls")
    if isinstance(tool_calls, list):
        for call in tool_calls:
            function = call.get("function") if isinstance(call, dict) else None
            if isinstance(function, dict):
                strings.extend(
                    value
                    for key in ("name", "arguments")
                    if isinstance(value := function.get(key), str)
                )
    return role, strings, texts, isinstance(name, str)


def _content_part_text(where: str, part: object) -> list[str]:
    if not isinstance(part, dict):
        raise _invalid_type(where, "an object", part)
    kind = part.get("type")
    if not isinstance(kind, str):
        raise _missing(f"{where}.type")
    if kind in ("text", "refusal"):
        text = part.get(kind)
        if not isinstance(text, str):
            raise _missing(f"{where}.{kind}")
        return [text]
    return []  # images, audio, files: accepted, not counted


def _optional_bool(body: dict[str, Any], key: str, *, where: str = "") -> bool:
    value = body.get(key)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise _invalid_type(where + key, "a boolean", value)
    return value


def _optional_positive_int(body: dict[str, Any], key: str) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if not is_int(value):
        raise _invalid_type(key, "an integer", value)
    assert isinstance(value, int)
    if value < 1:
        raise InvalidRequest(
            f"Invalid '{key}': integer below minimum value. Expected a value >= 1, "
            f"but got {value} instead.",
            param=key,
            code="integer_below_min_value",
        )
    return value


def _missing(param: str) -> InvalidRequest:
    return InvalidRequest(
        f"Missing required parameter: '{param}'.", param=param, code="missing_required_parameter"
    )


def _invalid_type(param: str, expected: str, value: object) -> InvalidRequest:
    return InvalidRequest(
        f"Invalid type for '{param}': expected {expected}, but got {json_type_name(value)} "
        "instead.",
        param=param,
        code="invalid_type",
    )
