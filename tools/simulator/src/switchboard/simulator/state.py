"""What the request handlers share, stored on the aiohttp application."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from .controls import AttemptCounter
from .journal import Journal, JournalEntry
from .settings import Settings
from .wire import UNPARSABLE, Pacing, decode_json


@dataclass(frozen=True, slots=True)
class SimulatorState:
    """Settings, journal, default pacing and fault attempts of one simulator application."""

    settings: Settings
    journal: Journal
    pacing: Pacing
    attempts: AttemptCounter

    @classmethod
    def from_settings(cls, settings: Settings) -> SimulatorState:
        """The state of a fresh application configured by `settings`."""
        return cls(
            settings=settings,
            journal=Journal(settings.journal_size),
            pacing=Pacing(ttft=settings.ttft_s, token_delay=settings.token_delay_s),
            attempts=AttemptCounter(settings.attempt_keys),
        )


STATE_KEY = web.AppKey("switchboard_simulator_state", SimulatorState)


async def read_request(
    request: web.Request, api: str
) -> tuple[SimulatorState, object, JournalEntry]:
    """The application's state, the request's JSON body (`UNPARSABLE` when it is not JSON)
    and its journal entry, recorded on arrival."""
    state = request.app[STATE_KEY]
    body = decode_json(await request.read())
    entry = state.journal.record(
        method=request.method,
        path=request.path,
        api=api,
        headers=request.headers,
        body=None if body is UNPARSABLE else body,
    )
    return state, body, entry
