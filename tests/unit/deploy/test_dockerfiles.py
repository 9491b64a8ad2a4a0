"""Each image's `uv sync --locked` needs every workspace member's pyproject.toml."""

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
MEMBERS = sorted(
    str(p.parent.relative_to(ROOT))
    for pattern in ("libs/*/pyproject.toml", "services/*/pyproject.toml", "tools/*/pyproject.toml")
    for p in ROOT.glob(pattern)
)
DOCKERFILES = sorted(ROOT.glob("services/*/Dockerfile"))


def test_there_is_a_dockerfile_per_service() -> None:
    services = sorted(p.parent.name for p in ROOT.glob("services/*/pyproject.toml"))
    assert [d.parent.name for d in DOCKERFILES] == services


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.parent.name)
def test_every_workspace_member_manifest_is_copied(dockerfile: Path) -> None:
    text = dockerfile.read_text()
    missing = [m for m in MEMBERS if f"COPY {m}/pyproject.toml {m}/" not in text]
    assert missing == [], f"{dockerfile.relative_to(ROOT)} lacks COPY lines for {missing}"
