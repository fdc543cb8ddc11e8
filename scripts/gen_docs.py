"""Regenerate the parts of the docs that come from the code (`./dev docs`); `--check` only reports.

python scripts/gen_docs.py           # rewrite README.md's generated tables
python scripts/gen_docs.py --check   # exit 1 when one is stale (tests/unit/test_docs.py does the same)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from edge_lstm.service.config import reference

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="report stale generated docs, change nothing")
    args = p.parse_args(argv)
    readme = ROOT / "README.md"
    text = readme.read_text()
    new = reference.update_text(text)
    if new == text:
        print("README.md: generated tables are current")
        return 0
    if args.check:
        print("README.md: the configuration table is stale; run ./dev docs", file=sys.stderr)
        return 1
    readme.write_text(new)
    print("README.md: configuration table regenerated")
    return 0


if __name__ == "__main__":
    sys.exit(main())
