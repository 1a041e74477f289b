"""The critique store: one SQLite file in WAL mode, one row per critique, committed on submit.

Every :meth:`CritiqueStore.submit` is its own transaction with ``synchronous=FULL``, so a
killed kernel (or a killed process) loses nothing that was submitted before the kill.
A critique's id is ``<annotator>:<image_id>`` for the tool, so re-submitting after *back*
replaces the earlier answer instead of adding a second one; imported critiques have
``<source>:<annotator>:<image_id>`` (see :mod:`aes_lib.collect.importers`). Each import is one
transaction that also records its summary and rejects in the ``imports`` table, so the files an
import writes can always be rebuilt from the store.
"""

from __future__ import annotations

import json
import logging
import re
import sqlite3
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable, Iterator

from aes_lib.schema import Critique

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS critiques (
    id TEXT PRIMARY KEY,
    image_id TEXT NOT NULL,
    annotator TEXT NOT NULL,
    annotator_kind TEXT NOT NULL,
    protocol_version TEXT NOT NULL,
    grade TEXT NOT NULL,
    attributes TEXT NOT NULL,
    description TEXT NOT NULL,
    suggestion TEXT NOT NULL,
    seconds_spent REAL NOT NULL,
    created_at TEXT NOT NULL,
    source TEXT NOT NULL,
    extra TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS critiques_annotator ON critiques(annotator);
CREATE INDEX IF NOT EXISTS critiques_image ON critiques(image_id);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,          -- skip | flag
    image_id TEXT NOT NULL,
    annotator TEXT NOT NULL,
    reason TEXT NOT NULL,
    protocol_version TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS imports (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    source TEXT NOT NULL,
    summary TEXT NOT NULL,       -- JSON: import_summary.json without import_seq
    rejects TEXT NOT NULL,       -- JSON list: rejects.jsonl
    created_at TEXT NOT NULL
);
"""
_COLUMNS = ("id", "image_id", "annotator", "annotator_kind", "protocol_version", "grade",
            "attributes", "description", "suggestion", "seconds_spent", "created_at", "source", "extra")


#: :meth:`CritiqueStore.submit` without a check of what it replaces
ANY = object()


class SubmitConflict(ValueError):
    """A submit would replace a critique its tool never showed; nothing was written."""


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class CritiqueStore:
    """SQLite-backed store of critiques, skips and flags."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            # autocommit mode: every statement outside an explicit transaction commits at once
            self._con = sqlite3.connect(self.path, isolation_level=None, timeout=30,
                                        check_same_thread=False)
            self._con.execute("PRAGMA journal_mode=WAL")
            self._con.execute("PRAGMA synchronous=FULL")
            self._con.executescript(_SCHEMA)
        except sqlite3.Error as e:  # SQLite's messages name no file ("unable to open database file")
            raise OSError(f"{self.path}: cannot open the critique store ({e}); check that the "
                          "folder is writable and the file is an SQLite database") from None

    @property
    def journal_mode(self) -> str:
        return self._con.execute("PRAGMA journal_mode").fetchone()[0]

    def close(self) -> None:
        self._con.close()

    def __enter__(self) -> "CritiqueStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction: everything inside commits together or not at all. The store's
        writing methods called inside it join it instead of committing on their own."""
        if self._con.in_transaction:
            yield self._con
            return
        with self._transaction() as con:
            yield con

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        self._con.execute("BEGIN IMMEDIATE")
        try:
            yield self._con
            self._con.execute("COMMIT")
        except BaseException as e:
            # SQLite rolls back by itself on some errors (disk full): a second ROLLBACK would
            # fail and hide the cause ("cannot rollback - no transaction is active")
            if self._con.in_transaction:
                try:
                    self._con.execute("ROLLBACK")
                except sqlite3.Error:
                    pass
            if isinstance(e, sqlite3.Error):   # SQLite's messages name no file
                raise sqlite3.OperationalError(f"{self.path}: {e}") from e
            raise

    # --- writing ----------------------------------------------------------------------------
    def submit(self, critique: Critique, replaces: "Critique | None | object" = ANY) -> None:
        """Validate and commit one critique (replacing one with the same id).

        With ``replaces`` (the stored critique the caller showed and edits, or ``None`` for a
        new one) the critique replaces only exactly that: when the stored row is another (the
        same annotator name submitted the image from a second tool), nothing is written and
        :class:`SubmitConflict` says so. The check and the write are one transaction."""
        if replaces is ANY:
            self.add_many([critique])
            return
        row = self._to_row(critique)
        with self.transaction() as con:
            stored = con.execute(f"SELECT {', '.join(_COLUMNS)} FROM critiques WHERE id = ?",
                                 (critique.id,)).fetchone()
            expected = None if replaces is None else self._to_row(replaces)
            if (None if stored is None else tuple(stored)) != expected:
                when = self._row_to_critique(stored).created_at if stored is not None else "?"
                raise SubmitConflict(
                    f"not saved: {critique.annotator} already has a critique of {critique.image_id} "
                    f"saved at {when} from another window; press back to see and edit it, or use "
                    "another annotator name")
            con.execute(f"INSERT OR REPLACE INTO critiques ({', '.join(_COLUMNS)}) "
                        f"VALUES ({', '.join('?' * len(_COLUMNS))})", row)

    def add_many(self, critiques: Iterable[Critique]) -> int:
        """Validate and commit many critiques in one transaction; returns how many."""
        rows = [self._to_row(c) for c in critiques]
        with self.transaction() as con:
            con.executemany(f"INSERT OR REPLACE INTO critiques ({', '.join(_COLUMNS)}) "
                            f"VALUES ({', '.join('?' * len(_COLUMNS))})", rows)
        return len(rows)

    @staticmethod
    def _to_row(c: Critique) -> tuple:
        c.validate()
        d = c.to_dict()
        d["attributes"] = json.dumps(d["attributes"], sort_keys=True, ensure_ascii=False)
        d["extra"] = json.dumps(d["extra"], sort_keys=True, ensure_ascii=False)
        return tuple(d[k] for k in _COLUMNS)

    def add_imported(self, critiques: list[Critique], source: str) -> dict[str, int]:
        """Store one import's critiques in one transaction: ``added`` (new ids), ``replaced``
        (same id, changed content), ``unchanged``; and ``legacy_removed``: critiques of this
        source stored under the old row-number ids (``<source>:<5 digits>:<image>``), which the
        content ids replace."""
        rows = [self._to_row(c) for c in critiques]
        counts = {"added": 0, "replaced": 0, "unchanged": 0, "legacy_removed": 0}
        legacy = re.compile(re.escape(source) + r":\d{5}:")
        with self.transaction() as con:
            old_ids = [r[0] for r in con.execute(
                "SELECT id FROM critiques WHERE source = ? AND annotator_kind = 'imported'", (source,))
                if legacy.match(r[0])]
            con.executemany("DELETE FROM critiques WHERE id = ?", [(i,) for i in old_ids])
            counts["legacy_removed"] = len(old_ids)
            for row in rows:
                old = con.execute(f"SELECT {', '.join(_COLUMNS)} FROM critiques WHERE id = ?",
                                  (row[0],)).fetchone()
                counts["added" if old is None else "unchanged" if tuple(old) == row else "replaced"] += 1
            con.executemany(f"INSERT OR REPLACE INTO critiques ({', '.join(_COLUMNS)}) "
                            f"VALUES ({', '.join('?' * len(_COLUMNS))})", rows)
        return counts

    def record_import(self, source: str, summary: dict, rejects: list[dict]) -> int:
        """Record an import's summary and rejects (inside its transaction); returns its number."""
        with self.transaction() as con:
            cur = con.execute("INSERT INTO imports (source, summary, rejects, created_at) VALUES (?, ?, ?, ?)",
                              (source, json.dumps(summary, sort_keys=True, ensure_ascii=False, default=str),
                               json.dumps(rejects, sort_keys=True, ensure_ascii=False, default=str),
                               utc_now()))
            return int(cur.lastrowid)

    def last_import(self) -> tuple[int, dict, list[dict]] | None:
        """``(seq, summary, rejects)`` of the latest import, or None."""
        row = self._con.execute("SELECT seq, summary, rejects FROM imports ORDER BY seq DESC LIMIT 1").fetchone()
        return None if row is None else (row[0], json.loads(row[1]), json.loads(row[2]))

    def record_event(self, kind: str, image_id: str, annotator: str, reason: str = "",
                     protocol_version: str = "") -> None:
        """Record a ``skip`` or a ``flag`` (with its reason), committed at once."""
        if kind not in ("skip", "flag"):
            raise ValueError(f"event kind must be 'skip' or 'flag', got {kind!r}")
        with self.transaction() as con:
            con.execute("INSERT INTO events (kind, image_id, annotator, reason, protocol_version, "
                        "created_at) VALUES (?, ?, ?, ?, ?, ?)",
                        (kind, image_id, annotator, reason, protocol_version, utc_now()))

    def delete_kind(self, annotator_kind: str) -> int:
        """Remove every critique of one kind (used to regenerate simulated critiques)."""
        with self.transaction() as con:
            return con.execute("DELETE FROM critiques WHERE annotator_kind = ?",
                               (annotator_kind,)).rowcount

    # --- reading ----------------------------------------------------------------------------
    def critiques(self, annotator: str | None = None, annotator_kind: str | None = None,
                  image_id: str | None = None) -> list[Critique]:
        """Critiques, ordered by image then annotator, optionally filtered."""
        where, args = [], []
        for col, val in (("annotator", annotator), ("annotator_kind", annotator_kind),
                         ("image_id", image_id)):
            if val is not None:
                where.append(f"{col} = ?")
                args.append(val)
        sql = f"SELECT {', '.join(_COLUMNS)} FROM critiques"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY image_id, annotator, id"
        return [self._row_to_critique(r) for r in self._con.execute(sql, args)]

    def get(self, critique_id: str) -> Critique | None:
        row = self._con.execute(f"SELECT {', '.join(_COLUMNS)} FROM critiques WHERE id = ?",
                                (critique_id,)).fetchone()
        return None if row is None else self._row_to_critique(row)

    def count(self, annotator_kind: str | None = None) -> int:
        if annotator_kind is None:
            return self._con.execute("SELECT COUNT(*) FROM critiques").fetchone()[0]
        return self._con.execute("SELECT COUNT(*) FROM critiques WHERE annotator_kind = ?",
                                 (annotator_kind,)).fetchone()[0]

    def done_image_ids(self, annotator: str) -> set[str]:
        """Images this annotator has critiqued or flagged (skips are not done)."""
        done = {r[0] for r in self._con.execute(
            "SELECT image_id FROM critiques WHERE annotator = ?", (annotator,))}
        done |= {r[0] for r in self._con.execute(
            "SELECT image_id FROM events WHERE annotator = ? AND kind = 'flag'", (annotator,))}
        return done

    def skipped_image_ids(self, annotator: str) -> set[str]:
        return {r[0] for r in self._con.execute(
            "SELECT image_id FROM events WHERE annotator = ? AND kind = 'skip'", (annotator,))}

    def events(self, kind: str | None = None) -> list[dict]:
        sql = "SELECT seq, kind, image_id, annotator, reason, protocol_version, created_at FROM events"
        rows = self._con.execute(sql + (" WHERE kind = ?" if kind else "") + " ORDER BY seq",
                                 (kind,) if kind else ())
        keys = ("seq", "kind", "image_id", "annotator", "reason", "protocol_version", "created_at")
        return [dict(zip(keys, r)) for r in rows]

    def pairs(self, annotator_kind: str) -> list[tuple[str, str]]:
        """``(image_id, annotator)`` of every critique of one kind (cheap: no JSON parsing)."""
        return self._con.execute("SELECT image_id, annotator FROM critiques WHERE annotator_kind = ?",
                                 (annotator_kind,)).fetchall()

    def annotators(self) -> list[str]:
        return [r[0] for r in self._con.execute(
            "SELECT DISTINCT annotator FROM critiques ORDER BY annotator")]

    @staticmethod
    def _row_to_critique(row: tuple) -> Critique:
        d = dict(zip(_COLUMNS, row))
        d["attributes"] = json.loads(d["attributes"])
        d["extra"] = json.loads(d["extra"])
        return Critique.from_dict(d, where="critiques.db")
