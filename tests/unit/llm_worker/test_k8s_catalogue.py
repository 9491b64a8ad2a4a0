"""The model catalogue shipped in the Kubernetes ConfigMap is one the workers accept."""

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from switchboard.common.topics import TIERS
from switchboard.llm_worker.settings import WorkerSettings

ROOT = Path(__file__).parents[3]
CATALOGUES = sorted((ROOT / "deploy" / "k8s").rglob("catalogue*.json"))


def test_a_catalogue_is_shipped() -> None:
    assert CATALOGUES, "deploy/k8s/**/catalogue*.json not found"


@pytest.mark.parametrize("path", CATALOGUES, ids=lambda p: str(p.relative_to(ROOT)))
def test_catalogue_parses_as_the_worker_reads_it(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Exactly how the pods receive it: the file's text as SWITCHBOARD_LLM_WORKER_CATALOGUE.
    monkeypatch.setenv("SWITCHBOARD_LLM_WORKER_CATALOGUE", path.read_text())
    catalogue = WorkerSettings().catalogue
    for tier in TIERS:
        assert catalogue.get(tier), f"{path.name}: no model for tier {tier}"
    assert catalogue == WorkerSettings(catalogue=json.loads(path.read_text())).catalogue


def test_a_broken_catalogue_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    entry = json.loads(CATALOGUES[0].read_text())
    entry["cheap"][0]["provider"] = "unknown-provider"
    monkeypatch.setenv("SWITCHBOARD_LLM_WORKER_CATALOGUE", json.dumps(entry))
    with pytest.raises(ValidationError, match="provider"):
        WorkerSettings()
