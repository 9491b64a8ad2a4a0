"""The memory store's concurrency rules on the real FerretDB, in process (no services)."""

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from switchboard.memory.store import ConversationStore, SaveOutcome
from switchboard.memory.summaries import plan_summary
from switchboard.memory.tokens import count_tokens

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
