"""Generated regions of the documentation: tables that mirror code, written from the code.

A region in README.md or any page under docs/ is

    <!-- BEGIN GENERATED name -->
    ...written by the generator registered as `name`...
    <!-- END GENERATED name -->

`python -m docs_gen` (scripts/docs) rewrites every region; `--check` changes nothing and fails
when one is stale, which tests/test_docs.py runs. To add a table: write a function returning its
Markdown (no surrounding blank lines needed) and register it in GENERATORS under the region's name.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from docs_gen import tables
from edge import egress

ROOT = Path(__file__).resolve().parent.parent

GENERATORS: Mapping[str, Callable[[], str]] = {
    "config-reference": tables.config_reference,
    "hub-api-versions": tables.hub_api_versions,
    "pinned-versions": tables.pinned_versions,
    "cli-limits": tables.cli_limits,
    "egress": egress.table,
}

# A marker is a line of its own, so that prose can name one in backticks.
_MARKER = re.compile(r"^<!-- (BEGIN|END) GENERATED ([A-Za-z0-9_-]+) -->$", re.M)


class RegionError(ValueError):
    """A region that cannot be rewritten: unknown name, unbalanced or nested markers."""


@dataclass(frozen=True)
class Region:
    path: Path
    name: str
    start: int
    """Offset just after the BEGIN marker's line."""
    end: int
    """Offset of the END marker."""


def documents(root: Path = ROOT) -> list[Path]:
    """Every Markdown file that may hold regions: the README and the site's pages."""
    return [root / "README.md", *sorted((root / "docs").rglob("*.md"))]


def regions(path: Path, text: str) -> Iterator[Region]:
    open_name, open_at = None, 0
    for match in _MARKER.finditer(text):
        kind, name = match.groups()
        line = text.count("\n", 0, match.start()) + 1
        where = f"{path}:{line}"
        if kind == "BEGIN":
            if open_name is not None:
                raise RegionError(f"{where}: region {name!r} starts inside region {open_name!r}")
            if name not in GENERATORS:
                raise RegionError(f"{where}: no generator named {name!r} (registered: {', '.join(GENERATORS)})")
            newline = text.find("\n", match.end())
            open_name, open_at = name, (len(text) if newline < 0 else newline + 1)
        else:
            if open_name != name:
                raise RegionError(f"{where}: END of {name!r} without its BEGIN")
            yield Region(path, name, open_at, match.start())
            open_name = None
    if open_name is not None:
        raise RegionError(f"{path}: region {open_name!r} has no END marker")


def render(text: str, path: Path, cache: dict[str, str]) -> str:
    """`text` with every region's body replaced by its generator's output."""
    parts, at = [], 0
    for region in regions(path, text):
        if region.name not in cache:
            cache[region.name] = GENERATORS[region.name]().strip("\n") + "\n"
        parts += [text[at : region.start], cache[region.name]]
        at = region.end
    return "".join(parts) + text[at:]


def stale(root: Path = ROOT, write: bool = False) -> list[Path]:
    """The documents whose regions differ from what the code says now (rewritten when `write`)."""
    cache: dict[str, str] = {}
    changed = []
    for path in documents(root):
        text = path.read_text(encoding="utf-8")
        fresh = render(text, path.relative_to(root), cache)
        if fresh != text:
            changed.append(path)
            if write:
                path.write_text(fresh, encoding="utf-8")
    return changed
