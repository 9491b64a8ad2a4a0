"""A bounded record of the requests the simulator received, for tests to inspect."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Mapping
from typing import NotRequired, TypedDict

# Credentials never enter the journal: it is served unauthenticated on /_journal.
SECRET_HEADERS = frozenset(
    {"authorization", "proxy-authorization", "x-api-key", "api-key", "cookie"}
)


class JournalEntry(TypedDict):
    """One received request."""

    time: float
    """Unix time of arrival, in seconds."""
    method: str
    path: str
    api: str
    """"openai" or "anthropic"."""
    headers: dict[str, str]
    """The request headers, minus credentials."""
    body: object
    """The parsed JSON body; None when it was not valid JSON."""
    outcome: NotRequired[str]
    """How the request ended: "completed", "error <status>", "client_disconnected",
    "fault_disconnect" (set once it ended; absent while it runs)."""
    ended: NotRequired[float]
    """Unix time at which it ended, in seconds."""
    tokens_sent: NotRequired[int]
    """Streamed token events written before it ended."""
    fault: NotRequired[str | None]
    """The fault injected into this request, if any."""
    attempt: NotRequired[int]
    """The attempt number under a fault control (1 for the first)."""


class Journal:
    """The last `size` requests, oldest first."""

    def __init__(self, size: int) -> None:
        self._entries: deque[JournalEntry] = deque(maxlen=size)

    def record(
        self,
        *,
        method: str,
        path: str,
        api: str,
        headers: Mapping[str, str],
        body: object,
    ) -> JournalEntry:
        """Add a request, dropping the oldest one when full; returns the entry to complete."""
        entry = JournalEntry(
            time=time.time(),
            method=method,
            path=path,
            api=api,
            headers={k: v for k, v in headers.items() if k.lower() not in SECRET_HEADERS},
            body=body,
        )
        self._entries.append(entry)
        return entry

    @staticmethod
    def finish(entry: JournalEntry, outcome: str, tokens_sent: int = 0) -> None:
        """Record how a request ended."""
        entry["outcome"] = outcome
        entry["ended"] = time.time()
        entry["tokens_sent"] = tokens_sent

    def entries(self) -> list[JournalEntry]:
        """The recorded requests, oldest first."""
        return list(self._entries)

    def clear(self) -> None:
        """Forget every recorded request."""
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)
