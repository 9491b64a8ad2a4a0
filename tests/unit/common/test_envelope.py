import pytest

from switchboard.common.envelope import PoisonMessageError, decode, headers_for
from switchboard.common.topics import Topics, dead_letter
from switchboard.v1.events_pb2 import CancelGeneration, TurnRequest


def test_round_trip_keeps_the_payload() -> None:
    turn = TurnRequest(tenant_id="t", conversation_id="c", request_id="r", message="hello")
    assert decode(turn.SerializeToString(), headers_for(turn), TurnRequest) == turn


def test_a_record_of_another_type_is_poison() -> None:
    cancel = CancelGeneration(request_id="r")
    with pytest.raises(PoisonMessageError, match=r"switchboard\.v1\.TurnRequest"):
        decode(cancel.SerializeToString(), headers_for(cancel), TurnRequest)


def test_missing_headers_and_unknown_schema_versions_are_poison() -> None:
    body = TurnRequest(message="x").SerializeToString()
    with pytest.raises(PoisonMessageError):
        decode(body, {}, TurnRequest)
    headers = {**headers_for(TurnRequest()), "sb-schema-version": "2"}
    with pytest.raises(PoisonMessageError, match="sb-schema-version"):
        decode(body, headers, TurnRequest)


def test_corrupt_bytes_are_poison() -> None:
    with pytest.raises(PoisonMessageError, match="cannot parse"):
        decode(b"\xff\xff\xff", headers_for(TurnRequest()), TurnRequest)


def test_topic_names_carry_the_prefix() -> None:
    topics = Topics("e2e.")
    assert topics.chat_requests == "e2e.chat.requests"
    assert topics.llm_tasks("cheap") == "e2e.llm.tasks.cheap"
    assert topics.chat_replies("gw-1") == "e2e.chat.replies.gw-1"
    assert dead_letter(topics.chat_turns) == "e2e.chat.turns.dlq"
    assert Topics().llm_results == "llm.results"
