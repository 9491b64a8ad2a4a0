"""Unique markers to put in chat messages.

Letters only: a hex marker can come out all digits ("22465623"), and the redactor then rightly
treats it as a phone number, so the marker never reaches the provider or the store as sent.
"""

import random
import string


def word_marker(length: int = 8) -> str:
    """A random lowercase word, unique enough for one test run and never read as PII."""
    return "".join(random.choices(string.ascii_lowercase, k=length))
