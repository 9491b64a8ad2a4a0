"""PII and secret redaction: a one-shot redactor and a streaming one.

Checksums and phone grammars come from well-kept libraries (python-stdnum: Luhn, IBAN
mod-97, national ids of US, FR, DE, NL, ES, IT, IN, BR, CA, UK; phonenumbers: Google's
libphonenumber); provider token shapes from detect-secrets' plugins. Microsoft Presidio is
not used: its analyzer needs a spaCy model that is not published on PyPI, and its pattern
recognizers add nothing over these libraries. Text is normalised first (NFKC, invisible
characters dropped), positions always refer to the caller's text.

Cards, IBANs, keys and passwords are *secrets*; with national ids they are `AT_REST_KINDS`:
the gateway redacts them before anything is published or stored. E-mail addresses and phone
numbers are *personal data*: redacted before storage always, and before the provider when
the tenant's policy says so. See docs/guardrails.md.
"""

from switchboard.common.redaction._detect import DEFAULT_PHONE_REGIONS, Redactor, redactor_for
from switchboard.common.redaction._kinds import (
    ALL_KINDS,
    AT_REST_KINDS,
    PERSONAL_KINDS,
    SECRET_KINDS,
    Finding,
    Kind,
    Redaction,
    placeholder_kinds,
)
from switchboard.common.redaction._stream import StreamingRedactor
from switchboard.common.redaction._text import normalize

__all__ = [
    "ALL_KINDS",
    "AT_REST_KINDS",
    "DEFAULT_PHONE_REGIONS",
    "PERSONAL_KINDS",
    "SECRET_KINDS",
    "Finding",
    "Kind",
    "Redaction",
    "Redactor",
    "StreamingRedactor",
    "normalize",
    "placeholder_kinds",
    "redactor_for",
]
