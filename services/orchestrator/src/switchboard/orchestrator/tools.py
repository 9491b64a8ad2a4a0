"""Tools the model may call: a registry with JSON Schema parameters, built-ins, HTTP tools.

Arguments are validated (jsonschema) before anything runs; each call has its own timeout;
the calls of one round run concurrently; a failing tool becomes a `failed` result the model
can read, never an exception that ends the turn.
"""

import asyncio
import json
import logging
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, Protocol
from urllib.parse import quote, urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import aiohttp
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError
from pydantic import BaseModel, Field, ValidationError, field_validator

from switchboard.common.tenants import tool_url_problem
from switchboard.v1.events_pb2 import ToolCall, ToolSpec

log = logging.getLogger(__name__)

SUCCEEDED = "succeeded"
FAILED = "failed"
ESCALATE_TO_HUMAN = "escalate_to_human"
CURRENT_TIME = "current_time"
SEARCH_KNOWLEDGE = "search_knowledge"
BUILTIN_TOOLS = (ESCALATE_TO_HUMAN, CURRENT_TIME, SEARCH_KNOWLEDGE)


@dataclass(frozen=True)
class ToolContext:
    """Who a tool call runs for."""

    tenant_id: str
    conversation_id: str
    request_id: str
    user_id: str


@dataclass(frozen=True)
class HandoffRequest:
    """A tool asked for a human: the ticket that was opened."""

    reason: str
    ticket_id: str


@dataclass(frozen=True)
class ToolOutcome:
    """What one call gave: the text for the model, and a handoff if it asked for one."""

    call: ToolCall
    status: str
    result: str
    handoff: HandoffRequest | None = None


class ToolFailedError(Exception):
    """A tool ran but could not do its job; the message is shown to the model."""


ToolFunction = Callable[[dict[str, Any], ToolContext], Awaitable["ToolResult"]]


@dataclass(frozen=True)
class ToolResult:
    """A tool's return value (any JSON value) and an optional handoff."""

    value: Any
    handoff: HandoffRequest | None = None


@dataclass(frozen=True)
class Tool:
    """A callable tool with its JSON Schema."""

    name: str
    description: str
    parameters: Mapping[str, Any]
    run: ToolFunction
    timeout_s: float
    validator: Draft202012Validator = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        Draft202012Validator.check_schema(dict(self.parameters))
        object.__setattr__(self, "validator", Draft202012Validator(dict(self.parameters)))

    def spec(self) -> ToolSpec:
        return ToolSpec(
            name=self.name,
            description=self.description,
            parameters_json_schema=json.dumps(self.parameters, separators=(",", ":")),
        )


class ToolRegistry:
    """The tools of one turn."""

    def __init__(self, tools: Sequence[Tool], max_result_chars: int = 4_000) -> None:
        self._tools = {tool.name: tool for tool in tools}
        self._max_result_chars = max_result_chars

    def __len__(self) -> int:
        return len(self._tools)

    @property
    def names(self) -> list[str]:
        return list(self._tools)

    def specs(self) -> list[ToolSpec]:
        """What the model is offered."""
        return [tool.spec() for tool in self._tools.values()]

    async def call_all(self, calls: Sequence[ToolCall], context: ToolContext) -> list[ToolOutcome]:
        """Run the calls of one round concurrently; outcomes in call order."""
        return list(await asyncio.gather(*(self.call(c, context) for c in calls)))

    async def call(self, call: ToolCall, context: ToolContext) -> ToolOutcome:
        """Validate and run one call; every failure becomes a `failed` outcome."""
        tool = self._tools.get(call.name)
        if tool is None:
            return self._failed(call, f"unknown tool {call.name!r}; available: {self.names}")
        try:
            arguments = json.loads(call.arguments_json or "{}")
        except json.JSONDecodeError as exc:
            return self._failed(call, f"arguments of {call.name} are not valid JSON: {exc.msg}")
        if not isinstance(arguments, dict):
            return self._failed(call, f"arguments of {call.name} must be a JSON object")
        problems = sorted(tool.validator.iter_errors(arguments), key=lambda e: list(e.path))
        if problems:
            where = "/".join(str(p) for p in problems[0].path) or "arguments"
            return self._failed(
                call, f"invalid arguments for {call.name} at {where}: {problems[0].message}"
            )
        try:
            async with asyncio.timeout(tool.timeout_s):
                result = await tool.run(arguments, context)
        except TimeoutError:
            return self._failed(call, f"{call.name} timed out after {tool.timeout_s:g}s")
        except ToolFailedError as exc:
            return self._failed(call, str(exc))
        except Exception as exc:  # a tool bug must not end the turn
            log.exception("tool %s crashed", call.name)
            return self._failed(call, f"{call.name} failed: {type(exc).__name__}")
        text = (
            result.value
            if isinstance(result.value, str)
            else json.dumps(result.value, ensure_ascii=False, separators=(",", ":"))
        )
        return ToolOutcome(call, SUCCEEDED, self._truncate(text), result.handoff)

    def _failed(self, call: ToolCall, message: str) -> ToolOutcome:
        return ToolOutcome(call, FAILED, self._truncate(json.dumps({"error": message})))

    def _truncate(self, text: str) -> str:
        if len(text) <= self._max_result_chars:
            return text
        return text[: self._max_result_chars] + "…[truncated]"


# ---- built-ins ------------------------------------------------------------------------


class TicketOpener(Protocol):
    """Opens a handoff ticket for the tenant (MongoDB in production)."""

    async def open_ticket(self, context: ToolContext, reason: str, priority: str) -> str: ...


def escalate_to_human_tool(tickets: TicketOpener, timeout_s: float) -> Tool:
    """Hand the conversation to a human agent: opens a ticket."""

    async def run(arguments: dict[str, Any], context: ToolContext) -> ToolResult:
        reason = str(arguments["reason"])
        priority = str(arguments.get("priority", "normal"))
        ticket_id = await tickets.open_ticket(context, reason, priority)
        return ToolResult(
            {"ticket_id": ticket_id, "status": "open", "message": "a human agent will take over"},
            HandoffRequest(reason, ticket_id),
        )

    return Tool(
        name=ESCALATE_TO_HUMAN,
        description=(
            "Hand the conversation to a human agent when the customer asks for one, is very "
            "upset, or the problem cannot be solved here. Opens a support ticket."
        ),
        parameters={
            "type": "object",
            "properties": {
                "reason": {"type": "string", "minLength": 1, "maxLength": 500},
                "priority": {"type": "string", "enum": ["low", "normal", "high"]},
            },
            "required": ["reason"],
            "additionalProperties": False,
        },
        run=run,
        timeout_s=timeout_s,
    )


def current_time_tool(timeout_s: float, clock: Callable[[], datetime] | None = None) -> Tool:
    """The current date and time in a time zone."""
    now = clock or (lambda: datetime.now(UTC))

    async def run(arguments: dict[str, Any], context: ToolContext) -> ToolResult:
        name = str(arguments.get("timezone", "UTC"))
        try:
            zone = ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ToolFailedError(f"unknown time zone {name!r}") from exc
        local = now().astimezone(zone)
        return ToolResult(
            {
                "now": local.isoformat(timespec="seconds"),
                "timezone": name,
                "weekday": local.strftime("%A"),
            }
        )

    return Tool(
        name=CURRENT_TIME,
        description="The current date, time and weekday, in an IANA time zone (default UTC).",
        parameters={
            "type": "object",
            "properties": {"timezone": {"type": "string", "maxLength": 64}},
            "additionalProperties": False,
        },
        run=run,
        timeout_s=timeout_s,
    )


# ---- tenant HTTP tools ----------------------------------------------------------------

_PLACEHOLDER = re.compile(r"\{(\w+)\}")


class HttpToolDefinition(BaseModel):
    """A tenant-defined tool backed by an HTTP endpoint (an entry of `TenantConfig.tools`)."""

    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    description: str = Field(min_length=1, max_length=1_000)
    type: Literal["http"] = "http"
    method: Literal["GET", "POST"] = "GET"
    # `{name}` placeholders are filled from the arguments (URL-quoted).
    url: str
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})
    timeout_s: float = Field(default=5.0, gt=0, le=60)
    headers: dict[str, str] = Field(default_factory=dict)

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        problem = tool_url_problem(value)
        if problem is not None:
            raise ValueError(f"url {problem}")
        return value

    @field_validator("parameters")
    @classmethod
    def _schema(cls, value: dict[str, Any]) -> dict[str, Any]:
        try:
            Draft202012Validator.check_schema(value)
        except SchemaError as exc:
            raise ValueError(f"parameters is not a valid JSON Schema: {exc.message}") from exc
        if value.get("type") != "object":
            raise ValueError("parameters must describe an object")
        return value


def host_allowed(url: str, allowed_hosts: Sequence[str]) -> bool:
    """Whether `url`'s host (and port) is in the allow-list (`host` or `host:port` entries)."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    port = parts.port or (443 if parts.scheme == "https" else 80)
    for entry in allowed_hosts:
        entry = entry.strip().lower()
        name, sep, entry_port = entry.rpartition(":")
        if not sep or not entry_port.isdigit():
            name, entry_port = entry, ""
        if name == host and (not entry_port or int(entry_port) == port):
            return True
    return False


class HttpToolClient:
    """Calls tenant HTTP tools: allow-listed hosts only, no redirects, bounded responses."""

    def __init__(self, allowed_hosts: Sequence[str], max_response_bytes: int) -> None:
        self.allowed_hosts = list(allowed_hosts)
        self._max_response_bytes = max_response_bytes
        self._session: aiohttp.ClientSession | None = None

    def tool(self, definition: HttpToolDefinition) -> Tool:
        """The registry entry of one definition."""

        async def run(arguments: dict[str, Any], context: ToolContext) -> ToolResult:
            return ToolResult(await self.request(definition, arguments))

        return Tool(
            name=definition.name,
            description=definition.description,
            parameters=definition.parameters,
            run=run,
            timeout_s=definition.timeout_s,
        )

    async def request(self, definition: HttpToolDefinition, arguments: dict[str, Any]) -> Any:
        """Perform the call; the decoded JSON (or text) body, or ToolFailedError."""
        rest = dict(arguments)

        def fill(match: re.Match[str]) -> str:
            if match.group(1) not in rest:
                raise ToolFailedError(f"missing argument {match.group(1)!r} for the URL")
            return quote(str(rest.pop(match.group(1))), safe="")

        url = _PLACEHOLDER.sub(fill, definition.url)
        if not host_allowed(url, self.allowed_hosts):
            raise ToolFailedError(f"host of {definition.name} is not allowed")
        if self._session is None:
            self._session = aiohttp.ClientSession()
        kwargs: dict[str, Any] = {"headers": definition.headers, "allow_redirects": False}
        if definition.method == "GET":
            kwargs["params"] = {k: str(v) for k, v in rest.items()}
        else:
            kwargs["json"] = rest
        try:
            async with self._session.request(definition.method, url, **kwargs) as response:
                body = b""
                async for chunk in response.content.iter_chunked(16_384):
                    body += chunk
                    if len(body) > self._max_response_bytes:
                        break
                status = response.status
                content_type = response.content_type
        except aiohttp.ClientError as exc:
            raise ToolFailedError(
                f"{definition.name} is unreachable: {type(exc).__name__}"
            ) from exc
        if len(body) > self._max_response_bytes:
            raise ToolFailedError(
                f"{definition.name} answered more than {self._max_response_bytes} bytes"
            )
        text = body.decode("utf-8", errors="replace")
        if 300 <= status < 400:
            # Following a redirect could lead off the allow-list.
            raise ToolFailedError(f"{definition.name} answered HTTP {status} (not followed)")
        if status >= 400:
            raise ToolFailedError(f"{definition.name} answered HTTP {status}: {text[:200]}")
        if content_type == "application/json":
            try:
                return json.loads(text)
            except json.JSONDecodeError:
                pass
        return text

    async def close(self) -> None:
        """Close the HTTP session."""
        if self._session is not None:
            await self._session.close()


def build_registry(
    *,
    builtin_names: Sequence[str],
    tool_definitions: Sequence[Mapping[str, Any]],
    tickets: TicketOpener,
    http: HttpToolClient,
    builtin_timeout_s: float,
    max_result_chars: int,
    extra_builtins: Sequence[Tool] = (),
) -> ToolRegistry:
    """A tenant's tools: the built-ins it enables and its valid, allow-listed HTTP tools.
    `extra_builtins` are built-ins made elsewhere (search_knowledge), enabled alike by name."""
    tools: list[Tool] = [t for t in extra_builtins if t.name in builtin_names]
    if ESCALATE_TO_HUMAN in builtin_names:
        tools.append(escalate_to_human_tool(tickets, builtin_timeout_s))
    if CURRENT_TIME in builtin_names:
        tools.append(current_time_tool(builtin_timeout_s))
    for raw in tool_definitions:
        try:
            definition = HttpToolDefinition.model_validate(raw)
        except ValidationError as exc:
            log.warning("skipping invalid tool definition %r: %s", raw.get("name"), exc)
            continue
        if definition.name in BUILTIN_TOOLS:
            log.warning("skipping tool %r: the name is reserved", definition.name)
            continue
        if not host_allowed(definition.url.replace("{", "").replace("}", ""), http.allowed_hosts):
            log.warning("skipping tool %r: host not in the allow-list", definition.name)
            continue
        tools.append(http.tool(definition))
    return ToolRegistry(tools, max_result_chars)
