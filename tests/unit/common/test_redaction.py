import random

import pytest

from switchboard.common.redaction import (
    ALL_KINDS,
    SECRET_KINDS,
    Kind,
    Redactor,
    StreamingRedactor,
)

REDACTOR = Redactor()

# (text, the kinds that must be found); an empty tuple means nothing may be found.
POSITIVES = [
    # The expiry date next to a card is part of the card data.
    ("My card is 4111 1111 1111 1111, exp 12/27", (Kind.CARD, Kind.CARD)),
    ("Charge 5500-0000-0000-0004 please", (Kind.CARD,)),
    ("amex 3782 822463 10005", (Kind.CARD,)),
    ("card:6011111111111117.", (Kind.CARD,)),
    ("Refund to DE89 3704 0044 0532 0130 00 please", (Kind.IBAN,)),
    ("iban GB82WEST12345698765432", (Kind.IBAN,)),
    ("IBAN: FR14 2004 1010 0505 0001 3M02 606", (Kind.IBAN,)),
    ("cuenta es91 2100 0418 4502 0005 1332", (Kind.IBAN,)),
    ("SSN 123-45-6789", (Kind.NATIONAL_ID,)),
    ("my social security number is 536228726", (Kind.NATIONAL_ID,)),
    ("DNI 12345678Z y NIE X1234567L", (Kind.NATIONAL_ID, Kind.NATIONAL_ID)),
    ("codice fiscale RSSMRA85T10A562S", (Kind.NATIONAL_ID,)),
    ("national insurance number AB 12 34 56 C", (Kind.NATIONAL_ID,)),
    ("write to jane.doe+orders@example.co.uk.", (Kind.EMAIL,)),
    ("Mi correo es carlos_99@correo.es", (Kind.EMAIL,)),
    ("call me on +44 20 7946 0958", (Kind.PHONE,)),
    ("my number is (415) 555-0123", (Kind.PHONE,)),
    ("call 415-555-0123 tomorrow", (Kind.PHONE,)),
    ("Meine Handynummer: 0151 23456789", (Kind.PHONE,)),
    ("appelez-moi au 06 12 34 56 78", (Kind.PHONE,)),
    ("whatsapp 0033 6 12 34 56 78", (Kind.PHONE,)),
    ("my phone number is 4155550123", (Kind.PHONE,)),
    ("key sk-proj-4f9Ks8dL2mQ7xZ1vB6nR3tY8uW0pE5aH", (Kind.SECRET,)),
    ("AWS AKIAIOSFODNN7EXAMPLE", (Kind.SECRET,)),
    ("ghp_16C7e42F292c6912E7710c838347Ae178B4a", (Kind.SECRET,)),
    (
        "Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0."
        "dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
        (Kind.SECRET,),
    ),
    ("api_key=9f8Ak2Lm4Qp7Rs1Tu3Vw5Xy6Za8Bc0De", (Kind.SECRET,)),
    ("-----BEGIN RSA PRIVATE KEY-----\nMIIEow\n-----END RSA PRIVATE KEY-----", (Kind.SECRET,)),
    ("my password is Summer2024!", (Kind.PASSWORD,)),
    ("password: hunter2", (Kind.PASSWORD,)),
    ("mi contraseña es Gato!2024", (Kind.PASSWORD,)),
    ("mon mot de passe est soleil99", (Kind.PASSWORD,)),
    ("mein Passwort ist Hallo123", (Kind.PASSWORD,)),
    ("a minha senha é abacaxi7", (Kind.PASSWORD,)),
    ("my PIN is 4821", (Kind.PASSWORD,)),
]

NEGATIVES = [
    "Order 12345678 shipped yesterday",
    "order #4155550123 is late",
    "tracking 1Z999AA10123456784",
    "tracking number JD014600006281234567",
    "The total was $1,234.56 on 2024-05-01",
    "Model XPS-9530, serial SN-88213-XK",
    "invoice INV-2024-000123",
    "PO 4500012345",
    "the price is 19.99 EUR per month for 24 months",
    "delivery between 10:00 and 14:00 on 12/03/2025",
    "My account number is 100234 and the case is 2024-88123",
    "I forgot my password, can you reset it?",
    "the password is wrong",
    "ticket 88231-A, reference ABC123DEF",
    "product EAN 4006381333931",
    "card 4111 1111 1111 1112 fails the Luhn check",
    "IBAN DE89 3704 0044 0532 0130 01 has a bad checksum",
    "I paid 4111 euros in total",
    "Pedido 2024/55102 del 03.04.2024",
    "Bestellnummer 302-1234567-1234567",
    "version 3.14.159 of the app",
    "meter reading 123456789",
    "SSN-like 000-12-3456 is not valid",
    "¿Dónde está mi pedido 55102?",
    "荷物はいつ届きますか？注文番号は 12345 です。",  # noqa: RUF001
]


@pytest.mark.parametrize(("text", "kinds"), POSITIVES)
def test_finds_pii_and_secrets(text: str, kinds: tuple[Kind, ...]) -> None:
    found = REDACTOR.find(text)
    assert tuple(f.kind for f in found) == kinds, (text, found)
    redacted = REDACTOR.redact(text).text
    for finding in found:
        assert text[finding.start : finding.end] not in redacted
        assert finding.kind.placeholder in redacted


@pytest.mark.parametrize("text", NEGATIVES)
def test_leaves_ordinary_numbers_alone(text: str) -> None:
    assert REDACTOR.find(text) == []
    assert REDACTOR.redact(text).text == text


def test_only_the_secret_part_is_replaced() -> None:
    assert (
        REDACTOR.redact("my password is hunter2. Card 4111111111111111 thanks").text
        == "my password is [PASSWORD]. Card [CARD] thanks"
    )


def test_secret_kinds_leave_personal_data_for_the_provider_when_the_tenant_allows() -> None:
    text = "mail bob@example.com, card 4111 1111 1111 1111"
    assert REDACTOR.redact(text, SECRET_KINDS).text == "mail bob@example.com, card [CARD]"
    assert REDACTOR.redact(text, ALL_KINDS).text == "mail [EMAIL], card [CARD]"


STREAM_SAMPLES = (
    [p[0] for p in POSITIVES]
    + NEGATIVES[:8]
    + [
        "Thanks! I sent the refund to DE89 3704 0044 0532 0130 00 and mailed bob@example.com. "
        "If you need me, call +44 20 7946 0958. My password is hunter2 and the key is "
        "sk-ant-api03-abcdefghijklmnopqrstuvwxyz0123 — please keep them safe.",
    ]
)


@pytest.mark.parametrize("text", STREAM_SAMPLES)
def test_streaming_equals_one_shot_at_every_split_point(text: str) -> None:
    expected = REDACTOR.redact(text).text
    for cut in range(len(text) + 1):
        stream = StreamingRedactor(REDACTOR)
        out = stream.push(text[:cut]) + stream.push(text[cut:]) + stream.flush()
        assert out == expected, cut


@pytest.mark.parametrize("seed", range(5))
def test_streaming_equals_one_shot_for_token_sized_pieces(seed: int) -> None:
    rng = random.Random(seed)
    for text in STREAM_SAMPLES:
        stream = StreamingRedactor(REDACTOR)
        out, position = [], 0
        while position < len(text):
            size = rng.randint(1, 6)
            out.append(stream.push(text[position : position + size]))
            position += size
        out.append(stream.flush())
        assert "".join(out) == REDACTOR.redact(text).text


def test_streaming_holds_back_only_the_word_being_written() -> None:
    stream = StreamingRedactor(REDACTOR)
    assert stream.push("Thanks for reaching out, I am look") == "Thanks for reaching out, I am "
    assert stream.held == len("look")
    assert stream.push("ing into it. ") == "looking into it. "
    assert stream.held == 0


def test_streaming_holds_a_number_until_it_is_complete() -> None:
    stream = StreamingRedactor(REDACTOR)
    assert stream.push("Your card 4111 1111") == "Your card "
    assert stream.push(" 1111 1111") == ""
    assert stream.push(" is saved.") == "[CARD] is "
    assert stream.flush() == "saved."


def test_streaming_holds_a_password_after_its_keyword() -> None:
    stream = StreamingRedactor(REDACTOR)
    assert stream.push("Your new password is ") == "Your new "
    assert stream.push("Xy7!pq") == ""
    assert stream.push(" ok") == "password is [PASSWORD] "


def test_scripts_without_spaces_still_flow() -> None:
    stream = StreamingRedactor(REDACTOR)
    out = stream.push("ご注文はすでに発送されました。明日お届けします")
    assert out.startswith("ご注文はすでに発送されました")


def test_the_hold_is_bounded() -> None:
    stream = StreamingRedactor(REDACTOR, max_hold_chars=16)
    out = stream.push("a" * 100)
    assert stream.held <= 16
    assert out + stream.flush() == "a" * 100
