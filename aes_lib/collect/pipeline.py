"""The collect stage end to end: simulate or import into the store, export, aggregate.

Files (under ``<out_dir>/critiques/``): ``critiques.db`` (SQLite, WAL), ``critiques.jsonl``,
``consensus.csv``, ``stats.json``, ``rejects.jsonl`` (last import), ``import_summary.json``,
``simulate_config.json``.

An import is one unit: the file is read, every row mapped and every image decoded before the
store is touched. Then one transaction stores the critiques and the import's summary and
rejects; inside it, ``import_summary.json`` (first: it carries the import's number),
``rejects.jsonl`` and ``critiques.jsonl`` are written to temporary files and renamed into place,
and only then does it commit. The write lock is held throughout, so concurrent imports cannot
interleave their files. A failure leaves the store as it was and rewrites any file already
renamed from the store; a kill after a rename and before the commit leaves an
``import_summary.json`` whose ``import_seq`` the store does not have, which the next collect
command notices and repairs (:func:`sync_import_files`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import tempfile
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
_UMASK = os.umask(0)
os.umask(_UMASK)


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


def _jsonl_text(records: list) -> str:
    return "".join((r.to_json() if isinstance(r, Critique) else
                    json.dumps(r, ensure_ascii=False, sort_keys=True, default=str)) + "\n" for r in records)


def _json_text(obj: Any) -> str:
    return json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False, default=str) + "\n"


class _StagedFiles:
    """Files written to temporary names now and renamed into place by :meth:`publish` (after the
    store commits), or removed by :meth:`discard` (when it does not)."""

    def __init__(self) -> None:
        self.pending: list[tuple[str, Path]] = []
        self.published = 0

    def add(self, path: Path, text: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_dir():
            raise IsADirectoryError(f"{path}: is a folder, the file cannot be written")
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            os.fchmod(fd, 0o666 & ~_UMASK)   # mkstemp makes 0600 files; give the usual ones
            with os.fdopen(fd, "wb") as fh:
                fh.write(text.encode("utf-8"))
                fh.flush()
                os.fsync(fh.fileno())
        except OSError as e:   # disk full, quota, size limit: say which file (nothing was stored)
            Path(tmp).unlink(missing_ok=True)
            raise type(e)(e.errno, f"cannot write {path} ({e.strerror or e}); the import was not "
                          "stored, free some space and run it again") from None
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        self.pending.append((tmp, path))

    def publish(self) -> None:
        while self.pending:
            tmp, path = self.pending[0]
            os.replace(tmp, path)
            self.pending.pop(0)
            self.published += 1

    def discard(self) -> None:
        for tmp, _ in self.pending:
            Path(tmp).unlink(missing_ok=True)
        self.pending.clear()


def _stage_import_files(store: CritiqueStore, cdir: Path, staged: _StagedFiles) -> None:
    """Stage the files an import writes, from what the store holds now: the summary first (it
    carries ``import_seq``, by which a half-renamed set is recognised), then the rejects, then
    ``critiques.jsonl``. With no import in the store there is no summary and no rejects file."""
    last = store.last_import()
    if last is None:
        for name in ("import_summary.json", "rejects.jsonl"):
            (cdir / name).unlink(missing_ok=True)
    else:
        seq, summary, rejects = last
        staged.add(cdir / "import_summary.json", _json_text({**summary, "import_seq": seq}))
        staged.add(cdir / "rejects.jsonl", _jsonl_text(rejects))
    staged.add(cdir / "critiques.jsonl", _jsonl_text(store.critiques()))


def _rewrite_import_files(store: CritiqueStore, cdir: Path) -> None:
    staged = _StagedFiles()
    try:
        _stage_import_files(store, cdir, staged)
        staged.publish()
    finally:
        staged.discard()


def _files_behind(store: CritiqueStore, cdir: Path) -> bool:
    last = store.last_import()
    try:
        on_disk = json.loads((cdir / "import_summary.json").read_text(encoding="utf-8")).get("import_seq")
    except (OSError, ValueError, AttributeError):
        on_disk = None
    return on_disk != (None if last is None else last[0])


def sync_import_files(out_dir: str | Path) -> bool:
    """Rewrite ``import_summary.json``, ``rejects.jsonl`` and ``critiques.jsonl`` from the store
    when ``import_summary.json`` is not the store's latest import (an import killed after
    renaming its files, before its commit); returns True when it rewrote them."""
    cdir = critiques_dir(out_dir)
    if not (cdir / DB_NAME).exists():
        return False
    with open_store(out_dir) as store:
        if not _files_behind(store, cdir):   # the usual case: no write lock taken
            return False
        with store.transaction():   # waits for an import in progress, then looks again
            if not _files_behind(store, cdir):
                return False
            log.warning("%s: the files of the last import do not match the store (an import was "
                        "interrupted); rewriting them from the store", cdir)
            _rewrite_import_files(store, cdir)
    return True


def import_into_store(out_dir: str | Path, path: str | Path, fmt: str,
                      options: ImportOptions | None = None) -> ImportResult:
    """Import a file into the store as one transaction; rejects go to ``rejects.jsonl`` with
    their reasons, counts to ``import_summary.json``, and ``critiques.jsonl`` is refreshed: all
    four change together or none does."""
    options = options or ImportOptions()
    result = import_file(path, fmt, options)   # fills in the default source and protocol version
    cdir = critiques_dir(out_dir)
    sync_import_files(out_dir)
    staged = _StagedFiles()
    with open_store(out_dir) as store:
        try:
            with store.transaction():
                counts = store.add_imported(result.critiques, result.source)
                summary = {**result.summary(), **counts, "file": str(path), "format": fmt,
                           "options": dataclasses.asdict(options)}
                store.record_import(result.source, summary, result.rejects)
                _stage_import_files(store, cdir, staged)
                staged.publish()   # renamed under the write lock, before the commit
        except BaseException:
            if staged.published:   # files already renamed are ahead of the rolled-back store
                try:
                    with store.transaction():
                        _rewrite_import_files(store, cdir)
                except Exception as e:   # the next collect command repairs them (import_seq)
                    log.error("%s: could not restore the import files from the store: %s", cdir, e)
            raise
        finally:
            staged.discard()
    result.store_counts = counts
    log.info("%s: %d new, %d replaced, %d unchanged critiques in the store%s", path, counts["added"],
             counts["replaced"], counts["unchanged"],
             f"; {counts['legacy_removed']} stored under old row-number ids replaced"
             if counts["legacy_removed"] else "")
    return result


def export_jsonl(out_dir: str | Path, path: str | Path | None = None) -> tuple[Path, list[Critique]]:
    """Write every stored critique to ``critiques.jsonl`` (sorted by image, annotator)."""
    path = Path(path) if path else critiques_dir(out_dir) / "critiques.jsonl"
    db = critiques_dir(out_dir) / DB_NAME
    if not db.exists():
        raise FileNotFoundError(f"{db}: no critique store (simulate or import some critiques first)")
    sync_import_files(out_dir)
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
