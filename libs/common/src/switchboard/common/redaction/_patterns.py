"""Candidate patterns. Checksums and grammars come from python-stdnum and phonenumbers;
provider token shapes from detect-secrets' plugins (see `provider_token_patterns`)."""

import re

from detect_secrets.plugins.aws import AWSKeyDetector
from detect_secrets.plugins.azure_storage_key import AzureStorageKeyDetector
from detect_secrets.plugins.discord import DiscordBotTokenDetector
from detect_secrets.plugins.github_token import GitHubTokenDetector
from detect_secrets.plugins.gitlab_token import GitLabTokenDetector
from detect_secrets.plugins.jwt import JwtTokenDetector
from detect_secrets.plugins.mailchimp import MailchimpDetector
from detect_secrets.plugins.openai import OpenAIDetector
from detect_secrets.plugins.pypi_token import PypiTokenDetector
from detect_secrets.plugins.sendgrid import SendGridDetector
from detect_secrets.plugins.slack import SlackDetector
from detect_secrets.plugins.square_oauth import SquareOAuthDetector
from detect_secrets.plugins.stripe import StripeDetector
from detect_secrets.plugins.telegram_token import TelegramBotTokenDetector
from detect_secrets.plugins.twilio import TwilioKeyDetector

# detect-secrets plugins whose patterns are anchored on a provider's prefix or shape; the
# keyword- and entropy-based ones are left out (they flag ordinary prose and ids).
_PLUGINS = (
    AWSKeyDetector,
    AzureStorageKeyDetector,
    DiscordBotTokenDetector,
    GitHubTokenDetector,
    GitLabTokenDetector,
    JwtTokenDetector,
    MailchimpDetector,
    OpenAIDetector,
    PypiTokenDetector,
    SendGridDetector,
    SlackDetector,
    SquareOAuthDetector,
    StripeDetector,
    TelegramBotTokenDetector,
    TwilioKeyDetector,
)


def provider_token_patterns() -> tuple[re.Pattern[str], ...]:
    """detect-secrets' prefixed-token patterns, plus the providers it does not know yet."""
    patterns: list[re.Pattern[str]] = []
    for plugin in _PLUGINS:
        for pattern in plugin.denylist:
            # Only the first pattern of AWS is a key shape; the second wants code quoting.
            if plugin is AWSKeyDetector and "aws" in pattern.pattern:
                continue
            patterns.append(
                re.compile(r"(?<![A-Za-z0-9])(?:" + pattern.pattern + ")", pattern.flags)
            )
    patterns.extend(
        re.compile(p)
        for p in (
            # Prefixes detect-secrets 1.5 lacks: OpenAI project and Anthropic keys, Stripe
            # test and restricted keys, Hugging Face, npm, Google API, GitHub fine-grained.
            r"(?<![A-Za-z0-9])sk-(?:proj-|ant-(?:api\d\d-)?)?[A-Za-z0-9_\-]{20,}",
            r"(?<![A-Za-z0-9])(?:sk|rk)_(?:live|test)_[0-9A-Za-z]{16,}",
            r"(?<![A-Za-z0-9])hf_[A-Za-z0-9]{30,}",
            r"(?<![A-Za-z0-9])npm_[A-Za-z0-9]{36}",
            r"(?<![A-Za-z0-9])AIza[0-9A-Za-z_\-]{35}",
            r"(?<![A-Za-z0-9])github_pat_[A-Za-z0-9_]{22,}",
            r"(?<![A-Za-z0-9])xox[abprs]-[A-Za-z0-9-]{10,}",
            r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?-----END [A-Z ]*PRIVATE KEY-----",
        )
    )
    return tuple(patterns)


# ---- cards ----------------------------------------------------------------------------

CARD = re.compile(r"(?<![\w.-])(?:\d[ .-]?){12,18}\d(?![\w-]|[.,]\d)")
# How people group card digits: 4-4-4-4 (most), 4-4-4-4-3 (19 digits), 4-6-5 and 4-6-4 (Amex,
# Diners).
CARD_GROUPINGS = frozenset({(4, 4, 4, 4), (4, 4, 4, 4, 3), (4, 6, 5), (4, 6, 4)})
_CVV_WORDS = (
    r"cvv2?|cvc2?|cvn|csc|cid|security code|card code|verification code|card verification"
    r"|código de seguridad|code de sécurité|cryptogramme(?: visuel)?|sicherheitscode"
    r"|prüfnummer|kartenprüfnummer|prüfziffer|codice di sicurezza|código de segurança"
    r"|beveiligingscode"
)
CARD_CODE = re.compile(
    rf"(?i)\b(?:{_CVV_WORDS})\b\s*(?:(?:is|es|est|ist|è|é|:|=|#|-)\s*){{0,2}}(\d{{3,4}})(?!\d)"
)
_EXPIRY_WORDS = (
    r"exp(?:iry|iration|ires|ire|\.)?(?: date)?|valid (?:thru|through|until|till)|good thru"
    r"|vence|vencimiento|caducidad|caduca|date d'expiration|expire le|gültig bis|ablaufdatum"
    r"|läuft ab|scadenza|scade|validade|vervaldatum|geldig tot"
)
EXPIRY = r"(?:0?[1-9]|1[0-2])\s?[/.-]\s?(?:20)?\d{2}"
CARD_EXPIRY = re.compile(
    rf"(?i)\b(?:{_EXPIRY_WORDS})(?!\w)\s*(?:(?:on|is|es|est|ist|le|am|:|=)\s*){{0,2}}"
    rf"({EXPIRY})(?![\d/]|[.-]\d)"
)
# An expiry date or a 3-4 digit code right after a card number, without a keyword.
AFTER_CARD = re.compile(
    rf"^[\s,;:/-]{{0,4}}(?:({EXPIRY})(?![\d/]|[.-]\d)|(\d{{3,4}})(?![\d/]|[.-]\d))"
)

# ---- e-mail ---------------------------------------------------------------------------

# `\w` is Unicode: internationalised addresses (josé@correo.es, müller@bücher.de).
EMAIL = re.compile(r"(?<![\w.%+-])[\w.%+-]+@[\w-]+(?:\.[\w-]+)*\.[^\W\d_]{2,}(?![\w-])")
_AT_WORDS = r"at|arroba|arobase|chiocciola|klammeraffe|apenstaartje"
_DOT_WORDS = r"dot|punto|point|punkt|ponto|punt"
_SPELLED_AT = rf"(?:\s*[(\[{{<]\s*(?:{_AT_WORDS}|@)\s*[)\]}}>]\s*|\s+(?:{_AT_WORDS})\s+)"
_SPELLED_DOT = rf"(?:\s*[(\[{{<]\s*(?:{_DOT_WORDS}|\.)\s*[)\]}}>]\s*|\s+(?:{_DOT_WORDS})\s+|\.)"
_TLD = (
    r"com|net|org|edu|gov|io|co|uk|de|fr|es|it|nl|be|ch|at|pt|br|ca|us|in|eu|info|biz|me"
    r"|mx|ar|pl|se|no|dk|fi|ie|au|jp|cn|ru|email|mail"
)
SPELLED_EMAIL = re.compile(
    rf"(?i)(?<![\w.%+-])[\w%+-]+(?:{_SPELLED_DOT}[\w%+-]+){{0,3}}{_SPELLED_AT}"
    rf"[\w-]+(?:{_SPELLED_DOT}[\w-]+){{0,2}}?{_SPELLED_DOT}(?:{_TLD})(?![\w-])"
)

# ---- national ids ---------------------------------------------------------------------

SSN = re.compile(r"(?<![\d-])\d{3}([- ])\d{2}\1\d{4}(?![\d-])")
NINE_DIGITS = re.compile(r"(?<!\d)\d{9}(?!\d)")
SSN_CONTEXT = re.compile(
    r"(?i)\b(?:ssn|social security(?: number| no\.?)?|seguro social|sécurité sociale)\b"
)
DNI = re.compile(r"(?<![A-Za-z0-9])(?:\d{8}-?[A-Za-z]|[XYZxyz]-?\d{7}-?[A-Za-z])(?![A-Za-z0-9])")
CODICE_FISCALE = re.compile(
    r"(?<![A-Za-z0-9])[A-Za-z]{6}\d{2}[A-Za-z]\d{2}[A-Za-z]\d{3}[A-Za-z](?![A-Za-z0-9])"
)
NINO = re.compile(
    r"(?<![A-Za-z0-9])[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z] ?\d{2} ?\d{2} ?\d{2} ?[A-D]"
    r"(?![A-Za-z0-9])"
)
NINO_CONTEXT = re.compile(r"(?i)\b(?:national insurance|ni number|nino)\b")
# FR NIR: sex, year, month, department (2A/2B for Corsica), commune, order, key.
NIR = re.compile(r"(?<![\w])[12] ?\d{2} ?\d{2} ?(?:\d{2}|2[ABab]) ?\d{3} ?\d{3} ?\d{2}(?![\w])")
# Ids whose digits are too plain to tell from an order number: a keyword must be near.
STEUER_ID = re.compile(r"(?<![\d])\d{2} ?\d{3} ?\d{3} ?\d{3}(?![\d])")
STEUER_CONTEXT = re.compile(
    r"(?i)(?:steuer-?id|steuerid|steuer-?identifikationsnummer|steueridentifikationsnummer"
    r"|identifikationsnummer|idnr|tax id|tin)\b"
)
BSN = re.compile(r"(?<![\d])\d{4}\.?\d{2}\.?\d{3}(?![\d])|(?<![\d])\d{9}(?![\d])")
BSN_CONTEXT = re.compile(r"(?i)\b(?:bsn|burgerservicenummer|sofinummer|sofi-nummer)\b")
PAN = re.compile(r"(?<![A-Za-z0-9])[A-Z]{3}[PCHFATBLJG][A-Z]\d{4}[A-Z](?![A-Za-z0-9])")
PAN_ANY_CASE = re.compile(r"(?i)(?<![a-z0-9])[a-z]{5}\d{4}[a-z](?![a-z0-9])")
PAN_CONTEXT = re.compile(r"(?i)\b(?:pan|permanent account number)\b")
CPF_FORMATTED = re.compile(r"(?<![\d.])\d{3}\.\d{3}\.\d{3}-\d{2}(?![\d])")
CPF_PLAIN = re.compile(r"(?<![\d])\d{11}(?![\d])")
CPF_CONTEXT = re.compile(r"(?i)\b(?:cpf|cadastro de pessoas)\b")
SIN = re.compile(r"(?<![\d-])\d{3}[ -]?\d{3}[ -]?\d{3}(?![\d-])")
SIN_CONTEXT = re.compile(
    r"(?i)\b(?:sin|social insurance(?: number)?|nas|numéro d'assurance sociale"
    r"|assurance sociale)\b"
)

# ---- passwords and credentials --------------------------------------------------------

PASSWORD_KEYWORDS = (
    r"password|passwd|pwd|pw|passcode|pass ?phrase|pin(?: ?code| number)?|pincode|code pin"
    r"|contraseña|clave|mot de passe|mdp|passwort|kennwort|geheimzahl|senha|wachtwoord"
    r"|hasło|parola d'ordine|codice pin"
)
_PASSWORD_CONNECTORS = (
    r"is|was|is now|=|:|:=|ist|lautet|es|est|era|é|è|to|sera|será|wäre|'s|\u2019s"
)
# "the password for the portal is X": a few words may sit between the keyword and "is".
_BETWEEN = (
    r"(?:\s+(?:for|of|on|to|de|du|des|für|zu|per|para|van|voor|del|della|do|da|dell')"
    r"(?:\s+[\w'-]+){1,3}?)?"
)
# "my password, it is X", "the PIN? it's X"
_RESTATED = r"(?:[,;?]?\s*(?:it|that|this)\s*(?='|\u2019|\s))?"
PASSWORD = re.compile(
    rf"(?i)\b(?:{PASSWORD_KEYWORDS})\b{_BETWEEN}{_RESTATED}\s*(?:(?:{_PASSWORD_CONNECTORS})"
    r"(?![\w])\s*"
    r"[:=]?|[:=])\s*"
    r"(?:[\"'\u201c\u2018]([^\"'\u201d\u2019\n]{1,64})[\"'\u201d\u2019]|(\S{1,64}?))"
    r"(?=[.,;!?)]*(?:\s|$))"
)
# A pass phrase is several words: after "passphrase is", the rest of the clause.
PASSPHRASE = re.compile(
    r"(?i)\bpass ?phrase\b[^.\n]{0,24}?\b(?:is|was|:|=|ist|lautet|es|est|é|è)\s*[:=]?\s*"
    r"((?:[^\s.,;!?]+ ?){2,8})"
)
# "use hunter22 as the password", "set my PIN to 4821"
PASSWORD_BEFORE = re.compile(
    rf"(?i)\b(?:use|used|using|with|set to|usa|utiliza|utilise|benutze|nutze|gebruik)\s+"
    r"[\"'“]?([^\s\"'”]{3,64})[\"'”]?\s+(?:as|como|comme|als)\s+"
    r"(?:my |the |mi |mon |mein |la |le |das |het )?"
    rf"(?:{PASSWORD_KEYWORDS})\b"
)
NOT_A_PASSWORD = frozenset(
    [
        "wrong",
        "incorrect",
        "invalid",
        "not",
        "correct",
        "expired",
        "too",
        "the",
        "my",
        "a",
        "an",
        "still",
        "being",
        "reset",
        "required",
        "missing",
        "forgotten",
        "lost",
        "blocked",
        "locked",
        "empty",
        "different",
        "same",
        "weak",
        "strong",
        "ok",
        "fine",
        "working",
        "changed",
        "new",
        "old",
        "falsch",
        "incorrecta",
        "incorrecto",
        "faux",
        "errada",
        "sbagliata",
        "policy",
        "field",
        "length",
        "characters",
        "reset.",
        "please",
        "sent",
    ]
)
# user:password@ in any URL or connection string (postgres://, mongodb+srv://, redis://:pw@).
URL_CREDENTIALS = re.compile(r"[a-z][a-z0-9+.-]*://[^\s:/?#@]*:([^\s/?#@]+)@", re.I)
QUERY_SECRET = re.compile(
    r"(?i)[?&;](?:api[_-]?key|apikey|key|token|access[_-]?token|auth|sig|signature|secret"
    r"|client[_-]?secret|password|pwd|passwd|code_verifier|session)=([^&\s#;]{4,})"
)
# ADO/ODBC/JDBC style: Password=...; Pwd=...;
CONNECTION_PASSWORD = re.compile(r"(?i)(?:^|[;\s])(?:password|pwd|passwd)\s*=\s*([^;\s]+)")
SECRET_ASSIGNMENT = re.compile(
    r"(?i)\b(?:bearer|api[_ -]?key|access[_ -]?token|auth[_ -]?token|refresh[_ -]?token"
    r"|secret(?:[_ -]?key)?|client[_ -]?secret|token|webhook secret)\b(?:\s*(?:is|:|=|:=)\s*|\s+)"
    r"[\"']?([A-Za-z0-9._~+/=\-]{12,})"
)
LONG_TOKEN = re.compile(r"(?<![A-Za-z0-9_\-+/=])[A-Za-z0-9_\-+/=]{32,}(?![A-Za-z0-9_\-+/=])")
# Lower- or upper-case hex of 32+ characters (MD5/SHA digests used as API keys, webhook
# secrets): UUIDs have dashes and stay.
HEX_TOKEN = re.compile(r"(?<![\w-])(?:[0-9a-f]{32,}|[0-9A-F]{32,})(?![\w-])")

# ---- phones ---------------------------------------------------------------------------

PHONE_CONTEXT = re.compile(
    r"(?i)\b(?:phone|call|tel|telephone|mobile|cell|whatsapp|sms|text me|fax|number|numero"
    r"|número|teléfono|telefono|móvil|movil|cellulare|téléphone|portable|telefon|handy"
    r"|rufnummer|telefoon|mobiel)\b"
)
NOT_PHONE_CONTEXT = re.compile(
    r"(?i)(?:order|invoice|ref|reference|tracking|sku|model|serial|case|ticket|account"
    r"|contract|customer|meter|pedido|commande|bestellung|rechnung|factura|ordine|#)"
    r"(?:\b|(?<=#))[^\d\n]{0,14}$"
)
PHONE_CANDIDATE = re.compile(r"(?<![\w+])(?:\+|\b)\(?\d[\d \t().\-/]{5,}\d(?![\w-])")
DATE_LIKE = re.compile(r"^(?:\d{1,2}[./-]\d{1,2}[./-]\d{2,4}|\d{4}[./-]\d{1,2}[./-]\d{1,2})$")
PHONE_FORMATTED = re.compile(r"^\(?\d+\)?(?:[ .\-/]\(?\d+\)?)+$")

IBAN_START = re.compile(r"(?<![A-Za-z0-9])[A-Za-z]{2}\d{2}(?=[ -]?[A-Za-z0-9])")
IBAN_TAIL = re.compile(r"[A-Za-z0-9]+|[ -]")
