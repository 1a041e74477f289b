"""The numbers others reported (AesBench's leaderboard, AesExpert's dataset statistics).

They live in one versioned data file, ``aes_lib/assets/reported_results.yaml``, each block
naming its source; this module reads and validates it. Nothing here is measured by this run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

REFERENCE_FILE = Path(__file__).resolve().parent.parent / "assets" / "reported_results.yaml"

#: The benchmark columns, in table order: key in the reference file -> (label, full scale).
BENCH_COLUMNS: dict[str, tuple[str, float]] = {
    "AesP": ("AesP", 100.0),
    "AesE": ("AesE", 100.0),
    "AesA": ("AesA", 100.0),
    "AesI_relevance": ("AesI relevance", 2.0),
    "AesI_precision": ("AesI precision", 2.0),
    "AesI_completeness": ("AesI completeness", 2.0),
    "AesI_overall": ("AesI overall", 2.0),
}


def load_reference(path: str | Path = REFERENCE_FILE) -> dict[str, Any]:
    """Read and validate the reference file; errors name the file and the entry."""
    import yaml

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: reference file not found")
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    validate_reference(data, str(path))
    return data


def _fail(where: str, entry: str, problem: str) -> None:
    raise ValueError(f"{where}: {entry}: {problem}")


def validate_reference(data: Any, where: str = "reference") -> None:
    if not isinstance(data, dict):
        _fail(where, "*", "expected a mapping")
    sources = data.get("sources")
    if not isinstance(sources, dict) or not sources:
        _fail(where, "sources", "missing or empty")
    for key, src in sources.items():
        for f in ("label", "citation", "where"):
            if not isinstance(src, dict) or not str(src.get(f, "")).strip():
                _fail(where, f"sources.{key}.{f}", "missing")
        if not src["label"].startswith("reported by "):
            _fail(where, f"sources.{key}.label", "must start with 'reported by '")
    bench = data.get("benchmark") or {}
    if bench.get("source") not in sources:
        _fail(where, "benchmark.source", f"{bench.get('source')!r} is not a listed source")
    for model, row in (bench.get("models") or {}).items():
        if set(row) != set(BENCH_COLUMNS):
            _fail(where, f"benchmark.models.{model}", f"needs exactly the keys {sorted(BENCH_COLUMNS)}")
        for key, value in row.items():
            scale = BENCH_COLUMNS[key][1]
            if not isinstance(value, (int, float)) or not 0 <= value <= scale:
                _fail(where, f"benchmark.models.{model}.{key}", f"must be a number in [0, {scale}]")
    for i, item in enumerate(data.get("breakdowns") or []):
        if item.get("source") not in sources:
            _fail(where, f"breakdowns[{i}].source", f"{item.get('source')!r} is not a listed source")
        for f in ("model", "dimension", "group_by", "values"):
            if f not in item:
                _fail(where, f"breakdowns[{i}].{f}", "missing")
    ds = data.get("dataset") or {}
    if ds and ds.get("source") not in sources:
        _fail(where, "dataset.source", f"{ds.get('source')!r} is not a listed source")


def source_label(ref: dict[str, Any], key: str) -> str:
    """``"reported by AesBench"`` for a source key."""
    return ref["sources"][key]["label"]


def source_detail(ref: dict[str, Any], key: str) -> str:
    """``"reported by AesBench (AesBench README leaderboard, rev. 9367974, 2024-07-18)"``: the
    label and exactly where the numbers come from (``short``, else the citation's last part)."""
    src = ref["sources"][key]
    return f"{src['label']} ({src.get('short') or src['citation'].split(',')[-1].strip()})"


def reported_scores(ref: dict[str, Any]) -> dict[str, dict[str, float]]:
    """``{model: {column: value}}`` of the benchmark leaderboard, in file order."""
    return {m: dict(v) for m, v in ref["benchmark"]["models"].items()}
