"""The worker's output guardrail: PII in generated text never reaches the client."""

from switchboard.common.redaction import Redactor
from switchboard.llm_worker.generation import generate
from switchboard.v1.chat_pb2 import ChatEvent

from .test_generation import CHEAP, EAGER, FakeProvider, Script, task

PIECES = [
    "Sure! I",
    " emailed jane",
    ".doe@exam",
    "ple.com and ",
    "your card 4111 ",
    "1111 1111",
    " 1111 is on",
    " file.",
]


async def run(redact: bool) -> tuple[list[ChatEvent], str]:
    sent: list[ChatEvent] = []

    async def send(event: ChatEvent) -> None:
        sent.append(event)

    llm_task = task()
    llm_task.redact_output = redact
    # EAGER sends every delta as it comes: the redactor alone decides what it holds back.
    result = await generate(
        llm_task, [CHEAP], {"openai": FakeProvider("openai", Script(PIECES))}, send, EAGER
    )
    return sent, result.text


async def test_streamed_text_is_redacted_when_the_task_asks() -> None:
    sent, raw = await run(redact=True)
    streamed = "".join(e.delta.text for e in sent)
    assert streamed == "Sure! I emailed [EMAIL] and your card [CARD] is on file."
    assert streamed == Redactor().redact(raw).text
    assert "jane" not in streamed and "4111" not in streamed
    assert [e.sequence for e in sent] == list(range(1, len(sent) + 1))
    assert len(sent) > 2, "text still streams in several pieces"


async def test_without_the_flag_the_text_is_relayed_as_generated() -> None:
    sent, raw = await run(redact=False)
    assert "".join(e.delta.text for e in sent) == raw == "".join(PIECES)
