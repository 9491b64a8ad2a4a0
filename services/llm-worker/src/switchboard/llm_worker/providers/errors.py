"""SDK and HTTP failures as `ProviderError`s that say whether a retry may help (and when)."""

import email.utils
import time
from collections.abc import Mapping

import anthropic
import httpx2
import openai

from switchboard.llm_worker.providers.base import ProviderError

# Statuses worth retrying: timeouts, conflicts, rate limits and server errors
# (Anthropic's 529 "overloaded" included).
RETRYABLE_STATUSES = frozenset({408, 409, 429})


def _retryable_status(status: int) -> bool:
    return status in RETRYABLE_STATUSES or status >= 500


def retry_after_s(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds the provider asked us to wait: `retry-after-ms`, or `retry-after` in seconds
    or as an HTTP date. None when absent or unreadable."""
    milliseconds = headers.get("retry-after-ms")
    if milliseconds is not None:
        try:
            return max(float(milliseconds) / 1000, 0.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - (time.time() if now is None else now), 0.0)


def classify(provider: str, model: str, exc: Exception) -> ProviderError:
    """The `ProviderError` for an exception raised by an SDK or its HTTP client."""
    where = f"{provider} {model}"
    if isinstance(exc, openai.APIStatusError | anthropic.APIStatusError):
        status = exc.status_code
        headers = exc.response.headers
        if status < 400:
            # An error event in the middle of a 200 stream (e.g. Anthropic's overloaded_error).
            return ProviderError(f"{where}: {exc}", retryable=True, kind="stream_error")
        kind = "rate_limited" if status == 429 else "server_error" if status >= 500 else "rejected"
        return ProviderError(
            f"{where}: HTTP {status}: {exc.message}",
            retryable=_retryable_status(status),
            kind=kind,
            retry_after_s=retry_after_s(headers),
            status=status,
        )
    timeouts = (openai.APITimeoutError, anthropic.APITimeoutError, httpx2.TimeoutException)
    if isinstance(exc, timeouts):
        return ProviderError(f"{where}: timed out", retryable=True, kind="timeout")
    if isinstance(exc, openai.APIConnectionError | anthropic.APIConnectionError):
        return ProviderError(f"{where}: {exc}", retryable=True, kind="connection")
    if isinstance(exc, httpx2.TransportError):
        return ProviderError(f"{where}: connection lost: {exc}", retryable=True, kind="connection")
    if isinstance(exc, openai.APIResponseValidationError | anthropic.APIResponseValidationError):
        return ProviderError(f"{where}: {exc}", retryable=False, kind="invalid_response")
    if isinstance(exc, openai.APIError | anthropic.APIError):
        # Errors sent inside a stream carry no status: the next attempt may well succeed.
        return ProviderError(f"{where}: {exc}", retryable=True, kind="stream_error")
    return ProviderError(f"{where}: {exc!r}", retryable=False, kind="unexpected")


SDK_ERRORS = (openai.OpenAIError, anthropic.AnthropicError, httpx2.HTTPError)
