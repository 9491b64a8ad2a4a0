"""Bounded retries with exponential backoff and jitter, for steps that touch a backend."""

import logging

from tenacity import (
    AsyncRetrying,
    before_sleep_log,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential_jitter,
)

log = logging.getLogger(__name__)


def retrying(
    attempts: int,
    backoff_max_s: float,
    transient: tuple[type[BaseException], ...],
) -> AsyncRetrying:
    """Retry `transient` errors up to `attempts` times, then re-raise the last one."""
    return AsyncRetrying(
        stop=stop_after_attempt(attempts),
        wait=wait_exponential_jitter(multiplier=0.1, max=backoff_max_s),
        retry=retry_if_exception_type(transient),
        before_sleep=before_sleep_log(log, logging.WARNING),
        reraise=True,
    )
