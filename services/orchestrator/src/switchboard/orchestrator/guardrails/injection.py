"""Prompt-injection scoring: the rules of `injection_rules` run on the text and on decoded
variants of it (base64, hex, rot13, leetspeak, spaced-out letters, look-alike letters,
percent-encoding, reversed text, split payloads), each decoding only when the text shows
its mark."""

import asyncio
import base64
import binascii
import codecs
import hashlib
import logging
import re
import unicodedata
import urllib.parse
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
from cachetools import LRUCache
from numpy.typing import NDArray

from switchboard.embeddings import EmbeddingError, QueryEmbeddings
from switchboard.orchestrator.guardrails._text import normalize
from switchboard.orchestrator.guardrails.classifier import InjectionClassifier
from switchboard.orchestrator.guardrails.goal_hijacking import (
    CUSTOMER_VOICE,
    DISREGARD_TRIGGERS,
    DISREGARD_WHAT_CAME_BEFORE,
    NEW_DIRECTIVE,
)
from switchboard.orchestrator.guardrails.injection_rules import (
    _OVERRIDE_ANY_SCRIPT,
    _OVERRIDE_OTHER,
    _OVERRIDE_TARGET,
    _OVERRIDE_VERB_LAST,
    _OWN,
    _OWN_AFTER,
    _RULES,
    _SELF_SUBJECT_BEFORE,
    _THIRD_PARTY_AFTER,
    _THIRD_PARTY_BEFORE,
)

_COLLAPSE = re.compile(r'(?:[\s|"{}\[\],:_`#>*]|\\n)+')
_SPACED = re.compile(r"\b(?:[A-Za-z][ .\-_*]){3,}[A-Za-z]\b")
_LEET = str.maketrans(
    {"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "@": "a", "$": "s", "!": "i"}
)
_BASE64 = re.compile(r"(?<![A-Za-z0-9+/=])[A-Za-z0-9+/]{16,}={0,2}(?![A-Za-z0-9+/=])")
_HEX = re.compile(r"\b(?:[0-9a-fA-F]{2}[ :]?){12,}\b")


@dataclass(frozen=True)
class InjectionVerdict:
    """How much a message looks like a prompt injection, and why."""

    score: float
    signals: tuple[str, ...]


def _decoded_base64(text: str) -> Iterable[str]:
    for m in _BASE64.finditer(text):
        token = m.group()
        try:
            raw = base64.b64decode(token + "=" * (-len(token) % 4), validate=True)
            decoded = raw.decode("utf-8")
        except (binascii.Error, ValueError):
            continue
        if decoded and sum(c.isprintable() or c.isspace() for c in decoded) / len(decoded) > 0.95:
            yield decoded


def _decoded_hex(text: str) -> Iterable[str]:
    for m in _HEX.finditer(text):
        try:
            decoded = bytes.fromhex(re.sub(r"[ :]", "", m.group())).decode("utf-8")
        except ValueError:
            continue
        if decoded.isprintable():
            yield decoded


log = logging.getLogger(__name__)

# Cyrillic and Greek letters that look Latin ("ignore" spelt with Cyrillic i, o, e): mapped back
# when they sit among Latin letters. Hand-kept because the confusables packages on PyPI
# detect mixed scripts but do not map them, and these two dozen are the ones that matter.
_CONFUSABLES = str.maketrans(
    "аеорсхуіјѕԁһкмтвнАЕОРСХУІЈЅКМТВНαοερτυνкΑΕΟΡΤΥΝΚΙΒΗΜΖ",
    "aeopcxyijsdhkmtbhAEOPCXYIJSKMTBHaoeptuvkAEOPTYNKIBHMZ",
)
_LATIN = re.compile(r"[A-Za-z]")
_LEET_MARK = re.compile(r"[A-Za-z][0134579@$!]|[0134579@$][A-Za-z]")
# The words attacks are made of, as rot13 and reversed text show them.
_ATTACK_WORDS = ("ignore", "instruction", "prompt", "system", "previous", "reveal", "rules")
_ROT13_MARK = re.compile("|".join(codecs.encode(w, "rot13") for w in _ATTACK_WORDS), re.I)
_REVERSED_MARK = re.compile("|".join(w[::-1] for w in _ATTACK_WORDS), re.I)
_SPLIT_MARK = re.compile(r'[|{}\[\]_`"]|\n')
# "forget everything I said", "ignore all that we discussed": the customer's own words.
_SAID_BY_CUSTOMER = re.compile(
    r"\s*(?:that |which |what )?(?:i|we|ich|wir|je|nous|yo|io|eu|ik)\s+(?:\w+\s+)?"
    r"(?:said|wrote|told|asked|sent|mentioned|meant|discussed|typed|gesagt|geschrieben"
    r"|gefragt|dit|écrit|dije|escribí|detto|scritto|disse|escrevi|zei|schreef)\b",
    re.IGNORECASE,
)
# How far after the disregard a new directive is looked for, in characters.
_DIRECTIVE_REACH = 160
_LOOKALIKE = re.compile("[аеорсхуіјѕԁһкмтвнАЕОРСХУІЈЅКМТВНαοερτυνΑΕΟΡΤΥΝΚΙΒΗΜΖ]")


class InjectionDetector:
    """Scores prompt-injection and jailbreak attempts in [0, 1]: the rules, and, when a
    classifier is given and the caller has the text's sentence embedding, the higher of
    the rules' score and the classifier's probability."""

    def __init__(
        self,
        classifier: InjectionClassifier | None = None,
        embeddings: QueryEmbeddings | None = None,
        *,
        rules_cache_size: int = 4_096,
    ) -> None:
        self.classifier = classifier
        # The classifier's embedding model behind its query cache (its own: retrieval's model
        # is another, decision 0086).
        self.embeddings = embeddings if classifier is not None else None
        # The rules' verdicts by the text's digest: the same knowledge passages come back
        # turn after turn, and the rules cost about 15 ms on a 1,500-character passage
        # (their decoded variants included), all of it on the event loop.
        self._rules_cache: LRUCache[bytes, InjectionVerdict] | None = (
            LRUCache(rules_cache_size) if rules_cache_size > 0 else None
        )

    async def assess(self, channels: Mapping[str, str], embed_text: str) -> InjectionVerdict:
        """`score_channels` with the message's vector: `embed_text` is the message as the
        turn stores it (redacted). Without an embedder, or when it fails, the rules decide
        alone.

        The rules run while the vector is computed (in the embedder's thread, beside the
        retrieval's embedding in its own): once it arrives only the classifier's head is
        left (~0.2 ms with its nearest examples, decision 0087)."""
        pending: asyncio.Future[NDArray[np.float32]] | None = None
        if (
            self.classifier is not None
            and self.embeddings is not None
            and embed_text.strip()
            and self.classifier.reads(embed_text)
        ):
            pending = asyncio.ensure_future(self.embeddings.embed(embed_text))
        embedding = None
        try:
            rules = {channel: self.score_rules(text) for channel, text in channels.items()}
            if pending is not None:
                try:
                    embedding = await pending
                except EmbeddingError as exc:
                    log.warning("no embedding for the injection classifier: %s", exc)
        finally:
            if pending is not None and not pending.done():
                pending.cancel()
        return self.score_channels(channels, embedding, rules)

    def score(
        self,
        text: str,
        embedding: NDArray[np.float32] | None = None,
        rules: InjectionVerdict | None = None,
    ) -> InjectionVerdict:
        """The verdict on `text`; `embedding` is its vector from the classifier's embedding
        model (without one, or for text the model cannot read, the rules decide alone);
        `rules` is the rules' verdict on it when the caller has it already."""
        verdict = rules if rules is not None else self.score_rules(text)
        if self.classifier is None or embedding is None or not self.classifier.reads(text):
            return verdict
        p = round(self.classifier.probability(embedding, verdict.score, text), 4)
        if p <= verdict.score:
            return verdict
        return InjectionVerdict(p, (*verdict.signals, f"classifier {p:.2f}"))

    def score_rules(self, text: str) -> InjectionVerdict:
        """The rules' verdict alone (remembered for the most recent texts)."""
        if self._rules_cache is None:
            return self._score_rules(text)
        key = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()
        verdict = self._rules_cache.get(key)
        if verdict is None:
            verdict = self._rules_cache[key] = self._score_rules(text)
        return verdict

    def _score_rules(self, text: str) -> InjectionVerdict:
        base = normalize(text)
        variants: list[tuple[str, str]] = [("", base)]
        # Letters spaced out one by one ("i g n o r e  a l l"): wide gaps separate words.
        despaced = " ".join(
            _SPACED.sub(lambda m: re.sub(r"[ .\-_*]", "", m.group()), part)
            for part in re.split(r"\s{2,}", unicodedata.normalize("NFKC", text))
        )
        despaced = normalize(despaced)
        if despaced != base:
            variants.append(("spaced letters", despaced))
        if _LOOKALIKE.search(base) and _LATIN.search(base):
            variants.append(("confusable letters", base.translate(_CONFUSABLES)))
        # Each decoding runs only when the text shows its mark (digits inside words, the
        # key words of attacks rot13-encoded or reversed, JSON or table punctuation): the
        # rules then run on two or three variants, not ten.
        if _LEET_MARK.search(base):
            variants.append(("leetspeak", base.translate(_LEET)))
        variants.extend(("base64", d) for d in _decoded_base64(base))
        variants.extend(("hex", d) for d in _decoded_hex(base))
        if _ROT13_MARK.search(base):
            variants.append(("rot13", codecs.encode(base, "rot13")))
        if base.count("%") >= 3:
            variants.append(("percent-encoding", normalize(urllib.parse.unquote(base))))
        if _SPLIT_MARK.search(base):
            # Payload splitting: the pieces of a JSON object, a markdown table, code or an
            # identifier_with_underscores read as one sentence.
            variants.append(("split payload", _COLLAPSE.sub(" ", base).strip()))
        if _REVERSED_MARK.search(base):
            variants.append(("reversed", base[::-1]))

        best: dict[str, tuple[float, str]] = {}
        for encoding, variant in variants:
            for name, weight in self._rules(variant):
                if encoding and name not in best:
                    # An attack that bothered to hide itself is worth a little more.
                    weight = min(1.0, weight + 0.1)
                if weight > best.get(name, (0.0, ""))[0]:
                    best[name] = (weight, f"{name} ({encoding})" if encoding else name)
        remaining = 1.0
        for weight, _ in best.values():
            remaining *= 1.0 - weight
        return InjectionVerdict(round(1.0 - remaining, 4), tuple(lbl for _, lbl in best.values()))

    def score_channels(
        self,
        channels: Mapping[str, str],
        embedding: NDArray[np.float32] | None = None,
        rules: Mapping[str, InjectionVerdict] | None = None,
    ) -> InjectionVerdict:
        """The worst verdict over the texts that reach the model (message, metadata, user id,
        tool results, retrieved passages); signals name the channel unless it is "message".
        `embedding` is the message's vector (the other channels are scored by the rules);
        `rules` holds the rules' verdicts by channel where the caller has them already."""
        best = InjectionVerdict(0.0, ())
        for channel, text in channels.items():
            if not text:
                continue
            verdict = self.score(
                text,
                embedding if channel == "message" else None,
                (rules or {}).get(channel),
            )
            if verdict.score > best.score:
                signals = verdict.signals
                if channel != "message":
                    signals = tuple(f"{channel}: {signal}" for signal in signals)
                best = InjectionVerdict(verdict.score, signals)
        return best

    @staticmethod
    def _rules(text: str) -> Iterable[tuple[str, float]]:
        folded = text.lower()
        for rule in _RULES:
            if rule.triggers and not any(t in folded for t in rule.triggers):
                continue
            if rule.pattern.search(text):
                yield rule.name, rule.weight
        for pattern in (
            _OVERRIDE_TARGET,
            _OVERRIDE_OTHER,
            _OVERRIDE_ANY_SCRIPT,
            _OVERRIDE_VERB_LAST,
        ):
            for m in pattern.finditer(text):
                # "ignore my previous instructions", "the instructions I gave the
                # technician": a customer changing their mind; "can I ignore the
                # instructions in the manual?": the customer's own action, someone else's
                # instructions.
                before = text[max(0, m.start() - 30) : m.start()]
                if (
                    _OWN.search(m.group(0))
                    or _OWN_AFTER.match(text, m.end())
                    or _SELF_SUBJECT_BEFORE.search(before)
                    or _THIRD_PARTY_AFTER.match(text, m.end())
                    or _THIRD_PARTY_BEFORE.search(before)
                ):
                    continue
                yield "instruction override", 0.9
                break
        if not any(t in folded for t in DISREGARD_TRIGGERS):
            return
        for m in DISREGARD_WHAT_CAME_BEFORE.finditer(text):
            before = text[max(0, m.start() - 30) : m.start()]
            if (
                _OWN.search(m.group(0))
                or _OWN_AFTER.match(text, m.end())
                or _SAID_BY_CUSTOMER.match(text, m.end())
                or _SELF_SUBJECT_BEFORE.search(before)
            ):
                continue
            # Alone it may be a customer starting over ("forget all that, where is my
            # refund?"); followed by output to produce or a task to take up, it is the
            # assistant's goal being replaced.
            yield "disregard what came before", 0.45
            directive = NEW_DIRECTIVE.search(text, m.end(), m.end() + _DIRECTIVE_REACH)
            if directive and not CUSTOMER_VOICE.search(text, m.end(), directive.start()):
                yield "goal hijacking", 0.85
            break
