from pathlib import Path

import pytest
from pydantic import ValidationError

from switchboard.common.tenants import TenantConfig, hash_api_key, load_seed


def test_seed_hashes_keys_from_the_environment_and_never_keeps_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seed = tmp_path / "tenants.yaml"
    seed.write_text(
        "tenants:\n"
        "  - tenant_id: acme\n"
        "    name: Acme\n"
        "    api_keys_from_env: [ACME_KEY, MISSING_KEY=fallback-key, UNSET_WITHOUT_DEFAULT]\n"
        "    daily_budget_usd: 5\n"
    )
    monkeypatch.setenv("ACME_KEY", "secret-1")
    monkeypatch.delenv("UNSET_WITHOUT_DEFAULT", raising=False)
    (tenant,) = load_seed(seed)
    assert tenant.tenant_id == "acme" and tenant.daily_budget_usd == 5
    assert tenant.api_key_sha256 == [hash_api_key("secret-1"), hash_api_key("fallback-key")]
    assert "secret-1" not in tenant.model_dump_json()


def test_the_repository_seed_file_is_valid() -> None:
    seed = Path(__file__).resolve().parents[3] / "deploy/local/tenants.yaml"
    assert [t.tenant_id for t in load_seed(seed)] == ["demo", "second"]


def test_tenant_ids_are_restricted() -> None:
    with pytest.raises(ValidationError):
        TenantConfig(tenant_id="Bad Id!")


class FlakyCollection:
    def __init__(self, document: dict[str, object]) -> None:
        self.document = document
        self.down = False

    async def find_one(self, query: dict[str, object]) -> dict[str, object] | None:
        if self.down:
            from pymongo.errors import ExecutionTimeout

            raise ExecutionTimeout("interrupted")
        return dict(self.document)


async def test_a_known_tenant_is_served_from_the_cache_while_the_store_is_slow() -> None:
    from pymongo.errors import PyMongoError

    from switchboard.common.tenants import TenantStore

    class Database(dict[str, FlakyCollection]):
        pass

    collection = FlakyCollection({"_id": "acme", "tenant_id": "acme"})
    client = {"db": Database(tenants=collection)}
    store = TenantStore(client, "db", cache_ttl_s=0.0, stale_for_s=60.0)  # type: ignore[arg-type]
    assert (await store.get("acme")) is not None
    collection.down = True
    tenant = await store.get("acme")
    assert tenant is not None and tenant.tenant_id == "acme"
    unknown_store = TenantStore(client, "db", cache_ttl_s=0.0, stale_for_s=60.0)  # type: ignore[arg-type]
    with pytest.raises(PyMongoError):
        await unknown_store.get("acme")  # never seen: nothing to serve


def test_seed_keys_can_come_from_a_given_environment(tmp_path: Path) -> None:
    seed = tmp_path / "tenants.yaml"
    seed.write_text("tenants:\n  - tenant_id: acme\n    api_keys_from_env: [ACME_KEY]\n")
    (tenant,) = load_seed(seed, {"ACME_KEY": "given"})
    assert tenant.api_key_sha256 == [hash_api_key("given")]
