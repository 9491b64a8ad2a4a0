"""Sequence numbers of reply events, shared by every service that sends them.

A generation numbers its events from its task's `sequence_base`; attempt n of it from
`sequence_base + (n - 1) * ATTEMPT_STRIDE`, above anything an earlier attempt can have sent.
The gateway keeps only events numbered above the last it delivered.
"""

# Room for each attempt's events: far more than any one attempt sends.
ATTEMPT_STRIDE = 1 << 32
# A terminal event sent outside a generation's numbering (a dead-lettered turn's `error`):
# above every attempt's range, so the gateway never drops it as a duplicate.
FINAL_SEQUENCE = 1 << 62
