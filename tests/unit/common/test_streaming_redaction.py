"""The streaming redactor never lets out part of something the one-shot redactor redacts:
every text of the redaction evaluation data, split at every position and one character at a
time, streams to exactly the one-shot result."""

import json
from pathlib import Path

import pytest

from switchboard.common.redaction import Redactor, StreamingRedactor

REDACTOR = Redactor()
DATA = Path(__file__).parents[2] / "data"
EVAL_TEXTS = [
    json.loads(line)["text"]
    for name in ("pii_cases.jsonl", "pii_public.jsonl", "benign_lookalikes.jsonl")
    for line in (DATA / name).read_text(encoding="utf-8").splitlines()
    if line.strip()
]
# Findings that begin with ordinary words or non-ASCII letters: before, their first words
# went out before the rest showed what they were.
WORDS_FIRST = [
    "write to john at example dot com please",
    "write john at example.com now",
    "contact: p.rossi [at] libero [dot] it",
    "mi correo es maria punto lopez arroba gmail punto com",
    "my passphrase is correct horse battery staple",
    "use hunter22 as the password",
    "with sunshine as my password ok",
    "écrivez à josé.garcía@correo.es",
    "mail müller@bücher.de bitte",
]
TEXTS = EVAL_TEXTS + WORDS_FIRST


def _streamed(pieces: list[str]) -> str:
    stream = StreamingRedactor(REDACTOR)
    return "".join(stream.push(piece) for piece in pieces) + stream.flush()


@pytest.mark.parametrize("text", TEXTS)
def test_split_anywhere_streams_to_the_one_shot_result(text: str) -> None:
    expected = REDACTOR.redact(text).text
    for cut in range(len(text) + 1):
        assert _streamed([text[:cut], text[cut:]]) == expected, cut


@pytest.mark.parametrize("text", TEXTS)
def test_one_character_at_a_time_streams_to_the_one_shot_result(text: str) -> None:
    assert _streamed(list(text)) == REDACTOR.redact(text).text


def test_the_eval_data_is_there() -> None:
    assert len(EVAL_TEXTS) > 150


def test_a_word_that_may_be_a_spelled_address_waits_for_the_next_word() -> None:
    stream = StreamingRedactor(REDACTOR)
    assert stream.push("write to john") == "write to "
    assert stream.push(" at") == ""
    assert stream.push(" example") == ""
    assert stream.push(" dot com") == ""
    assert stream.push(" please") == "[EMAIL] "


def test_a_word_followed_by_an_ordinary_word_goes_at_once() -> None:
    stream = StreamingRedactor(REDACTOR)
    assert stream.push("Thanks") == ""  # "Thanks@example.com" would be an address
    assert stream.push(" for") == "Thanks "


def test_letters_of_a_script_without_spaces_still_flow() -> None:
    stream = StreamingRedactor(REDACTOR)
    assert stream.push("ご注文はすでに発送されました") == "ご注文はすでに発送されました"
