"""What the request handlers share, stored on the aiohttp application."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from .controls import AttemptCounter
from .journal import Journal
from .settings import Settings
from .wire import Pacing


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
