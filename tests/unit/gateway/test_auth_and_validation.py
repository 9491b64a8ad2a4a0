import pytest

from switchboard.common.tenants import TenantConfig, hash_api_key
from switchboard.gateway.auth import TenantAuthenticator, TenantLookupError, bearer_key
from switchboard.gateway.validation import ChatLimits, chat_request_problem
from switchboard.v1.chat_pb2 import ChatOptions, ChatRequest

LIMITS = ChatLimits(
    max_message_chars=100, max_user_id_chars=10, max_metadata_entries=2, max_output_tokens=1000
)


class Directory:
    """Looks keys up by digest, as the MongoDB TenantStore does."""

    def __init__(self) -> None:
        self.by_digest = {hash_api_key("secret"): TenantConfig(tenant_id="acme")}
        self.down = False

    async def by_api_key(self, api_key: str) -> TenantConfig | None:
        if self.down:
            raise TimeoutError("MongoDB too slow")
        return self.by_digest.get(hash_api_key(api_key))


async def test_known_key_maps_to_its_tenant_and_is_stored_hashed() -> None:
    auth = TenantAuthenticator(Directory())
    for header in ("Bearer secret", "bearer secret", "  Bearer   secret  "):
        tenant = await auth.tenant_for([("authorization", header)])
        assert tenant is not None and tenant.tenant_id == "acme"
    tenant = await auth.tenant_for([("Authorization", "Bearer secret")])
    assert tenant is not None
    assert "secret" not in hash_api_key("secret")


@pytest.mark.parametrize(
    "metadata",
    [
        [],
        [("authorization", "Bearer other")],
        [("authorization", "secret")],
        [("authorization", "Bearer")],
        [("x", "Bearer secret")],
    ],
)
async def test_missing_or_unknown_keys_have_no_tenant(metadata: list[tuple[str, str]]) -> None:
    assert await TenantAuthenticator(Directory()).tenant_for(metadata) is None


def test_only_bearer_keys_are_read() -> None:
    assert bearer_key([("authorization", "Basic abc")]) is None
    assert bearer_key([("authorization", "Bearer ")]) is None
    assert bearer_key([("authorization-bin", b"x"), ("authorization", "Bearer k")]) == "k"


async def test_an_unreachable_store_is_reported_not_mistaken_for_an_unknown_key() -> None:
    directory = Directory()
    directory.down = True
    with pytest.raises(TenantLookupError):
        await TenantAuthenticator(directory).tenant_for([("authorization", "Bearer secret")])


def test_a_plain_message_is_accepted() -> None:
    assert chat_request_problem(ChatRequest(message="hello", user_id="u1"), LIMITS) is None


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (ChatRequest(message=""), "message"),
        (ChatRequest(message=" \n\t"), "message"),
        (ChatRequest(message="x" * 101), "message"),
        (ChatRequest(message="hi", user_id="u" * 11), "user_id"),
        (ChatRequest(message="hi", conversation_id="a b"), "conversation_id"),
        (ChatRequest(message="hi", request_id="r" * 129), "request_id"),
        (ChatRequest(message="hi", options=ChatOptions(tier="premium")), "options.tier"),
        (
            ChatRequest(message="hi", options=ChatOptions(max_output_tokens=1001)),
            "options.max_output_tokens",
        ),
        (ChatRequest(message="hi", options=ChatOptions(temperature=2.5)), "options.temperature"),
        (
            ChatRequest(message="hi", options=ChatOptions(metadata={"a": "1", "b": "2", "c": "3"})),
            "options.metadata",
        ),
    ],
)
def test_each_problem_names_its_field(request_: ChatRequest, field: str) -> None:
    problem = chat_request_problem(request_, LIMITS)
    assert problem is not None and problem.startswith(field)


def test_tiers_auto_cheap_frontier_and_empty_are_valid() -> None:
    for tier in ("", "auto", "cheap", "frontier"):
        request = ChatRequest(message="hi", options=ChatOptions(tier=tier))
        assert chat_request_problem(request, LIMITS) is None
