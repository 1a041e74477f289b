"""Read what the earlier stages wrote (formats in docs/CONTRACTS.md).

Every loader returns ``None`` and records a note when its file is missing, so the report can
be built from a partially run pipeline; a file that exists but does not fit its format is an
error naming the file and the field.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aes_lib.io import read_json

log = logging.getLogger(__name__)

#: Input files, relative to ``out_dir``, by the name the report uses for them.
INPUT_FILES: dict[str, str] = {
    "manifest": "data/manifest.json",
    "critique_stats": "critiques/stats.json",
    "consensus": "critiques/consensus.csv",
    "instruction_stats": "instructions/stats.json",
    "loss": "train/run/loss.csv",
    "results": "eval/results.csv",
}

CRITIQUE_STATS_KEYS = ("grade_counts", "attribute_ratings", "description_lengths", "agreement",
                       "characteristic_words", "n_images", "n_critiques", "n_annotators",
                       "annotator_kind")
INSTRUCTION_STATS_KEYS = ("counts_by_type", "counts_by_qtype", "question_lengths", "answer_lengths")
CONSENSUS_COLUMNS = ("image_id", "n_critiques", "consensus_grade", "consensus_level",
                     "mean_grade_score")
LOSS_COLUMNS = ("step", "loss")
RESULTS_COLUMNS = ("model", "dimension", "group_by", "group", "metric", "value", "ci_low",
                   "ci_high", "n")

_METRIC_RE = re.compile(r"^(?P<base>[A-Za-z_]+)(?:\[(?P<judge>[^\]]*)\])?$")


def split_metric(metric: str) -> tuple[str, str]:
    """``"overall[proxy-overlap]"`` -> ``("overall", "proxy-overlap")``; no judge -> ``""``."""
    m = _METRIC_RE.match(str(metric))
    if not m:
        raise ValueError(f"metric {metric!r}: expected NAME or NAME[judge]")
    return m.group("base"), m.group("judge") or ""


def _require_keys(obj: Any, keys: tuple[str, ...], path: Path) -> None:
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected a JSON object")
    missing = [k for k in keys if k not in obj]
    if missing:
        raise ValueError(f"{path}: field '{missing[0]}' missing")


def _read_csv(path: Path, columns: tuple[str, ...]):
    import pandas as pd

    df = pd.read_csv(path)
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: column '{missing[0]}' missing (has {', '.join(df.columns)})")
    return df


def load_manifest(path: Path) -> list[dict[str, Any]]:
    data = read_json(path)
    _require_keys(data, ("images",), path)
    images = data["images"]
    if not isinstance(images, list):
        raise ValueError(f"{path}: field 'images' must be a list")
    for i, img in enumerate(images):
        _require_keys(img, ("id", "source_photo", "split"), Path(f"{path} images[{i}]"))
    return images


def load_critique_stats(path: Path) -> dict[str, Any]:
    data = read_json(path)
    _require_keys(data, CRITIQUE_STATS_KEYS, path)
    return data


def load_instruction_stats(path: Path) -> dict[str, Any]:
    data = read_json(path)
    _require_keys(data, INSTRUCTION_STATS_KEYS, path)
    return data


def load_consensus(path: Path):
    return _read_csv(path, CONSENSUS_COLUMNS)


def load_loss(path: Path):
    df = _read_csv(path, LOSS_COLUMNS)
    return df.sort_values("step", kind="stable").reset_index(drop=True)


def load_results(path: Path):
    df = _read_csv(path, RESULTS_COLUMNS)
    for i, metric in enumerate(df["metric"]):
        try:
            split_metric(metric)
        except ValueError as e:
            raise ValueError(f"{path}: row {i + 2}: column 'metric': {e}") from None
    return df


LOADERS = {
    "manifest": load_manifest,
    "critique_stats": load_critique_stats,
    "consensus": load_consensus,
    "instruction_stats": load_instruction_stats,
    "loss": load_loss,
    "results": load_results,
}


@dataclass
class Inputs:
    """Everything the report reads; a missing file is ``None`` with a note in ``missing``."""

    out_dir: Path
    manifest: list[dict[str, Any]] | None = None
    critique_stats: dict[str, Any] | None = None
    consensus: Any = None              # pandas DataFrame
    instruction_stats: dict[str, Any] | None = None
    loss: Any = None                   # pandas DataFrame
    results: Any = None                # pandas DataFrame
    missing: dict[str, str] = field(default_factory=dict)  # input name -> relative path

    def has(self, *names: str) -> bool:
        return all(getattr(self, n) is not None for n in names)

    def summary(self) -> list[dict[str, str]]:
        """One row per input: its file and whether it was found."""
        return [{"input": name, "file": rel, "found": "yes" if name not in self.missing else "no"}
                for name, rel in INPUT_FILES.items()]


def load_inputs(out_dir: str | Path) -> Inputs:
    """Load every input that exists under ``out_dir``; log a warning for each missing one."""
    out_dir = Path(out_dir)
    inputs = Inputs(out_dir=out_dir)
    for name, rel in INPUT_FILES.items():
        path = out_dir / rel
        if not path.exists():
            log.warning("input %s not found (%s): what needs it is skipped", name, path)
            inputs.missing[name] = rel
            continue
        setattr(inputs, name, LOADERS[name](path))
    return inputs
