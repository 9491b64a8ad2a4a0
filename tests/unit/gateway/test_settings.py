import pytest
from pydantic import ValidationError

from switchboard.common.settings import RedisSettings
from switchboard.gateway.settings import GatewaySettings


def test_the_defaults_are_consistent() -> None:
    settings = GatewaySettings()
    assert settings.heartbeat_ttl_s > settings.heartbeat_interval_s
    assert settings.max_message_chars == 8_000


@pytest.mark.parametrize(
    "values",
    [
        {"heartbeat_interval_s": 30, "heartbeat_ttl_s": 30},
        {"heartbeat_interval_s": 10, "reply_topic_sweep_interval_s": 5},
        {"attach_poll_s": 3, "redis": RedisSettings(socket_timeout_s=2)},
    ],
)
def test_inconsistent_timings_are_refused(values: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        GatewaySettings(**values)  # type: ignore[arg-type]
