"""The SLO tables of docs/slo.md, parsed the way the document says: split each row on `|`, strip cells."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

SLO_PATH = Path(__file__).resolve().parents[2] / "docs" / "slo.md"
CACHED_SUFFIX = " [cached]"


@dataclass(frozen=True)
class LatencySlo:
    """One row of the request latency table: p95/p99 in ms, max error rate in percent."""

    route: str
    p95_ms: float
    p99_ms: float
    max_error_rate: float

    @property
    def path(self) -> str:
        """The HTTP path without the ` [cached]` suffix."""
        return self.route.removesuffix(CACHED_SUFFIX)

    @property
    def cached(self) -> bool:
        """True for the warm-cache row (answers with meta.cache = hit)."""
        return self.route.endswith(CACHED_SUFFIX)


@dataclass(frozen=True)
class Objective:
    """One row of the freshness/availability table."""

    name: str
    target: float
    unit: str


def _rows(text: str, first_header: str) -> list[list[str]]:
    """Body rows of the first Markdown table whose first header cell is `first_header`."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.lstrip().startswith("|") and cells and cells[0] == first_header:
            out = []
            for body in lines[i + 2:]:
                if not body.lstrip().startswith("|"):
                    break
                out.append([c.strip() for c in body.strip().strip("|").split("|")])
            return out
    return []


def parse_latency(text: str) -> list[LatencySlo]:
    """The `| route | p95_ms | p99_ms | max_error_rate |` rows; ValueError when the table is missing or bad."""
    rows = _rows(text, "route")
    if not rows:
        raise ValueError("docs/slo.md has no `| route | p95_ms | p99_ms | max_error_rate |` table")
    out = []
    for cells in rows:
        if len(cells) < 4:
            raise ValueError(f"bad SLO row: {cells}")
        out.append(LatencySlo(cells[0], float(cells[1]), float(cells[2]), float(cells[3])))
    return out


def parse_objectives(text: str) -> list[Objective]:
    """The `| objective | target | unit | measured_by |` rows (freshness_p95, availability)."""
    out = []
    for cells in _rows(text, "objective"):
        try:
            out.append(Objective(cells[0], float(cells[1]), cells[2]))
        except (IndexError, ValueError):
            continue
    return out


def load(path: Path = SLO_PATH) -> tuple[list[LatencySlo], list[Objective]]:
    """Both tables of the SLO document."""
    text = path.read_text(encoding="utf-8")
    return parse_latency(text), parse_objectives(text)
