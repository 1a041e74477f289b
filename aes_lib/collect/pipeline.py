"""The collect stage end to end: simulate or import into the store, export, aggregate.

Files (under ``<out_dir>/critiques/``): ``critiques.db`` (SQLite, WAL), ``critiques.jsonl``,
``consensus.csv``, ``stats.json``, ``rejects.jsonl`` (last import), ``import_summary.json``,
``simulate_config.json``.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

from aes_lib.io import write_json
from aes_lib.schema import Critique, ImageRecord, read_manifest, write_jsonl

from .importers import ImportOptions, ImportResult, import_file
from .protocol import Protocol, load_protocol
from .simulate import SimulateConfig, simulate_critiques
from .stats import compute_stats, consensus_rows, write_consensus_csv
from .store import CritiqueStore

log = logging.getLogger(__name__)

DB_NAME = "critiques.db"


def critiques_dir(out_dir: str | Path) -> Path:
    return Path(out_dir) / "critiques"


def open_store(out_dir: str | Path) -> CritiqueStore:
    return CritiqueStore(critiques_dir(out_dir) / DB_NAME)


def load_manifest(data_dir: str | Path) -> list[ImageRecord]:
    """The image records of ``<data_dir>/manifest.json``, validated."""
    return read_manifest(Path(data_dir) / "manifest.json")


def simulate_into_store(out_dir: str | Path, images: list[ImageRecord], config: SimulateConfig,
                        protocol: Protocol | None = None) -> int:
    """Replace the store's simulated critiques with fresh ones; returns how many."""
    protocol = protocol or load_protocol()
    critiques = simulate_critiques(images, protocol.id, config)
    with open_store(out_dir) as store:
        removed = store.delete_kind("simulated")
        store.add_many(critiques)
    config.save(critiques_dir(out_dir) / "simulate_config.json")
    log.info("simulated %d critiques of %d images (replaced %d)", len(critiques),
             len({c.image_id for c in critiques}), removed)
    return len(critiques)


def import_into_store(out_dir: str | Path, path: str | Path, fmt: str,
                      options: ImportOptions | None = None) -> ImportResult:
    """Import a file into the store; rejects go to ``rejects.jsonl`` with their reasons."""
    options = options or ImportOptions()
    result = import_file(path, fmt, options)   # fills in the default source and protocol version
    cdir = critiques_dir(out_dir)
    with open_store(out_dir) as store:
        store.add_many(result.critiques)
    write_jsonl(cdir / "rejects.jsonl", result.rejects)
    write_json(cdir / "import_summary.json", {**result.summary(), "file": str(path), "format": fmt,
                                              "options": dataclasses.asdict(options)})
    return result


def export_jsonl(out_dir: str | Path, path: str | Path | None = None) -> tuple[Path, list[Critique]]:
    """Write every stored critique to ``critiques.jsonl`` (sorted by image, annotator)."""
    path = Path(path) if path else critiques_dir(out_dir) / "critiques.jsonl"
    db = critiques_dir(out_dir) / DB_NAME
    if not db.exists():
        raise FileNotFoundError(f"{db}: no critique store (simulate or import some critiques first)")
    with open_store(out_dir) as store:
        critiques = store.critiques()
    write_jsonl(path, critiques)
    return path, critiques


def write_stats(out_dir: str | Path, critiques: list[Critique] | None = None) -> dict[str, Any]:
    """Write ``consensus.csv`` and ``stats.json`` from the stored (or given) critiques."""
    if critiques is None:
        with open_store(out_dir) as store:
            critiques = store.critiques()
    if not critiques:
        raise ValueError(f"{critiques_dir(out_dir) / DB_NAME}: no critiques to aggregate "
                         "(simulate or import some first)")
    stats = compute_stats(critiques)
    write_consensus_csv(critiques_dir(out_dir) / "consensus.csv", consensus_rows(critiques))
    write_json(critiques_dir(out_dir) / "stats.json", stats)
    return stats


def store_summary(out_dir: str | Path) -> list[dict[str, Any]]:
    """One row per annotator kind: critiques, images and annotators in the store, plus flags/skips."""
    with open_store(out_dir) as store:
        critiques, events = store.critiques(), store.events()
    rows = []
    for kind in sorted({c.annotator_kind for c in critiques}):
        cs = [c for c in critiques if c.annotator_kind == kind]
        rows.append({"annotator_kind": kind, "critiques": len(cs), "images": len({c.image_id for c in cs}),
                     "annotators": len({c.annotator for c in cs}),
                     "protocols": ", ".join(sorted({c.protocol_version for c in cs}))})
    for kind in ("flag", "skip"):
        n = sum(1 for e in events if e["kind"] == kind)
        if n:
            rows.append({"annotator_kind": f"human ({kind}s)", "critiques": 0, "images": n,
                         "annotators": len({e["annotator"] for e in events if e["kind"] == kind}),
                         "protocols": ""})
    return rows


def collect_outputs(out_dir: str | Path) -> list[Path]:
    d = critiques_dir(out_dir)
    return [d / n for n in (DB_NAME, "critiques.jsonl", "consensus.csv", "stats.json")]
