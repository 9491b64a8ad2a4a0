"""Switchboard's messages and tools in each provider's wire format."""

import functools
import json
from collections.abc import Sequence
from typing import Any, cast

from openai.types.chat import ChatCompletionMessageParam, ChatCompletionToolParam

from switchboard.llm_worker.providers.base import InvalidTaskError
from switchboard.v1.chat_pb2 import ROLE_ASSISTANT, ROLE_SYSTEM, ROLE_TOOL
from switchboard.v1.events_pb2 import ChatMessage, ToolCall, ToolSpec


def tool_schema(spec: ToolSpec) -> dict[str, Any]:
    """The JSON schema of a tool's parameters; an empty object schema when none is given.

    Shared between calls with the same schema text: read it, never change it.
    """
    if not spec.name:
        raise InvalidTaskError("a tool has no name")
    if not spec.parameters_json_schema:
        return {"type": "object", "properties": {}}
    try:
        schema = _parsed_schema(spec.parameters_json_schema)
    except ValueError as exc:
        raise InvalidTaskError(f"tool {spec.name!r}: parameters schema is not JSON: {exc}") from exc
    if not isinstance(schema, dict):
        raise InvalidTaskError(f"tool {spec.name!r}: parameters schema is not a JSON object")
    return schema


# Every task of a tenant carries the same few tools: parsed once (py-spy: 8% of the worker).
@functools.lru_cache(maxsize=256)
def _parsed_schema(text: str) -> Any:
    return json.loads(text)


def _arguments(call: ToolCall) -> dict[str, Any]:
    try:
        arguments = json.loads(call.arguments_json or "{}")
    except ValueError as exc:
        raise InvalidTaskError(f"tool call {call.id!r}: arguments are not JSON: {exc}") from exc
    if not isinstance(arguments, dict):
        raise InvalidTaskError(f"tool call {call.id!r}: arguments are not a JSON object")
    return arguments


OPENAI_FINISH_REASONS = {"function_call": "tool_calls"}
ANTHROPIC_STOP_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}


def openai_messages(messages: Sequence[ChatMessage]) -> list[ChatCompletionMessageParam]:
    """Switchboard messages in Chat Completions form."""
    converted: list[dict[str, Any]] = []
    for message in messages:
        if message.role == ROLE_SYSTEM:
            converted.append({"role": "system", "content": message.text})
        elif message.role == ROLE_ASSISTANT:
            entry: dict[str, Any] = {"role": "assistant", "content": message.text or None}
            if message.tool_calls:
                entry["tool_calls"] = [
                    {
                        "id": call.id,
                        "type": "function",
                        "function": {"name": call.name, "arguments": call.arguments_json or "{}"},
                    }
                    for call in message.tool_calls
                ]
            elif entry["content"] is None:
                entry["content"] = ""
            converted.append(entry)
        elif message.role == ROLE_TOOL:
            if not message.tool_call_id:
                raise InvalidTaskError("a tool message has no tool_call_id")
            converted.append(
                {"role": "tool", "tool_call_id": message.tool_call_id, "content": message.text}
            )
        else:  # users, and an unspecified role, which is the user's
            converted.append({"role": "user", "content": message.text})
    return cast(list[ChatCompletionMessageParam], converted)


def openai_tools(tools: Sequence[ToolSpec]) -> list[ChatCompletionToolParam]:
    """Tool definitions in Chat Completions form."""
    return [
        {
            "type": "function",
            "function": {
                "name": spec.name,
                "description": spec.description,
                "parameters": tool_schema(spec),
            },
        }
        for spec in tools
    ]


def anthropic_messages(messages: Sequence[ChatMessage]) -> tuple[str, list[dict[str, Any]]]:
    """(system prompt, turns) in Messages API form.

    Tool results become `tool_result` blocks of a user turn; consecutive turns of one role
    are merged, as the API expects user and assistant turns to alternate.
    """
    system = "\n\n".join(m.text for m in messages if m.role == ROLE_SYSTEM and m.text)
    turns: list[dict[str, Any]] = []
    for message in messages:
        if message.role == ROLE_SYSTEM:
            continue
        blocks: list[dict[str, Any]] = []
        if message.role == ROLE_ASSISTANT:
            role = "assistant"
            if message.text:
                blocks.append({"type": "text", "text": message.text})
            blocks.extend(
                {"type": "tool_use", "id": call.id, "name": call.name, "input": _arguments(call)}
                for call in message.tool_calls
            )
        elif message.role == ROLE_TOOL:
            if not message.tool_call_id:
                raise InvalidTaskError("a tool message has no tool_call_id")
            role = "user"
            blocks.append(
                {
                    "type": "tool_result",
                    "tool_use_id": message.tool_call_id,
                    "content": message.text,
                }
            )
        else:
            role = "user"
            if message.text:
                blocks.append({"type": "text", "text": message.text})
        if not blocks:
            continue  # the API rejects empty turns
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})
    # Plain single-text turns as strings, the most widely understood form.
    for turn in turns:
        content = turn["content"]
        if len(content) == 1 and content[0]["type"] == "text":
            turn["content"] = content[0]["text"]
    return system, turns


def anthropic_tools(tools: Sequence[ToolSpec]) -> list[dict[str, Any]]:
    """Tool definitions in Messages API form."""
    return [
        {"name": spec.name, "description": spec.description, "input_schema": tool_schema(spec)}
        for spec in tools
    ]
