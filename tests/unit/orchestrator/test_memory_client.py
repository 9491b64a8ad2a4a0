"""The memory adapter: what it asks memory, and what it answers without asking."""

from switchboard.orchestrator.adapters import MemoryClient
from switchboard.v1.events_pb2 import TurnRequest

# Nothing listens there: a call would fail fast and degrade the context.
UNREACHABLE = "127.0.0.1:1"


async def test_a_new_conversation_has_no_history_to_read() -> None:
    client = MemoryClient(UNREACHABLE, timeout_s=0.5, max_tokens=1_000)
    try:
        turn = TurnRequest(tenant_id="acme", conversation_id="c1", request_id="r1")
        turn.new_conversation = True
        context = await client.context_for(turn)
        assert not context.degraded and list(context.messages) == [] and context.summary == ""
        # An existing conversation is read (and here degrades: memory is unreachable).
        turn.new_conversation = False
        assert (await client.context_for(turn)).degraded
    finally:
        await client.close()
