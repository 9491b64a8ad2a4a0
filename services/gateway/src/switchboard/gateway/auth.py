"""API keys to tenants. Keys are kept only as SHA-256 digests."""

import hmac
from collections.abc import Iterable, Mapping

from switchboard.common.tenants import hash_api_key


class ApiKeyAuthenticator:
    """Maps the `authorization: Bearer <key>` metadata of a call to a tenant id."""

    def __init__(self, tenants_by_key_hash: Mapping[str, str]) -> None:
        self._tenants_by_key_hash = dict(tenants_by_key_hash)

    def tenant_for(self, metadata: Iterable[tuple[str, str | bytes]]) -> str | None:
        """The caller's tenant, or None when the key is missing or unknown."""
        for name, value in metadata:
            if name.lower() != "authorization" or not isinstance(value, str):
                continue
            scheme, _, key = value.partition(" ")
            if scheme.lower() != "bearer" or not key.strip():
                return None
            digest = hash_api_key(key.strip())
            for known, tenant in self._tenants_by_key_hash.items():
                # Constant-time comparison: no timing hints about stored keys.
                if hmac.compare_digest(known, digest):
                    return tenant
            return None
        return None
