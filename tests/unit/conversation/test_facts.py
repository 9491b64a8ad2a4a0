import pytest

from switchboard.conversation.facts import (
    CUSTOMER_NAME,
    GOAL,
    ORDER_NUMBER,
    TICKET_NUMBER,
    ExtractedFact,
    extract_facts,
    facts_of,
)
from switchboard.conversation.records import StoredMessage
from switchboard.v1.chat_pb2 import ROLE_ASSISTANT, ROLE_USER


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "Hi, my name is Dana Reyes and my order #A-778 is late. I want to cancel it.",
            [
                ExtractedFact(CUSTOMER_NAME, "Dana Reyes"),
                ExtractedFact(ORDER_NUMBER, "A-778"),
                ExtractedFact(GOAL, "cancel it"),
            ],
        ),
        (
            "My order number is 99-1, see ticket T-42. I need a refund!",
            [
                ExtractedFact(ORDER_NUMBER, "99-1"),
                ExtractedFact(TICKET_NUMBER, "T-42"),
                ExtractedFact(GOAL, "a refund"),
            ],
        ),
        (
            "I'd like to change my address. Call me Bob.",
            [ExtractedFact(CUSTOMER_NAME, "Bob"), ExtractedFact(GOAL, "change my address")],
        ),
        ("I\u2019m trying to log in since Monday", [ExtractedFact(GOAL, "log in since Monday")]),
        (
            "case: 5521 and reference ABC123",
            [
                ExtractedFact(TICKET_NUMBER, "5521"),
                ExtractedFact(TICKET_NUMBER, "ABC123"),
            ],
        ),
    ],
)
def test_user_messages_yield_names_numbers_and_goals(
    text: str, expected: list[ExtractedFact]
) -> None:
    assert extract_facts(ROLE_USER, text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "my order is late",  # no digit: no order number
        "my name is not important",  # not capitalised: no name
        "my name is [NAME]",  # a redaction placeholder is no name
        "I need help",  # no goal worth keeping
        "The item I wanted to return",
    ],
)
def test_text_without_facts_yields_none(text: str) -> None:
    assert extract_facts(ROLE_USER, text) == []


def test_assistant_messages_yield_numbers_only() -> None:
    facts = extract_facts(
        ROLE_ASSISTANT, "My name is Sam. I opened ticket TK-9981 for order 12345; I want to help."
    )
    assert facts == [ExtractedFact(ORDER_NUMBER, "12345"), ExtractedFact(TICKET_NUMBER, "TK-9981")]


def test_each_kind_is_bounded_and_repeats_are_dropped() -> None:
    text = " ".join(f"order {n}1" for n in range(20)) + " order 01 order 01"
    facts = extract_facts(ROLE_USER, text)
    assert len(facts) == 5 and len(set(facts)) == 5


def test_facts_of_a_turn_carry_request_and_position_once_each() -> None:
    from datetime import UTC, datetime

    now = datetime.now(UTC)
    user = StoredMessage(20, "r1", ROLE_USER, "Order 4455 never came", now)
    assistant = StoredMessage(30, "r1", ROLE_ASSISTANT, "Sorry about order 4455, ticket 77", now)
    found = facts_of((user, assistant))
    assert [(f.kind, f.value, f.request_id, p) for f, p in found] == [
        (ORDER_NUMBER, "4455", "r1", 20),
        (TICKET_NUMBER, "77", "r1", 30),
    ]
