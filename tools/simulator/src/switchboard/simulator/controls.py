"""Per-request controls: latency, reply length, tool choice and injected faults.

A request sets controls in its body's `metadata` object (`"sim.fault": "500"`) or in headers
(`x-sim-fault: 500`; a header wins over the body). Each control falls back to the simulator's
settings, so the environment gives the defaults. A fault can be limited to the first N attempts
of a request: attempts are counted per `sim.key`, or per conversation (the hash of the
request's messages) when no key is given.
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from .settings import Settings
from .wire import InvalidRequest, StreamFault

METADATA_PREFIX = "sim."
HEADER_PREFIX = "x-sim-"

Fault = Literal["429", "500", "hang", "disconnect"]
FAULTS: tuple[Fault, ...] = ("429", "500", "hang", "disconnect")

_NUMBERS = {
    # control: (minimum, integer only)
    "delay_ms": (0.0, False),
    "ttft_ms": (0.0, False),
    "tokens": (1.0, True),
    "fault_attempts": (0.0, True),
    "fault_after": (0.0, True),
    "retry_after_ms": (0.0, True),
}
_STRINGS = ("fault", "key", "tool")
KNOWN = frozenset((*_NUMBERS, *_STRINGS))


@dataclass(frozen=True, slots=True)
class Controls:
    """How one request is answered."""

    ttft_s: float
    token_delay_s: float
    reply_tokens: int
    fault: Fault | None
    """The fault to inject, if any (already limited to the first `fault_attempts` attempts)."""
    fault_after: int | None
    """Token events sent before a `hang` or `disconnect`; None means half of them."""
    retry_after_ms: int
    """Sent as `retry-after-ms` and `retry-after` with a 429; 0 sends neither."""
    tool: str | None
    """Force a call of this tool; "none" forbids tool calls."""
    attempt: int
    """Which attempt of this request this is (1 for the first), counted only under a fault."""

    def stream_fault(self, token_events: int) -> StreamFault | None:
        """The fault to inject into a stream of `token_events` token events, if any."""
        if self.fault not in ("hang", "disconnect"):
            return None
        after = token_events // 2 if self.fault_after is None else self.fault_after
        return StreamFault(self.fault, after)


def raw_controls(body: Mapping[str, Any], headers: Mapping[str, str]) -> dict[str, str]:
    """The `sim.*` controls of a request, by name without the prefix; headers win."""
    found: dict[str, str] = {}
    metadata = body.get("metadata")
    if isinstance(metadata, dict):
        for key, value in metadata.items():
            if isinstance(key, str) and key.startswith(METADATA_PREFIX):
                found[key.removeprefix(METADATA_PREFIX)] = str(value)
    for key, value in headers.items():
        lowered = key.lower()
        if lowered.startswith(HEADER_PREFIX):
            found[lowered.removeprefix(HEADER_PREFIX).replace("-", "_")] = value
    return found


def _number(name: str, value: str) -> float:
    minimum, integer = _NUMBERS[name]
    try:
        number = int(value) if integer else float(value)
    except ValueError:
        kind = "an integer" if integer else "a number"
        raise InvalidRequest(
            f"Invalid control 'sim.{name}': expected {kind}, got {value!r}.", param=f"sim.{name}"
        ) from None
    if number < minimum or number != number:  # NaN fails the second test
        raise InvalidRequest(
            f"Invalid control 'sim.{name}': must be >= {minimum:g}, got {value!r}.",
            param=f"sim.{name}",
        )
    return float(number)


class AttemptCounter:
    """Attempts seen per request key, for faults limited to the first N attempts (bounded LRU)."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._counts: OrderedDict[str, int] = OrderedDict()

    def next(self, key: str) -> int:
        """Count one more attempt of `key`; returns its number, from 1."""
        count = self._counts.pop(key, 0) + 1
        self._counts[key] = count
        while len(self._counts) > self._size:
            self._counts.popitem(last=False)
        return count


def default_key(api: str, body: Mapping[str, Any]) -> str:
    """The key of a request without `sim.key`: its API and messages, whatever the model."""
    messages = json.dumps([body.get("system"), body.get("messages")], sort_keys=True, default=str)
    return hashlib.sha256(f"{api}\x00{messages}".encode()).hexdigest()


def read_controls(
    api: str,
    body: Mapping[str, Any],
    headers: Mapping[str, str],
    settings: Settings,
    attempts: AttemptCounter,
) -> Controls:
    """The controls of a request, with the settings as defaults; raise `InvalidRequest`."""
    raw = raw_controls(body, headers)
    unknown = sorted(set(raw) - KNOWN)
    if unknown:
        raise InvalidRequest(
            f"Unknown control 'sim.{unknown[0]}'. Known controls: "
            + ", ".join(f"sim.{name}" for name in sorted(KNOWN))
            + ".",
            param=f"sim.{unknown[0]}",
        )
    numbers = {name: _number(name, raw[name]) for name in _NUMBERS if name in raw}

    fault_name = raw.get("fault", settings.fault or "").strip().lower()
    if fault_name in ("", "none"):
        fault: Fault | None = None
    elif fault_name in FAULTS:
        fault = fault_name
    else:
        raise InvalidRequest(
            f"Invalid control 'sim.fault': {fault_name!r}; expected one of "
            + ", ".join(FAULTS)
            + " or none.",
            param="sim.fault",
        )
    attempt = 1
    if fault is not None:
        attempt = attempts.next(raw.get("key") or default_key(api, body))
        limit = int(numbers.get("fault_attempts", settings.fault_attempts))
        if limit and attempt > limit:
            fault = None
    fault_after = numbers.get("fault_after", settings.fault_after_tokens)
    tool = raw.get("tool", "").strip() or None
    return Controls(
        ttft_s=numbers.get("ttft_ms", settings.ttft_ms) / 1000.0,
        token_delay_s=numbers.get("delay_ms", settings.token_delay_ms) / 1000.0,
        reply_tokens=int(numbers.get("tokens", settings.reply_tokens)),
        fault=fault,
        fault_after=None if fault_after is None else int(fault_after),
        retry_after_ms=int(numbers.get("retry_after_ms", settings.retry_after_ms)),
        tool=tool,
        attempt=attempt,
    )


def retry_after_headers(retry_after_ms: int) -> dict[str, str]:
    """The headers a 429 carries: milliseconds (OpenAI's) and whole seconds (standard)."""
    if retry_after_ms <= 0:
        return {}
    return {
        "retry-after-ms": str(retry_after_ms),
        "retry-after": str(max(1, -(-retry_after_ms // 1000))),
    }
