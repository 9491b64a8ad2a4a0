"""Each workspace package declares, in its pyproject.toml, every distribution it imports."""

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
PACKAGES = sorted(
    p.parent
    for pattern in ("libs/*", "services/*", "tools/*")
    for p in ROOT.glob(f"{pattern}/pyproject.toml")
)


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _declared(package: Path) -> set[str]:
    project = tomllib.loads((package / "pyproject.toml").read_text())["project"]
    # Extras count: a module imported only by an optional tool (a plot) is declared there.
    extras = [d for group in project.get("optional-dependencies", {}).values() for d in group]
    names = {
        _normalize(re.split(r"[\[<>=!~; ]", d, maxsplit=1)[0])
        for d in [*project.get("dependencies", []), *extras]
    }
    return names | {_normalize(project["name"])}


def _imported(package: Path) -> set[str]:
    modules: set[str] = set()
    for path in (package / "src").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                modules.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                modules.add(node.module.split(".")[0])
    return modules - set(sys.stdlib_module_names) - {"switchboard"}


def _switchboard_packages(package: Path) -> set[str]:
    """`switchboard.<x>` imports: each must come from a declared workspace package."""
    found: set[str] = set()
    for path in (package / "src").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.ImportFrom)
                and node.module
                and node.module.startswith("switchboard.")
            ):
                found.add(node.module.split(".")[1])
    return found


OWNERS = {
    child.name: _normalize(f"switchboard-{package.name}")
    for package in PACKAGES
    for child in (package / "src" / "switchboard").iterdir()
    if child.is_dir() and not child.name.startswith("__")
}
OWNERS["v1"] = "switchboard-common"


@pytest.mark.parametrize("package", PACKAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_import_is_declared(package: Path) -> None:
    distributions = packages_distributions()
    declared = _declared(package)
    missing = set()
    for module in _imported(package):
        owners = {_normalize(d) for d in distributions.get(module, [module])}
        if not owners & declared:
            missing.add(f"{module} ({', '.join(sorted(owners))})")
    for sub in _switchboard_packages(package):
        owner = OWNERS.get(sub)
        if owner is not None and owner not in declared:
            missing.add(f"switchboard.{sub} ({owner})")
    assert not missing, (
        f"{package.relative_to(ROOT)}/pyproject.toml does not declare: {sorted(missing)}"
    )
