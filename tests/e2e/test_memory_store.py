"""The memory store's concurrency rules on the real FerretDB, in process (no services)."""

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from switchboard.conversation.tokens import count_tokens
from switchboard.memory.store import ConversationStore, SaveOutcome, pack_window, unpack_window
from switchboard.memory.summaries import plan_summary

from .conftest import MONGO
from .memory_support import make_turns

pytestmark = pytest.mark.e2e


@pytest.fixture
async def store() -> AsyncIterator[ConversationStore]:
    database = f"e2e_store_{uuid.uuid4().hex[:8]}"
    conversation_store = ConversationStore(MONGO, database, 5_000)
    await conversation_store.ensure_indexes()
    yield conversation_store
    # Not dropped: see tests/e2e/conftest.py on FerretDB 1.24 and dropped databases.
    await conversation_store.close()


async def stored_conversation(store: ConversationStore, turns: int = 6) -> str:
    conversation = f"c-{uuid.uuid4().hex[:8]}"
    texts = [(" ".join(["question"] * 50), " ".join(["answer"] * 50)) for _ in range(turns)]
    for turn in make_turns("acme", conversation, texts):
        assert await store.save_turn(turn) is SaveOutcome.STORED
    return conversation


async def plan_for(store: ConversationStore, conversation: str, max_input: int = 6000):  # type: ignore[no-untyped-def]
    base = await store.summary_state("acme", conversation)
    unsummarised = await store.unsummarised("acme", conversation, base.until_position, 200)
    plan = plan_summary(
        base,
        unsummarised,
        count_tokens,
        trigger_tokens=100,
        trigger_messages=200,
        keep_recent=2,
        max_input_tokens=max_input,
    )
    assert plan is not None
    return base, plan


async def test_a_plan_made_before_a_new_version_cannot_claim(store: ConversationStore) -> None:
    conversation = await stored_conversation(store)
    base, plan = await plan_for(store, conversation)
    stale_base, stale_plan = await plan_for(store, conversation)  # read at the same moment
    assert await store.claim_summary("acme", conversation, "t1", base, plan, 60)
    assert await store.save_summary("acme", conversation, "t1", "first", 5) == 1
    # The pending slot is free again, but the stale plan was made from version 0.
    assert not await store.claim_summary("acme", conversation, "t2", stale_base, stale_plan, 60)
    assert (await store.summary_state("acme", conversation)).text == "first"


async def test_one_summary_in_flight_at_a_time_until_it_is_stale(store: ConversationStore) -> None:
    conversation = await stored_conversation(store)
    base, plan = await plan_for(store, conversation)
    assert await store.claim_summary("acme", conversation, "t1", base, plan, 60)
    assert not await store.claim_summary("acme", conversation, "t2", base, plan, 60)
    # The same task claimed again (its turn was retried after claiming) may be sent again.
    assert await store.claim_summary("acme", conversation, "t1", base, plan, 60)
    assert not await store.claim_summary("acme", conversation, "t2", base, plan, 60)
    # Once the first is older than the timeout, another may be asked for ...
    assert await store.claim_summary("acme", conversation, "t3", base, plan, 0)
    # ... and the late result of the first is then ignored.
    assert await store.save_summary("acme", conversation, "t1", "late", 5) is None
    assert await store.save_summary("acme", conversation, "t3", "fresh", 5) == 1


async def test_only_its_own_task_releases_a_claim(store: ConversationStore) -> None:
    conversation = await stored_conversation(store)
    base, plan = await plan_for(store, conversation)
    assert await store.claim_summary("acme", conversation, "t1", base, plan, 60)
    await store.release_summary("acme", conversation, "t2")  # another task's failure
    assert not await store.claim_summary("acme", conversation, "t2", base, plan, 60)
    await store.release_summary("acme", conversation, "t1")
    assert await store.claim_summary("acme", conversation, "t2", base, plan, 60)
    assert await store.save_summary("acme", conversation, "t1", "released", 5) is None


async def test_an_unknown_conversation_cannot_be_claimed(store: ConversationStore) -> None:
    conversation = await stored_conversation(store)
    base, plan = await plan_for(store, conversation)
    assert not await store.claim_summary("acme", "c-unknown", "t1", base, plan, 60)
    assert not await store.claim_summary("other-tenant", conversation, "t1", base, plan, 60)
    await store.release_summary("acme", "c-unknown", "t1")  # nothing to release: no error


async def test_a_redelivered_result_stores_its_version_once(store: ConversationStore) -> None:
    conversation = await stored_conversation(store)
    base, plan = await plan_for(store, conversation)
    assert await store.claim_summary("acme", conversation, "t1", base, plan, 60)
    assert await store.save_summary("acme", conversation, "t1", "text", 5) == 1
    assert await store.save_summary("acme", conversation, "t1", "text", 5) is None
    summaries = store.client[store.database]["summaries"]
    docs = await summaries.find({"conversation_id": conversation}).to_list()
    assert [(d["version"], d["text"], d["until_position"]) for d in docs] == [
        (1, "text", plan.last.position)
    ]
    assert docs[0]["covered_messages"] == len(plan.messages)


async def test_only_the_newest_versions_are_kept(store: ConversationStore) -> None:
    conversation = await stored_conversation(store, turns=12)
    for version in range(1, 5):
        base, plan = await plan_for(store, conversation, max_input=120)
        assert len(plan.messages) == 2
        assert await store.claim_summary("acme", conversation, f"t{version}", base, plan, 60)
        assert await store.save_summary("acme", conversation, f"t{version}", "s", 2) == version
    summaries = store.client[store.database]["summaries"]
    versions = sorted(d["version"] for d in await summaries.find({}).to_list())
    assert versions == [3, 4]


async def test_a_turn_written_after_its_conversation_was_deleted_takes_itself_out(
    store: ConversationStore,
) -> None:
    conversation = await stored_conversation(store, turns=2)
    late = make_turns(
        "acme", conversation, [("late", "reply")], start=datetime.now(UTC) - timedelta(minutes=1)
    )[0]
    assert await store.delete_conversation("acme", conversation)
    assert await store.save_turn(late) is SaveOutcome.DROPPED_DELETED
    db = store.client[store.database]
    for collection in ("conversations", "messages", "facts", "summaries"):
        assert await db[collection].count_documents({"conversation_id": conversation}) == 0
    # Tombstones are forgotten after their time.
    assert await store.purge_tombstones(datetime.now(UTC) + timedelta(seconds=1)) == 1
    assert await store.save_turn(late) is SaveOutcome.STORED


async def test_the_window_of_newest_messages_matches_the_messages_and_heals(
    store: ConversationStore,
) -> None:
    conversation = await stored_conversation(store, turns=30)  # 60 messages, window of 40
    messages = await store.unsummarised("acme", conversation, 0, 200)
    scan = [m.position for m in messages]
    assert len(scan) == 60
    doc = await store.conversation("acme", conversation)
    assert doc is not None and (doc["message_count"], doc["recent_count"]) == (60, 60)
    assert isinstance(doc["recent"], bytes)  # packed: see store/window.py
    window = unpack_window(doc["recent"])
    assert [m["position"] for m in window] == scan[-40:]

    # No summary covers the 20 oldest: the window alone is read unless the whole is asked for.
    snapshot = await store.context_snapshot("acme", conversation, 200, 0)
    assert [m.position for m in snapshot.newest_first] == list(reversed(scan))[:40]
    assert not snapshot.complete
    snapshot = await store.context_snapshot("acme", conversation, 200, 0, whole=True)
    assert [m.position for m in snapshot.newest_first] == list(reversed(scan))
    assert snapshot.complete
    snapshot = await store.context_snapshot("acme", conversation, 30, 0)
    assert [m.position for m in snapshot.newest_first] == list(reversed(scan))[:30]
    assert snapshot.complete  # the scan limit would stop a whole read there too

    # A window stored as a plain array (before windows were packed) reads the same.
    conversations = store.client[store.database]["conversations"]
    await conversations.update_one({"_id": doc["_id"]}, {"$set": {"recent": window}})
    snapshot = await store.context_snapshot("acme", conversation, 200, 0)
    assert snapshot.newest_first == tuple(reversed(messages))[:40]

    # A window out of step with the count (writers raced) is not trusted ...
    await conversations.update_one(
        {"_id": doc["_id"]},
        {"$set": {"recent": pack_window(messages[-40:-2]), "recent_count": 59}},
    )
    snapshot = await store.context_snapshot("acme", conversation, 200, 0)
    assert [m.position for m in snapshot.newest_first] == list(reversed(scan))
    # ... and the next turn rebuilds it from the messages.
    late = make_turns("acme", conversation, [("one more", "answer")])[0]
    assert await store.save_turn(late) is SaveOutcome.STORED
    doc = await store.conversation("acme", conversation)
    assert doc is not None and (doc["message_count"], doc["recent_count"]) == (62, 62)
    assert [m["position"] for m in unpack_window(doc["recent"])][:38] == scan[-38:]


async def test_a_summary_stored_while_turns_are_written_is_kept(
    store: ConversationStore,
) -> None:
    """Turns and summary results are consumed side by side; FerretDB 1.x rewrites whole
    documents without a transaction, so the store serialises writes to a conversation."""
    conversation = await stored_conversation(store, turns=4)
    more = make_turns("acme", conversation, [(f"q{i}", f"a{i}") for i in range(12)])
    base, plan = await plan_for(store, conversation)
    assert await store.claim_summary("acme", conversation, "t1", base, plan, 60)

    async def turns() -> None:
        for turn in more:
            assert await store.save_turn(turn) is SaveOutcome.STORED

    async def summary() -> None:
        assert await store.save_summary("acme", conversation, "t1", "kept", 5) == 1

    await asyncio.gather(turns(), summary())
    doc = await store.conversation("acme", conversation)
    assert doc is not None
    assert doc["summary"]["text"] == "kept" and "summary_pending" not in doc
    assert doc["message_count"] == doc["recent_count"] == 8 + 24


async def test_facts_kept_on_the_conversation_match_the_facts_collection(
    store: ConversationStore,
) -> None:
    conversation = f"c-{uuid.uuid4().hex[:8]}"
    texts = [
        ("My order 55120 never arrived", "Let me check order 55120."),
        ("My name is Dana Smith", "Thanks Dana."),
        ("Also order 55121 please", "Noted."),
        ("My order 55120 again", "Still checking."),  # stated before: kept once
    ]
    for turn in make_turns("acme", conversation, texts):
        assert await store.save_turn(turn) is SaveOutcome.STORED
    kept = (await store.context_snapshot("acme", conversation, 200, 20)).facts
    assert len(kept) >= 3, kept
    assert len({(f.kind, f.value) for f in kept}) == len(kept)

    # The same facts when the window is not trusted and the collection is read instead.
    doc = await store.conversation("acme", conversation)
    assert doc is not None and doc["known_facts_complete"]
    conversations = store.client[store.database]["conversations"]
    await conversations.update_one({"_id": doc["_id"]}, {"$set": {"recent_count": -1}})
    assert (await store.context_snapshot("acme", conversation, 200, 20)).facts == kept
    assert (await store.context_snapshot("acme", conversation, 200, 2)).facts == kept[-2:]
