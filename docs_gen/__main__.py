"""scripts/docs: rewrite the documentation's generated regions, or (--check) fail when one is stale."""

from __future__ import annotations

import argparse
import sys

from docs_gen import ROOT, RegionError, stale


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/docs", description=__doc__)
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 when a region is stale")
    args = parser.parse_args(argv)
    try:
        changed = stale(ROOT, write=not args.check)
    except RegionError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for path in changed:
        verb = "stale" if args.check else "rewrote"
        print(f"{verb}: {path.relative_to(ROOT)}", file=sys.stderr if args.check else sys.stdout)
    if args.check and changed:
        print("run scripts/docs to regenerate them from the code", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
