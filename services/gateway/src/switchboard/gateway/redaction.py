"""Redaction at the door: secrets never reach Kafka, Redis, MongoDB, logs or traces.

Cards (with their codes and expiry dates), IBANs, national ids, passwords and credentials
are replaced by placeholders before the request is fingerprinted, recorded or published.
E-mail addresses and phone numbers follow the tenant's policy: redacted here too when the
tenant redacts personal data for the provider, else they travel to the provider and are
redacted before storage by the orchestrator.
"""

from switchboard.common.redaction import ALL_KINDS, AT_REST_KINDS, Redactor, redactor_for
from switchboard.common.tenants import TenantConfig
from switchboard.v1.chat_pb2 import ChatRequest, SubmitFeedbackRequest


class RequestRedactor:
    """Redacts the user-supplied text of requests with the tenant's phone regions."""

    def _for(self, tenant: TenantConfig) -> Redactor:
        return redactor_for(tuple(tenant.guardrails.phone_regions))

    def chat_request(self, request: ChatRequest, tenant: TenantConfig) -> ChatRequest:
        """A copy of `request` whose message, user id and metadata values are redacted."""
        redactor = self._for(tenant)
        kinds = ALL_KINDS if tenant.guardrails.redact_pii else AT_REST_KINDS
        redacted = ChatRequest()
        redacted.CopyFrom(request)
        redacted.message = redactor.redact(request.message, kinds).text
        # The user id keys quotas and ownership: only secrets are taken out of it.
        redacted.user_id = redactor.redact(request.user_id, AT_REST_KINDS).text
        for key, value in request.options.metadata.items():
            redacted.options.metadata[key] = redactor.redact(value, kinds).text
        return redacted

    def text(self, text: str, tenant: TenantConfig) -> str:
        """Free text stored on the caller's behalf (feedback comments): everything redacted."""
        return self._for(tenant).redact(text, ALL_KINDS).text

    def feedback(
        self, request: SubmitFeedbackRequest, tenant: TenantConfig
    ) -> SubmitFeedbackRequest:
        """`request` with its comment redacted (unchanged when it has none)."""
        if not request.comment:
            return request
        redacted = SubmitFeedbackRequest()
        redacted.CopyFrom(request)
        redacted.comment = self.text(request.comment, tenant)
        return redacted
