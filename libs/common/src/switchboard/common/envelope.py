"""Protobuf payloads on Kafka: encoding, type headers and strict decoding.

Every record carries `sb-type` (the protobuf full name) and `sb-schema-version` so a
consumer can refuse a message it does not understand instead of misreading it; the
W3C trace context headers are added by the telemetry middleware.
"""

from typing import Final, TypeVar

from google.protobuf.message import DecodeError, Message

TYPE_HEADER: Final = "sb-type"
SCHEMA_VERSION_HEADER: Final = "sb-schema-version"
SCHEMA_VERSION: Final = "1"
# On reply events: the tenant of the turn, so that a gateway routes an event only to a
# stream of that tenant (request ids are chosen by clients and may collide across tenants).
TENANT_HEADER: Final = "sb-tenant"

M = TypeVar("M", bound=Message)


class PoisonMessageError(ValueError):
    """A record that can never be processed: wrong type, bad schema or corrupt bytes."""


def headers_for(message: Message, tenant_id: str | None = None) -> dict[str, str]:
    """The envelope headers of a payload (with the tenant's, when given)."""
    headers = {
        TYPE_HEADER: message.DESCRIPTOR.full_name,
        SCHEMA_VERSION_HEADER: SCHEMA_VERSION,
    }
    if tenant_id is not None:
        headers[TENANT_HEADER] = tenant_id
    return headers


def decode(body: bytes, headers: dict[str, str], message_type: type[M]) -> M:
    """Parse `body` as `message_type`, checking the envelope headers first."""
    expected = message_type.DESCRIPTOR.full_name
    actual = headers.get(TYPE_HEADER)
    if actual != expected:
        raise PoisonMessageError(f"expected {TYPE_HEADER}={expected!r}, got {actual!r}")
    version = headers.get(SCHEMA_VERSION_HEADER)
    if version != SCHEMA_VERSION:
        raise PoisonMessageError(
            f"unsupported {SCHEMA_VERSION_HEADER}={version!r} (this build reads {SCHEMA_VERSION})"
        )
    message = message_type()
    try:
        message.ParseFromString(body)
    except DecodeError as exc:
        raise PoisonMessageError(f"cannot parse {expected}: {exc}") from exc
    return message
