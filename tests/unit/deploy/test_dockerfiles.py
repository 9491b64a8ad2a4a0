"""The one service Dockerfile's `uv sync --locked` needs every workspace member's pyproject.toml."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
MEMBERS = sorted(
    str(p.parent.relative_to(ROOT))
    for pattern in ("libs/*/pyproject.toml", "services/*/pyproject.toml", "tools/*/pyproject.toml")
    for p in ROOT.glob(pattern)
)
DOCKERFILE = ROOT / "deploy" / "images" / "Dockerfile"


def test_one_dockerfile_serves_every_service() -> None:
    assert [p.relative_to(ROOT) for p in ROOT.glob("services/*/Dockerfile")] == []
    text = DOCKERFILE.read_text()
    assert "ARG SERVICE" in text
    assert "services/${SERVICE}/" in text


def test_every_workspace_member_manifest_is_copied() -> None:
    text = DOCKERFILE.read_text()
    missing = [m for m in MEMBERS if f"COPY {m}/pyproject.toml {m}/" not in text]
    assert missing == [], f"{DOCKERFILE.relative_to(ROOT)} lacks COPY lines for {missing}"
