from datetime import UTC, datetime

import pytest

from switchboard.memory.paging import InvalidPageTokenError, PageToken


def test_a_token_round_trips_to_the_millisecond() -> None:
    updated = datetime(2025, 3, 1, 12, 0, 0, 123000, tzinfo=UTC)
    token = PageToken.after(updated, "conv-9", "alice").encode()
    parsed = PageToken.decode(token, "alice")
    assert parsed.updated_at == updated and parsed.conversation_id == "conv-9"
    assert "=" not in token


@pytest.mark.parametrize("token", ["garbage", "!!!", "e30", "eyJ1cGRhdGVkX21zIjogIngifQ"])
def test_tokens_this_service_did_not_issue_are_refused(token: str) -> None:
    with pytest.raises(InvalidPageTokenError, match="page_token"):
        PageToken.decode(token, "")


def test_a_token_of_another_user_listing_is_refused() -> None:
    token = PageToken.after(datetime.now(UTC), "c", "alice").encode()
    with pytest.raises(InvalidPageTokenError, match="page_token belongs to a listing"):
        PageToken.decode(token, "bob")
