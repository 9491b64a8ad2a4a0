"""API keys to tenants. Keys are looked up by their SHA-256 digest, never kept in plain text."""

import logging
from collections.abc import Iterable
from typing import Protocol

from pymongo.errors import PyMongoError

from switchboard.common.tenants import TenantConfig

log = logging.getLogger(__name__)


class TenantDirectory(Protocol):
    """Finds the tenant owning an API key (the MongoDB `TenantStore` in production)."""

    async def by_api_key(self, api_key: str) -> TenantConfig | None: ...


class TenantLookupError(Exception):
    """The tenant store could not be read (MongoDB down or too slow)."""


def bearer_key(metadata: Iterable[tuple[str, str | bytes]]) -> str | None:
    """The key of an `authorization: Bearer <key>` header, or None when absent or malformed."""
    for name, value in metadata:
        if name.lower() != "authorization" or not isinstance(value, str):
            continue
        scheme, _, key = value.strip().partition(" ")
        key = key.strip()
        if scheme.lower() != "bearer" or not key:
            return None
        return key
    return None


class TenantAuthenticator:
    """Maps the `authorization` metadata of a call to the caller's tenant."""

    def __init__(self, directory: TenantDirectory) -> None:
        self._directory = directory

    async def tenant_for(self, metadata: Iterable[tuple[str, str | bytes]]) -> TenantConfig | None:
        """The caller's tenant, or None when the key is missing or unknown.

        Raises TenantLookupError when the store cannot answer.
        """
        key = bearer_key(metadata)
        if key is None:
            return None
        try:
            # The store compares digests in its index lookup; the key itself is never stored.
            return await self._directory.by_api_key(key)
        except (PyMongoError, TimeoutError) as exc:
            log.warning("tenant lookup failed: %s", exc)
            raise TenantLookupError("the tenant store is unreachable") from exc
