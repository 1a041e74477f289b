"""A class annotating together: names, the assignment of images, and the answers' checks.

This is the logic behind ``aes collect serve`` (:mod:`aes_lib.collect.serve`), kept free of any
web framework so it is tested directly. Everything lives in the critique store's SQLite file
(``critiques/critiques.db``), beside the critiques it hands out, in three more tables:

- ``class_annotators``: one row per name taken, with the sha256 of the browser's secret (a
  cookie), so a reload or a second tab resumes the same annotator and nobody else can take the
  name (names compare without case: ``Alice`` and ``alice`` are one name);
- ``class_assignments``: one row per (image, annotator) ever handed out, with its state
  (``open``, ``done``, ``skipped``, ``flagged``, ``released``): nobody is handed an image twice;
- ``class_settings``: the join and teacher codes, so a restarted server keeps them.

**Assignment.** Each image should get ``per_image`` (k) critiques from k different annotators.
An annotator asking for work keeps their open image; otherwise they get, among the images they
were never handed, the one with the fewest critiques plus open assignments (ties broken by a
per-annotator hash, so annotators do not all start alike). So images fill up together, and an
image is not handed out once k critiques (or k open assignments) stand for it. A skip or a flag
ends the annotator's assignment without a critique, so the image goes to someone else; an image
flagged by ``flag_limit`` annotators is withdrawn. An open assignment whose annotator has not
been heard of for ``lease_seconds`` (a closed tab) stops counting, so its image can pass on;
the annotator keeps it on return unless k others have filled it meanwhile.

Every change is one transaction on the store's connection (a submit stores the critique and
marks its assignment done together); a lock serialises the threads of one server process.
"""

from __future__ import annotations

import hashlib
import math
import re
import secrets
import threading
import time
import unicodedata
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from aes_lib.schema import ATTRIBUTES, GRADE_SCORE, Critique, ImageRecord

from .protocol import STEPS, Protocol, load_protocol
from .stats import ordinal_alpha
from .store import CritiqueStore, utc_now
from .widget import annotator_order

#: limits on what one submit may carry (characters)
MAX_NAME = 32
MAX_WORD = 40
MAX_DESCRIPTION = 4000
MAX_SUGGESTION = 2000
MAX_REASON = 100
MAX_SECONDS = 6 * 3600.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS class_annotators (
    key TEXT PRIMARY KEY,            -- the name, case-folded
    name TEXT NOT NULL,
    token_sha256 TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS class_assignments (
    image_id TEXT NOT NULL,
    annotator TEXT NOT NULL,
    state TEXT NOT NULL,             -- open | done | skipped | flagged | released
    assigned_at REAL NOT NULL,       -- unix seconds
    seen_at REAL NOT NULL,           -- last request of the annotator while it was open
    finished_at REAL,
    PRIMARY KEY (image_id, annotator)
);
CREATE INDEX IF NOT EXISTS class_assignments_annotator ON class_assignments(annotator, state);
CREATE TABLE IF NOT EXISTS class_settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""

_NAME_RE = re.compile(r"^[^\W_](?:[\w .'-]*[^\W_.])?$")
_RESERVED = re.compile(r"^(sim-\d+|teacher|admin)$", re.IGNORECASE)
_CODE_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"   # no 0/o, 1/l/i


class ClassError(ValueError):
    """A request the class session refuses; ``status`` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 400, problems: list[str] | None = None):
        super().__init__(message)
        self.status = status
        self.problems = problems or [message]


def new_code(groups: int = 3, size: int = 4) -> str:
    """A random code easy to read aloud, e.g. ``k7md-q2xa-9ptn`` (60 bits)."""
    return "-".join("".join(secrets.choice(_CODE_ALPHABET) for _ in range(size)) for _ in range(groups))


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def check_name(raw: Any) -> str:
    """The annotator name, tidied (outer spaces dropped, inner runs of spaces made one); a
    :class:`ClassError` saying what is wrong otherwise."""
    if not isinstance(raw, str):
        raise ClassError("type your name")
    name = " ".join(unicodedata.normalize("NFC", raw).split())
    if not name:
        raise ClassError("type your name")
    if len(name) > MAX_NAME:
        raise ClassError(f"a name has at most {MAX_NAME} characters (this one has {len(name)})")
    if not _NAME_RE.match(name):
        raise ClassError("a name uses letters, digits, spaces and . ' - only, and starts and ends "
                         "with a letter or digit")
    if _RESERVED.match(name):
        raise ClassError(f"the name {name!r} is reserved; pick another")
    return name


def _text(answers: dict, key: str, limit: int, label: str, problems: list[str]) -> str:
    value = answers.get(key, "")
    if value is None:
        return ""
    if not isinstance(value, str):
        problems.append(f"the {label} must be text")
        return ""
    value = value.strip()
    if len(value) > limit:
        problems.append(f"the {label} is too long: {len(value)} characters, at most {limit}")
    return value


def _typed(protocol: Protocol, answers: Any) -> tuple[dict[str, Any], list[str]]:
    """The answers with every value of the right type and size, and the problems found."""
    if not isinstance(answers, dict):
        return {}, ["the answers must be a JSON object"]
    problems: list[str] = []
    grade = answers.get("grade")
    if grade is not None and not isinstance(grade, str):
        problems.append("the grade must be one of the grade names")
        grade = None
    given = answers.get("attributes") or {}
    if not isinstance(given, dict):
        problems.append("the attributes must be an object")
        given = {}
    unknown = sorted(set(given) - set(protocol.attribute_keys))
    if unknown:
        problems.append(f"unknown attributes: {', '.join(map(str, unknown))[:200]}")
    attributes: dict[str, dict[str, Any]] = {}
    for a in protocol.attributes:
        judgment = given.get(a.key) or {}
        if not isinstance(judgment, dict):
            problems.append(f"{a.label}: give a rating and a word")
            judgment = {}
        rating = judgment.get("rating")
        if rating is not None and (isinstance(rating, bool) or not isinstance(rating, int)):
            problems.append(f"{a.label}: rating must be a whole number 1-5")
            rating = None
        word = _text(judgment, "word", MAX_WORD, f"{a.label} word", problems) or None
        attributes[a.key] = {"rating": rating, "word": word}
    cleaned = {"grade": grade, "attributes": attributes,
               "description": _text(answers, "description", MAX_DESCRIPTION, "description", problems),
               "suggestion": _text(answers, "suggestion", MAX_SUGGESTION, "suggestion", problems)}
    return cleaned, problems


def check_step(protocol: Protocol, step: Any, answers: Any) -> None:
    """Check one level's answers (what *Next* does): type and size, then the protocol's rules
    for that level; raises :class:`ClassError` with every problem."""
    if step not in STEPS:
        raise ClassError(f"unknown step {str(step)[:40]!r}")
    cleaned, problems = _typed(protocol, answers)
    problems = problems or protocol.validate_step(step, cleaned)
    if problems:
        raise ClassError("; ".join(problems), 422, problems)


def clean_answers(protocol: Protocol, answers: Any) -> dict[str, Any]:
    """The answers of one submit as the protocol reads them, checked for type and size first and
    then by the protocol's own rules (every level); raises :class:`ClassError` with every problem."""
    cleaned, problems = _typed(protocol, answers)
    problems = problems or protocol.validate_answers(cleaned)
    if problems:
        raise ClassError("; ".join(problems), 422, problems)
    cleaned["attributes"] = {k: v for k, v in cleaned["attributes"].items() if v["rating"] is not None}
    return cleaned


@dataclass
class Assignment:
    image_id: str
    annotator: str
    state: str
    assigned_at: float
    seen_at: float
    finished_at: float | None = None


class ClassSession:
    """The class's shared state over one critique store; safe to call from many threads."""

    def __init__(self, store: CritiqueStore, images: list[ImageRecord], protocol: Protocol,
                 per_image: int = 3, lease_seconds: float = 300.0, flag_limit: int = 2,
                 clock=time.time):
        if per_image < 1:
            raise ValueError(f"--per-image must be at least 1, got {per_image}")
        if not images:
            raise ValueError("the manifest lists no images to annotate")
        self.store, self.protocol = store, protocol
        self.images = {im.id: im for im in images}
        self.per_image, self.lease_seconds, self.flag_limit = per_image, lease_seconds, max(1, flag_limit)
        self.clock = clock
        self.lock = threading.RLock()
        with self.lock, store.transaction() as con:   # takes the write lock: a read-only store fails here
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    con.execute(statement)

    # --- codes ------------------------------------------------------------------------------
    def code(self, key: str, given: str | None = None) -> str:
        """The stored ``join_code`` / ``teacher_code``; ``given`` replaces it, none stored makes one."""
        with self.lock, self.store.transaction() as con:
            if given:
                con.execute("INSERT OR REPLACE INTO class_settings (key, value) VALUES (?, ?)", (key, given))
                return given
            row = con.execute("SELECT value FROM class_settings WHERE key = ?", (key,)).fetchone()
            if row:
                return row[0]
            value = new_code()
            con.execute("INSERT INTO class_settings (key, value) VALUES (?, ?)", (key, value))
            return value

    # --- identity ---------------------------------------------------------------------------
    def claim(self, raw_name: Any, token: str | None) -> tuple[str, str]:
        """``(name, token)``: a new name gets a new secret token; a taken name is given back only
        to the browser holding its token (the same annotator in another tab or after a reload)."""
        name = check_name(raw_name)
        key = name.casefold()
        with self.lock, self.store.transaction() as con:
            row = con.execute("SELECT name, token_sha256 FROM class_annotators WHERE key = ?", (key,)).fetchone()
            if row is not None:
                if token and secrets.compare_digest(row[1], token_hash(token)):
                    return row[0], token
                raise ClassError(f"the name {name!r} is taken by someone in this session; pick another "
                                 "(if it is yours, open the tool in the browser where you first typed it)", 409)
            other = con.execute("SELECT annotator_kind FROM critiques WHERE annotator = ? COLLATE NOCASE "
                                "AND annotator_kind != 'human' LIMIT 1", (name,)).fetchone()
            if other is not None:
                raise ClassError(f"the name {name!r} belongs to {other[0]} critiques in the store; pick another", 409)
            token = secrets.token_urlsafe(24)
            con.execute("INSERT INTO class_annotators (key, name, token_sha256, created_at) VALUES (?, ?, ?, ?)",
                        (key, name, token_hash(token), utc_now()))
            return name, token

    def who(self, token: str | None) -> str | None:
        """The annotator whose browser holds ``token``, or None."""
        if not token:
            return None
        with self.lock, self.store.transaction() as con:
            row = con.execute("SELECT name FROM class_annotators WHERE token_sha256 = ?",
                              (token_hash(token),)).fetchone()
        return row[0] if row else None

    # --- assignment -------------------------------------------------------------------------
    def _assignment(self, con, image_id: str, annotator: str) -> Assignment | None:
        row = con.execute("SELECT image_id, annotator, state, assigned_at, seen_at, finished_at "
                          "FROM class_assignments WHERE image_id = ? AND annotator = ?",
                          (image_id, annotator)).fetchone()
        return Assignment(*row) if row else None

    def _load(self, con, now: float, exclude: str | None = None) -> tuple[Counter, Counter, set[str]]:
        """Critiques per image (human, any annotator), open fresh assignments per image (not
        counting ``exclude``'s), and the images withdrawn by flags."""
        done = Counter(r[0] for r in con.execute(
            "SELECT image_id FROM critiques WHERE annotator_kind = 'human'") if r[0] in self.images)
        held = Counter(r[0] for r in con.execute(
            "SELECT image_id FROM class_assignments WHERE state = 'open' AND seen_at >= ? AND annotator != ?",
            (now - self.lease_seconds, exclude or "")))
        flags = Counter(r[0] for r in con.execute(
            "SELECT DISTINCT image_id, annotator FROM events WHERE kind = 'flag'"))
        withdrawn = {i for i, n in flags.items() if n >= self.flag_limit}
        return done, held, withdrawn

    def current(self, annotator: str) -> str | None:
        """The annotator's open image, handing out a new one when they have none (None: nothing
        left for them). Also marks the annotator as present (their open image stays theirs)."""
        now = self.clock()
        with self.lock, self.store.transaction() as con:
            row = con.execute("SELECT image_id, seen_at FROM class_assignments WHERE annotator = ? AND "
                              "state = 'open' ORDER BY assigned_at LIMIT 1", (annotator,)).fetchone()
            if row is not None:
                image_id, seen_at = row
                if seen_at < now - self.lease_seconds:   # away a while: keep it unless others filled it
                    done, held, _ = self._load(con, now, exclude=annotator)
                    if done[image_id] - self._mine(con, image_id, annotator) + held[image_id] >= self.per_image:
                        con.execute("UPDATE class_assignments SET state = 'released', finished_at = ? "
                                    "WHERE image_id = ? AND annotator = ?", (now, image_id, annotator))
                        row = None
                if row is not None:
                    con.execute("UPDATE class_assignments SET seen_at = ? WHERE image_id = ? AND annotator = ?",
                                (now, image_id, annotator))
                    return image_id
            return self._hand_out(con, annotator, now)

    @staticmethod
    def _mine(con, image_id: str, annotator: str) -> int:
        return con.execute("SELECT COUNT(*) FROM critiques WHERE image_id = ? AND annotator = ? AND "
                           "annotator_kind = 'human'", (image_id, annotator)).fetchone()[0]

    def _hand_out(self, con, annotator: str, now: float) -> str | None:
        seen = {r[0] for r in con.execute("SELECT image_id FROM class_assignments WHERE annotator = ?",
                                          (annotator,))}
        seen |= {r[0] for r in con.execute("SELECT image_id FROM critiques WHERE annotator = ?", (annotator,))}
        seen |= {r[0] for r in con.execute("SELECT image_id FROM events WHERE annotator = ?", (annotator,))}
        done, held, withdrawn = self._load(con, now)
        rank = {i: n for n, i in enumerate(annotator_order(annotator, list(self.images)))}
        candidates = [i for i in self.images if i not in seen and i not in withdrawn
                      and done[i] + held[i] < self.per_image]
        if not candidates:
            return None
        image_id = min(candidates, key=lambda i: (done[i] + held[i], rank[i]))
        con.execute("INSERT INTO class_assignments (image_id, annotator, state, assigned_at, seen_at) "
                    "VALUES (?, ?, 'open', ?, ?)", (image_id, annotator, now, now))
        return image_id

    def heartbeat(self, annotator: str) -> None:
        with self.lock, self.store.transaction() as con:
            con.execute("UPDATE class_assignments SET seen_at = ? WHERE annotator = ? AND state = 'open'",
                        (self.clock(), annotator))

    def may_see(self, annotator: str, image_id: str) -> bool:
        """Whether the image was handed to this annotator (only then is it served to them)."""
        with self.lock, self.store.transaction() as con:
            return self._assignment(con, image_id, annotator) is not None

    def submit(self, annotator: str, image_id: str, answers: Any, seconds: Any) -> Critique:
        """Store the annotator's critique of an image handed to them (re-submitting replaces it)
        and close the assignment, in one transaction."""
        cleaned = clean_answers(self.protocol, answers)
        try:
            seconds = float(seconds)
        except (TypeError, ValueError):
            raise ClassError("the time spent must be a number of seconds") from None
        if not math.isfinite(seconds):
            raise ClassError("the time spent must be a number of seconds")
        now = self.clock()
        with self.lock, self.store.transaction() as con:
            a = self._assignment(con, image_id, annotator)
            if a is None or a.state not in ("open", "done"):
                raise ClassError(f"image {image_id!r} is not yours to critique (it was not handed to you, "
                                 "or you skipped or flagged it)", 403)
            seconds = round(min(max(seconds, 0.0), now - a.assigned_at + 1.0, MAX_SECONDS), 2)
            critique = Critique(
                id=f"{annotator}:{image_id}", image_id=image_id, annotator=annotator, annotator_kind="human",
                protocol_version=self.protocol.id, grade=cleaned["grade"], attributes=cleaned["attributes"],
                description=cleaned["description"], suggestion=cleaned["suggestion"], seconds_spent=seconds,
                created_at=utc_now(), source="class-server", extra={"image": self.images[image_id].file})
            self.store.submit(critique)   # joins this transaction
            con.execute("UPDATE class_assignments SET state = 'done', finished_at = ? WHERE image_id = ? "
                        "AND annotator = ?", (now, image_id, annotator))
        return critique

    def pass_on(self, annotator: str, image_id: str, kind: str, reason: str = "") -> bool:
        """Skip or flag the annotator's open image: the assignment ends and the image goes to
        someone else. Returns False when it was already skipped or flagged (a repeated click)."""
        if kind not in ("skip", "flag"):
            raise ClassError(f"unknown action {kind!r}")
        if kind == "flag":
            if not isinstance(reason, str) or reason not in self.protocol.flag_reasons:
                raise ClassError(f"choose a reason to flag: {', '.join(self.protocol.flag_reasons)}")
        with self.lock, self.store.transaction() as con:
            a = self._assignment(con, image_id, annotator)
            if a is None:
                raise ClassError(f"image {image_id!r} was not handed to you", 403)
            if a.state in ("skipped", "flagged"):
                return False
            if a.state != "open":
                raise ClassError(f"image {image_id!r} is already critiqued; it cannot be skipped now", 409)
            self.store.record_event(kind, image_id, annotator, reason if kind == "flag" else "",
                                    self.protocol.id)
            con.execute("UPDATE class_assignments SET state = ?, finished_at = ? WHERE image_id = ? AND "
                        "annotator = ?", ("skipped" if kind == "skip" else "flagged", self.clock(),
                                          image_id, annotator))
        return True

    def own_critique(self, annotator: str, image_id: str) -> Critique | None:
        """The annotator's own critique of an image, never anyone else's."""
        with self.lock, self.store.transaction():
            c = self.store.get(f"{annotator}:{image_id}")
        return c if c is not None and c.annotator == annotator else None

    def history(self, annotator: str) -> list[str]:
        """The images this annotator critiqued here, oldest first (for *Back*)."""
        with self.lock, self.store.transaction() as con:
            return [r[0] for r in con.execute(
                "SELECT image_id FROM class_assignments WHERE annotator = ? AND state = 'done' "
                "ORDER BY finished_at", (annotator,))]

    # --- progress and the teacher's view ------------------------------------------------------
    def progress(self, annotator: str) -> dict[str, Any]:
        with self.lock, self.store.transaction() as con:
            states = Counter(r[0] for r in con.execute(
                "SELECT state FROM class_assignments WHERE annotator = ?", (annotator,)))
            done, _, withdrawn = self._load(con, self.clock())
            n_annotators = con.execute("SELECT COUNT(*) FROM class_annotators").fetchone()[0]
        target = self.per_image * (len(self.images) - len(withdrawn))
        total = sum(min(n, self.per_image) for i, n in done.items() if i not in withdrawn)
        return {"done": states["done"], "skipped": states["skipped"], "flagged": states["flagged"],
                "share": math.ceil(target / max(1, n_annotators)), "class_done": total,
                "class_target": target, "per_image": self.per_image, "annotators": n_annotators,
                "images": len(self.images)}

    def overview(self) -> dict[str, Any]:
        """What the teacher sees: per annotator, per image, agreement among the humans so far."""
        with self.lock, self.store.transaction() as con:
            humans = [c for c in self.store.critiques(annotator_kind="human") if c.image_id in self.images]
            names = [r[0] for r in con.execute("SELECT name FROM class_annotators ORDER BY created_at")]
            events = self.store.events()
            open_rows = con.execute("SELECT image_id, annotator, seen_at FROM class_assignments "
                                    "WHERE state = 'open'").fetchall()
            _, _, withdrawn = self._load(con, self.clock())
        now = self.clock()
        per_annotator = {n: {"annotator": n, "critiques": 0, "skips": 0, "flags": 0, "seconds": 0.0,
                             "working_on": ""} for n in names}
        for c in humans:
            row = per_annotator.setdefault(c.annotator, {"annotator": c.annotator, "critiques": 0, "skips": 0,
                                                         "flags": 0, "seconds": 0.0, "working_on": ""})
            row["critiques"] += 1
            row["seconds"] += c.seconds_spent
        for e in events:
            if e["annotator"] in per_annotator and e["image_id"] in self.images:
                per_annotator[e["annotator"]]["skips" if e["kind"] == "skip" else "flags"] += 1
        for image_id, name, seen_at in open_rows:
            if name in per_annotator and seen_at >= now - self.lease_seconds:
                per_annotator[name]["working_on"] = image_id
        for row in per_annotator.values():
            row["seconds"] = round(row["seconds"], 1)
            row["median_seconds"] = _median([c.seconds_spent for c in humans if c.annotator == row["annotator"]])
        per_image = {i: {"image_id": i, "critiques": 0, "annotators": [], "flags": 0, "skips": 0,
                         "withdrawn": i in withdrawn} for i in self.images}
        for c in humans:
            per_image[c.image_id]["critiques"] += 1
            per_image[c.image_id]["annotators"].append(c.annotator)
        for e in events:
            if e["image_id"] in per_image:
                per_image[e["image_id"]]["flags" if e["kind"] == "flag" else "skips"] += 1
        agreement = {"grade": ordinal_alpha(humans, lambda c: GRADE_SCORE[c.grade])}
        for a in ATTRIBUTES:
            agreement[a] = ordinal_alpha(humans, lambda c, a=a: c.rating(a))
        counts = Counter(min(r["critiques"], self.per_image) for r in per_image.values() if not r["withdrawn"])
        return {"per_image_target": self.per_image, "images": len(self.images), "critiques": len(humans),
                "annotators": list(per_annotator.values()), "per_image": list(per_image.values()),
                "images_by_critiques": {str(k): counts.get(k, 0) for k in range(self.per_image + 1)},
                "complete_images": counts.get(self.per_image, 0), "withdrawn": sorted(withdrawn),
                "agreement": agreement, "seconds": round(sum(c.seconds_spent for c in humans), 1),
                "as_of": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def _median(values: list[float]) -> float | None:
    if not values:
        return None
    s = sorted(values)
    mid = len(s) // 2
    return round(s[mid] if len(s) % 2 else (s[mid - 1] + s[mid]) / 2, 1)


def class_overview(out_dir, images: list[ImageRecord], per_image: int = 3) -> dict[str, Any]:
    """The teacher's numbers (:meth:`ClassSession.overview`) read from ``<out_dir>``'s store, for
    notebook 01: human critiques per annotator and per image, and agreement among them."""
    from .pipeline import open_store

    with open_store(out_dir) as store:
        return ClassSession(store, images, load_protocol(), per_image=per_image).overview()
