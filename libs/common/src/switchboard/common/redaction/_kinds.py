"""What a finding is, and where it is."""

import re
from dataclasses import dataclass
from enum import StrEnum


class Kind(StrEnum):
    """What a finding is; the value is the placeholder's name."""

    CARD = "CARD"
    IBAN = "IBAN"
    SECRET = "SECRET"
    PASSWORD = "PASSWORD"
    NATIONAL_ID = "NATIONAL_ID"
    EMAIL = "EMAIL"
    PHONE = "PHONE"

    @property
    def placeholder(self) -> str:
        return f"[{self.value}]"


# Secrets are redacted everywhere, always: at the gateway, before anything is published.
# National ids count as secrets for storage (PCI DSS / GDPR special care) but the tenant's
# policy decides whether the provider may see them; see `AT_REST_KINDS`.
SECRET_KINDS = frozenset({Kind.CARD, Kind.IBAN, Kind.SECRET, Kind.PASSWORD})
PERSONAL_KINDS = frozenset({Kind.NATIONAL_ID, Kind.EMAIL, Kind.PHONE})
ALL_KINDS = SECRET_KINDS | PERSONAL_KINDS
# What never comes to rest anywhere (Kafka, Redis, MongoDB, logs, traces): the gateway
# redacts these before it publishes. E-mail and phone follow the tenant's policy.
AT_REST_KINDS = SECRET_KINDS | {Kind.NATIONAL_ID}


@dataclass(frozen=True, order=True)
class Finding:
    """One piece of sensitive text: `text[start:end]`."""

    start: int
    end: int
    kind: Kind


@dataclass(frozen=True)
class Redaction:
    """A redacted text and what was found in the original."""

    text: str
    findings: tuple[Finding, ...]

    @property
    def kinds(self) -> frozenset[Kind]:
        return frozenset(f.kind for f in self.findings)


_PLACEHOLDER = re.compile(r"\[(" + "|".join(k.value for k in Kind) + r")\]")


def placeholder_kinds(text: str) -> frozenset[Kind]:
    """The kinds whose placeholders `text` holds (redacted upstream, e.g. at the gateway)."""
    if "[" not in text:
        return frozenset()
    return frozenset(Kind(m.group(1)) for m in _PLACEHOLDER.finditer(text))
