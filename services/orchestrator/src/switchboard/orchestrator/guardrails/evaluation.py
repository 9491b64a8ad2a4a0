"""`make eval-guardrails`: injection recall and benign blocked per split (dev and the
held-out splits, apart), PII recall per class, over-redaction of ordinary numbers, and the
guardrails' cost per turn. Run through `python -m switchboard.orchestrator.evaluation
guardrails`."""

import json
import re
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from switchboard.common.redaction import ALL_KINDS, AT_REST_KINDS, Redactor, StreamingRedactor
from switchboard.embeddings.multilingual import MultilingualEmbedder
from switchboard.orchestrator.guardrails.classifier import InjectionClassifier
from switchboard.orchestrator.guardrails.injection import InjectionDetector
from switchboard.orchestrator.guardrails.train import embed_as_the_turn_does


def load_jsonl(path: Path) -> list[dict[str, Any]]:
    """The JSON objects of a .jsonl file, one per non-empty line."""
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


INJECTION_THRESHOLD = 0.5
SPLITS = ("dev", "heldout", "heldout2")
# The injection report adds the router's held-out contact-center messages as benign rows: what
# the classifier must let through on traffic written for another purpose (issue 19).
INJECTION_SPLITS = (*SPLITS, "heldout3", "heldout4", "heldout5", "heldout-cc")


def injection_rows(data: Path) -> list[dict[str, Any]]:
    """Every labelled message with its split. The project's own sets were written together
    with the rules: they are dev. tests/data/injection_public.jsonl carries its own split,
    fixed by a hash of the id before any rule was written from it;
    tests/data/injection_more.jsonl too ("heldout2": deepset's test split and 30% of the
    other new rows by a hash of the id, frozen before the classifier was first trained)."""
    rows = [
        {**r, "split": "dev", "label": "attack", "source": "project"}
        for r in load_jsonl(data / "injection_attacks.jsonl")
    ]
    rows += [
        {**r, "split": "dev", "label": "benign", "category": "look-alike", "source": "project"}
        for r in load_jsonl(data / "benign_lookalikes.jsonl")
    ]
    rows += load_jsonl(data / "injection_public.jsonl")
    rows += load_jsonl(data / "injection_more.jsonl")
    # Dev only: everyday contact-center messages and assistant requests (CLINC150), and
    # attacks of the framings the first two sets had few of (issue 19, third pass).
    rows += load_jsonl(data / "injection_dev3.jsonl")
    # Dev only: garak's and PromptInject's prompts (via Giskard-AI/prompt-injections) and
    # BIPIA's train-split attacks in pasted e-mails, with the clean e-mails (sixth pass).
    rows += load_jsonl(data / "injection_dev4.jsonl")
    # Dev only: goal hijacking in six languages, mostly in paraphrase (role abandoned, a new
    # job, the setup declared void, dictated output, the knowledge base set aside), and
    # customers starting over, correcting themselves or interrupting (thirteenth pass).
    rows += load_jsonl(data / "injection_dev5.jsonl")
    # Dev only: three authors who saw neither the rules nor the other sets, 300 rows each in
    # seven languages and eight attack categories, mostly without the usual trigger words
    # (thirteenth pass): leave-one-source-out on them is a new author's text.
    rows += load_jsonl(data / "injection_dev6.jsonl")
    # Dev only: more such authors, each with other industries and styles (fourteenth pass).
    rows += load_jsonl(data / "injection_dev7.jsonl")
    # Dev only: three more (telecom; banking and payments; utilities, public services and
    # software support), the same recipe (fifteenth pass).
    rows += load_jsonl(data / "injection_dev8.jsonl")
    # Dev only: three more (education and public administration; property and home
    # services; consumer electronics and gaming), the same recipe (sixteenth pass).
    rows += load_jsonl(data / "injection_dev9.jsonl")
    # Held out, never tuned on: 120 attacks and 120 look-alikes and everyday messages in
    # seven languages, written by an author who saw neither the rules nor the other sets
    # (thirteenth pass; scored once before and once after that pass's rules).
    rows += load_jsonl(data / "injection_heldout3.jsonl")
    # Held out, never tuned on: 120 attacks and 120 benign rows over a dozen businesses by a
    # fourth author who saw neither the rules nor any set (fifteenth pass; scored fresh with
    # the model before dev8, then once after retraining with dev8).
    rows += load_jsonl(data / "injection_heldout4.jsonl")
    # Held out, never tuned on: a fifth author's 240 rows over another dozen businesses
    # (sixteenth pass; scored fresh with the model before dev9, then once after).
    rows += load_jsonl(data / "injection_heldout5.jsonl")
    rows += _contact_center_rows(data)
    return rows


def _contact_center_rows(data: Path) -> list[dict[str, Any]]:
    """The router's labelled contact-center messages as benign rows: its training pool and
    dev set are dev here too; its held-out set is the split "heldout-cc", never trained on."""

    def key(text: str) -> str:
        return " ".join(text.lower().split())

    held = {key(r["text"]) for r in load_jsonl(data / "router_holdout.jsonl") if "text" in r}
    rows: list[dict[str, Any]] = []
    for name, split in (
        ("router_train.jsonl", "dev"),
        ("router_eval.jsonl", "dev"),
        ("router_holdout.jsonl", "heldout-cc"),
    ):
        for r in load_jsonl(data / name):
            if "text" not in r or (split == "dev" and key(r["text"]) in held):
                continue  # the header line; a dev copy of a held-out message
            rows.append(
                {
                    "id": f"router-{r['id']}",
                    "text": r["text"],
                    "split": split,
                    "label": "benign",
                    "category": "contact-center",
                    "language": r.get("language", "en"),
                    "source": name,
                }
            )
    return rows


def _pii_rows(data: Path) -> list[dict[str, Any]]:
    """PII cases: the project's own (dev, judged by the kinds found) and the public-review
    set (its own split, judged by which secret strings survive redaction)."""
    rows: list[dict[str, Any]] = []
    for case in load_jsonl(data / "pii_cases.jsonl"):
        kinds = case["kinds"]
        cls = f"{kinds[0].lower()}" if kinds else "ordinary"
        rows.append({**case, "split": "dev", "class": cls, "secrets": [], "keep": []})
    rows += load_jsonl(data / "pii_public.jsonl")
    return rows


def _percentiles(samples_us: Sequence[float]) -> tuple[float, float]:
    ordered = sorted(samples_us)
    return ordered[len(ordered) // 2], ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def _timed(fn: Callable[[str], object], texts: Sequence[str], rounds: int) -> list[float]:
    samples: list[float] = []
    for _ in range(rounds):
        for text in texts:
            # CPU time of this thread: wall time on a shared machine measures the neighbours.
            start = time.thread_time()
            fn(text)
            samples.append((time.thread_time() - start) * 1e6)
    return samples


def _rates(
    rows: Sequence[dict[str, Any]], scores: dict[int, float]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], int, int]:
    """(missed attacks, blocked benign rows, attacks, benign rows)."""
    attacks = [r for r in rows if r["label"] == "attack"]
    benign = [r for r in rows if r["label"] == "benign"]
    missed = [r for r in attacks if scores[id(r)] < INJECTION_THRESHOLD]
    blocked = [r for r in benign if scores[id(r)] >= INJECTION_THRESHOLD]
    return missed, blocked, len(attacks), len(benign)


def _cell(bad: int, total: int, *, caught: bool) -> str:
    if not total:
        return "-"
    hits = total - bad if caught else bad
    return f"{hits}/{total} {hits / total:6.1%}"


def evaluate_guardrails(data: Path) -> int:
    """Print, per split, injection recall and benign blocked (rules alone, and rules with the
    classifier), per language, PII recall per class, over-redaction of ordinary numbers, and
    the guardrails' cost per turn."""
    classifier = InjectionClassifier()
    detector = InjectionDetector(classifier)
    rows = injection_rows(data)
    print(f"embedding {len(rows)} messages with {classifier.embedding_model} ...")
    embedder = MultilingualEmbedder()
    vectors = embed_as_the_turn_does(embedder, [r["text"] for r in rows]).astype(np.float32)
    rules = {id(r): detector.score_rules(r["text"]).score for r in rows}
    verdicts = {id(r): detector.score(r["text"], vectors[i]) for i, r in enumerate(rows)}
    combined = {k: v.score for k, v in verdicts.items()}
    print(
        f"prompt injection (threshold {INJECTION_THRESHOLD}; classifier trained on "
        f"{classifier.model.trained_on}; misses listed for dev only)"
    )
    header = f"  {'split':9s} {'attacks caught (rules)':>24s} {'(rules + classifier)':>22s}"
    print(header + f" {'benign blocked (rules)':>24s} {'(rules + classifier)':>22s}")
    for split in INJECTION_SPLITS:
        subset = [r for r in rows if r["split"] == split]
        r_missed, r_blocked, n_attacks, n_benign = _rates(subset, rules)
        missed, blocked, _, _ = _rates(subset, combined)
        print(
            f"  {split:9s} {_cell(len(r_missed), n_attacks, caught=True):>24s} "
            f"{_cell(len(missed), n_attacks, caught=True):>22s} "
            f"{_cell(len(r_blocked), n_benign, caught=False):>24s} "
            f"{_cell(len(blocked), n_benign, caught=False):>22s}"
        )
        by_category: dict[str, list[bool]] = {}
        for r in subset:
            if r["label"] == "attack":
                by_category.setdefault(r["category"], []).append(r not in missed)
        print(
            "            attacks by category: "
            + ", ".join(f"{k} {sum(v)}/{len(v)}" for k, v in sorted(by_category.items()))
        )
        for language in sorted({r["language"] for r in subset}):
            in_language = [r for r in subset if r["language"] == language]
            l_missed, l_blocked, l_attacks, l_benign = _rates(in_language, combined)
            print(
                f"            {language:5s} attacks caught "
                f"{_cell(len(l_missed), l_attacks, caught=True):>14s}   benign blocked "
                f"{_cell(len(l_blocked), l_benign, caught=False):>14s}"
            )
        if split == "dev":
            for r in missed:
                print(f"            missed {r['id']}: {r['text'][:70]!r}")
            for r in blocked:
                v = verdicts[id(r)]
                print(f"            blocked {r['id']}: {r['text'][:60]!r} {v.score} {v.signals}")

    redactor = Redactor()
    cases = _pii_rows(data)
    print("PII and secrets: recall per class (a case counts when every secret is gone)")
    classes = sorted({c["class"] for c in cases} - {"ordinary"})
    print(f"  {'class':20s} " + " ".join(f"{s:>12s}" for s in SPLITS))
    outcome: dict[tuple[str, str], list[bool]] = {}
    over: dict[str, list[bool]] = {}
    for case in cases:
        redacted = redactor.redact(case["text"], ALL_KINDS)
        if case["class"] == "ordinary":
            touched = bool(redacted.findings) or any(k not in redacted.text for k in case["keep"])
            over.setdefault(case["split"], []).append(touched)
            if touched and case["split"] == "dev":
                print(f"    dev over-redaction {case['id']}: {redacted.text!r}")
            continue
        if case["secrets"]:
            ok = all(secret not in redacted.text for secret in case["secrets"])
        else:
            ok = set(case["kinds"]) <= {f.kind.value for f in redacted.findings}
        outcome.setdefault((case["class"], case["split"]), []).append(ok)
        if not ok and case["split"] == "dev":
            print(f"    dev miss {case['id']}: {redacted.text!r}")
    for cls in classes:
        cells = []
        for split in SPLITS:
            hits = outcome.get((cls, split))
            cells.append(f"{sum(hits)}/{len(hits)}" if hits else "-")
        print(f"  {cls:20s} " + " ".join(f"{c:>12s}" for c in cells))
    for split in SPLITS:
        touched_list = over.get(split, [])
        print(
            f"  over-redaction of ordinary numbers, {split}: "
            f"{sum(touched_list)}/{len(touched_list)} texts touched"
        )

    # Cost per turn as the platform pays it: the gateway's redaction of what may rest, the
    # orchestrator's redaction for storage and for the provider, injection scoring of the
    # message and the system-prompt channels.
    texts = [r["text"] for r in rows] + [c["text"] for c in cases]

    vector = vectors[0]

    def turn(text: str) -> None:
        redactor.redact(text, AT_REST_KINDS)
        redactor.redact(text, ALL_KINDS)
        detector.score_channels({"message": text, "user_id": "user-42"}, vector)

    # Chat-sized messages apart: the public sets hold pasted documents of up to 5,000
    # characters, whose scoring takes ~10x longer (the rules are linear in the length).
    short = [t for t in texts if len(t) <= 500]
    print("cost (thread CPU time, µs): p50 / p99 over every text, then over the texts of up to")
    print(f"500 characters (a chat message; {len(short)} of {len(texts)}), 5 rounds each")
    for label, fn, note in (
        ("guardrails per turn", turn, "(the embedding apart)"),
        ("injection scoring", lambda t: detector.score(t, vector), "(rules + classifier)"),
        (
            "classifier alone",
            lambda t: classifier.probability(vector, 0.0, t),
            "(+ words, letter n-grams)",
        ),
        ("one redaction", redactor.redact, ""),
    ):
        a50, a99 = _percentiles(_timed(fn, texts, 5))
        s50, s99 = _percentiles(_timed(fn, short, 5))
        print(f"  {label:20s} {a50:8.1f} / {a99:8.1f}   {s50:8.1f} / {s99:8.1f}   {note}")
    sample = texts[:: max(1, len(texts) // 150)]
    emb_p50, emb_p99 = _percentiles(_timed(lambda t: embedder.embed_sync([t]), sample, 1))
    print(
        f"  message embedding    {emb_p50:8.0f} / {emb_p99:8.0f}   ({len(sample)} texts; once per"
        " turn, in the embedder's thread)"
    )
    # Streaming redaction as the worker runs it: once per relayed chunk of a few tokens.
    prose = " ".join(r["text"] for r in rows if r["label"] == "benign")
    chunks = re.findall(r"(?:\s*\S+){1,4}", prose)
    start = time.thread_time()
    for _ in range(5):
        stream = StreamingRedactor(redactor)
        for chunk in chunks:
            stream.push(chunk)
        stream.flush()
    per_chunk = (time.thread_time() - start) / (5 * len(chunks)) * 1e6
    print(f"  streaming redaction   {per_chunk:8.1f} µs per relayed chunk of up to 4 tokens (mean)")
    return 0
