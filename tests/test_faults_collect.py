"""Faults and bad input at `aes collect import` (issue #14): every bad row is a reject with its
reason, nothing broken reaches a later stage, and one import changes all of critiques.db,
rejects.jsonl, import_summary.json and critiques.jsonl together or none of them.

Real files and real `aes` processes; the kill test SIGKILLs an import at several moments."""

from __future__ import annotations

import csv
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from aes_lib.collect import CritiqueStore
from aes_lib.collect.importers import REJECT_REASONS, ImportOptions, import_file
from aes_lib.schema import Critique, read_jsonl
from conftest import REPO

GOOD_TEXT = "A calm scene with soft light and a clear subject."


def aes(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "aes_lib.cli", *args], cwd=cwd, capture_output=True,
                          text=True, env=env)


def noise_image(path: Path, size: int = 64, fmt: str = "PNG") -> Path:
    """An incompressible image, so a cut copy loses pixel data, not only trailing bytes."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(len(path.name))
    Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path, fmt, quality=95)
    return path


def write_csv(path: Path, rows: list[list[str]], header=("image", "grade", "description", "annotator")) -> Path:
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)
    return path


def db_ids(out: Path) -> list[str]:
    with sqlite3.connect(out / "critiques" / "critiques.db") as con:
        return sorted(r[0] for r in con.execute("SELECT id FROM critiques"))


def jsonl_ids(out: Path) -> list[str]:
    return sorted(c.id for c in read_jsonl(out / "critiques" / "critiques.jsonl", Critique))


def rejects(out: Path) -> list[dict]:
    text = (out / "critiques" / "rejects.jsonl").read_text()
    return [json.loads(line) for line in text.splitlines()]


def summary(out: Path) -> dict:
    return json.loads((out / "critiques" / "import_summary.json").read_text())


def assert_consistent(out: Path) -> None:
    """critiques.jsonl holds exactly the store; the summary and rejects are the store's last import."""
    assert jsonl_ids(out) == db_ids(out)
    with sqlite3.connect(out / "critiques" / "critiques.db") as con:
        seq, stored_rejects = con.execute("SELECT seq, rejects FROM imports ORDER BY seq DESC LIMIT 1").fetchone()
    assert summary(out)["import_seq"] == seq
    assert rejects(out) == json.loads(stored_rejects)


@pytest.fixture
def images(tmp_path) -> Path:
    """good.png, fine.jpg and every kind of broken image file."""
    d = tmp_path / "imgs"
    d.mkdir()
    noise_image(d / "good.png")
    noise_image(d / "fine.jpg", fmt="JPEG")
    noise_image(d / "cut.png").write_bytes((d / "cut.png").read_bytes()[:3000])
    noise_image(d / "cutj.jpg", fmt="JPEG").write_bytes((d / "cutj.jpg").read_bytes()[:2000])
    (d / "garbage.png").write_bytes(b"\x89PNG but not really an image at all" * 10)
    (d / "empty.png").write_bytes(b"")
    return d


def test_broken_images_are_rejected_at_import_and_never_reach_generation(tmp_path, images):
    path = write_csv(tmp_path / "lab.csv", [
        [name, "good", GOOD_TEXT, "ann"] for name in
        ("good.png", "fine.jpg", "cut.png", "cutj.jpg", "garbage.png", "empty.png", "missing.png")])
    out = tmp_path / "out"
    proc = aes("collect", "import", str(path), "--format", "csv", "--images", str(images), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    got = {Path(r["record"]["image"]).name: r["reason"] for r in rejects(out)}
    assert got == {"cut.png": "truncated or corrupt image", "cutj.jpg": "truncated or corrupt image",
                   "garbage.png": "unreadable image", "empty.png": "empty image file",
                   "missing.png": "image not found"}
    assert all(str(images) in r["detail"] for r in rejects(out))   # the detail names the file
    s = summary(out)
    assert s["imported"] == 2 and s["skipped"] == 5 and s["images_checked"] == 2
    assert_consistent(out)
    # the later stage sees only the intact images
    proc = aes("generate", "--out", str(out), "--manifest", "none", "--unlisted-images", "hash_split",
               "--data-dir", str(images), "--no-progress")
    assert proc.returncode == 0, proc.stderr
    used = set()
    for split in ("train", "val", "test"):
        used |= {item["image"] for item in json.loads((out / "instructions" / f"llava_{split}.json").read_text())}
    assert used == {"good.png", "fine.jpg"}


def test_every_bad_image_is_reported_by_data_verify(mini_dataset, tmp_path):
    import shutil

    root = tmp_path / "copy"
    shutil.copytree(mini_dataset.parent, root)
    manifest = json.loads((root / "manifest.json").read_text())
    files = [root / r["file"] for r in manifest["images"]]
    files[0].write_bytes(b"")
    files[3].write_bytes(files[3].read_bytes()[:200])
    files[7].write_bytes(b"not an image")
    files[9].unlink()
    proc = aes("data", "verify", str(root / "manifest.json"))
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    bad = [line for line in proc.stdout.splitlines() if line.startswith("BAD ")]
    assert sorted(line.split(":")[0][4:] for line in bad) == sorted(str(files[i]) for i in (0, 3, 7, 9))
    assert f"{len(files) - 4} of {len(files)} images OK; 4 bad" in proc.stdout


def test_csv_row_with_an_extra_field_is_a_reject_and_every_file_agrees(tmp_path):
    (tmp_path / "lab.csv").write_text(
        "image,grade,description,annotator\n"
        f"a.png,good,{GOOD_TEXT},ann\n"
        "b.png,fair,Soft light, a bit flat,bob\n"      # an unquoted comma: one field too many
        f"c.png,poor,{GOOD_TEXT},cy\n", encoding="utf-8")
    out = tmp_path / "out"
    proc = aes("collect", "import", str(tmp_path / "lab.csv"), "--format", "csv", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    [r] = rejects(out)
    assert r["row"] == 1 and r["reason"] == "unparsable row" and "more than the header" in r["detail"]
    assert r["record"]["__extra_fields__"] == ["bob"]
    assert summary(out)["imported"] == 2 and summary(out)["images_unchecked"] == 2
    assert len(db_ids(out)) == 2
    assert_consistent(out)


def test_an_import_that_fails_leaves_every_file_as_it_was(tmp_path):
    out = tmp_path / "out"
    first = write_csv(tmp_path / "first.csv", [["a.png", "good", GOOD_TEXT, "ann"], ["b.png", "x", GOOD_TEXT, "ann"]])
    assert aes("collect", "import", str(first), "--format", "csv", "--out", str(out)).returncode == 0
    crit = out / "critiques"
    before = {n: (crit / n).read_bytes() for n in ("critiques.jsonl", "import_summary.json")}
    ids_before = db_ids(out)
    # a file the import must write cannot be written (a folder sits where rejects.jsonl goes)
    (crit / "rejects.jsonl").unlink()
    (crit / "rejects.jsonl").mkdir()
    second = write_csv(tmp_path / "second.csv", [[f"n{i}.png", "fair", GOOD_TEXT, "bob"] for i in range(3)])
    proc = aes("collect", "import", str(second), "--format", "csv", "--out", str(out))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    [line] = [x for x in proc.stderr.splitlines() if "error" in x]
    assert line.startswith("aes collect: error:") and str(crit / "rejects.jsonl") in line
    assert db_ids(out) == ids_before
    assert {n: (crit / n).read_bytes() for n in before} == before
    assert not list(crit.glob(".*.tmp"))          # staged files are removed
    # a file that is not UTF-8 fails before anything is written, naming the file
    (crit / "rejects.jsonl").rmdir()
    latin = tmp_path / "latin.csv"
    latin.write_bytes("image,grade,description\nc.png,good,Caf\xe9 au lait on a table\n".encode("latin-1"))
    proc = aes("collect", "import", str(latin), "--format", "csv", "--out", str(out))
    assert proc.returncode == 2 and f"{latin}: not UTF-8 text" in proc.stderr
    assert db_ids(out) == ids_before and not (crit / "rejects.jsonl").exists()


def test_non_utf8_json_and_jsonl_name_the_file(tmp_path):
    for fmt, text in (("pccd", '[{"image_url": "http://x/a.jpg", "overall": "7", '
                                '"general_impression": "Caf\xe9"}]'),
                      ("jsonl", '{"image": "a.png", "grade": "good", "description": "Caf\xe9"}\n')):
        path = tmp_path / f"in.{fmt}"
        path.write_bytes(text.encode("latin-1"))
        proc = aes("collect", "import", str(path), "--format", fmt, "--out", str(tmp_path / "out"))
        assert proc.returncode == 2 and "Traceback" not in proc.stderr
        assert f"{path}: not UTF-8 text (byte 0xe9 on line 1)" in proc.stderr


def test_wrong_json_types_are_rejected_not_turned_into_text(tmp_path):
    rows = [{"image": ["good.png"], "grade": "good", "description": GOOD_TEXT},
            {"image": "b.png", "grade": "good", "description": {"x": 1}},
            {"image": "c.png", "grade": ["good"], "description": GOOD_TEXT},
            {"image": "d.png", "grade": "good", "description": GOOD_TEXT, "annotator": True},
            {"image": "e.png", "grade": "good", "description": GOOD_TEXT, "vibe": {"rating": 4}},
            {"image": "f.png", "grade": "good", "description": GOOD_TEXT, "vibe": 4, "vibe_word": ["calm"]},
            {"image": 7, "grade": 8, "description": GOOD_TEXT, "annotator": 12}]   # numbers are fine
    path = tmp_path / "typed.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = import_file(path, "jsonl")
    assert [(r["row"], r["reason"]) for r in result.rejects] == [(i, "wrong type") for i in range(6)]
    assert "image: expected text, got a list ['good.png']" in result.rejects[0]["detail"]
    assert "description: expected text, got an object" in result.rejects[1]["detail"]
    [c] = result.critiques
    assert (c.image_id, c.annotator, c.grade) == ("7", "12", "good")


def test_inf_nan_and_huge_numbers_are_rejected_with_their_real_reason(tmp_path):
    lines = ['{"image": "a.png", "grade": "good", "description": "d", "vibe": "inf"}',
             '{"image": "b.png", "grade": "good", "description": "d", "vibe": 1e999}',
             '{"image": "c.png", "score": NaN, "description": "d"}',
             '{"image": "d.png", "score": "nan", "description": "d"}',
             '{"image": "e.png", "score": ' + "9" * 400 + ', "description": "d"}',
             '{"image": "f.png", "description": "d"}',
             '{"image": "g.png", "score": "-Infinity", "description": "d"}',
             '{"image": "h.png", "grade": "fair", "description": "fine"}']
    path = tmp_path / "nums.jsonl"
    path.write_text("\n".join(lines) + "\n")
    result = import_file(path, "jsonl")
    reasons = [r["reason"] for r in result.rejects]
    assert reasons == ["non-finite score"] * 5 + ["missing grade", "non-finite score"]
    assert "score=nan is NaN" in result.rejects[2]["detail"]
    assert [c.image_id for c in result.critiques] == ["h"]


def test_deeply_nested_json_is_a_clear_error_or_a_reject(tmp_path):
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    proc = aes("collect", "import", str(deep), "--format", "pccd", "--out", str(tmp_path / "out"))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert f"{deep}: JSON nested too deeply" in proc.stderr
    lines = tmp_path / "deep.jsonl"
    lines.write_text('{"image": "a.png", "grade": "good", "description": "fine"}\n'
                     + '{"x": ' * 100_000 + "1" + "}" * 100_000 + "\n")
    result = import_file(lines, "jsonl")
    assert [c.image_id for c in result.critiques] == ["a"]
    assert [r["reason"] for r in result.rejects] == ["unparsable row"]
    assert "nested too deeply" in result.rejects[0]["detail"]


def test_reimport_is_idempotent_and_duplicates_follow_a_stated_rule(tmp_path):
    out = tmp_path / "out"
    rows = [["p1.png", "good", GOOD_TEXT, "ann"], ["p2.png", "fair", GOOD_TEXT, "bob"]]
    v1 = write_csv(tmp_path / "v1.csv", rows)
    assert aes("collect", "import", str(v1), "--format", "csv", "--source", "lab", "--out", str(out)).returncode == 0
    first_ids = db_ids(out)
    assert first_ids == ["lab:ann:p1", "lab:bob:p2"]
    # the edited file: one row added at the top, the others moved down by one
    v2 = write_csv(tmp_path / "v2.csv", [["p0.png", "poor", GOOD_TEXT, "cy"]] + rows)
    for _ in range(2):   # and imported twice
        proc = aes("collect", "import", str(v2), "--format", "csv", "--source", "lab", "--out", str(out))
        assert proc.returncode == 0, proc.stderr
    assert db_ids(out) == ["lab:ann:p1", "lab:bob:p2", "lab:cy:p0"]
    assert {k: summary(out)[k] for k in ("added", "replaced", "unchanged")} == {"added": 0, "replaced": 0,
                                                                                 "unchanged": 3}
    # the same annotator rating the same image twice: the first row is kept, the second rejected
    dup = write_csv(tmp_path / "dup.csv", [["p1.png", "bad", GOOD_TEXT, "ann"], ["p3.png", "good", GOOD_TEXT, "ann"],
                                           ["p1.png", "excellent", GOOD_TEXT, "ann"]])
    proc = aes("collect", "import", str(dup), "--format", "csv", "--source", "lab", "--out", str(out))
    assert proc.returncode == 0 and "the first row is kept" in proc.stderr   # the rule is printed
    [r] = rejects(out)
    assert r["reason"] == "duplicate" and r["row"] == 2 and "row 0" in r["detail"]
    assert "first row is kept" in summary(out)["duplicate_rule"]
    assert summary(out)["replaced"] == 1   # lab:ann:p1 now says "bad" (the dup file's first row)
    assert aes("collect", "stats", "--out", str(out)).returncode == 0
    with open(out / "critiques" / "consensus.csv") as fh:
        consensus = {row["image_id"]: row for row in csv.DictReader(fh)}
    assert consensus["p1"]["n_critiques"] == "1" and consensus["p1"]["consensus_grade"] == "bad"
    assert_consistent(out)


def test_old_row_number_ids_are_replaced_by_content_ids(tmp_path):
    out = tmp_path / "out"
    (out / "critiques").mkdir(parents=True)
    legacy = [Critique(id=f"lab:{i:05d}:p{i}", image_id=f"p{i}", annotator="ann", annotator_kind="imported",
                       protocol_version="p+import:csv", grade="good", description=GOOD_TEXT, source="lab",
                       extra={"image": f"p{i}.png"}) for i in range(2)]
    other = Critique(id="sim-01:p0", image_id="p0", annotator="sim-01", annotator_kind="simulated",
                     protocol_version="p", grade="fair", description=GOOD_TEXT)
    with CritiqueStore(out / "critiques" / "critiques.db") as store:
        store.add_many(legacy + [other])
    path = write_csv(tmp_path / "lab.csv", [[f"p{i}.png", "good", GOOD_TEXT, "ann"] for i in range(2)])
    assert aes("collect", "import", str(path), "--format", "csv", "--source", "lab", "--out", str(out)).returncode == 0
    assert db_ids(out) == ["lab:ann:p0", "lab:ann:p1", "sim-01:p0"]
    assert summary(out)["legacy_removed"] == 2 and summary(out)["added"] == 2


def test_a_killed_import_leaves_the_store_and_its_files_consistent(tmp_path):
    """SIGKILL an import at moments spread over its run: the store holds all of it or none of
    it, and the next collect command leaves every file in agreement with the store."""
    images = tmp_path / "imgs"
    images.mkdir()
    for i in range(40):
        noise_image(images / f"p{i}.png", size=128)
    rows = [[f"p{i % 40}.png", "good", GOOD_TEXT, f"ann{i // 40}"] for i in range(2000)]
    path = write_csv(tmp_path / "big.csv", rows)
    from aes_lib.collect import export_jsonl, import_into_store

    base = tmp_path / "base"
    seed = write_csv(tmp_path / "seed.csv", [["s.png", "fair", GOOD_TEXT, "zed"]])
    import_into_store(base, seed, "csv")
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "aes_lib.cli", "collect", "import", str(path), "--format", "csv",
           "--images", str(images)]
    t0 = time.monotonic()
    full = subprocess.run(cmd + ["--out", str(tmp_path / "full")], env=env, capture_output=True, text=True)
    duration = time.monotonic() - t0
    assert full.returncode == 0, full.stderr
    rng = random.Random(0)
    outcomes = set()
    for k, frac in enumerate((0.3, 0.7, 0.85, 0.95, 1.05)):
        out = tmp_path / f"k{k}"
        import shutil

        shutil.copytree(base, out)
        proc = subprocess.Popen(cmd + ["--out", str(out)], env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        time.sleep(duration * frac * rng.uniform(0.95, 1.05))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        n = len(db_ids(out))
        assert n in (1, 2001), n                      # all of the import or none of it
        outcomes.add(n)
        export_jsonl(out)   # what `aes collect export` runs: it repairs files an import left behind
        assert_consistent(out)
        assert summary(out)["imported"] == (2000 if n == 2001 else 1)
    assert 1 in outcomes   # at least one kill landed before the commit


def test_every_reject_reason_is_documented():
    doc = (REPO / "docs" / "collect.md").read_text()
    missing = [reason for reason in REJECT_REASONS if f"`{reason}`" not in doc]
    assert not missing, f"reasons not in docs/collect.md: {missing}"


def test_import_from_python_with_a_path_image_folder(tmp_path, images):
    from aes_lib.collect import import_into_store

    path = write_csv(tmp_path / "lab.csv", [["good.png", "good", GOOD_TEXT, "ann"], ["cut.png", "fair", GOOD_TEXT, "ann"]])
    result = import_into_store(tmp_path / "out", path, "csv", ImportOptions(images_dir=images))
    assert result.imported == 1 and result.store_counts["added"] == 1
    assert summary(tmp_path / "out")["options"]["images_dir"] == str(images)
    assert_consistent(tmp_path / "out")


def test_files_renamed_by_an_import_killed_before_its_commit_are_repaired(tmp_path):
    """The state a kill leaves between renaming an import's files and committing it: the files
    say import 2, the store has only import 1. The next collect command rewrites them."""
    out = tmp_path / "out"
    first = write_csv(tmp_path / "first.csv", [["a.png", "good", GOOD_TEXT, "ann"], ["b.png", "x", GOOD_TEXT, "ann"]])
    assert aes("collect", "import", str(first), "--format", "csv", "--out", str(out)).returncode == 0
    crit = out / "critiques"
    good = {n: (crit / n).read_bytes() for n in ("critiques.jsonl", "import_summary.json", "rejects.jsonl")}
    ahead = {**summary(out), "import_seq": 2, "imported": 7}
    (crit / "import_summary.json").write_text(json.dumps(ahead))
    (crit / "rejects.jsonl").write_text('{"row": 0, "reason": "duplicate"}\n')
    (crit / "critiques.jsonl").write_text("")
    proc = aes("collect", "export", "--out", str(out))
    assert proc.returncode == 0 and "rewriting them from the store" in proc.stderr
    assert {n: (crit / n).read_bytes() for n in good} == good
    assert_consistent(out)
