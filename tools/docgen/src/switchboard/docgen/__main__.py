"""`python -m switchboard.docgen [--check]`: write (or check) the generated documents."""

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from switchboard.docgen import asyncapi, configuration

ROOT = Path(__file__).resolve().parents[5]
DOCUMENTS: dict[str, Callable[[], str]] = {
    "docs/configuration.md": configuration.render,
    "docs/asyncapi.yaml": asyncapi.render,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m switchboard.docgen", description=__doc__)
    parser.add_argument(
        "--check", action="store_true", help="fail when a committed document is stale"
    )
    args = parser.parse_args(argv)
    stale = []
    for relative, render in DOCUMENTS.items():
        path = ROOT / relative
        text = render()
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(relative)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            print(f"wrote {relative}")
    if stale:
        print(f"stale: {', '.join(stale)}; run 'make docs' and commit", file=sys.stderr)
        return 1
    if args.check:
        print("generated documents are up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
